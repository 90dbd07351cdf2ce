"""Training: a Trainer built from a config, the loop that trains it, and starting or resuming a run.

    trainer.py   the Trainer: model, data, loss, optimizer, schedule, the oneDNN choice, the position in
                 training and its checkpoint state (build_trainer, state, restore)
    engine.py    the loop: fit -> run_epoch -> train_step, end_epoch (validate, record, checkpoint)
    start.py     train (a new run) and resume (from a checkpoint): the lock, run.json, the log, the graph
    trainlog.py  what a run logs to VisualDL, and when
    ema.py       the moving average of the weights (train.ema)
    launch.py    train --nproc: paddle.distributed.launch run for the user, its logs and signals

May import: every package but ``deploy`` and ``cli``. Nothing but ``api`` imports it.
"""
