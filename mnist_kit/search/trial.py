"""One trial: an ordinary run (``STUDY_DIR/trial-0007``: config, metrics, checkpoints, VisualDL log) trained
with the trial's parameters, each epoch's validation result reported to Optuna, pruned when Optuna says so.

The objective (``--objective``) is the best validation accuracy (maximised), or ``time-to:ACC``: the training
seconds until an epoch's validation accuracy reaches ACC (minimised; the trial stops there; a trial that never
reaches it is worth +inf). The value reported after each epoch, which the pruner compares across trials at the
same epoch, is the validation accuracy, or for ``time-to`` the validation error (1 - accuracy), as the study's
direction needs. The test split is never looked at.

A retried trial (its tuner died, or it was interrupted) resumes the interrupted run folder from its newest
checkpoint when that folder is on this machine (the same training, bit for bit, as if never stopped): the
epochs already trained are reported again first. Otherwise it trains a new run folder of its own.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnist_kit import config
from mnist_kit.errors import ConfigError, UserError
from mnist_kit.experiments import checkpoint
from mnist_kit.experiments.rundir import RunDir
from mnist_kit.search import space, storage
from mnist_kit.util import console


@dataclass(frozen=True)
class Objective:
    text: str  # val_acc | time-to:0.9
    target: float | None = None  # time-to's validation accuracy

    @classmethod
    def parse(cls, text: str) -> Objective:
        text = str(text).strip()
        if text in ("val_acc", "val-acc", "accuracy"):
            return cls("val_acc")
        head, _, acc = text.partition(":")
        if head in ("time-to", "time_to") and acc:
            percent = acc.strip().endswith("%")
            try:
                target = float(acc.strip().rstrip("%")) / (100 if percent else 1)
            except ValueError:
                target = -1.0
            if 0 < target <= 1:
                return cls(f"time-to:{target:g}", target)
        raise ConfigError(f"--objective {config.clip(text, 40)}: choose val_acc (the best validation accuracy) or "
                          "time-to:ACC (the training seconds to reach validation accuracy ACC, e.g. time-to:0.9)")

    @property
    def direction(self) -> str:
        return "maximize" if self.target is None else "minimize"

    def reported(self, row: dict) -> float:
        """What the pruner compares after an epoch: the validation accuracy (time-to: the error)."""
        acc = row["val_acc"]
        return acc if self.target is None else 1.0 - acc

    def value(self, rows: list[dict]) -> float:
        """The trial's value from its metrics rows."""
        if self.target is None:
            return max(r["val_acc"] for r in rows)
        seconds = 0.0
        for r in rows:
            seconds += r.get("epoch_seconds") or 0.0
            if r["val_acc"] >= self.target:
                return seconds
        return math.inf

    def reached(self, rows: list[dict]) -> bool:
        return self.target is not None and any(r["val_acc"] >= self.target for r in rows)

    def describe(self, value: float | None) -> str:
        if value is None:
            return "-"
        if self.target is None:
            return f"val acc {100 * value:.2f}%"
        return f"{value:.1f} s to {100 * self.target:g}%" if math.isfinite(value) else \
            f"never reached {100 * self.target:g}%"


@dataclass
class Plan:
    """What every trial of a study shares."""

    study_dir: Path
    base: config.Config
    config_name: str
    params: list[space.Param]
    objective: Objective
    tuner_lock: Path | None = None


def trial_config(plan: Plan, values: dict[str, Any], name: str) -> config.Config:
    changes = space.overrides(plan.params, values)
    changes.update({"output.root": str(plan.study_dir), "output.name": name})
    return config.updated(plan.base, changes)


def _free_name(study_dir: Path, number: int) -> str:
    """``trial-0007``, or ``trial-0007-2``... where a folder of that name is left from another study."""
    name = f"trial-{number:04d}"
    k = 2
    while (study_dir / name).exists() or (study_dir / name).is_symlink():
        name = f"trial-{number:04d}-{k}"
        k += 1
    return name


