"""The networks and what trains them, chosen by name: nothing here knows about runs, checkpoints or logs.

    networks.py  linear, mlp and cnn (its conv blocks, test-time augmentation, initialisation), strict
                 loading of weights, tracing a static program for export, the per-layer summary
    optim.py     losses, optimizers and learning-rate schedules
    onednn/      the CNN's conv blocks on the oneDNN library inside Paddle's CPU wheel (a package)

May import: ``mnist_kit``, ``backend`` (the paddle import), ``config`` (the CNN's blocks from the config).
"""
