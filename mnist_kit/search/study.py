"""A study: its folder in the runs root (``ROOT/STUDY/``: the trials' runs, ``study.json``, ``logs/``, the best
configs), its record in the storage (what it searches, checked on every later start), and reading it back:
the trials as rows (``tune --show``) and the best one.

    ROOT/tune.db                   the default storage (SQLite), every study of ROOT
    ROOT/STUDY/study.json          the study's name, storage (no password), space and objective
    ROOT/STUDY/trial-0007/         trial 7's run: an ordinary run folder
    ROOT/STUDY/logs/trial-0007.log trial 7's training output
    ROOT/STUDY/best-trial-0007.yaml the best trial's config, for train --config (never overwritten)
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnist_kit import config
from mnist_kit.errors import ConfigError, UserError
from mnist_kit.search import space, storage
from mnist_kit.search.trial import Objective
from mnist_kit.util import readback
from mnist_kit.util.files import write_text

STUDY_FILE = "study.json"
META = "mnist_kit"  # the study's user attribute that records what it searches
NOT_COMPARED = ("output.", "log.", "checkpoint.", "train.device", "train.threads", "train.log_every",
                "train.eval_batch_size", "data.root")  # may differ between a study's tuners and machines


def base_hash(cfg: config.Config) -> str:
    """What every trial of a study shares, as a hash: the config, without what may differ between machines."""
    flat = {f"{s}.{k}": v for s, sec in cfg.to_dict().items() for k, v in sec.items()
            if not f"{s}.{k}".startswith(NOT_COMPARED)}
    return hashlib.sha256(json.dumps(flat, sort_keys=True).encode()).hexdigest()[:16]


def check_folder(study_dir: Path) -> None:
    """The study's folder is new, empty, or this study's: never a run, a sweep or the user's own folder."""
    if study_dir.is_symlink() and not study_dir.exists():
        raise UserError(f"{study_dir} is a symbolic link to nothing; give the study another --study name")
    if not study_dir.exists():
        return
    if not study_dir.is_dir():
        raise UserError(f"{study_dir} is not a folder; give the study another --study name")
    if (study_dir / STUDY_FILE).is_file():
        return
    try:
        entries = [p.name for p in study_dir.iterdir()]
    except OSError as e:
        raise UserError(f"cannot read {study_dir}: {e.strerror}") from None
    if entries:
        raise UserError(f"{study_dir} exists and is not a study's folder (no {STUDY_FILE}); give the study "
                        "another --study name (mnist-kit never writes into a folder it did not make)")


def record(study, study_dir: Path, url: str, params: list[space.Param], objective: Objective,
           cfg: config.Config, config_name: str) -> None:
    """Record what the study searches on its first start; on a later start, refuse another space, objective
    or base config (which would mix incomparable trials in one study)."""
    meta = {"space": {p.key: p.spec for p in params}, "objective": objective.text, "base": base_hash(cfg),
            "config_name": config_name}
    old = study.user_attrs.get(META)
    if old is None:
        study.set_user_attr(META, meta)
    elif isinstance(old, dict):
        for what, label in (("space", "search space"), ("objective", "objective"), ("base", "config")):
            if old.get(what) != meta[what]:
                was = old.get(what)
                shown = (" ".join(f"{k}={v}" for k, v in was.items()) if isinstance(was, dict) else was)
                raise ConfigError(f"study {study.study_name} in {storage.shown(url)} was started with another "
                                  f"{label}" + (f" ({config.clip(str(shown), 120)})" if what != "base" else "")
                                  + "; give this search its own --study NAME (or repeat the first command)")
    text = json.dumps({"study": study.study_name, "storage": storage.shown(url), **meta}, indent=2) + "\n"
    current, problem = readback.read_json(study_dir / STUDY_FILE)
    if problem or current != json.loads(text):
        write_text(study_dir / STUDY_FILE, text)


@dataclass
class TrialRow:
    """One trial as ``tune --show`` lists it."""

    number: int
    state: str  # complete | pruned | running | failed | waiting
    value: float | None
    params: dict[str, Any]
    epochs: int  # epochs reported
    run: str | None  # its run folder
    note: str  # pruned after epoch 0, retry of trial 3, the error...
    seconds: float | None

    def to_dict(self) -> dict:
        value = self.value if self.value is None or math.isfinite(self.value) else str(self.value)
        return {"trial": self.number, "state": self.state, "value": value, "params": self.params,
                "epochs": self.epochs, "run": self.run, "note": self.note, "seconds": self.seconds}


def rows(study) -> list[TrialRow]:
    out = []
    for t in study.get_trials(deepcopy=False):
        state = t.state.name.lower().replace("fail", "failed")
        attrs = t.user_attrs  # from the storage, which anyone with its URL can write: types checked, texts cut
        notes = []
        if isinstance(attrs.get("retry_of"), int):
            notes.append(f"retry of trial {attrs['retry_of']}")
        if t.state.name == "PRUNED" and t.intermediate_values:
            notes.append(f"pruned after epoch {max(t.intermediate_values)}")
        for key in ("interrupted", "error"):
            if attrs.get(key):
                notes.append(str(attrs[key])[:200])
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() \
            if t.datetime_complete and t.datetime_start else None
        out.append(TrialRow(t.number, state, t.value if t.state.name == "COMPLETE" else None, dict(t.params),
                            len(t.intermediate_values), run if isinstance(run := attrs.get("run"), str) else None,
                            "; ".join(notes), seconds))
    return out


def best(study):
    """The best complete trial with a finite value, or None."""
    done = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE" and t.value is not None
            and math.isfinite(t.value)]
    if not done:
        return None
    sign = -1.0 if study.direction.name == "MAXIMIZE" else 1.0
    return min(done, key=lambda t: (sign * t.value, t.number))  # the earliest of equals


def write_best(study_dir: Path, study_name: str, trial, cfg: config.Config, objective: Objective) -> Path:
    """The best trial's config as a YAML file ``train --config`` takes as it is (output.* as the base config
    had them); a new file per best trial, never written over."""
    path = study_dir / f"best-trial-{trial.number:04d}.yaml"
    if path.exists():
        return path
    header = (f"# The best trial of mnist-kit tune's study {study_name}: trial {trial.number}, "
              f"{objective.describe(trial.value)} ({objective.text}).\n"
              f"# Its run: {trial.user_attrs.get('run', '-')}\n"
              f"# Searched: {space.describe(dict(trial.params))}\n"
              f"# Train it: mnist-kit train --config {path}\n")
    write_text(path, header + config.dump(cfg))
    return path
