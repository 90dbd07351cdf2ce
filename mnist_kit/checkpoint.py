"""Checkpoints: the full training state, written atomically, listed in a manifest with checksums.

``<run>/ckpt/epoch_NNN.pdckpt`` after each epoch (epochs count from 0) and ``best.pdckpt``;
``<run>/ckpt/manifest.json`` is rewritten last after each save, so a file that is not in the manifest
with a matching SHA-256 is never loaded. Checkpoints are pickles (``paddle.save``): load only your own.
"""

from __future__ import annotations

import json
import pickle
import time
from pathlib import Path

from mnist_kit import UserError
from mnist_kit.files import atomic_path, digest, write_text
from mnist_kit.runtime import paddle

CKPT_DIR = "ckpt"
MANIFEST = "manifest.json"


class CheckpointError(UserError):
    pass


def epoch_file(epoch: int) -> str:
    return f"epoch_{epoch:03d}.pdckpt"


def manifest(run_dir: Path) -> dict:
    path = Path(run_dir) / CKPT_DIR / MANIFEST
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (ValueError, OSError) as e:
        raise CheckpointError(f"{path} is damaged ({e}); the checkpoints of this run cannot be trusted") from None


def save(run_dir: Path, name: str, state: dict) -> Path:
    folder = Path(run_dir) / CKPT_DIR
    target = folder / name
    try:
        with atomic_path(target) as tmp:
            paddle.save(state, str(tmp))
        entries = manifest(run_dir)
        entries[name] = {"sha256": digest(target), "bytes": target.stat().st_size, "epoch": state.get("epoch"),
                         "step": state.get("step"), "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        write_text(folder / MANIFEST, json.dumps(entries, indent=2, sort_keys=True) + "\n")
    except OSError as e:
        raise CheckpointError(f"cannot write checkpoint {target}: {e.strerror or e}; "
                              "the previous checkpoints are unchanged") from None
    return target


def load(path: Path) -> dict:
    """Load a checkpoint after checking it against its run's manifest."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    entry = manifest(path.parent.parent).get(path.name)
    if entry is None:
        raise CheckpointError(f"{path} is not listed in {path.parent / MANIFEST}: it was not completely written "
                              "or does not belong to this run")
    if digest(path) != entry["sha256"]:
        raise CheckpointError(f"{path} is damaged: its SHA-256 differs from the one recorded when it was written")
    try:
        return paddle.load(str(path))
    except (pickle.UnpicklingError, EOFError, ValueError, OSError) as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from None
