"""The run directory: the only code that knows its layout, names it, locks it and reads or writes its records.

    RUN/config.yaml          the resolved config (rewritten only by a resume with accepted changes)
    RUN/run.json             status, provenance, data set, normalisation, resumes
    RUN/metrics.jsonl        one JSON row per epoch, appended and fsynced
    RUN/ckpt/                checkpoints and their manifest (what is inside: checkpoint.py)
    RUN/vdl/                 the VisualDL log
    RUN/vdl/val/             its second writer: validation lines drawn over training's in one chart
    RUN/graph/NAME/          the model graph for the board (written by graph.py), in a folder named
                             after the run: the board's graph page labels a model by its folder
    RUN/logs/                the workers' logs of a multi-process run
    RUN/export/NAME/         exports (what is inside: deploy/export.py)
    RUN/superseded/STAMP/    work set aside by a resume from an earlier point
    RUN/.lock                locked by the process that trains the run

Runs live under an output root (``output.root``), one folder each, named ``output.name`` or
``<config name>-<timestamp>``; a sweep's runs are one level deeper. An existing run is never reused.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from pathlib import Path
from typing import Any, TypedDict

from mnist_kit import config
from mnist_kit.errors import UserError
from mnist_kit.util import provenance, readback
from mnist_kit.util.files import PARTIAL, locked_by_another, overwrite_in_place, try_lock, write_bytes, write_text


class RunDir:
    """One run's folder and its files."""

    RUN_FILE = "run.json"

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __str__(self) -> str:
        return str(self.path)

    def __fspath__(self) -> str:
        return str(self.path)

    def __eq__(self, other) -> bool:
        return isinstance(other, RunDir) and self.path == other.path

    def __hash__(self) -> int:
        return hash(self.path)

    @property
    def name(self) -> str:
        return self.path.name

    # ---------------------------------------------------------------- the layout
    @property
    def config_file(self) -> Path:
        return self.path / "config.yaml"

    @property
    def info_file(self) -> Path:
        return self.path / self.RUN_FILE

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def ckpt_dir(self) -> Path:
        return self.path / "ckpt"

    @property
    def vdl_dir(self) -> Path:
        return self.path / "vdl"

    @property
    def vdl_val_dir(self) -> Path:
        """The VisualDL folder of the validation lines that ``vdl/`` draws training's beside."""
        return self.vdl_dir / "val"

    @property
    def graph_dir(self) -> Path:
        """Named after the run: the board's dynamic graph page lists models by their folder's name."""
        return self.path / "graph" / self.name

    @property
    def graph_prefix(self) -> Path:
        """Where graph.py saves the model's program (``networks.save_program``'s prefix)."""
        return self.graph_dir / "model"

    @property
    def graph_model(self) -> Path:
        """The program file the board's static graph page reads."""
        return self.graph_dir / "model.pdmodel"

    def sweep_keys(self) -> list[str]:
        """The config keys (``section.key``) the sweep or the tune study this run belongs to varies ([] outside
        them): its folder's sweep.json ``grid`` or study.json ``space``."""
        for file, key in (("sweep.json", "grid"), ("study.json", "space")):
            if not (self.path.parent / file).is_file():
                continue
            found, problem = readback.read_json(self.path.parent / file)
            keys = found.get(key) if not problem and isinstance(found, dict) else None
            return [k for k in keys if isinstance(k, str)] if isinstance(keys, dict) else []
        return []

    @property
    def logs_dir(self) -> Path:
        return self.path / "logs"

    @property
    def lock_file(self) -> Path:
        return self.path / ".lock"

    def export_dir(self, name: str) -> Path:
        return self.path / "export" / name

    def exports(self) -> list[Path]:
        """The export folders (not the hidden ones an export in progress, or killed, builds in)."""
        folder = self.path / "export"
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))

    def new_superseded_dir(self) -> Path:
        """A fresh folder name (not created) for work set aside now."""
        return self.path / "superseded" / provenance.stamp()

    # ---------------------------------------------------------------- creating, locking
    @classmethod
    def create(cls, root: str | Path, name: str | None, prefix: str) -> RunDir:
        """Create ``root/name``, or ``root/<prefix>-<timestamp>`` (``-2``, ``-3``... if that is taken), and
        return it; refuse to reuse an existing run. The folder that ``train --nproc`` reserved for its
        workers (``$MNIST_KIT_RESERVED_RUN``, see launch.py) is taken over if it is still empty."""
        root = Path(root)
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create the output folder {root}: {e.strerror}; set output.root to a writable "
                            "folder") from None
        if name:
            if not config.NAME.match(name):
                raise UserError(f"run name {config.excerpt(name)} must be a plain folder name of at most 200 letters, "
                                "digits and . _ - + = , : @ that starts with a letter or digit")
            candidates = [name]
        else:
            stamp = provenance.stamp()
            candidates = [f"{prefix}-{stamp}" + (f"-{i}" if i > 1 else "") for i in range(1, 1000)]
        for candidate in candidates:
            path = root / candidate
            try:
                path.mkdir()
                return cls(path)
            except FileExistsError:
                if _reserved_for_us(path):
                    return cls(path)
                if name:
                    raise UserError(f"run {path} already exists; choose another --name (runs are never "
                                    "overwritten)") from None
        raise UserError(f"cannot create a run directory under {root}")  # pragma: no cover

    @contextlib.contextmanager
    def lock(self):
        """Hold the run's training lock: one process trains a run at a time; the lock dies with its process,
        ``kill -9`` included."""
        held = try_lock(self.lock_file)
        if held is None:
            raise UserError(f"{self.path} is being trained by another process right now")
        try:
            yield
        finally:
            held.close()  # the lock goes with the file

    def alive(self) -> bool:
        """Whether a process holds the training lock right now."""
        if not self.lock_file.is_file():
            return False
        try:
            return locked_by_another(self.lock_file)
        except OSError:  # not a file that can be locked (a link to a folder, no permission): no trainer holds it
            return False

    # ---------------------------------------------------------------- records
    def read_info(self) -> RunInfo:
        """``run.json``; UserError if the folder is not a run or the file is damaged."""
        if not self.info_file.exists() and not self.info_file.is_symlink():
            raise UserError(f"{self.path} is not a mnist-kit run (no {self.RUN_FILE})")
        info, problem = readback.read_json(self.info_file, _info_problem)
        if problem:
            raise UserError(f"{self.info_file} is damaged: {problem}")
        return info

    def write_info(self, info: RunInfo) -> None:
        text = json.dumps(info, indent=2) + "\n"
        try:
            write_text(self.info_file, text)
        except OSError as e:  # a full disk has no room for a new file, but still has the old one's blocks
            if e.errno not in (errno.ENOSPC, errno.EDQUOT) or not self.info_file.is_file():
                raise
            overwrite_in_place(self.info_file, text.encode())

    def read_config(self, overrides=()) -> config.Config:
        """The run's config.yaml, validated (with ``overrides`` as ``-o`` gives them)."""
        if not self.config_file.is_file():
            raise UserError(f"{self.path} has no config.yaml: it is not a complete mnist-kit run (it is written when "
                            "a run starts; restore it from a copy of the run)")
        return config.load(self.config_file, overrides)

    def write_config(self, cfg: config.Config) -> None:
        write_text(self.config_file, config.dump(cfg))

    def append_metrics(self, row: dict) -> None:
        """Add one epoch's row, on disk before this returns."""
        try:
            with open(self.metrics_file, "a") as f:
                f.write(json.dumps(row) + "\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            e.filename = e.filename or str(self.metrics_file)  # a write's ENOSPC names no file
            raise

    def remove_if_unstarted(self) -> bool:
        """Delete this run's folder if it holds nothing but what starting it writes (``.lock``, ``config.yaml``,
        ``run.json`` and their temporary files): a run that failed to start (a full disk) leaves nothing behind.
        Anything else in it, and the folder stays."""
        ours = {self.lock_file.name, self.config_file.name, self.info_file.name}
        try:
            entries = list(self.path.iterdir())
            if any(p.name not in ours and not PARTIAL.match(p.name) or p.is_dir() for p in entries):
                return False
            for p in entries:
                p.unlink()
            self.path.rmdir()
        except OSError:
            return False
        return True

    def _metrics_bytes(self) -> bytes:
        """``metrics.jsonl`` as it is on disk (b"" before the first row)."""
        if not self.metrics_file.exists() and not self.metrics_file.is_symlink():
            return b""
        return readback.read_bytes(self.metrics_file, readback.MAX_METRICS)

    @staticmethod
    def _metrics_lines(raw: bytes) -> list[tuple[str, dict | None]]:
        """Each line of ``metrics.jsonl`` with its row, or None for a line that is not one (cut short by a crash)."""
        out: list[tuple[str, dict | None]] = []
        for line in raw.decode("utf-8", errors="surrogateescape").split("\n"):  # a line not UTF-8 is no row
            try:
                row = readback.parse_json(line)
            except ValueError:
                row = None
            if line.strip():
                out.append((line, row if _is_row(row) else None))
        return out

    def read_metrics(self) -> list[dict]:
        """The epoch rows; a line cut short by a crash is left out."""
        return [row for _, row in self._metrics_lines(self._metrics_bytes()) if row is not None]

    def set_aside_metrics_after(self, step: int, dest: Path) -> int:
        """Move the metrics rows of global steps after ``step`` (and a row cut short by a crash) into
        ``dest/metrics.jsonl``, which gets a copy of every row as it was; return how many moved."""
        raw = self._metrics_bytes()
        lines = self._metrics_lines(raw)
        keep = [line for line, row in lines if row is not None and row["step"] <= step]
        if len(keep) != len(lines):
            dest.mkdir(parents=True, exist_ok=True)
            write_bytes(dest / "metrics.jsonl", raw)
            write_text(self.metrics_file, "".join(line + "\n" for line in keep))
        return len(lines) - len(keep)

    def set_aside_after(self, step: int) -> tuple[Path, list[str]]:
        """Move what was written after global step ``step`` -- metrics rows and checkpoints -- into a new
        ``superseded/STAMP/`` folder; return the folder and what moved. (The VisualDL records after ``step``
        go there too: ``Logbook(resume_step=step, superseded=folder)``.)"""
        from mnist_kit.experiments import (
            checkpoint,  # here: reading runs (runs, predict's newest export) needs no training code
        )

        dest, moved = self.new_superseded_dir(), []
        rows = self.set_aside_metrics_after(step, dest)
        if rows:
            moved.append(f"{rows} metrics row(s)")
        later = checkpoint.set_aside_after(self.ckpt_dir, step, dest)
        if later:
            moved.append(", ".join(later))
        return dest, moved


class RunInfo(TypedDict, total=False):
    """``run.json``: what a run is and how it went. ``training/start.py`` writes it at the start and on resume,
    ``training/engine.py`` after every epoch and at the end; ``mnist-kit runs``, ``eval`` and ``export`` read it.
    Every key is optional to a reader (a run killed at its start has few); ``INFO_TYPES`` checks those read."""

    name: str
    config_name: str
    config_hash: str
    status: str  # running, completed, interrupted, failed
    started: float  # time.time() at the start
    started_at: str  # the same, as text (util.provenance.now)
    finished_at: str
    command: list[str]  # the command line that started it
    seed: int
    device: str
    versions: dict
    normalization: dict  # mean, std
    classes: list[str]
    dataset: dict  # name, source, train / val / test sizes, arrays_sha256
    input_shape: list[int]
    world_size: int  # processes
    epochs: int  # the run's length: train.epochs, or train.steps counted in whole epochs of its data
    fast_conv: dict  # models.onednn.Choice.record()
    init_from: dict | None  # train.init_from: where the weights came from
    epochs_done: int
    best_val_acc: float
    early_stop: dict | None  # epoch, reason
    resumes: list[dict]  # one per resume: from, step, at, changes, set_aside, command, fast_conv
    error: str  # why it failed


class RunRecord:
    """``run.json`` as a dict kept in memory and written whole on every change. With ``write=False`` (every
    process but rank 0 of a multi-process job) it is only kept."""

    def __init__(self, run: RunDir, data: RunInfo, write: bool = True):
        self.run, self.data, self.write = run, data, write

    def save(self, **updates: Any) -> None:
        self.data.update(updates)  # type: ignore[typeddict-item]  # keyword names are RunInfo's
        if self.write:
            self.run.write_info(self.data)


# the only values of a metrics row that differ between identical runs (what a bit-for-bit comparison leaves out)
TIMING_KEYS = ("images_per_sec", "epoch_seconds", "elapsed_seconds")
RESERVED_ENV = "MNIST_KIT_RESERVED_RUN"
# the fields of run.json that are read back, and their types
INFO_TYPES: dict[str, type | tuple[type, ...]] = {
    "status": str, "started": (int, float), "started_at": str, "dataset": dict, "normalization": dict,
              "classes": list, "input_shape": list, "resumes": list, "world_size": int, "error": str, "epochs": int}


def _info_problem(info) -> str | None:
    if not isinstance(info, dict):
        return f"it holds a JSON {type(info).__name__}, not an object"
    for key, kind in INFO_TYPES.items():
        if key in info and (not isinstance(info[key], kind) or isinstance(info[key], bool)):
            return f"{key} is {json.dumps(info[key])[:60]}, not a {getattr(kind, '__name__', 'number')}"
    return None


def _is_row(row) -> bool:
    """A metrics row as written: an object with an integer epoch and step, and numbers (or nulls) as values."""
    return (isinstance(row, dict) and all(isinstance(row.get(k), int) for k in ("epoch", "step"))
            and all(v is None or isinstance(v, (int, float)) and not isinstance(v, bool) for v in row.values()))


def _reserved_for_us(path: Path) -> bool:
    reserved = os.environ.get(RESERVED_ENV)
    return reserved is not None and bool(reserved) and Path(reserved).resolve() == path.resolve() and not any(
        path.iterdir())
