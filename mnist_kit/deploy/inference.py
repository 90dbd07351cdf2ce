"""An mnist-kit export read for prediction: its network run by onnxruntime (``model.onnx``, without importing
paddle) or by Paddle Inference (``model.json``/``model.pdiparams``), with the normalisation and classes it was
trained with. Imports no training code and unpickles nothing."""

from __future__ import annotations

import importlib.util
import json
import math
import os
from pathlib import Path
from typing import TypedDict

import numpy as np

from mnist_kit.backend.paddle_inference import Program, ProgramError, program_files
from mnist_kit.data.batches import Normalization  # numpy only: prediction imports no training code
from mnist_kit.errors import UserError
from mnist_kit.evaluation.metrics import softmax
from mnist_kit.util import readback
from mnist_kit.util.files import digest

META = "mnist_kit_model.json"
PROGRAM = "model"  # the prefix of the program's files in an export folder
ONNX = "model.onnx"
# which library runs the network: "auto" takes onnxruntime where the export holds a checked model.onnx and
# onnxruntime is installed (about 0.2 s and 50 MB to import, against paddle's 1.2 s and 300 MB), else paddle
RUNTIMES = ("auto", "onnxruntime", "paddle")


class ModelError(ProgramError):
    """The folder is not a usable mnist-kit export."""


def model_files(folder: Path) -> tuple[Path, Path]:
    found = program_files(Path(folder) / PROGRAM)
    if found is None:
        raise ModelError(f"{folder} is not a mnist-kit export (no model.json/model.pdmodel with model.pdiparams); "
                         "make one with: mnist-kit export")
    return found


class ExportMeta(TypedDict, total=False):
    """``mnist_kit_model.json``: what an export says of itself. ``deploy/export.py`` writes it, the checks last;
    ``meta_problem`` says what a reader may rely on; ``predict`` and ``serve`` read it."""

    format: str  # "mnist-kit export 1"
    input_shape: list  # [None, channels, height, width]
    input_dtype: str  # float32
    normalization: dict  # mean, std: applied to [0, 1] pixels before the network
    preprocess: str  # how a person's image is framed: digit, fill or folder (datasets.DataSet.photo_style)
    classes: list[str]
    dataset: str  # data.name
    model: dict  # the config's model section
    image: dict  # an image folder's image_size, color and resize
    source: dict  # run, checkpoint, epoch, step, checkpoint_sha256
    exported_at: str
    versions: dict
    checks: dict  # the Paddle program's agreement with the checkpoint
    onnx: dict  # model.onnx: its checks and sha256
    onnx_skipped: str  # why there is no model.onnx
    pdparams: dict  # --format pdparams: the files and their checks
    path: str  # where it was written (in export's answer, not the file)
    replaced_files: list[str]


def read_meta(folder: Path) -> ExportMeta:
    """The export's metadata, checked against what ``mnist-kit export`` writes; ModelError if it differs."""
    path = Path(folder) / META
    if not path.exists() and not path.is_symlink():
        raise ModelError(f"{folder} is not a mnist-kit export (no {META}); make one with: mnist-kit export")
    meta, problem = readback.read_json(path, meta_problem)
    if problem:
        raise ModelError(f"{path} is damaged or was edited: {problem}; export the run again")
    return meta


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def meta_problem(meta) -> str | None:
    """What in ``meta`` differs from what an export writes (types, ranges, and agreement between the
    input shape, the preprocessing and the image settings), or None."""
    if not isinstance(meta, dict):
        return "it is not a JSON object"
    norm, shape, classes = meta.get("normalization"), meta.get("input_shape"), meta.get("classes")
    if not (isinstance(norm, dict) and set(norm) == {"mean", "std"} and _number(norm["mean"])
            and _number(norm["std"]) and 0 <= norm["mean"] <= 1 and 0 < norm["std"] <= 1):
        return "normalization must be {mean in [0, 1], std in (0, 1]} and nothing else"
    if not (isinstance(shape, list) and len(shape) == 4 and shape[0] is None and shape[1] in (1, 3)
            and all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 4096 for v in shape[2:])):
        return "input_shape must be [null, 1 or 3, height, width]"
    if not (isinstance(classes, list) and 2 <= len(classes) <= 100000 and all(isinstance(c, str) for c in classes)):
        return "classes must be a list of at least 2 names"
    style = meta.get("preprocess")
    if style not in ("digit", "fill", "folder"):
        return f"preprocess is {json.dumps(style)[:40]}; it is digit, fill or folder"
    if style != "folder":
        return None if shape[1:] == [1, 28, 28] else f"preprocess {style} makes 1x28x28 inputs, not {shape[1:]}"
    image = meta.get("image")
    if not (isinstance(image, dict) and image.get("color") in ("grayscale", "rgb")
            and image.get("resize") in ("stretch", "pad") and image.get("image_size") == shape[2:]
            and shape[1] == (3 if image["color"] == "rgb" else 1)):
        return "image must give the image_size, color and resize that input_shape and the model were made for"
    return None