def _resumable(trial, plan: Plan) -> RunDir | None:
    """The interrupted run a retried trial continues: on this machine, in this study, not being trained,
    with an intact checkpoint and the trial's config."""
    attrs = trial.user_attrs
    path = attrs.get("run")
    if attrs.get("retry_of") is None or attrs.get("run_host") != storage.HOST or not isinstance(path, str):
        return None
    run = RunDir(path)
    if run.path.parent != plan.study_dir or run.alive() or not run.path.is_dir():
        return None
    try:
        saved = run.read_config()
        if not checkpoint.periodic(run.ckpt_dir):
            return None
        wanted = trial_config(plan, trial.params, run.name)
    except (UserError, OSError):
        return None
    return run if not config.differences(saved, wanted) else None


class _Reporter:
    """Reports each epoch to Optuna and decides whether to stop: pruned, or time-to's target reached. For a
    resumed run, the epochs trained before are read from its metrics and reported first."""

    def __init__(self, trial, plan: Plan, resumed: RunDir | None = None):
        self.trial, self.plan, self.resumed = trial, plan, resumed
        self.rows: list[dict] = []
        self.pruned: int | None = None

    def report(self, row: dict) -> None:
        self.rows.append(row)
        if isinstance(row.get("val_acc"), (int, float)) and math.isfinite(row["val_acc"]):
            self.trial.report(self.plan.objective.reported(row), step=int(row["epoch"]))

    def __call__(self, row: dict) -> str | None:
        if self.resumed is not None:  # the resume has set aside what came after its checkpoint by now
            for earlier in _rows(self.resumed):
                if earlier["epoch"] < row["epoch"]:
                    self.report(earlier)
            self.resumed = None
        self.report(row)
        if self.plan.objective.reached(self.rows):
            return f"reached the validation accuracy of tune's objective {self.plan.objective.text}"
        if self.trial.should_prune():
            self.pruned = int(row["epoch"])
            return f"pruned by tune: its validation result after epoch {row['epoch']} is among the study's worse"
        return None


def _rows(run: RunDir) -> list[dict]:
    with contextlib.suppress(UserError, OSError):
        return run.read_metrics()
    return []


def _finished(run: RunDir, plan: Plan) -> bool:
    """Whether an interrupted run has nothing left to train (killed after its last checkpoint)."""
    rows = _rows(run)
    try:
        epochs = run.read_info().get("epochs")
    except (UserError, OSError):
        return False
    return bool(rows) and (isinstance(epochs, int) and len(rows) >= epochs or plan.objective.reached(rows))


def _log(path: Path):
    """The trial's log, appended to; never through a link (it could lead to a file that is not mnist-kit's)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UserError(f"{path} is a symbolic link; mnist-kit writes a trial's log only to a file of its own "
                            "(move the link away)") from None
        raise
    return open(fd, "a", encoding="utf-8")


def run(trial, plan: Plan, log_file: Path) -> tuple[list[dict], int | None]:
    """Train ``trial``'s run (or resume the one it retries) with its output in ``log_file``; return its metrics
    rows (every epoch, those before a resume too) and the epoch after which it was pruned (None if it was not)."""
    from mnist_kit.training import start

    values = {p.key: p.suggest(trial) for p in plan.params}
    resumed = _resumable(trial, plan)
    if resumed is None:
        name = _free_name(plan.study_dir, trial.number)
        cfg = trial_config(plan, values, name)  # a ConfigError here: a combination the schema refuses
        run_dir = RunDir(plan.study_dir / name)
    else:
        run_dir = resumed
    trial.set_user_attr("run", str(run_dir.path))  # (its "host" is set when the tuner asks for it)
    reporter = _Reporter(trial, plan, resumed)
    with _log(log_file) as out, console.to_stream(out):
        if resumed is None:
            start.train(cfg, config_name=plan.config_name, after_epoch=reporter)
        elif _finished(resumed, plan):
            for row in _rows(resumed):
                reporter.report(row)
        else:
            start.resume(resumed.path, after_epoch=reporter)
    return reporter.rows, reporter.pruned
