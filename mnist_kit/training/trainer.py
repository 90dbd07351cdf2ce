"""The Trainer: everything a config describes, built (``build_trainer``), and the position in training
(epoch, step, the epoch's running sums, the best so far), with its checkpoint state (``state``, ``restore``).

Where things go: the transform of the training batches (``data/augment.py``) is applied in
``Trainer.batches``; other conv layers (the oneDNN blocks, ``models/onednn``) where ``build_trainer`` builds
the model.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

from mnist_kit import config, data
from mnist_kit.backend import distributed
from mnist_kit.backend.runtime import paddle, rng_state, seed_everything, select_device, set_rng_state, versions
from mnist_kit.data.augment import Augment
from mnist_kit.errors import UserError
from mnist_kit.experiments import checkpoint
from mnist_kit.experiments.checkpoint import CheckpointState
from mnist_kit.models import onednn
from mnist_kit.models.losses import build_loss
from mnist_kit.models.networks import build_model, load_weights
from mnist_kit.models.optim import build_optimizer, build_schedule
from mnist_kit.training.ema import WeightAverage
from mnist_kit.util.console import info

AMP_DTYPES = {"fp16": "float16", "bf16": "bfloat16"}  # train.amp -> paddle.amp.auto_cast's dtype


def _fresh_progress() -> dict:
    return {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0, "skipped": 0}


@dataclass
class StepResult:
    loss: float  # the batch's mean loss (the mean over processes under the launcher)
    correct: int | None  # correct predictions; None when the loss was not finite and the update was skipped
    size: int  # images in this process's batch
    lr: float  # the learning rate the update used


@dataclass
class Trainer:
    """Everything built from a config, and the position in training."""

    cfg: config.Config
    epochs: int  # the run's length: train.epochs, or train.steps as whole epochs of this data (computed once)
    device: str
    splits: data.Splits
    model: paddle.nn.Layer
    loss_fn: Callable  # (logits, labels) -> the batch's mean loss (models/losses.py)
    schedule: paddle.optimizer.lr.LRScheduler
    optimizer: paddle.optimizer.Optimizer
    net: paddle.nn.Layer  # what the training step calls: the model, or its DataParallel wrapper
    amp: str = "off"  # train.amp: off, fp16 or bf16
    scaler: paddle.amp.GradScaler | None = None  # fp16's loss scale, or None
    conv_layers: onednn.Choice = field(default_factory=lambda: onednn.Choice("stock"))  # which layers run the blocks
    augment: Augment = field(default_factory=Augment)  # what transforms the training batches
    ema: WeightAverage | None = None  # the moving average of the weights (train.ema), or None
    epoch: int = 0  # the epoch in progress (or the next one to start)
    step: int = 0  # global steps done
    step_in_epoch: int = 0
    best_val_acc: float = -1.0
    progress: dict = field(default_factory=_fresh_progress)  # running sums of the epoch in progress
    watch: dict = field(default_factory=lambda: {"best": None, "best_epoch": None, "stale": 0})  # train.monitor
    stop_reason: str | None = None  # why the caller's after_epoch ended training early (tune's pruning), or None

    @property
    def stopped_early(self) -> str | None:
        """Why training ends before ``train.epochs`` (patience run out), or None."""
        if self.stop_reason:
            return self.stop_reason
        patience, monitor = self.cfg.train.patience, self.cfg.train.monitor
        if not patience or self.watch["stale"] < patience:
            return None
        best = self.watch["best"]
        return (f"{monitor} has not improved for {self.watch['stale']} epoch(s) (train.patience {patience}); "
                + (f"best {best:.4g} at epoch {self.watch['best_epoch']}" if best is not None
                   else "it was never a finite number"))

    def monitor(self, row: dict) -> bool:
        """Note epoch ``row``'s value of ``train.monitor``; whether it is the best so far."""
        name = self.cfg.train.monitor
        value, best = row[name.replace("/", "_")], self.watch["best"]
        if value is None:  # no validation split: the best is the last
            self.watch = {"best": None, "best_epoch": row["epoch"], "stale": 0}
            return True
        better = math.isfinite(value) and (best is None or (value > best if name.endswith("acc") else value < best))
        if better:
            self.watch = {"best": float(value), "best_epoch": row["epoch"], "stale": 0}
        else:
            self.watch["stale"] += 1
        return better

    @property
    def steps_per_epoch(self) -> int:
        return len(self.splits.train)

    def batches(self):
        """The rest of this epoch's training batches (this process's share), as tensors."""
        for xb, yb in self.splits.train.epoch(self.epoch, start_step=self.step_in_epoch, augment=self.augment):
            yield paddle.to_tensor(xb), paddle.to_tensor(yb)

    def count(self, step: StepResult) -> None:
        """Add a step to the epoch's running sums."""
        self.progress["loss_sum"] += step.loss * step.size
        self.progress["correct"] += step.correct
        self.progress["seen"] += step.size

    def next_epoch(self) -> None:
        self.epoch, self.step_in_epoch, self.progress = self.epoch + 1, 0, _fresh_progress()

    def state(self, epoch_complete: bool) -> CheckpointState:
        return {"model": self.model.state_dict(),
                "optimizer": checkpoint.portable_optimizer_state(self.optimizer.state_dict(), self.model),
                "schedule": self.schedule.state_dict(), "rng": rng_state(),
                "epoch": self.epoch, "step": self.step, "step_in_epoch": self.step_in_epoch,
                "epoch_complete": epoch_complete, "epoch_progress": dict(self.progress),
                "data_order": {"seed": self.cfg.train.seed, "epoch": self.epoch,
                               "step_in_epoch": self.step_in_epoch},
                "best_val_acc": self.best_val_acc, "watch": dict(self.watch),
                "config": self.cfg.to_dict(), "config_hash": config.config_hash(self.cfg),
                "world_size": distributed.world_size(),
                "normalization": self.splits.norm.to_dict(), "classes": list(self.splits.prepared.classes),
                "fast_conv": self.conv_layers.record(), "versions": versions(),
                "ema": self.ema.state() if self.ema is not None else None,
                "scaler": self.scaler.state_dict() if self.scaler is not None else None}

    def restore(self, state: CheckpointState, source: str = "the checkpoint") -> None:
        load_weights(self.model, state["model"], source)
        with warnings.catch_warnings():  # Paddle's LinearWarmup warns about its own nested state; it loads fine
            warnings.filterwarnings("ignore", message="There are some unused values in state_dict")
            self.optimizer.set_state_dict(checkpoint.local_optimizer_state(state["optimizer"], self.model))
            self.schedule.set_state_dict(state["schedule"])
        if self.ema is not None:
            self.ema.restore(state.get("ema"), self.model)
        if self.scaler is not None:  # the loss scale and its counters (Paddle's CPU build keeps none: {})
            self.scaler.load_state_dict(state.get("scaler") or {})
        set_rng_state(state["rng"])
        self.step, self.best_val_acc = state["step"], state["best_val_acc"]
        self.watch = dict(state["watch"])
        if state["epoch_complete"]:
            self.epoch, self.step_in_epoch = state["epoch"] + 1, 0
        else:
            self.epoch, self.step_in_epoch = state["epoch"], state["step_in_epoch"]
            self.progress = dict(state["epoch_progress"])


