"""What a training run shows in VisualDL, and when: the engine calls these at its named points.

    start          the config as text (one line per section: the board's text page shows no line
                   breaks), the hyper-parameters that tell runs apart, a grid of input samples (step 0),
                   and the same images augmented as the first step sees them (when augmentation is on)
    training_setup what trains the run (device, conv blocks on oneDNN or stock), at the start and each resume
    after_step     every ``train.log_every`` steps: loss, accuracy, learning rate;
                   every ``log.histogram_every`` steps: every parameter and gradient (and at the end of
                   every epoch, so that a short run has them too)
    after_epoch    epoch scalars, and loss and accuracy of training and validation as lines of one
                   chart each (``train_and_val/*``: the second writer draws the validation line);
                   misclassified grid, confusion matrix, PR/ROC curves; embeddings at the last epoch

The ``log`` section switches each on or off; with VisualDL off (or on a process other than rank 0) the
logbook is disabled and every call does nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import yaml

from mnist_kit.evaluation import metrics
from mnist_kit.evaluation.scoring import features
from mnist_kit.experiments import listing
from mnist_kit.logbook.writer import Logbook

if TYPE_CHECKING:
    from mnist_kit.config import Config

HPARAM_METRICS = ["val/acc", "val/loss", "train/epoch_acc", "train/epoch_loss"]
# (tag, training's row key, validation's row key): drawn together, training by the run's writer and
# validation by its second writer (VisualDL 2.5.3's own add_scalars names its lines by file path)
TRAIN_AND_VAL = (("train_and_val/loss", "train_loss", "val_loss"), ("train_and_val/acc", "train_acc", "val_acc"))
CONFIG_TEXT_LIMIT = 10  # the board keeps at most 10 texts per tag and run
EPOCH_SCALARS = (("train/epoch_loss", "train_loss"), ("train/epoch_acc", "train_acc"), ("val/loss", "val_loss"),
                 ("val/acc", "val_acc"), ("speed/images_per_sec", "images_per_sec"),
                 # train.ema: val/* are the moving average's, these the trained weights' (the board's
                 # "val" group draws them side by side)
                 ("val/loss_raw", "val_loss_raw"), ("val/acc_raw", "val_acc_raw"))


def due(step: int, every: int) -> bool:
    """Whether something done every ``every`` steps (0 = never) is due after global step ``step``."""
    return bool(every) and step % every == 0


def config_lines(cfg: dict) -> list[str]:
    """The config as YAML, one line per section in flow style (``model: {name: cnn, ...}``): each line is
    valid YAML and all of them together load as the config."""
    lines = [f"{s}: " + yaml.safe_dump(sec, default_flow_style=True, sort_keys=False, width=10**6).strip()
             for s, sec in cfg.items()]
    if len(lines) > CONFIG_TEXT_LIMIT:  # the last ones share one line
        lines[CONFIG_TEXT_LIMIT - 1:] = ["\n".join(lines[CONFIG_TEXT_LIMIT - 1:])]
    return lines


def hparams(cfg: dict, also=()) -> dict:
    """The hyper-parameters the board's table shows (``listing.hparams_shown``), named ``section/key``: the
    table reads a dot as a nested path and shows nothing. Lists and booleans as text."""
    out = {}
    for key in listing.hparams_shown(cfg, also):
        section, _, name = key.partition(".")
        v = cfg[section][name]
        out[f"{section}/{name}"] = str(v).lower() if isinstance(v, bool) else str(v) if isinstance(v, list) else v
    return out


class TrainLog:
    def __init__(self, logbook: Logbook, cfg: Config, val_book: Logbook | None = None, sweep_keys=()):
        """``val_book``: the second writer, for the validation lines; ``sweep_keys``: the config keys the
        sweep of this run varies (shown among its hyper-parameters even where a run has the default)."""
        self.book, self.cfg, self.lcfg = logbook, cfg, cfg.log
        self.val_book = val_book if val_book is not None else Logbook(None)
        self.sweep_keys = list(sweep_keys)

    def start(self, trainer) -> None:
        """What the log shows from the start of a run: config, hyper-parameters, a grid of input samples."""
        if self.lcfg.config_text:
            for line in config_lines(self.cfg.to_dict()):  # one text each: the board shows no line breaks in a text
                self.book.text("config", line)
        self.training_setup(trainer)
        if self.lcfg.hparams:
            self.book.hparams(hparams(self.cfg.to_dict(), self.sweep_keys), HPARAM_METRICS)
        if self.lcfg.images:
            train = trainer.splits.train
            first = train.order(0)[:64]
            classes = trainer.splits.prepared.classes
            self.book.sample_grid("input/train_samples", train.x[first], train.y[first], classes)
            if trainer.augment.active:  # the first batch as the model sees it (up to 64 of its images)
                g = train.batch_size * train.world
                shown = first[:g]
                seen = trainer.augment.apply(train.x[shown], train.seed, 0, 0, 0, min(g, train.num_samples))
                self.book.sample_grid("input/train_samples_augmented", np.round(seen).astype(np.uint8),
                                      train.y[shown], trainer.splits.prepared.classes)

    def training_setup(self, trainer) -> None:
        """What trains the run from this step on: the device and the conv blocks' layers (at a resume too)."""
        if self.lcfg.config_text:
            self.book.text("training", f"{trainer.device}: {trainer.conv_layers.describe()}", trainer.step)

    def after_step(self, trainer, loss: float, correct: int, n: int, lr: float) -> None:
        """After the update of global step ``trainer.step`` (``n`` images, ``correct`` of them right, at rate
        ``lr``)."""
        if due(trainer.step, self.cfg.train.log_every):
            self.book.scalar("train/loss", loss, trainer.step)
            self.book.scalar("train/acc", correct / n, trainer.step)
            self.book.scalar("train/lr", lr, trainer.step)
        if self.book.enabled and due(trainer.step, self.lcfg.histogram_every):
            self._histograms(trainer)

    def _histograms(self, trainer) -> None:
        for name, p in trainer.model.named_parameters():
            self.book.histogram(f"params/{name}", p.numpy(), trainer.step)
            if p.grad is not None:
                self.book.histogram(f"grads/{name}", p.grad.numpy(), trainer.step)

    def after_epoch(self, trainer, row: dict, val: dict) -> None:
        """After the validation that ends epoch ``row["epoch"]``: its scalars, images, curves, embeddings."""
        for tag, key in EPOCH_SCALARS:
            if row.get(key) is not None:  # None: no validation split; absent: no train.ema
                self.book.scalar(tag, row[key], trainer.step)
        for tag, train_key, val_key in TRAIN_AND_VAL:
            self.book.scalar(tag, row[train_key], trainer.step)
            if row[val_key] is not None:
                self.val_book.scalar(tag, row[val_key], trainer.step)
        if self.book.enabled:
            if trainer.splits.val.num_samples:
                self._validation_pictures(trainer, val, row["epoch"])
            if self.lcfg.histogram_every and not due(trainer.step, self.lcfg.histogram_every):
                self._histograms(trainer)  # every epoch has some, however short
        self.flush()

    def _validation_pictures(self, trainer, val: dict, epoch: int) -> None:
        classes, step = trainer.splits.prepared.classes, trainer.step
        y, predicted = trainer.splits.val.y, val["logits"].argmax(axis=1)
        if self.lcfg.images:
            self.book.misclassified("val/misclassified", trainer.splits.val.x, y, predicted, step)
            self.book.confusion("val/confusion_matrix", metrics.confusion_matrix(y, predicted, len(classes)),
                                classes, step)
        if self.lcfg.curves:
            self.book.curves(y, metrics.softmax(val["logits"]), classes, step)
        if self.lcfg.embeddings and epoch == trainer.epochs - 1:
            n = self.lcfg.embeddings
            right = predicted[:n] == y[:n]
            self.book.embeddings("val/features", features(trainer.model, trainer.splits.val.x[:n], trainer.splits.norm),
                                 {"class": [classes[k] for k in y[:n]],
                                  "predicted": [classes[k] for k in predicted[:n]],
                                  "correct": ["yes" if r else "no" for r in right]}, step)

    def flush(self) -> None:
        self.book.flush()
        self.val_book.flush()

    def close(self) -> None:
        self.book.close()
        self.val_book.close()
