"""Checkpoints: the full training state, written atomically, listed in a manifest with checksums, and the
choice of a checkpoint to resume from or to evaluate and export.

Every function takes the checkpoint folder (``RunDir.ckpt_dir``). Files in it:

- ``epoch_NNN.pdckpt``: the state at the end of epoch NNN (epochs count from 0);
- ``step_NNNNNNN.pdckpt``: the state after global step N inside an epoch (``checkpoint.every_steps``);
- ``best.pdckpt``: the epoch checkpoint with the best ``train.monitor`` so far (validation accuracy by default);
- ``manifest.json``: SHA-256, size, epoch and step of each file, rewritten (atomically) after the file is
  in place. A file that is not in the manifest, or whose SHA-256 differs, is never loaded.

Each file is written to a temporary name, fsynced and renamed, so a crash at any moment leaves the
previous checkpoints intact. Checkpoints are pickles (``paddle.save``): load only checkpoints you trust.
"""

from __future__ import annotations

import json
import pickle
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict, cast

from mnist_kit.errors import UserError
from mnist_kit.util import faults, provenance, readback
from mnist_kit.util.console import info
from mnist_kit.util.files import atomic_path, digest, write_text

if TYPE_CHECKING:
    from mnist_kit.config import Config

MANIFEST = "manifest.json"
BEST = "best.pdckpt"
NAME = re.compile(r"^(epoch_\d{3,}|step_\d{7,}|best)\.pdckpt$")  # the only names a manifest may list


class CheckpointState(TypedDict):
    """What a checkpoint holds: the whole training state (``Trainer.state``), read back by resume, eval,
    export and ``train.init_from``. Tensors are Paddle's; the rest is plain Python."""

    model: dict  # the network's state dict (the stock layers' parameter names)
    optimizer: dict  # portable_optimizer_state: keyed by parameter name, not Paddle's generated names
    schedule: dict
    rng: dict  # backend.runtime.rng_state
    epoch: int  # the epoch in progress (epoch_complete False) or just completed
    step: int  # global steps done
    step_in_epoch: int
    epoch_complete: bool
    epoch_progress: dict  # the epoch's running sums so far (a mid-epoch checkpoint)
    data_order: dict  # seed, epoch, step_in_epoch: where the shuffled order continues
    best_val_acc: float
    watch: dict  # train.monitor: best, best_epoch, stale
    config: dict  # the resolved config the run trained with
    config_hash: str
    world_size: int  # processes that trained it
    normalization: dict  # mean, std
    classes: list
    fast_conv: dict  # models.onednn.Choice.record()
    versions: dict
    ema: dict | None  # train.ema's averaged weights, or None
    scaler: dict | None  # fp16's loss scale, or None


class CheckpointError(UserError):
    pass


def epoch_file(epoch: int) -> str:
    return f"epoch_{epoch:03d}.pdckpt"


def step_file(step: int) -> str:
    return f"step_{step:07d}.pdckpt"


def manifest(folder: Path) -> dict:
    """The manifest's entries, each checked to name a file mnist-kit writes, inside ``folder``, with the
    fields it writes; CheckpointError if one does not."""
    path = Path(folder) / MANIFEST
    if not path.exists() and not path.is_symlink():
        return {}
    entries, problem = readback.read_json(path, _manifest_problem)
    if problem:
        raise CheckpointError(f"{path} is damaged ({problem}); the checkpoints of this run cannot be trusted")
    return entries


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _manifest_problem(entries) -> str | None:
    """What is wrong with a manifest read from disk, or None."""
    if not isinstance(entries, dict):
        return f"it holds a JSON {type(entries).__name__}, not an object of checkpoints"
    for name, e in entries.items():
        if not NAME.match(name):
            return f"{name[:80]!r} is not the name of a checkpoint mnist-kit writes"
        if not isinstance(e, dict):
            return f"the entry of {name} is not an object"
        if not (isinstance(e.get("sha256"), str) and re.fullmatch(r"[0-9a-f]{64}", e["sha256"])):
            return f"the entry of {name} has no valid sha256"
        bad = [k for k in ("bytes", "epoch", "step") if not _is_count(e.get(k))]
        if bad or not isinstance(e.get("complete_epoch"), bool):
            return f"the entry of {name} has an invalid {(bad or ['complete_epoch'])[0]}"
    return None


def _write_manifest(folder: Path, entries: dict) -> None:
    write_text(Path(folder) / MANIFEST, json.dumps(entries, indent=2, sort_keys=True) + "\n")


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


def save(folder: Path, name: str, state: CheckpointState) -> Path:
    """Write ``state`` as ``folder/name`` and record it in the manifest."""
    # here, not at the top: listing and choosing checkpoints needs no paddle
    from mnist_kit.backend.runtime import paddle

    target = Path(folder) / name
    try:
        with atomic_path(target) as tmp:
            paddle.save(state, str(tmp))
            faults.hit("checkpoint-write", state.get("step", -1))
        entries = manifest(folder)
        entries[name] = {"sha256": digest(target), "bytes": target.stat().st_size, "epoch": state["epoch"],
                         "step": state["step"], "complete_epoch": state["epoch_complete"],
                         "saved_at": provenance.now()}
        _write_manifest(folder, entries)
    except OSError as e:
        raise CheckpointError(f"cannot write checkpoint {target}: {e.strerror or e}; "
                              "the earlier checkpoints are intact") from None
    return target


