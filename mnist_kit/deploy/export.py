"""Freeze a trained run into a self-contained inference model, and check the result against the run.

An export folder holds ``model.json`` (Paddle 3; ``model.pdmodel`` with Paddle 2.6) and
``model.pdiparams`` written by ``paddle.jit.save`` with input ``[None, C, H, W]`` float32; ``model.onnx``,
converted by paddle2onnx and checked with onnxruntime (by default wherever both are installed: predict and
serve then run without importing paddle); and
``mnist_kit_model.json``: the normalisation used in training, class names, input size and colour, data
set, source run and checkpoint, versions, and the parity check's results. None of these files is a pickle,
except, with ``--format pdparams``, ``model.pdparams`` and ``model.pdopt``: the model's and the
optimizer's state dicts as ``paddle.save`` writes them (pickles), what Paddle's tutorials load with
``paddle.load`` and ``set_state_dict``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mnist_kit.backend.runtime import versions
from mnist_kit.data import Batches, Splits
from mnist_kit.deploy import inference
from mnist_kit.errors import UserError
from mnist_kit.evaluation import scoring
from mnist_kit.experiments.checkpoint import CheckpointState
from mnist_kit.experiments.rundir import RunDir
from mnist_kit.models.networks import save_program
from mnist_kit.util import faults, provenance
from mnist_kit.util.files import digest, partial_dir, remove_stale_partials, replace_dir

if TYPE_CHECKING:
    from mnist_kit.config import Config

META = inference.META
PARITY_IMAGES = 1000
TOLERANCE = 1e-4  # max |logit difference| between the exported model and the trained network
EXPORT_FILES = frozenset({META, "model.json", "model.pdmodel", "model.pdiparams", "model.onnx", "model.pdparams",
                          "model.pdopt"})  # all it writes


FORMATS = {  # --format: what an export holds besides the Paddle program and the metadata
    "auto": "model.onnx where paddle2onnx and onnxruntime are installed",
    "paddle": "nothing else",
    "onnx": "model.onnx, or an error",
    "pdparams": "as auto, and the state dicts model.pdparams and model.pdopt",
}


def onnx_tools_missing() -> str | None:
    """Why ONNX cannot be written here (paddle2onnx or onnxruntime not installed), or None."""
    import importlib.util

    missing = [m for m in ("paddle2onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
    return f"{' and '.join(missing)} not installed" if missing else None


def export_run(run: RunDir, epoch: int | None = None, last: bool = False, out: Path | None = None,
               fmt: str = "auto") -> inference.ExportMeta:
    """Export a run's checkpoint (best by default); return the metadata written. ``fmt``: see FORMATS; with
    auto, an ONNX model that cannot be written or fails its check is left out, and ``onnx_skipped`` says why."""
    run = RunDir(run)
    trained = scoring.load_trained(run, epoch, last, device="cpu")
    cfg, state, splits, model = trained.cfg, trained.state, trained.splits, trained.model
    classes = list(state["classes"])
    out = _followed(Path(out) if out else run.export_dir(trained.path.stem))
    _check_target(out)
    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    onnx_missing = None if fmt == "paddle" else onnx_tools_missing()
    if fmt == "onnx" and onnx_missing:
        raise UserError(f"--format onnx needs paddle2onnx and onnxruntime ({onnx_missing}): "
                        "pip install 'mnist-kit[onnx]'")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_partials(out.parent, keep=lambda p: not p.is_dir() or any(
            e.name not in EXPORT_FILES for e in p.iterdir()))  # a killed export's folder, nothing else
        tmp = partial_dir(out)
    except OSError as e:
        raise UserError(f"cannot write the export beside {out}: {e.strerror or e}; choose a writable --out") from None
    try:
        save_program(model, tmp / inference.PROGRAM, splits.prepared.input_shape)
        meta = _metadata(run, trained, classes)
        (tmp / META).write_text(json.dumps(meta, indent=2) + "\n")
        reference = Reference(model, splits)
        meta["checks"] = reference.compare("exported model", inference.Predictor(tmp, runtime="paddle").logits)
        if fmt != "paddle":
            meta.update(_onnx(tmp, reference, required=fmt == "onnx", missing=onnx_missing))
        if fmt == "pdparams":
            meta["pdparams"] = _to_pdparams(tmp, cfg, state, reference)
        (tmp / META).write_text(json.dumps(meta, indent=2) + "\n")
        faults.hit("export", 0)
        _check_target(out)  # again: the folder may have changed while the export was checked
        replaced = sorted(e.name for e in out.iterdir() if e.name in EXPORT_FILES and not (tmp / e.name).exists()) \
            if out.is_dir() else []
        _install(tmp, out)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.filename is None:  # a write deep in Paddle or paddle2onnx (a full disk): name where it went
            raise OSError(e.errno, e.strerror, str(out)) from None
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # made by this export: everything in it is its own
        raise
    meta["path"] = str(out)
    meta["replaced_files"] = [n for n in replaced if n in ("model.onnx", "model.pdparams", "model.pdopt")]
    return meta


def _followed(out: Path) -> Path:
    """``--out``, or the folder it links to (export then writes into that folder)."""
    if not out.is_symlink():
        return out
    try:
        return out.resolve()
    except RuntimeError:  # Python 3.11's resolve() on a loop; said as every other command says it
        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), str(out)) from None


def _metadata(run: RunDir, trained: scoring.Trained, classes: list) -> inference.ExportMeta:
    """What the export says of itself (its checks are added once they have passed)."""
    cfg, state, ckpt_path = trained.cfg, trained.state, trained.path
    shape = trained.splits.prepared.input_shape
    return {
        "format": "mnist-kit export 1",
        "input_shape": [None, *shape],
        "input_dtype": "float32",
        "normalization": trained.splits.norm.to_dict(),
        "preprocess": cfg.dataset.photo_style,
        "classes": classes,
        "dataset": cfg.data.name,
        "model": cfg.model.to_dict(),
        **({"image": {k: v for k, v in cfg.data.to_dict().items() if k in ("image_size", "color", "resize")}}
           if cfg.dataset.kind == "folder" else {}),
        "source": {"run": str(run.path.resolve()), "checkpoint": ckpt_path.name, "epoch": state["epoch"],
                   "step": state["step"], "checkpoint_sha256": digest(ckpt_path)},
        "exported_at": provenance.now(),
        "versions": versions(),
    }


def _check_target(out: Path) -> None:
    """Export writes into a new or empty folder, or over an earlier mnist-kit export, and nowhere else."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file; export writes into a folder: choose another --out")
    if out.is_dir() and any(out.iterdir()) and not inference.is_export(out):
        raise UserError(f"{out} is not empty and is not an mnist-kit export (it has no readable {META}); export "
                        "writes only into a new or empty folder or over an earlier export: choose another --out")


