"""Run directories: one per training run under the output root, never overwritten."""

from __future__ import annotations

import json
import time
from pathlib import Path

from mnist_kit import UserError

RUN_FILE = "run.json"


def create_run_dir(root: Path, name: str | None, prefix: str) -> Path:
    """Create ``root/name`` (or ``root/<prefix>-<timestamp>``); refuse to reuse an existing run."""
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the output folder {root}: {e.strerror}; set output.root to a writable "
                        "folder") from None
    if name:
        if "/" in name or name in (".", ".."):
            raise UserError(f"run name '{name}' must be a plain folder name")
        path = root / name
        try:
            path.mkdir()
        except FileExistsError:
            raise UserError(f"run {path} already exists; choose another --name (runs are never overwritten)") from None
        return path
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for i in range(1, 1000):
        path = root / (f"{prefix}-{stamp}" + (f"-{i}" if i > 1 else ""))
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise UserError(f"cannot create a run directory under {root}")  # pragma: no cover


def read_run(run_dir: Path) -> dict:
    try:
        return json.loads((Path(run_dir) / RUN_FILE).read_text())
    except FileNotFoundError:
        raise UserError(f"{run_dir} is not a mnist-kit run (no {RUN_FILE})") from None
    except ValueError as e:
        raise UserError(f"{Path(run_dir) / RUN_FILE} is damaged: {e}") from None


def latest_run(root: Path) -> Path:
    root = Path(root)
    runs = [p for p in root.glob(f"*/{RUN_FILE}")] if root.is_dir() else []
    if not runs:
        raise UserError(f"no runs found under {root}; train one with `mnist-kit train`, or pass --run DIR")
    def started(p: Path):
        try:
            return float(json.loads(p.read_text()).get("started", 0.0)), p.parent.name
        except (ValueError, OSError):
            return 0.0, p.parent.name

    return max(runs, key=started).parent


def resolve_run(run: str | None, root: str | Path) -> Path:
    if run is None:
        return latest_run(Path(root))
    path = Path(run)
    if not path.is_dir():
        raise UserError(f"run directory not found: {path}")
    read_run(path)
    return path
