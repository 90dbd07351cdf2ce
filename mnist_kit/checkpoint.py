"""Checkpoints: the full training state, written atomically, listed in a manifest with checksums.

Files in ``<run>/ckpt/``:

- ``epoch_NNN.pdckpt``: the state at the end of epoch NNN (epochs count from 0);
- ``step_NNNNNNN.pdckpt``: the state after global step N inside an epoch (``checkpoint.every_steps``);
- ``best.pdckpt``: the epoch checkpoint with the best validation accuracy so far;
- ``manifest.json``: SHA-256, size, epoch and step of each file, rewritten (atomically) after the file is
  in place. A file that is not in the manifest, or whose SHA-256 differs, is never loaded.

Each file is written to a temporary name, fsynced and renamed, so a crash at any moment leaves the
previous checkpoints intact. Checkpoints are pickles (``paddle.save``): load only checkpoints you trust.
"""

from __future__ import annotations

import json
import pickle
import shutil
import time
from pathlib import Path

from mnist_kit import UserError, faults
from mnist_kit.files import atomic_path, digest, write_text
from mnist_kit.runtime import paddle

CKPT_DIR = "ckpt"
MANIFEST = "manifest.json"
BEST = "best.pdckpt"


class CheckpointError(UserError):
    pass


def epoch_file(epoch: int) -> str:
    return f"epoch_{epoch:03d}.pdckpt"


def step_file(step: int) -> str:
    return f"step_{step:07d}.pdckpt"


def manifest(run_dir: Path) -> dict:
    path = Path(run_dir) / CKPT_DIR / MANIFEST
    if not path.is_file():
        return {}
    try:
        entries = json.loads(path.read_text())
        assert isinstance(entries, dict)
        return entries
    except (ValueError, OSError, AssertionError) as e:
        raise CheckpointError(f"{path} is damaged ({e}); the checkpoints of this run cannot be trusted") from None


def _write_manifest(run_dir: Path, entries: dict) -> None:
    write_text(Path(run_dir) / CKPT_DIR / MANIFEST, json.dumps(entries, indent=2, sort_keys=True) + "\n")


def portable_optimizer_state(opt_state: dict, model) -> dict:
    """Paddle keys optimizer state by generated parameter names (``linear_3.w_0_moment1_0``), which depend on
    how many layers the process created before. Re-key by the model's structured names (``fc.weight``)."""
    names = {p.name: n for n, p in model.named_parameters()}
    out = {}
    for key, value in opt_state.items():
        owner = next((pn for pn in names if key.startswith(pn + "_")), None)
        out[f"@{names[owner]}{key[len(owner):]}" if owner else key] = value
    return out


def local_optimizer_state(opt_state: dict, model) -> dict:
    """The inverse of ``portable_optimizer_state`` for this process's parameter names."""
    params = {n: p.name for n, p in model.named_parameters()}
    out = {}
    for key, value in opt_state.items():
        if key.startswith("@"):
            owner = next((n for n in sorted(params, key=len, reverse=True) if key[1:].startswith(n + "_")), None)
            if owner is None:
                raise CheckpointError(f"the checkpoint's optimizer state names parameter {key[1:]!r}, "
                                      "which this model does not have")
            key = params[owner] + key[1 + len(owner):]
        out[key] = value
    return out


def save(run_dir: Path, name: str, state: dict) -> Path:
    """Write ``state`` as ``<run>/ckpt/<name>`` and record it in the manifest."""
    folder = Path(run_dir) / CKPT_DIR
    target = folder / name
    try:
        with atomic_path(target) as tmp:
            paddle.save(state, str(tmp))
            faults.hit("checkpoint-write", state.get("step", -1))
        entries = manifest(run_dir)
        entries[name] = {"sha256": digest(target), "bytes": target.stat().st_size, "epoch": state["epoch"],
                         "step": state["step"], "complete_epoch": state["epoch_complete"],
                         "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        _write_manifest(run_dir, entries)
    except OSError as e:
        raise CheckpointError(f"cannot write checkpoint {target}: {e.strerror or e}; "
                              "the earlier checkpoints are intact") from None
    return target


def periodic(run_dir: Path) -> list[tuple[str, dict]]:
    """(name, entry) of the epoch and step checkpoints in the manifest, oldest first."""
    entries = manifest(run_dir)
    return sorted(((n, e) for n, e in entries.items() if n != BEST), key=lambda ne: (ne[1]["step"], ne[0]))


def apply_retention(run_dir: Path, keep_last: int) -> list[str]:
    """Keep the newest ``keep_last`` epoch checkpoints (0: all) and only the step checkpoints newer than the
    newest epoch checkpoint (at most ``keep_last`` of them); delete the rest and return their names."""
    entries = periodic(run_dir)
    epochs = [n for n, e in entries if e["complete_epoch"]]
    newest_epoch_step = max((e["step"] for n, e in entries if e["complete_epoch"]), default=-1)
    steps = [n for n, e in entries if not e["complete_epoch"]]
    doomed = [n for n, e in entries if not e["complete_epoch"] and e["step"] <= newest_epoch_step]
    if keep_last > 0:
        doomed += epochs[:-keep_last] + [n for n in steps if n not in doomed][:-keep_last]
    if doomed:
        entries = manifest(run_dir)
        for n in doomed:
            entries.pop(n, None)
        _write_manifest(run_dir, entries)  # first forget them, then delete: a crash leaves only orphans
        for n in doomed:
            (Path(run_dir) / CKPT_DIR / n).unlink(missing_ok=True)
    return doomed


def set_aside_after(run_dir: Path, step: int, dest: Path) -> list[str]:
    """Move the checkpoints written after global ``step`` (best included) to ``dest``; return their names."""
    entries = manifest(run_dir)
    later = sorted(n for n, e in entries.items() if e["step"] > step)
    if later:
        dest.mkdir(parents=True, exist_ok=True)
        for n in later:
            entries.pop(n)
        _write_manifest(run_dir, entries)
        for n in later:
            src = Path(run_dir) / CKPT_DIR / n
            if src.exists():
                shutil.move(str(src), dest / n)
    return later


def load(path: Path) -> dict:
    """Load a checkpoint after checking it against its run's manifest."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    entry = manifest(path.parent.parent).get(path.name)
    if entry is None:
        raise CheckpointError(f"{path} is not listed in {path.parent / MANIFEST}: it was not completely written "
                              "or does not belong to this run")
    if path.stat().st_size != entry["bytes"] or digest(path) != entry["sha256"]:
        raise CheckpointError(f"{path} is damaged: its content differs from what was written (SHA-256 mismatch)")
    try:
        state = paddle.load(str(path))
    except (pickle.UnpicklingError, EOFError, ValueError, OSError, AttributeError, ImportError) as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path} is not a mnist-kit checkpoint")
    return state


def remove_partials(run_dir: Path) -> list[Path]:
    """Delete temporary files left by a process killed while writing a checkpoint."""
    found = list((Path(run_dir) / CKPT_DIR).glob(".*.partial"))
    for p in found:
        p.unlink(missing_ok=True)
    return found
