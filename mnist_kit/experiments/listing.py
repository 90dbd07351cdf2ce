"""Finding runs (``find``, ``latest``, ``resolve``: ``--run DIR`` or the newest) and ``mnist-kit runs``: every run
under an output root in a few numbers, compared side by side."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from mnist_kit import config
from mnist_kit.errors import UserError
from mnist_kit.experiments.rundir import RunDir
from mnist_kit.util import readback
from mnist_kit.util.console import info

# The hyper-parameters that lead every comparison of runs (`mnist-kit runs`, the board's table), and
# the config keys that say nothing about the model or its training (never shown as hyper-parameters).
KEY_HPARAMS = ("model.name", "optimizer.name", "optimizer.lr", "train.batch_size")
NOT_HPARAMS = ("output.", "log.", "checkpoint.", "train.log_every", "train.eval_batch_size", "train.device",
               "data.root")


def hparams_shown(cfg: dict, also=()) -> list[str]:
    """The keys (``section.key``) a run shows as its hyper-parameters, in order: the key ones, then
    ``also`` (a sweep's axes), then every other key whose value is not the default."""
    base = config.defaults().to_dict()
    changed = [f"{s}.{k}" for s, sec in cfg.items() if isinstance(sec, dict) for k, v in sec.items()
               if base.get(s, {}).get(k, object()) != v]
    keys = []
    for key in (*KEY_HPARAMS, *also, *changed):
        section, _, name = key.partition(".")
        if key not in keys and not key.startswith(NOT_HPARAMS) and name in cfg.get(section, {}):
            keys.append(key)
    return keys


KEY_COLUMNS = KEY_HPARAMS


# ---------------------------------------------------------------- finding runs

def _folders(folder: Path) -> list[Path]:
    """The sub-folders of ``folder`` ([] if it cannot be listed)."""
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir())
    except OSError:
        return []


def _holds_run(folder: Path) -> bool:
    """Whether ``folder`` has a ``run.json``: any file of that name, a damaged one or a broken link too (listed
    as unreadable rather than not at all)."""
    return os.path.lexists(folder / RunDir.RUN_FILE)


def find(root: str | Path) -> list[RunDir]:
    """The runs under ``root``: its sub-folders that are runs, and theirs (a sweep's runs); ``root`` itself
    if it is a run. Work set aside in ``superseded/`` is not a run."""
    root = Path(root)
    if _holds_run(root):
        return [RunDir(root)]
    children = _folders(root)
    found = [p for p in children if _holds_run(p)] + [p for c in children for p in _folders(c) if _holds_run(p)]
    return [RunDir(p) for p in sorted(p for p in found if p.parent.name != "superseded")]


def latest(root: str | Path) -> RunDir:
    """The run under ``root`` (not a sweep's) started last."""
    root = Path(root)
    candidates = [RunDir(p) for p in _folders(root) if _holds_run(p)]
    if not candidates:
        raise UserError(f"no runs found under {root}; train one with `mnist-kit train`, or pass --run DIR")

    started = {}
    for run in candidates:
        try:
            started[run] = float(run.read_info().get("started", 0.0)), run.name
        except UserError as e:
            info(f"warning: skipping {run}: {e}")
    if not started:
        raise UserError(f"no readable run under {root}; train one with `mnist-kit train`, or pass --run DIR")
    return max(started, key=lambda run: started[run])


def resolve(run: str | Path | None, root: str | Path) -> RunDir:
    """``--run DIR`` checked to be a run, or the newest run under ``root``."""
    if run is None:
        return latest(root)
    path = Path(run)
    if not path.is_dir():
        raise UserError(f"run directory not found: {path}")
    found = RunDir(path)
    found.read_info()
    return found


def _config_problem(cfg) -> str | None:
    """What makes a run's config.yaml unusable for listing (read, not validated: ``config.load`` would refuse
    a config an older version wrote, still worth listing)."""
    if not isinstance(cfg, dict):
        return f"its top level is {type(cfg).__name__}, not a mapping of sections"
    bad = next((s for s, sec in cfg.items() if not isinstance(sec, dict)), None)
    return f"its section {bad[:40]!r} is not a mapping" if bad is not None else None


def summarize(run: RunDir, root: Path | None = None) -> dict:
    """One run in a few numbers: status, epochs, best validation accuracy, training time, hyper-parameters.
    A run whose files cannot be read is "unreadable", with the reason in ``error``."""
    run = RunDir(run)
    name = str(run.path.relative_to(root)) if root is not None and run.path != Path(root) else run.name
    out = {"run": name, "path": str(run.path), "status": "unreadable", "epochs_done": 0, "epochs": None,
           "best_val_acc": None, "train_seconds": 0.0, "started_at": None, "hparams": {}}
    try:
        info = run.read_info()
        cfg = readback.load_yaml(run.config_file, _config_problem) or {}
        rows = run.read_metrics()
        status = info.get("status", "unknown")
        if status == "running" and not run.alive():
            status = "stopped"  # killed without a chance to say so; `mnist-kit resume` continues it
    except (UserError, OSError) as e:
        out["error"] = str(e)
        return out
    epochs = info.get("epochs", cfg.get("train", {}).get("epochs"))  # run.json's: train.steps counted in epochs
    dataset = info.get("dataset", {}).get("name")
    out.update({
        "status": status, "epochs_done": len(rows), "epochs": epochs if isinstance(epochs, int) else None,
        "best_val_acc": max((r["val_acc"] for r in rows if _finite(r.get("val_acc"))), default=None),
        "last_val_acc": rows[-1].get("val_acc") if rows else None,
        "train_seconds": round(sum(r.get("epoch_seconds") or 0.0 for r in rows if _finite(r.get("epoch_seconds"))),
                               1),
        "started_at": info.get("started_at"), "started": info.get("started", 0.0),
        "dataset": dataset if isinstance(dataset, str) else None,
        "early_stop": info.get("early_stop") if isinstance(info.get("early_stop"), dict) else None,
        "hparams": {f"{s}.{k}": v for s, sec in cfg.items() for k, v in sec.items()},
    })
    if "error" in info:
        out["error"] = info["error"]
    return out


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "[" + ",".join(map(str, value)) + "]"
    return str(value)


def differing_keys(summaries: list[dict]) -> list[str]:
    """Hyper-parameters that differ between the runs, beyond the key columns. A run that cannot be read has no
    hyper-parameters to compare: it does not make every key of the others a column."""
    readable = [s for s in summaries if s["status"] != "unreadable"]
    keys = []
    for s in readable:
        keys += [k for k in s["hparams"] if k not in keys]
    return [k for k in keys if k not in KEY_COLUMNS and not k.startswith(NOT_HPARAMS)
            and len({json.dumps(s["hparams"].get(k)) for s in readable}) > 1]


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
        if isinstance(v, (int, float)) and _finite(v):  # numbers before text, whatever a config.yaml holds
            return (False, 0, float(v), "")
        return (v is None, 1, 0.0, json.dumps(v) if not isinstance(v, str) else v)

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
        if s.get("early_stop"):
            epochs += " early"
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
