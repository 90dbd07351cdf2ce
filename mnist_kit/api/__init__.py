"""mnist-kit as a library: one function per command, with the command's options as keyword arguments, and the
objects they return. ``mnist_kit`` exports all of it (``import mnist_kit as mk; mk.train("cnn")``); the CLI
(``cli``) parses options, calls these functions and prints what they return. Documented, with an example per
function, in docs/python.md.

- ``commands``: ``load_config``, ``prepare``, ``train``, ``resume``, ``evaluate``, ``export``, ``predict``,
  ``runs``, ``sweep``, ``model_summary``;
- ``results``: ``Run``, ``Evaluation``, ``Export``, ``Prediction`` (and its ``Guess``es), ``Sweep``,
  ``PreparedData``;
- ``tuning``: ``tune`` (a recipe search on Optuna) and ``study`` (one read back), returning a ``Study``.

Nothing here is imported with ``mnist_kit`` itself, and each function imports the packages it needs when it
is called (paddle only where it trains, evaluates or exports). May import: any package but ``cli``.
"""

from mnist_kit.api.commands import (
    board,
    evaluate,
    export,
    load_config,
    model_summary,
    plot_runs,
    predict,
    prepare,
    resume,
    runs,
    sample_photo,
    serve,
    sweep,
    train,
    train_config,
)
from mnist_kit.api.results import Evaluation, Export, Guess, Prediction, PreparedData, Run, Sweep
from mnist_kit.api.tuning import Study, study, tune

__all__ = ["Evaluation", "Export", "Guess", "Prediction", "PreparedData", "Run", "Study", "Sweep", "board",
           "evaluate", "export", "load_config", "model_summary", "plot_runs", "predict", "prepare", "resume", "runs",
           "sample_photo", "serve", "study", "sweep", "train", "train_config", "tune"]
