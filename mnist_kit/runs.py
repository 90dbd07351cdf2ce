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


# ---------------------------------------------------------------- listing and comparing runs

KEY_COLUMNS = ("model.name", "optimizer.name", "optimizer.lr", "train.batch_size")
# config keys that say nothing about the model or its training: never shown as differing
_NOT_HPARAMS = ("output.", "log.", "checkpoint.", "train.log_every", "train.eval_batch_size", "train.device",
                "data.root")


def find_runs(root: Path) -> list[Path]:
    """Run directories under ``root``: its sub-folders, and theirs (the runs of a sweep)."""
    root = Path(root)
    if (root / RUN_FILE).is_file():
        return [root]
    found = list(root.glob(f"*/{RUN_FILE}")) + list(root.glob(f"*/*/{RUN_FILE}")) if root.is_dir() else []
    return sorted(p.parent for p in found if p.parent.parent.name != "superseded")


def _alive(run_dir: Path) -> bool:
    """Whether a process holds the run's training lock right now."""
    import fcntl

    lock = Path(run_dir) / ".lock"
    if not lock.is_file():
        return False
    with open(lock, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False


def summarize(run_dir: Path, root: Path | None = None) -> dict:
    """One run in a few numbers: status, epochs, best validation accuracy, training time, hyper-parameters."""
    import yaml

    run_dir = Path(run_dir)
    name = str(run_dir.relative_to(root)) if root is not None and run_dir != Path(root) else run_dir.name
    out = {"run": name, "path": str(run_dir), "status": "unreadable", "epochs_done": 0, "epochs": None,
           "best_val_acc": None, "train_seconds": 0.0, "started_at": None, "hparams": {}}
    try:
        info = json.loads((run_dir / RUN_FILE).read_text())
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    except (OSError, ValueError, yaml.YAMLError) as e:
        out["error"] = str(e)
        return out
    status = info.get("status", "unknown")
    if status == "running" and not _alive(run_dir):
        status = "stopped"  # killed without a chance to say so; `mnist-kit resume` continues it
    rows = []
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file():
        for line in metrics.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
    out.update({
        "status": status, "epochs_done": len(rows), "epochs": cfg.get("train", {}).get("epochs"),
        "best_val_acc": max((r["val_acc"] for r in rows), default=None),
        "last_val_acc": rows[-1]["val_acc"] if rows else None,
        "train_seconds": round(sum(r.get("epoch_seconds", 0.0) for r in rows), 1),
        "started_at": info.get("started_at"), "started": info.get("started", 0.0),
        "dataset": info.get("dataset", {}).get("name"),
        "hparams": {f"{s}.{k}": v for s, sec in cfg.items() if isinstance(sec, dict) for k, v in sec.items()},
    })
    if "error" in info:
        out["error"] = info["error"]
    return out


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "[" + ",".join(map(str, value)) + "]"
    return str(value)


def differing_keys(summaries: list[dict]) -> list[str]:
    """Hyper-parameters that differ between the runs, beyond the key columns."""
    keys = []
    for s in summaries:
        keys += [k for k in s["hparams"] if k not in keys]
    return [k for k in keys if k not in KEY_COLUMNS and not k.startswith(_NOT_HPARAMS)
            and len({json.dumps(s["hparams"].get(k)) for s in summaries}) > 1]


SORT_KEYS = ("started", "run", "acc", "time", "status", "epochs")


def sort_runs(summaries: list[dict], key: str = "started", reverse: bool = False) -> list[dict]:
    """By start time, name, best validation accuracy (best first), training time, status, epochs, or any
    config key (``optimizer.lr``)."""
    if key not in SORT_KEYS and not any(key in s["hparams"] for s in summaries):
        raise UserError(f"cannot sort by '{key}': use one of {', '.join(SORT_KEYS)} or a config key such as "
                        "optimizer.lr")

    def value(s):
        acc = s["best_val_acc"]
        v = {"started": s.get("started", 0.0), "run": s["run"], "acc": -acc if acc is not None else 1.0,
             "time": s["train_seconds"], "status": s["status"], "epochs": s["epochs_done"]}.get(key)
        if v is None and key not in ("acc",):
            v = s["hparams"].get(key)
        return (v is None, json.dumps(v) if isinstance(v, (list, dict)) else v if v is not None else 0)

    return sorted(summaries, key=value, reverse=reverse)


def format_table(summaries: list[dict]) -> str:
    """The runs as an aligned table: key hyper-parameters, those that differ, and the results."""
    if not summaries:
        return "no runs"
    extra = differing_keys(summaries)
    head = ["run", "status", *KEY_COLUMNS, *extra, "epochs", "best val acc", "train time"]
    rows = []
    for s in summaries:
        hp = s["hparams"]
        epochs = f"{s['epochs_done']}/{s['epochs']}" if s["epochs"] is not None else "-"
        acc = f"{100 * s['best_val_acc']:.2f}%" if s["best_val_acc"] is not None else "-"
        secs = s["train_seconds"]
        time_ = f"{secs / 60:.1f} min" if secs >= 60 else f"{secs:.1f} s"
        rows.append([s["run"], s["status"], *(_short(hp.get(k, "-")) for k in (*KEY_COLUMNS, *extra)), epochs, acc,
                     time_])
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    numeric = {i for i, h in enumerate(head) if h in ("optimizer.lr", "train.batch_size", "epochs", "best val acc",
                                                      "train time")}
    fmt = lambda r: "  ".join(str(c).rjust(w) if i in numeric else str(c).ljust(w)  # noqa: E731
                              for i, (c, w) in enumerate(zip(r, widths))).rstrip()
    return "\n".join([fmt(head), "  ".join("-" * w for w in widths), *map(fmt, rows)])
