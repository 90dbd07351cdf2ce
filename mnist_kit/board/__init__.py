"""What VisualDL shows: the log a run writes, the pictures in it, the model graph, and the board server.

    writer.py   the VisualDL writer of a run (Logbook): scalars, images, histograms, PR/ROC curves,
                embeddings, hyper-parameters; prepare's data log; reading records back (resume)
    visuals.py  image grids and the confusion-matrix picture (numpy)
    graph.py    the model graph, written by a child process (python -m mnist_kit.board.graph)
    server.py   mnist-kit board: the VisualDL server on a folder of runs, started, checked and stopped

May import: ``errors``, ``util``, ``backend``, ``models`` (the graph), ``evaluation`` (metrics for the
curves), ``experiments`` (where a run's logs and graph are).
"""
