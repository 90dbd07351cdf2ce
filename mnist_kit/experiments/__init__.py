"""What a training run leaves on disk, and the folders that hold runs.

    rundir.py      the run directory: its layout (the only code that knows it), naming, the training lock,
                   run.json, metrics rows, setting later work aside
    checkpoint.py  the checkpoint folder: saving, loading, the manifest, retention, choosing a checkpoint,
                   the weights of a run, checkpoint or export (train.init_from)
    listing.py     finding runs (--run DIR, the newest, all under a root); mnist-kit runs: runs in a few numbers
    sweep.py       mnist-kit sweep: the grid, its folder and lock, its runs as processes

May import: ``errors``, ``util``, ``config``, ``data`` (a sweep checks the data set once), ``backend``
(``checkpoint`` imports paddle only to save or load, so listing runs stays light).
"""