def build_trainer(cfg: config.Config, norm: data.Normalization | None = None) -> Trainer:
    tcfg = cfg.train
    distributed.init()
    device = select_device(tcfg.device, distributed.local_rank())
    if tcfg.amp != "off" and not device.startswith("gpu"):
        raise UserError(f"train.amp {tcfg.amp} (mixed precision) needs a GPU: Paddle's CPU build runs none "
                        "(its auto_cast has no effect on the CPU); set train.amp off or train on a GPU")
    seed_everything(tcfg.seed)
    splits = data.load_splits(cfg, norm, distributed.rank(), distributed.world_size())
    model = build_model(cfg.model, splits.prepared.input_shape, len(splits.prepared.classes))
    threads, lowered = onednn.threads_for(tcfg.threads, distributed.local_size())
    if lowered:
        info(f"warning: {lowered}")
    fast = onednn.enable(model, tcfg.fast_conv, device, threads, splits.prepared.input_shape)
    # the run's length: train.steps (updates) as whole epochs of this data set, or train.epochs
    epochs = config.epochs_of_steps(tcfg.steps, len(splits.train)) if tcfg.steps else tcfg.epochs
    schedule = build_schedule(cfg.schedule, cfg.optimizer.lr, len(splits.train), epochs)
    optimizer = build_optimizer(cfg.optimizer, schedule, model.parameters())
    net = paddle.DataParallel(model) if distributed.world_size() > 1 else model
    return Trainer(cfg, epochs, device, splits, model, build_loss(cfg.loss), schedule, optimizer, net, amp=tcfg.amp,
                   scaler=paddle.amp.GradScaler() if tcfg.amp == "fp16" else None, conv_layers=fast,
                   augment=Augment.from_config(cfg.augment, cfg.data.name),
                   ema=WeightAverage(model, tcfg.ema) if tcfg.ema else None)