def periodic(folder: Path) -> list[tuple[str, dict]]:
    """(name, entry) of the epoch and step checkpoints in the manifest, oldest first."""
    entries = manifest(folder)
    return sorted(((n, e) for n, e in entries.items() if n != BEST), key=lambda ne: (ne[1]["step"], ne[0]))


def apply_retention(folder: Path, keep_last: int) -> list[str]:
    """Keep the newest ``keep_last`` epoch checkpoints (0: all) and only the step checkpoints newer than the
    newest epoch checkpoint (at most ``keep_last`` of them); delete the rest and return their names."""
    entries = periodic(folder)
    epochs = [n for n, e in entries if e["complete_epoch"]]
    newest_epoch_step = max((e["step"] for n, e in entries if e["complete_epoch"]), default=-1)
    steps = [n for n, e in entries if not e["complete_epoch"]]
    doomed = [n for n, e in entries if not e["complete_epoch"] and e["step"] <= newest_epoch_step]
    if keep_last > 0:
        doomed += epochs[:-keep_last] + [n for n in steps if n not in doomed][:-keep_last]
    if doomed:
        listed = manifest(folder)
        for n in doomed:
            listed.pop(n, None)
        _write_manifest(folder, listed)  # first forget them, then delete: a crash leaves only orphans
        for n in doomed:
            (Path(folder) / n).unlink(missing_ok=True)
    return doomed


def set_aside_after(folder: Path, step: int, dest: Path) -> list[str]:
    """Move the checkpoints written after global ``step`` (best included) to ``dest``; return their names."""
    entries = manifest(folder)
    later = sorted(n for n, e in entries.items() if e["step"] > step)
    if later:
        dest.mkdir(parents=True, exist_ok=True)
        for n in later:
            entries.pop(n)
        _write_manifest(folder, entries)
        for n in later:
            src = Path(folder) / n
            if src.exists():
                shutil.move(str(src), dest / n)
    return later


def load(path: Path) -> CheckpointState:
    """Load a checkpoint after checking it against its run's manifest."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    entry = manifest(path.parent).get(path.name)
    if entry is None:
        raise CheckpointError(f"{path} is not listed in {path.parent / MANIFEST}: it was not completely written "
                              "or does not belong to this run")
    if path.stat().st_size != entry["bytes"] or digest(path) != entry["sha256"]:
        raise CheckpointError(f"{path} is damaged: its content differs from what was written (SHA-256 mismatch)")
    state = _read(path, f"cannot read checkpoint {path}", CheckpointError)
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path} is not a mnist-kit checkpoint")
    return cast(CheckpointState, state)  # as Trainer.state wrote it: the digest in the manifest matched


def _read(path: Path, problem: str, error=UserError):
    """``paddle.load(path)``; ``error(problem: reason)`` for a file it cannot read."""
    from mnist_kit.backend.runtime import paddle

    try:
        return paddle.load(str(path))
    except (pickle.UnpicklingError, EOFError, ValueError, OSError, AttributeError, ImportError) as e:
        raise error(f"{problem}: {e}") from None
    except Exception as e:  # noqa: BLE001 - a hostile or foreign pickle fails in any way (TypeError, KeyError...)
        raise error(f"{problem}: {type(e).__name__}: {e}") from None


def remove_partials(folder: Path) -> list[Path]:
    """Delete temporary files left by a process killed while writing a checkpoint."""
    found = list(Path(folder).glob(".*.partial"))
    for p in found:
        p.unlink(missing_ok=True)
    return found


# ---------------------------------------------------------------- choosing a checkpoint

def _no_such_epoch(folder: Path, epoch: int, entries) -> CheckpointError:
    epochs = sorted(e["epoch"] for _, e in entries if e["complete_epoch"])
    return CheckpointError(f"{folder} has no checkpoint of epoch {epoch}; it has epochs "
                           f"{', '.join(map(str, epochs)) or 'none'} (epochs count from 0)")


def for_use(folder: Path, epoch: int | None = None, last: bool = False) -> Path:
    """The checkpoint to evaluate or export: ``best.pdckpt`` by default, the last epoch's with ``last``, or
    epoch ``epoch``'s."""
    folder = Path(folder)
    entries = [(n, e) for n, e in periodic(folder) if e["complete_epoch"]]
    if not entries:
        raise CheckpointError(f"{folder} has no checkpoint of a complete epoch yet")
    if epoch is not None:
        if epoch_file(epoch) not in dict(entries):
            raise _no_such_epoch(folder, epoch, entries)
        return folder / epoch_file(epoch)
    if last or BEST not in manifest(folder):
        return folder / entries[-1][0]
    return folder / BEST


