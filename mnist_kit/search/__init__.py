"""The recipe search (``mnist-kit tune``) on Optuna: a study of trials kept in Optuna's RDB storage (SQLite in
the runs root, or PostgreSQL shared by several machines), each trial an ordinary run trained by ``training``.
By concern:

- ``space``: the search space, ``KEY=SPEC`` texts checked against the config schema;
- ``storage``: the storage URL, opening it, tuners' locks, heartbeats and taking back dead tuners' trials;
- ``trial``: the objective, and one trial as a run (pruned through ``training.start``'s ``after_epoch``);
- ``study``: the study's folder and record, its trials as rows, the best trial and its config file;
- ``tuner``: the ask-and-tell loop, ``--jobs`` processes, and the command from start to summary.

Optuna is imported when a search runs (the ``tune`` extra), never with ``mnist_kit``. May import: ``config``,
``errors``, ``util``, ``experiments``, ``training`` (only ``start``, when a trial runs).
"""
