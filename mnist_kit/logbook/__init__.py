"""What VisualDL shows: the log a run writes, the pictures in it, the model graph, and the board server; and
the same pictures as matplotlib figures. (Not named ``board``: ``mnist_kit.board`` is the API's function, and an
imported subpackage of that name would hide it.)

    writer.py   the VisualDL writer of a run (Logbook): scalars, images, histograms, PR/ROC curves,
                embeddings, hyper-parameters; prepare's data log; reading records back (resume)
    visuals.py  image grids and the confusion-matrix picture (numpy)
    graph.py    the model graph, written by a child process (python -m mnist_kit.logbook.graph)
    server.py   mnist-kit board: the VisualDL server on a folder of runs, started, checked and stopped;
                Board, the same in a notebook (mnist_kit.board): shown as the board in an iframe
    figures.py  matplotlib figures: a run's curves, runs side by side, an evaluation (Run.plot, --plot)

May import: ``errors``, ``util``, ``backend``, ``models`` (the graph), ``evaluation`` (metrics for the
curves), ``experiments`` (where a run's logs and graph are).
"""
