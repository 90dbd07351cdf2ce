"""mnist-kit: end-to-end MNIST training with PaddlePaddle, from the command line (``mnist-kit``) or from Python:

    import mnist_kit as mk
    cfg = mk.load_config("cnn", ["train.epochs=3"])
    run = mk.train(cfg)                      # -> Run: run.metrics, run.best_val_acc, run.status
    print(mk.evaluate(run).accuracy)         # -> Evaluation: accuracy, loss, per_class, confusion
    model = mk.export(run)                   # -> Export
    print(mk.predict(model, "digit.png")[0].label)

The functions and classes come from ``mnist_kit.api`` (docs/python.md), loaded on first use: importing
``mnist_kit`` loads neither paddle nor the training code. Errors a user can act on are ``UserError`` (and its
``ConfigError``), with the one-line message the command prints.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mnist_kit.errors import ConfigError, UsageError, UserError
from mnist_kit.version import __version__

_API = ("Evaluation", "Export", "Guess", "Prediction", "PreparedData", "Run", "Study", "Sweep", "board", "evaluate",
        "export", "load_config", "model_summary", "plot_runs", "predict", "prepare", "resume", "runs", "sample_photo",
        "serve", "study", "sweep", "train", "train_config", "tune")
__all__ = ["ConfigError", "UsageError", "UserError", "__version__", "Config", *_API]

if TYPE_CHECKING:  # for type checkers and editors: the names __getattr__ gives (api's __all__, the same list)
    from mnist_kit.api import *  # noqa: F403
    from mnist_kit.config import Config  # noqa: F401


def __getattr__(name: str) -> Any:
    """The API's names, imported when first used (PEP 562)."""
    if name in _API:
        from mnist_kit import api

        return getattr(api, name)
    if name == "Config":
        from mnist_kit.config import Config

        return Config
    raise AttributeError(f"module 'mnist_kit' has no attribute {name!r}")