def _install(tmp: Path, out: Path) -> None:
    """Put the finished export ``tmp`` at ``out`` in one step. Of an earlier export there, only the files an
    export writes are deleted: anything else the folder held is moved into the new one."""
    old = replace_dir(tmp, out)
    if old is not None:
        for entry in old.iterdir():
            if entry.name not in EXPORT_FILES and not (out / entry.name).exists():
                os.rename(entry, out / entry.name)
        _remove_own(old)


def _remove_own(folder: Path) -> None:
    """Delete the files an export writes from ``folder``, then the folder if that left it empty."""
    for name in EXPORT_FILES:
        (folder / name).unlink(missing_ok=True)
    try:
        folder.rmdir()
    except OSError:
        pass


def _check_split(splits: Splits) -> tuple[str, np.ndarray, np.ndarray]:
    """The images the checks run on: the validation split, or where a run trained on every training image
    (data.val_size 0) the test split, or the training images."""
    p = splits.prepared
    for name, x, y in (("validation", splits.val.x, splits.val.y), ("test", p.x_test, p.y_test),
                       ("training", splits.train.x, splits.train.y)):
        if len(y):
            return name, x, y
    raise UserError("there are no images to check the export on")


class Reference:
    """The trained network's answers on the check split, computed once; ``compare`` holds an exported form of
    the network to them."""

    def __init__(self, model, splits: Splits):
        self.split, x, self.y = _check_split(splits)
        self.norm, self.input_shape = splits.norm, splits.prepared.input_shape
        self.x = x
        self.sample = splits.norm.apply(x[:PARITY_IMAGES])
        trained = scoring.eager(model)
        self.sample_logits = trained(self.sample)
        logits, _ = scoring.batch_logits(trained, Batches(x, self.y, 1000, splits.norm))
        self.accuracy = float((logits.argmax(1) == self.y).mean())

    def compare(self, what: str, logits_of) -> dict:
        """``logits_of`` (normalised batch -> logits) must give the trained network's logits on PARITY_IMAGES
        images within TOLERANCE, and its accuracy; otherwise UserError."""
        diff = float(np.abs(logits_of(self.sample) - self.sample_logits).max())
        if not diff <= TOLERANCE:
            raise UserError(f"the {what} disagrees with the trained network: max logit difference {diff:.3g} "
                            f"> {TOLERANCE:g} on {len(self.sample)} {self.split} images; the export was not kept")
        x = self.x
        predicted = np.concatenate([logits_of(self.norm.apply(x[i:i + 1000])).argmax(1)
                                    for i in range(0, len(x), 1000)])
        acc = float((predicted == self.y).mean())
        if acc != self.accuracy:
            raise UserError(f"the {what}'s {self.split} accuracy {acc:.4%} differs from the checkpoint's "
                            f"{self.accuracy:.4%}; the export was not kept")
        # val_*: on the validation split, unless "split" names another (a run without one)
        return {"max_abs_logit_difference": diff, "tolerance": TOLERANCE, "parity_images": len(self.sample),
                "val_accuracy": acc, "val_accuracy_checkpoint": self.accuracy, "val_images": int(len(self.y)),
                "split": self.split}