def check_processes(state: CheckpointState, path: Path, cfg: Config, world: int) -> None:
    """A checkpoint ``state`` written by another number of processes than ``world`` resumes only where the
    global batch may change: at the end of an epoch with a constant schedule, past its warm-up."""
    was, now = state.get("world_size", 1), world
    if was == now:
        return
    if not state["epoch_complete"] or cfg.schedule.name != "constant" or (
            cfg.schedule.warmup_epochs > state["epoch"] + 1):
        raise UserError(f"{path.name} was written by {was} process(es) and this job has {now}: that is only "
                        "possible from the end of an epoch with a constant schedule (past its warm-up); resume "
                        "with the same number of processes")
    info(f"warning: resuming a {was}-process run with {now} process(es): the global batch changes, so the rest "
         "of the run is not what it would have been")


def for_resume(folder: Path, epoch: int | None = None) -> tuple[Path, CheckpointState]:
    """(path, state) to resume from: the end of epoch ``epoch`` (a damaged file is an error), or else the
    newest intact checkpoint, mid-epoch ones included (damaged ones are skipped with a warning)."""
    folder = Path(folder)
    entries = periodic(folder)
    if not entries:
        raise CheckpointError(f"{folder} has no checkpoint to resume from; train a new run instead")
    if epoch is not None:
        if epoch_file(epoch) not in dict(entries):
            raise _no_such_epoch(folder, epoch, entries)
        return folder / epoch_file(epoch), load(folder / epoch_file(epoch))
    damaged = []
    for name, _ in reversed(entries):
        try:
            state = load(folder / name)
        except CheckpointError as e:
            damaged.append(str(e))
            continue
        for d in damaged:
            info(f"warning: skipping a damaged checkpoint: {d}")
        if damaged:
            info(f"falling back to the newest intact checkpoint, {name}")
        return folder / name, state
    raise CheckpointError(f"every checkpoint in {folder} is damaged:\n" + "\n".join(f"  - {d}" for d in damaged))


EXPORT_META = "mnist_kit_model.json"  # what marks an export folder (written by deploy/export.py)


def initial_weights(path: Path) -> tuple[dict, dict]:
    """``train.init_from``: the model weights in ``path`` and a record of where they came from. ``path`` is
    a run (its best checkpoint), a checkpoint file, or an export (its ``model.pdparams``, else the checkpoint
    it was made from, if that is still there unchanged)."""
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise UserError(f"train.init_from: {path} is a symbolic link to nothing (a loop, or its target is gone)")
    if path.is_dir() and (path / "ckpt").is_dir():
        return _weights_of(for_use(path / "ckpt"), "run", path)
    if path.is_file() and path.suffix == ".pdckpt":
        return _weights_of(path, "checkpoint")
    if path.is_dir() and (path / EXPORT_META).is_file():
        return _export_weights(path)
    raise UserError(f"train.init_from: {path} is not a run directory, a checkpoint (.pdckpt) or an export folder"
                    if path.exists() else f"train.init_from: {path} does not exist")


def weights(state: CheckpointState) -> dict:
    """The weights a checkpoint is used with (eval, export, ``train.init_from``): the moving average of the
    weights when its run kept one (``train.ema``), else the trained weights (``state["model"]``, what a
    resume continues from)."""
    ema = state.get("ema")
    if isinstance(ema, dict) and isinstance(ema.get("weights"), dict):
        return ema["weights"]
    return state["model"]


def _weights_of(ckpt: Path, kind: str, source: Path | None = None) -> tuple[dict, dict]:
    state = load(ckpt)
    return weights(state), {"path": str((source or ckpt).resolve()), "kind": kind, "file": str(ckpt.resolve()),
                            "sha256": digest(ckpt), "epoch": state.get("epoch"), "step": state.get("step")}


def _export_weights(folder: Path) -> tuple[dict, dict]:
    if (folder / "model.pdparams").is_file():
        weights = _read(folder / "model.pdparams", f"train.init_from: cannot read {folder / 'model.pdparams'}")
        if not isinstance(weights, dict):
            raise UserError(f"train.init_from: {folder / 'model.pdparams'} is not a state dict")
        return weights, {"path": str(folder.resolve()), "kind": "export", "file": "model.pdparams",
                         "sha256": digest(folder / "model.pdparams")}
    meta, problem = readback.read_json(folder / EXPORT_META, lambda m: readback.shape_problem(
        m, {"source": {"run": str, "checkpoint": str, "checkpoint_sha256": str}}))
    if problem:
        raise UserError(f"train.init_from: {folder / EXPORT_META} cannot be read: {problem}")
    source = meta["source"]
    ckpt, sha = Path(source["run"]) / "ckpt" / source["checkpoint"], source["checkpoint_sha256"]
    if not NAME.match(source["checkpoint"]):
        raise UserError(f"train.init_from: {folder / EXPORT_META} names {source['checkpoint'][:80]!r}, not a "
                        "checkpoint mnist-kit writes")
    if not ckpt.is_file() or digest(ckpt) != sha:
        raise UserError(f"train.init_from: the export {folder} holds no model.pdparams and the checkpoint it was "
                        f"made from ({ckpt}) is gone or changed; export it with --format pdparams, or start "
                        "from a run or checkpoint")
    return _weights_of(ckpt, "export", folder)
