"""An mnist-kit export read for prediction: its program run by Paddle Inference, with the normalisation
and classes it was trained with. Imports no training code and unpickles nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mnist_kit.data.batches import Normalization  # numpy only: prediction imports no training code
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
    path = Path(folder) / META
    if not path.is_file():
        raise ModelError(f"{folder} is not a mnist-kit export (no {META}); make one with: mnist-kit export")
    try:
        meta = json.loads(path.read_text())
        meta["normalization"]["mean"], meta["normalization"]["std"], meta["classes"]  # noqa: B018 - presence
    except (ValueError, KeyError, TypeError) as e:
        raise ModelError(f"{path} is damaged ({e})") from None
    return meta


def is_export(folder: Path, checked: bool = False) -> bool:
    """Whether ``folder`` holds an mnist-kit export's metadata (with ``checked``: of a complete export that
    passed its checks)."""
    try:
        meta = json.loads((Path(folder) / META).read_text())
    except (OSError, ValueError):
        return False
    return (isinstance(meta, dict) and str(meta.get("format", "")).startswith("mnist-kit export")
            and (not checked or isinstance(meta.get("checks"), dict)))


class Predictor(Program):
    """An mnist-kit export: the program, and the normalisation and classes it was trained with."""

    def __init__(self, folder: Path, device: str = "cpu", threads: int | None = None):
        self.folder = Path(folder)
        self.meta = read_meta(self.folder)
        super().__init__(*model_files(self.folder), device, threads)
        self.norm = Normalization(**self.meta["normalization"])

    def normalize(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W) or (N, H, W, 3) -> float32 (N, C, H, W) with the training normalisation."""
        return self.norm.apply(images)

    def probabilities(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        out = []
        for i in range(0, len(images), batch_size):
            out.append(softmax(self.logits(self.normalize(images[i:i + batch_size]))))
        return np.concatenate(out) if out else np.zeros((0, len(self.meta["classes"])), np.float32)