def is_export(folder: Path, checked: bool = False) -> bool:
    """Whether ``folder`` holds an mnist-kit export's metadata (with ``checked``: of a complete export that
    passed its checks)."""
    meta, problem = readback.read_json(Path(folder) / META, lambda m: None if isinstance(m, dict) else "not an object")
    return (not problem and str(meta.get("format", "")).startswith("mnist-kit export")
            and (not checked or isinstance(meta.get("checks"), dict)))


def choose_runtime(folder: Path, meta: ExportMeta, runtime: str = "auto", device: str = "cpu") -> str:
    """"onnxruntime" or "paddle" for this export; ModelError/UserError if the one asked for cannot run it."""
    folder = Path(folder)
    has_onnx = (folder / ONNX).is_file() and isinstance(meta.get("onnx"), dict)  # written and checked by export
    if runtime == "paddle":
        return "paddle"
    if runtime == "onnxruntime":
        if not has_onnx:
            raise ModelError(f"{folder} holds no checked {ONNX}; export it with --format onnx, or use --runtime paddle")
        if not device.startswith("cpu"):
            raise UserError("--runtime onnxruntime runs on the CPU only; use --runtime paddle for a GPU")
        if importlib.util.find_spec("onnxruntime") is None:
            raise UserError("--runtime onnxruntime needs onnxruntime: pip install onnxruntime")
        return "onnxruntime"
    if runtime != "auto":
        raise UserError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
    usable = has_onnx and device.startswith("cpu") and importlib.util.find_spec("onnxruntime") is not None
    return "onnxruntime" if usable else "paddle"


def _check_digest(path: Path, sha256: str | None) -> None:
    """An ONNX file is a whole model in itself: another one put in its place would run and answer for a
    different network. So it must be the file export checked (ModelError otherwise)."""
    if sha256 is not None and digest(path) != sha256:
        raise ModelError(f"{path} is not the file export checked (its SHA-256 differs); export the run again")


class OnnxProgram:
    """``model.onnx`` run by onnxruntime on the CPU: normalised float32 batches in, logits out. A session may
    be run from several threads at once."""

    def __init__(self, path: Path, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only
        options.intra_op_num_threads = threads or min(2, os.cpu_count() or 1)
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own assorted types
            raise ModelError(f"onnxruntime cannot load {path}: {str(e).strip().splitlines()[-1][:300]}; "
                             "export the run again") from None
        self.input = self.session.get_inputs()[0].name
        self.version = ort.__version__

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: np.ascontiguousarray(x, dtype=np.float32)})[0]


class Predictor:
    """An mnist-kit export: its network (on ``runtime``, see RUNTIMES), and the normalisation and classes it
    was trained with. ``logits`` and ``probabilities`` may be called from several threads at once."""

    def __init__(self, folder: Path, device: str = "cpu", threads: int | None = None, runtime: str = "auto"):
        self.folder = Path(folder)
        self.meta = read_meta(self.folder)
        self.runtime = choose_runtime(self.folder, self.meta, runtime, device)
        self.network: OnnxProgram | Program
        if self.runtime == "onnxruntime":
            _check_digest(self.folder / ONNX, self.meta["onnx"].get("sha256"))
            self.network = OnnxProgram(self.folder / ONNX, threads)
        else:
            self.network = Program(*model_files(self.folder), device, threads)
        self.norm = Normalization(**self.meta["normalization"])
        self._check_program()

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Normalised float32 (N, C, H, W) -> logits (N, classes)."""
        return self.network.logits(x)

    def _check_program(self) -> None:
        """The program takes the metadata's input shape and gives one logit per class: else ModelError."""
        shape, classes = self.meta["input_shape"], self.meta["classes"]
        try:
            out = self.logits(np.zeros((1, *shape[1:]), np.float32))
        except Exception as e:  # noqa: BLE001 - Paddle raises assorted types for a mismatched input
            raise ModelError(f"{self.folder}: the model does not take the {shape[1:]} input its metadata gives "
                             f"({str(e).strip().splitlines()[-1][:200] if str(e).strip() else type(e).__name__}); "
                             "export the run again") from None
        if out.shape != (1, len(classes)):
            raise ModelError(f"{self.folder}: the model gives {out.shape[-1]} outputs but its metadata names "
                             f"{len(classes)} classes; export the run again")

    def normalize(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W) or (N, H, W, 3) -> float32 (N, C, H, W) with the training normalisation."""
        return self.norm.apply(images)

    def probabilities(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        out = []
        for i in range(0, len(images), batch_size):
            out.append(softmax(self.logits(self.normalize(images[i:i + batch_size]))))
        return np.concatenate(out) if out else np.zeros((0, len(self.meta["classes"])), np.float32)
