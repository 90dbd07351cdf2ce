"""Resume policy: which differences between the config a run was trained with (stored in its checkpoints)
and the config it is resumed or evaluated with keep it the same training (``SAFE_ON_RESUME``), the network's
keys (``check_same_network``), and a config's short hash (run.json, checkpoints).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from mnist_kit.config.checks import validate
from mnist_kit.config.schema import SCHEMA, Config
from mnist_kit.errors import ConfigError, UserError

# What may differ between a run's saved config and the config it is resumed with. Everything else
# changes the model, the data or the optimisation, and is refused.
SAFE_ON_RESUME = ("train.epochs", "train.log_every", "train.eval_batch_size", "train.device", "train.on_nonfinite",
                  "train.fast_conv", "train.threads", "train.patience", "train.init_from",
                  "checkpoint.keep_last", "checkpoint.every_steps", "output.visualdl",
                  *(f"log.{k}" for k in SCHEMA["log"]))


def differences(old: Config | dict, new: Config | dict) -> dict[str, tuple[Any, Any]]:
    """``{"section.key": (old, new)}`` for every value that differs (keys that apply; as YAML writes them)."""
    old, new = _as_dict(old), _as_dict(new)
    out = {}
    for section in SCHEMA:
        a, b = old.get(section, {}), new.get(section, {})
        for key in sorted(set(a) | set(b), key=lambda k: list(SCHEMA[section]).index(k)):
            if a.get(key, "(unset)") != b.get(key, "(unset)"):
                out[f"{section}.{key}"] = (a.get(key, "(unset)"), b.get(key, "(unset)"))
    return out


def _as_dict(cfg: Config | dict) -> dict:
    return cfg.to_dict() if isinstance(cfg, Config) else cfg


def stored(saved: Any, where: Path) -> Config:
    """The config stored in the checkpoint ``where``, validated; UserError if this version cannot use it."""
    try:
        return validate(saved, f"config stored in {Path(where).name}")
    except ConfigError as e:
        raise UserError(f"{where} holds a config this version cannot use: {e}") from None


NETWORK_KEYS = ("data.name", "data.image_size", "data.color", "data.resize")  # with model.*: what shapes the network


def check_same_network(saved: Config, cfg: Config, where: str) -> None:
    """UserError if ``cfg`` describes another network or input than ``saved``, the config stored in the
    checkpoint ``where`` (a ``config.yaml`` edited, or another run's checkpoints copied in)."""
    diff = {k: v for k, v in differences(saved, cfg).items() if k.startswith("model.") or k in NETWORK_KEYS}
    if diff:
        listing = "; ".join(f"{k}: {a!r} in the checkpoint, {b!r} in config.yaml" for k, (a, b) in diff.items())
        raise UserError(f"{where} was trained with another model or data than config.yaml describes ({listing}); "
                        "restore config.yaml, or use the checkpoints of the run it describes")


def check_resume(saved: Config, cfg: Config, done_epochs: int) -> dict[str, tuple[Any, Any]]:
    """The differences between the config a run was trained with and the one it is resumed with, if they
    keep it the same training; else UserError naming them. (With train.steps the run's length follows from
    the data and train.steps, which may not change: the trainer checks it, ``Trainer.epochs``.)"""
    changes = differences(saved, cfg)
    unsafe = {k: v for k, v in changes.items() if k not in SAFE_ON_RESUME}
    if unsafe:
        listing = "\n".join(f"  - {k}: {a!r} -> {b!r}" for k, (a, b) in unsafe.items())
        raise UserError(f"resuming with these changes would not continue the same training:\n{listing}\n"
                        f"Start a new run with `mnist-kit train` instead. Safe to change on resume: "
                        f"{', '.join(SAFE_ON_RESUME)}")
    if "train.epochs" in changes and not cfg.train.steps:
        new = cfg.train.epochs
        if new < done_epochs:
            raise UserError(f"train.epochs={new}, but the run has already finished {done_epochs} epochs")
        if cfg.schedule.name in ("polynomial", "cosine"):
            raise UserError(f"cannot change train.epochs on resume with the {cfg.schedule.name} schedule: "
                            "its decay is spread over the original number of epochs. Start a new run instead")
    return changes



def config_hash(cfg: Config) -> str:
    """A short hash of the config (its dict form), in run.json and checkpoints."""
    return hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True).encode()).hexdigest()[:16]
