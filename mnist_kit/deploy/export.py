"""Freeze a trained run into a self-contained inference model, and check the result against the run.

An export folder holds ``model.json`` (Paddle 3; ``model.pdmodel`` with Paddle 2.6) and
``model.pdiparams`` written by ``paddle.jit.save`` with input ``[None, C, H, W]`` float32 (with
``--format onnx`` also ``model.onnx``, converted by paddle2onnx and checked with onnxruntime), and
``mnist_kit_model.json``: the normalisation used in training, class names, input size and colour, data
set, source run and checkpoint, versions, and the parity check's results. None of these files is a pickle,
except, with ``--format pdparams``, ``model.pdparams`` and ``model.pdopt``: the model's and the
optimizer's state dicts as ``paddle.save`` writes them (pickles), what Paddle's tutorials load with
``paddle.load`` and ``set_state_dict``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from mnist_kit import UserError, evaluate, faults, provenance
from mnist_kit.data import Batches, Splits
from mnist_kit.deploy import inference, preprocess
from mnist_kit.files import digest, partial_dir, remove_stale_partials, replace_dir
from mnist_kit.models import save_program
from mnist_kit.rundir import RunDir
from mnist_kit.runtime import versions

META = inference.META
PARITY_IMAGES = 1000
TOLERANCE = 1e-4  # max |logit difference| between the exported model and the trained network
EXPORT_FILES = frozenset({META, "model.json", "model.pdmodel", "model.pdiparams", "model.onnx", "model.pdparams",
                          "model.pdopt"})  # all it writes


def export_run(run: RunDir, epoch: int | None = None, last: bool = False, out: Path | None = None,
               fmt: str = "paddle") -> dict:
    """Export a run's checkpoint (best by default); return the metadata written."""
    run = RunDir(run)
    trained = evaluate.load_trained(run, epoch, last, device="cpu")
    cfg, ckpt_path, state, splits, model = trained.cfg, trained.path, trained.state, trained.splits, trained.model
    norm, classes = splits.norm, list(state["classes"])
    out = Path(out) if out else run.export_dir(ckpt_path.stem)
    out = out.resolve() if out.is_symlink() else out  # a link to a folder: export into that folder
    _check_target(out)
    if fmt == "onnx":
        try:
            import onnxruntime  # noqa: F401
            import paddle2onnx  # noqa: F401
        except ImportError:
            raise UserError("--format onnx needs paddle2onnx and onnxruntime: pip install 'mnist-kit[onnx]'") from None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_partials(out.parent, keep=lambda p: not p.is_dir() or any(
            e.name not in EXPORT_FILES for e in p.iterdir()))  # a killed export's folder, nothing else
        tmp = partial_dir(out)
    except OSError as e:
        raise UserError(f"cannot write the export beside {out}: {e.strerror or e}; choose a writable --out") from None
    try:
        shape = splits.prepared.input_shape
        save_program(model, tmp / inference.PROGRAM, shape)
        meta = {
            "format": "mnist-kit export 1",
            "input_shape": [None, *shape],
            "input_dtype": "float32",
            "normalization": norm.to_dict(),
            "preprocess": preprocess.STYLE_OF_DATASET.get(cfg["data"]["name"], "folder"),
            "classes": classes,
            "dataset": cfg["data"]["name"],
            "model": cfg["model"],
            **({"image": {k: cfg["data"][k] for k in ("image_size", "color", "resize")}}
               if cfg["data"]["name"] == "image_folder" else {}),
            "source": {"run": str(run.path.resolve()), "checkpoint": ckpt_path.name, "epoch": state["epoch"],
                       "step": state["step"], "checkpoint_sha256": digest(ckpt_path)},
            "exported_at": provenance.now(),
            "versions": versions(),
        }
        (tmp / META).write_text(json.dumps(meta, indent=2) + "\n")
        meta["checks"] = _check(tmp, model, splits)
        if fmt == "onnx":
            meta["onnx"] = _to_onnx(tmp, model, splits)
        if fmt == "pdparams":
            meta["pdparams"] = _to_pdparams(tmp, cfg, state, model, splits)
        (tmp / META).write_text(json.dumps(meta, indent=2) + "\n")
        faults.hit("export", 0)
        _check_target(out)  # again: the folder may have changed while the export was checked
        _install(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # made by this export: everything in it is its own
        raise
    meta["path"] = str(out)
    return meta


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


def _compare(what: str, logits_of, model, splits: Splits) -> dict:
    """``logits_of`` (normalised batch -> logits) must give the trained network's logits on PARITY_IMAGES
    validation images within TOLERANCE, and its validation accuracy; otherwise UserError."""
    split, x, y = _check_split(splits)
    sample = splits.norm.apply(x[:PARITY_IMAGES])
    trained = evaluate.eager(model)
    diff = float(np.abs(logits_of(sample) - trained(sample)).max())
    if not diff <= TOLERANCE:
        raise UserError(f"the {what} disagrees with the trained network: max logit difference {diff:.3g} "
                        f"> {TOLERANCE:g} on {len(sample)} {split} images; the export was not kept")
    trained_logits, _ = evaluate.predict(trained, Batches(x, y, 1000, splits.norm))
    predicted = np.concatenate([logits_of(splits.norm.apply(x[i:i + 1000])).argmax(1)
                                for i in range(0, len(x), 1000)])
    trained_acc, acc = float((trained_logits.argmax(1) == y).mean()), float((predicted == y).mean())
    if acc != trained_acc:
        raise UserError(f"the {what}'s {split} accuracy {acc:.4%} differs from the checkpoint's "
                        f"{trained_acc:.4%}; the export was not kept")
    # val_*: on the validation split, unless "split" names another (a run without one)
    return {"max_abs_logit_difference": diff, "tolerance": TOLERANCE, "parity_images": len(sample),
            "val_accuracy": acc, "val_accuracy_checkpoint": trained_acc, "val_images": int(len(y)), "split": split}


def _check(folder: Path, model, splits: Splits) -> dict:
    """The exported model, run by Paddle Inference, against the trained network."""
    return _compare("exported model", inference.Predictor(folder).logits, model, splits)


def _to_pdparams(folder: Path, cfg: dict, state: dict, model, splits: Splits) -> dict:
    """``model.pdparams`` and ``model.pdopt``: the state dicts of the model and of its optimizer, as Paddle
    itself saves them, keyed as a fresh process that builds the model names its parameters; checked by
    loading them back into a new model."""
    from mnist_kit.checkpoint import local_optimizer_state
    from mnist_kit.models import build_model, load_weights
    from mnist_kit.runtime import paddle

    shape, k = splits.prepared.input_shape, len(splits.prepared.classes)
    with paddle.utils.unique_name.guard():  # parameter names from 0, as in a new process: the optimizer's keys
        fresh = build_model(cfg["model"], shape, k)
    load_weights(fresh, state["model"], "the checkpoint")
    paddle.save(fresh.state_dict(), str(folder / "model.pdparams"))
    paddle.save(local_optimizer_state(state["optimizer"], fresh), str(folder / "model.pdopt"))
    loaded = build_model(cfg["model"], shape, k)
    loaded.set_state_dict(paddle.load(str(folder / "model.pdparams")))
    loaded.eval()
    checks = _compare("model.pdparams state dict", evaluate.eager(loaded), model, splits)
    return {"model": "model.pdparams", "optimizer": "model.pdopt", "optimizer_name": cfg["optimizer"]["name"],
            "pickle": True, **checks}


def _to_onnx(folder: Path, model, splits: Splits) -> dict:
    """Convert the Paddle export to ``model.onnx`` and check it with onnxruntime, as the Paddle one is checked."""
    import os

    import onnxruntime as ort
    import paddle2onnx

    program, params = inference.model_files(folder)
    # optimize_tool="None": the default optimiser pip-installs a package at run time, which fails offline
    paddle2onnx.export(str(program), str(params), save_file=str(folder / "model.onnx"),
                       opset_version=13, optimize_tool="None", verbose=False)
    if not (folder / "model.onnx").is_file():
        raise UserError("paddle2onnx did not write model.onnx; the export was not kept")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = min(2, os.cpu_count() or 1)
    session = ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    checks = _compare("ONNX model", lambda batch: session.run(None, {name: batch})[0], model, splits)
    return {"file": "model.onnx", "opset": 13, "runtime": f"onnxruntime {ort.__version__}", **checks}
