"""The networks and what trains them, chosen by name: nothing here knows about runs, checkpoints or logs.

    registry.py  every name a config may choose (models, losses, optimizers, schedules, activations,
                 initialisations) with what builds it; plain Python, read by config
    blocks.py    the CNN's conv blocks as data, and their geometry; plain Python, read by config
    networks.py  linear, mlp and cnn (its conv blocks, test-time augmentation, initialisation), strict
                 loading of weights, tracing a static program for export, the per-layer summary
    losses.py    the training losses
    optim.py     optimizers and learning-rate schedules
    onednn/      the CNN's conv blocks on the oneDNN library inside Paddle's CPU wheel (a package)

May import: ``errors``, ``backend`` (the paddle import). ``config`` imports ``registry`` and ``blocks``.
"""