def _to_pdparams(folder: Path, cfg: Config, state: CheckpointState, reference: Reference) -> dict:
    """``model.pdparams`` and ``model.pdopt``: the state dicts of the model and of its optimizer, as Paddle
    itself saves them, keyed as a fresh process that builds the model names its parameters; checked by
    loading them back into a new model."""
    from mnist_kit.backend.runtime import paddle
    from mnist_kit.experiments.checkpoint import local_optimizer_state, weights
    from mnist_kit.models.networks import build_model, load_weights

    shape, k = reference.input_shape, len(state["classes"])
    with paddle.utils.unique_name.guard():  # parameter names from 0, as in a new process: the optimizer's keys
        fresh = build_model(cfg.model, shape, k)
    load_weights(fresh, weights(state), "the checkpoint")
    paddle.save(fresh.state_dict(), str(folder / "model.pdparams"))
    paddle.save(local_optimizer_state(state["optimizer"], fresh), str(folder / "model.pdopt"))
    loaded = build_model(cfg.model, shape, k)
    loaded.set_state_dict(paddle.load(str(folder / "model.pdparams")))
    loaded.eval()
    checks = reference.compare("model.pdparams state dict", scoring.eager(loaded))
    return {"model": "model.pdparams", "optimizer": "model.pdopt", "optimizer_name": cfg.optimizer.name,
            "pickle": True, **checks}


def _onnx(folder: Path, reference: Reference, required: bool, missing: str | None) -> inference.ExportMeta:
    """``{"onnx": checks}``; or, where ONNX was not asked for and cannot be written or fails its check,
    ``{"onnx_skipped": why}`` (the export stands without it)."""
    if missing:
        return {"onnx_skipped": missing}
    try:
        return {"onnx": _to_onnx(folder, reference)}
    except UserError as e:
        if required:
            raise
        (folder / inference.ONNX).unlink(missing_ok=True)
        return {"onnx_skipped": str(e)}


def _to_onnx(folder: Path, reference: Reference) -> dict:
    """Convert the Paddle export to ``model.onnx`` and check it with onnxruntime, as the Paddle one is checked."""
    import paddle2onnx

    program, params = inference.model_files(folder)
    target = folder / inference.ONNX
    with _quiet() as said:  # paddle2onnx prints its progress on stdout, from C++ and Python; said: what it printed
        try:
            # optimize_tool="None": the default optimiser pip-installs a package at run time, which fails offline
            paddle2onnx.export(str(program), str(params), save_file=str(target), opset_version=13,
                               optimize_tool="None", verbose=False)
        except Exception as e:  # noqa: BLE001 - paddle2onnx raises assorted types for operators it lacks
            why = str(e).strip()[-300:] or type(e).__name__
            raise UserError(f"paddle2onnx cannot convert the model: {why}") from None
    if not target.is_file():
        last = [line for line in "".join(said).splitlines() if line.strip()][-1:]
        raise UserError("paddle2onnx did not write model.onnx" + (f" ({last[0][:300]})" if last else "")
                        + "; the export was not kept")
    network = inference.OnnxProgram(target)
    checks = reference.compare("ONNX model", network.logits)
    return {"file": inference.ONNX, "opset": 13, "runtime": f"onnxruntime {network.version}",
            "sha256": digest(target), **checks}


@contextlib.contextmanager
def _quiet():
    """Send file descriptors 1 and 2 (C++ output included) to a temporary file; yields a list that holds what
    was written once the block ends."""
    import contextlib
    import io
    import sys
    import tempfile

    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    python = io.StringIO()  # what Python code prints (in Jupyter, sys.stdout is not file descriptor 1)
    with tempfile.TemporaryFile("w+b") as log, contextlib.redirect_stdout(python), contextlib.redirect_stderr(python):
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        said: list[str] = []
        try:
            yield said
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            log.seek(0)
            said.append(log.read().decode(errors="replace") + python.getvalue())
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
