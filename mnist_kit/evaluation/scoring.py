"""Evaluation: a trained run's network loaded from a checkpoint, the logits of a split's batches through one
loop whatever runs the network (eager Paddle, or Paddle Inference with oneDNN on a program traced from it),
penultimate features, and a run's report on its test or validation split.

Training validates through ``predict`` with ``eager``; ``mnist-kit eval`` through ``traced`` (several
times faster on the CPU, the same logits within float tolerance); export checks its program against both.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnist_kit import config, data, datasets
from mnist_kit.backend import distributed
from mnist_kit.backend.paddle_inference import Program, program_files
from mnist_kit.backend.runtime import paddle, select_device
from mnist_kit.errors import UserError
from mnist_kit.evaluation import metrics
from mnist_kit.experiments import checkpoint
from mnist_kit.experiments.checkpoint import CheckpointState
from mnist_kit.experiments.rundir import RunDir
from mnist_kit.models.losses import build_loss
from mnist_kit.models.networks import build_model, load_weights, save_program
from mnist_kit.util.console import info


def eager(model):
    """``model`` as a function of normalised float32 batches to logits, in eval mode, without gradients."""
    model.eval()

    def logits_of(x: np.ndarray) -> np.ndarray:
        with paddle.no_grad():
            return model(paddle.to_tensor(x)).numpy()

    return logits_of


@contextlib.contextmanager
def traced(model, input_shape, device: str = "cpu"):
    """``model`` traced to a temporary static program (about a second) and run by Paddle Inference; yields
    the same kind of function as ``eager``."""
    with tempfile.TemporaryDirectory(prefix="mnist-kit-eval.") as tmp:
        save_program(model, Path(tmp) / "model", input_shape)
        files = program_files(Path(tmp) / "model")
        assert files is not None  # just written
        yield Program(*files, device=device).logits


def batch_logits(logits_of, batches: data.Batches, loss_fn=None) -> tuple[np.ndarray, float]:
    """Logits for every image of ``batches`` in order, and the mean loss (when ``loss_fn`` is given)."""
    outputs, loss_sum = [], 0.0
    for xb, yb in batches.epoch():
        logits = logits_of(xb)
        if loss_fn is not None:
            with paddle.no_grad():
                loss_sum += float(loss_fn(paddle.to_tensor(logits), paddle.to_tensor(yb))) * len(yb)
        outputs.append(logits)
    logits = np.concatenate(outputs) if outputs else np.zeros((0, 0), np.float32)
    return logits, loss_sum / max(batches.num_samples, 1)


def validation_pass(model, batches: data.Batches, loss_fn) -> dict:
    """Loss, accuracy and logits on every image of ``batches``; with several processes each evaluates its
    share (every image exactly once) and all get the whole result."""
    n, world = batches.num_samples, distributed.world_size()
    if n == 0:  # no validation split (data.val_size 0)
        return {"loss": None, "accuracy": None, "logits": np.zeros((0, 0), np.float32)}
    index = np.arange(n)[distributed.rank()::world]
    mine = data.Batches(batches.x[index], batches.y[index], batches.batch_size, batches.norm)
    logits, loss = batch_logits(eager(model), mine, loss_fn)
    loss = float(distributed.sum_([loss * len(index)])[0]) / n
    logits = distributed.gather_rows(logits, index, n)
    return {"loss": loss, "accuracy": float((logits.argmax(axis=1) == batches.y).mean()), "logits": logits}


def features(model, x: np.ndarray, norm: data.Normalization, batch_size: int = 1000) -> np.ndarray:
    """Penultimate-layer features (N, D) of uint8 images."""
    model.eval()
    out = []
    with paddle.no_grad():
        for i in range(0, len(x), batch_size):
            out.append(model.features(paddle.to_tensor(norm.apply(x[i:i + batch_size]))).numpy())
    return np.concatenate(out).reshape(len(x), -1)


@dataclass
class Trained:
    """A run's checkpoint loaded into its network, with the run's config and data."""

    cfg: config.Config
    path: Path
    state: CheckpointState
    splits: data.Splits
    model: paddle.nn.Layer
    device: str = "cpu"


def load_trained(run: RunDir, epoch: int | None = None, last: bool = False, device: str = "auto") -> Trained:
    """The run's checkpoint (best by default) in its model, on ``device``, in eval mode; data with the
    normalisation recorded in the checkpoint."""
    run = RunDir(run)
    trained_on = run.read_info().get("dataset", {}).get("arrays_sha256")
    cfg = run.read_config()
    path = checkpoint.for_use(run.ckpt_dir, epoch, last)
    state = checkpoint.load(path)
    config.check_same_network(config.stored(state["config"], path), cfg, f"{path}")
    device = select_device(device)
    splits = data.load_splits(cfg, data.Normalization(**state["normalization"]))
    if trained_on and trained_on != splits.prepared.meta.get("arrays_sha256"):
        info(f"warning: the data were prepared again since {run} was trained; its splits now hold other "
             "images than the ones it was trained and validated on")
    model = build_model(cfg.model, splits.prepared.input_shape, len(splits.prepared.classes))
    load_weights(model, checkpoint.weights(state), str(path))
    model.eval()
    return Trained(cfg, path, state, splits, model, device)


def evaluate_run(run: RunDir, epoch: int | None = None, last: bool = False, split: str = "test",
                 device: str = "auto", photos=None, images: bool = False) -> dict:
    """Evaluate a run's checkpoint (best by default) on the test or validation split; and, with ``photos``
    (a function (x_test, y_test, dataset) -> (inputs, labels, kinds, test indices),
    ``deploy.photos.photo_set``), on photos made from the test set, read as ``predict`` reads files, beside
    the same test images as they are (``result["photos"]``). ``result["mistakes"]``: the most confidently
    wrong images (with ``images``, ``result["mistake_images"]`` holds them, uint8)."""
    trained = load_trained(run, epoch, last, device)
    if photos is not None and datasets.get(trained.cfg.data.name).kind != "idx":
        raise UserError(f"--photos makes photos of MNIST-style test images; {run} was trained on an image folder: "
                        "evaluate photos of your own with mnist-kit predict")
    splits, classes = trained.splits, trained.splits.prepared.classes
    if split == "test":
        x, y = splits.prepared.x_test, splits.prepared.y_test
        if len(y) == 0:
            raise UserError(f"{run} has no test split (data.test_ratio is 0); evaluate with --split val")
    else:
        x, y = splits.val.x, splits.val.y
        if len(y) == 0:
            raise UserError(f"{run} has no validation split (it trained on every training image); evaluate on "
                            "the test split")
    batches = data.Batches(x, y, trained.cfg.train.eval_batch_size, splits.norm)
    start = time.perf_counter()
    # on the CPU through Paddle Inference (oneDNN); the GPU runs the eager model fast
    with (traced(trained.model, splits.prepared.input_shape) if trained.device == "cpu"
          else contextlib.nullcontext(eager(trained.model))) as logits_of:
        logits, loss = batch_logits(logits_of, batches, build_loss(trained.cfg.loss))
        seconds = time.perf_counter() - start
        photo_report = photo_accuracy(trained, logits_of, photos) if photos is not None else None
    result = metrics.report(y, logits.argmax(axis=1), len(classes))
    result["mistakes"] = metrics.confident_mistakes(y, metrics.softmax(logits), list(classes))
    result.update({"run": str(run), "checkpoint": trained.path.name, "epoch": trained.state["epoch"],
                   "split": split, "dataset": trained.cfg.data.name, "samples": int(len(y)), "loss": loss,
                   "classes": list(classes),
                   "engine": "Paddle Inference (oneDNN)" if trained.device == "cpu" else f"eager ({trained.device})",
                   "seconds": seconds})
    if photo_report is not None:
        result["photos"] = photo_report
    if images:
        result["mistake_images"] = x[[m["index"] for m in result["mistakes"]]]
    return result


def photo_accuracy(trained: Trained, logits_of, photos) -> dict:
    """Accuracy on the photos ``photos`` makes of test images, overall and per file format, and on the
    same test images as they are."""
    test = trained.splits.prepared
    px, py, kinds, made_from = photos(test.x_test, test.y_test, trained.cfg.data.name)
    if not len(py):
        return {"count": 0, "accuracy": 0.0, "same_test_images_accuracy": 0.0, "by_format": {}}
    batch = trained.cfg.train.eval_batch_size
    right = batch_logits(logits_of, data.Batches(px, py, batch, trained.splits.norm))[0].argmax(axis=1) == py
    as_they_are = data.Batches(test.x_test[made_from], py, batch, trained.splits.norm)
    same = batch_logits(logits_of, as_they_are)[0].argmax(axis=1) == py
    kinds = np.array(kinds)
    return {"count": int(len(py)), "accuracy": float(right.mean()), "same_test_images_accuracy": float(same.mean()),
            "by_format": {k: float(right[kinds == k].mean()) for k in sorted(set(kinds.tolist()))}}
