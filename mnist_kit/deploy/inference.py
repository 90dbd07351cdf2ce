"""An mnist-kit export read for prediction: its program run by Paddle Inference, with the normalisation
and classes it was trained with. Imports no training code and unpickles nothing."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from mnist_kit.data.batches import Normalization  # numpy only: prediction imports no training code
from mnist_kit.files import read_json
from mnist_kit.metrics import softmax
from mnist_kit.program import Program, ProgramError, program_files

META = "mnist_kit_model.json"
PROGRAM = "model"  # the prefix of the program's files in an export folder


class ModelError(ProgramError):
    """The folder is not a usable mnist-kit export."""


def model_files(folder: Path) -> tuple[Path, Path]:
    found = program_files(Path(folder) / PROGRAM)
    if found is None:
        raise ModelError(f"{folder} is not a mnist-kit export (no model.json/model.pdmodel with model.pdiparams); "
                         "make one with: mnist-kit export")
    return found


def read_meta(folder: Path) -> dict:
    """The export's metadata, checked against what ``mnist-kit export`` writes; ModelError if it differs."""
    path = Path(folder) / META
    if not path.is_file():
        raise ModelError(f"{folder} is not a mnist-kit export (no {META}); make one with: mnist-kit export")
    meta, problem = read_json(path, meta_problem)
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
    meta, problem = read_json(Path(folder) / META, lambda m: None if isinstance(m, dict) else "not an object")
    return (not problem and str(meta.get("format", "")).startswith("mnist-kit export")
            and (not checked or isinstance(meta.get("checks"), dict)))


class Predictor(Program):
    """An mnist-kit export: the program, and the normalisation and classes it was trained with."""

    def __init__(self, folder: Path, device: str = "cpu", threads: int | None = None):
        self.folder = Path(folder)
        self.meta = read_meta(self.folder)
        super().__init__(*model_files(self.folder), device, threads)
        self.norm = Normalization(**self.meta["normalization"])
        self._check_program()

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
