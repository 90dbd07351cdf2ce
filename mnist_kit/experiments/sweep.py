"""``mnist-kit sweep``: train every combination of a grid of config values, one run each, under one folder.

``-o optimizer.lr=0.01,0.005,0.001 -o model.name=cnn,mlp`` makes a 3 x 2 grid (a value with no comma is
the same for every run; a list value is written ``[8,16]``, and ``[8,16],[16,32]`` gives two). Every
combination is checked before anything runs. Each run is a ``mnist-kit train`` process of its own, so one
failing run does not stop the others; its output goes to ``SWEEP/logs/RUN.log``. Runs are named by their
values (``lr=0.01,model=cnn``), so re-running the same command finds them: a completed run is skipped (or,
given a larger ``train.epochs``, trained on), an interrupted one with a checkpoint is resumed, one that failed
before its first checkpoint is set aside and trained again. A run that a process is training right now (its
lock is held) is never touched. One sweep at a time runs in a folder (``SWEEP/.sweep.lock``); its runs die with
it, ``kill -9`` included, and a signal that stops it (Ctrl-C, SIGTERM, SIGHUP) is passed on to them as it came.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from mnist_kit import config, data
from mnist_kit.errors import ConfigError, UserError
from mnist_kit.experiments import checkpoint, listing
from mnist_kit.experiments.rundir import RunDir
from mnist_kit.util import interrupts, provenance, readback
from mnist_kit.util.console import info
from mnist_kit.util.files import try_lock, write_text

LOCK = ".sweep.lock"  # in the sweep folder: held by the sweep that runs there


@dataclass
class Planned:
    name: str
    overrides: list[str]  # this run's grid values, as -o texts
    cfg: config.Config


def parse_grid(overrides: list[str]) -> tuple[list[str], list[tuple[str, list]]]:
    """(-o texts shared by every run, [(key, [values])] of the grid's axes)."""
    fixed: list[str] = []
    axes: list[tuple[str, list]] = []
    for text in overrides:
        config.refuse_control_characters(text)
        head, _, raw = text.partition("=")
        (section, key), _ = config.parse_override(f"{head}=" if "=" in text else text)  # checks section.key
        try:
            values = config.parse_yaml("[" + raw + "]") if raw.strip() else [None]
        except ValueError as e:
            raise ConfigError(f"-o {config.clip(text)}: cannot read the values ({e}); "
                              "separate them with commas, "
                              f"e.g. -o optimizer.lr=0.01,0.001") from None
        if len(values) > 1:
            dotted = f"{section}.{key}"
            if dotted in (k for k, _ in axes):
                raise ConfigError(f"{dotted} is given twice; list all its values in one -o")
            axes.append((dotted, values))
        else:
            fixed.append(text)
    swept = {k for k, _ in axes}
    both = sorted({t.partition("=")[0].strip() for t in fixed} & swept)
    if both:  # the grid's value would silently win
        raise ConfigError(f"{', '.join(both)} is given one value and several values; give it in one -o "
                          f"(all its values, or just one)")
    for key, values in axes:
        texts = [json.dumps(v, sort_keys=True) for v in values]
        twice = sorted({t for t in texts if texts.count(t) > 1})
        if twice:
            raise ConfigError(f"{key} lists {', '.join(twice)} more than once; list each value once")
    return fixed, axes


def _label(key: str, axes) -> str:
    section, name = key.split(".")
    if name == "name":
        return section
    clashes = sum(k.split(".")[1] == name for k, _ in axes)
    return name if clashes == 1 else key


def _value_text(value, values=()) -> str:
    """A value as a part of a run name; a structured one (model.blocks) by its place among the axis's values:
    v1, v2, ... (sweep.json keeps the values)."""
    if isinstance(value, dict) or isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        return f"v{values.index(value) + 1}"
    if isinstance(value, list):
        return "-".join(map(str, value))
    if isinstance(value, float):  # as short as %g where that is still the value, else all its digits
        short = f"{value:g}"
        return short if float(short) == value else repr(value)
    return str(value).replace("/", "_")


def plan(config_path: Path | None, overrides: list[str]) -> tuple[list[str], list[tuple[str, list]], list[Planned]]:
    """Every run of the grid with its config, all validated first (ConfigError lists every bad combination)."""
    fixed, axes = parse_grid(overrides)
    if not axes:
        raise UserError("a sweep needs at least one -o key with several values, e.g. -o optimizer.lr=0.01,0.001")
    planned, errors = [], []
    for combo in itertools.product(*(values for _, values in axes)):
        texts = [f"{k}={json.dumps(v)}" for (k, _), v in zip(axes, combo)]
        name = ",".join(f"{_label(k, axes)}={_value_text(v, values)}" for (k, values), v in zip(axes, combo))
        if not config.NAME.match(name):
            errors.append(f"{config.clip(name)}: its values do not make a run name (a plain folder name of at "
                          "most 200 letters, digits and . _ - + = , : @)")
            continue
        try:
            cfg = config.load(config_path, [*fixed, *texts])
        except ConfigError as e:
            errors.append(f"{name}: {'; '.join(e.problems)}")
            continue
        planned.append(Planned(name, texts, cfg))
    names = [p.name for p in planned]
    errors += [f"{n}: {names.count(n)} combinations make this run name (values that differ only in type, such as "
               "1 and 1.0); give the values once" for n in sorted(set(names)) if names.count(n) > 1]
    if errors:
        raise ConfigError("some combinations of the sweep are not valid configs; nothing was run:\n"
                          + "\n".join(f"  {e}" for e in errors))
    return fixed, axes, planned


def _state(run: RunDir, cfg: config.Config) -> str:
    """new | busy | completed | resumable | restart | other-config (busy: a process trains it right now;
    resumable also covers a completed run that the sweep now asks to train for more epochs)."""
    if not run.path.exists():
        return "new"
    if run.alive():
        return "busy"
    try:
        info_ = run.read_info()
        saved = run.read_config()
    except (UserError, OSError):
        return "restart"
    if any(k not in config.SAFE_ON_RESUME for k in config.differences(saved, cfg)):
        return "other-config"
    # with train.steps the run's epochs follow from the data (saved), and only another train.steps is longer
    longer = not cfg.train.steps and cfg.train.epochs > saved.train.epochs
    if info_.get("status") == "completed" and not longer:
        return "completed"
    return "resumable" if checkpoint.periodic(run.ckpt_dir) else "restart"


def _command(config_path, fixed, p: Planned, sweep_dir: Path, state: str) -> list[str]:
    base = [sys.executable, "-m", "mnist_kit"]
    if state == "resumable":
        return base + ["resume", "--run", str(sweep_dir / p.name), "-o", f"train.epochs={p.cfg.train.epochs}"]
    return base + ["train", *(["--config", str(config_path)] if config_path else []),
                   *[a for t in [*fixed, *p.overrides, f"output.root={json.dumps(str(sweep_dir))}"] for a in ("-o", t)],
                   "--name", p.name]


def _last_line(log: Path) -> str:
    lines = [line for line in readback.tail_text(log).splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error:")]
    return (errors or lines or ["no output"])[-1]


@dataclass
class _Running:
    plan: Planned
    proc: subprocess.Popen
    started: float
    log: IO[bytes]


def _child_setup():
    """In a run's process before it starts: it dies with the sweep (SIGTERM: it stops between steps and records
    that), and it takes SIGINT and SIGTERM even where the sweep was started with them ignored (``&``)."""
    die, sweep = interrupts.die_with_parent(signal.SIGTERM), os.getpid()

    def setup():
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_DFL)
        die()
        if os.getppid() != sweep:  # the sweep died before the line above: nobody will send the signal
            os._exit(1)

    return setup


def _start(sweep_dir: Path, config_path, fixed, p: Planned, state: str, say) -> _Running:
    """Start run ``p``'s process (after setting aside an unfinished run that has no checkpoint)."""
    if state == "restart" and (sweep_dir / p.name).exists() and not RunDir(sweep_dir / p.name).alive():
        aside = sweep_dir / "superseded" / f"{p.name}-{provenance.stamp()}"
        aside.parent.mkdir(exist_ok=True)
        (sweep_dir / p.name).rename(aside)
        say(f"  {p.name}: set aside an unfinished run without a checkpoint in {aside}")
    path = sweep_dir / "logs" / f"{p.name}.log"
    log = open(path, "ab", buffering=0)  # unbuffered: a full disk fails this write, not a later close
    try:
        log.write(f"\n=== {provenance.now()} {state} ===\n".encode())
    except OSError as e:
        log.close()
        e.filename = e.filename or str(path)  # a write's ENOSPC names no file
        raise
    # a session of its own: Ctrl-C reaches the sweep alone, which passes it on once (_run_all)
    proc = subprocess.Popen(_command(config_path, fixed, p, sweep_dir, state), stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                            preexec_fn=_child_setup())
    say(f"  started {p.name}" + (" (resuming)" if state == "resumable" else ""))
    return _Running(p, proc, time.perf_counter(), log)


def _report(sweep_dir: Path, r: _Running, counter: str, say) -> str:
    """Say how a finished run ended; return its outcome."""
    name = r.plan.name
    if r.proc.returncode == 0:
        s = listing.summarize(RunDir(sweep_dir / name), sweep_dir)
        acc = f"{100 * s['best_val_acc']:.2f}%" if s["best_val_acc"] is not None else "-"
        say(f"{counter} {name}: completed, best val acc {acc}, {time.perf_counter() - r.started:.0f} s")
        return "completed"
    say(f"{counter} {name}: FAILED (exit {r.proc.returncode}): {_last_line(sweep_dir / 'logs' / f'{name}.log')}")
    return "failed"


def _run_all(sweep_dir: Path, config_path, fixed, todo: list[Planned], states: dict, jobs: int, total: int,
             say) -> dict[str, str]:
    """Run ``todo``, ``jobs`` at a time; return each run's outcome. Ctrl-C is passed on to the runs once."""
    active: list[_Running] = []
    outcome, queue, done = {}, list(todo), total - len(todo)
    try:
        while queue or active:
            while queue and len(active) < jobs:
                p = queue.pop(0)
                active.append(_start(sweep_dir, config_path, fixed, p, states[p.name], say))
            time.sleep(0.2)
            for r in [r for r in active if r.proc.poll() is not None]:
                active.remove(r)
                r.log.close()
                done += 1
                outcome[r.plan.name] = _report(sweep_dir, r, f"[{done}/{total}]", say)
    except KeyboardInterrupt as e:
        signum = e.signum if isinstance(e, interrupts.Terminated) else signal.SIGINT  # passed on as it came
        for r in active:
            if r.proc.poll() is None:
                r.proc.send_signal(signum)
        for r in active:
            try:
                r.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                r.proc.kill()
            r.log.close()
        say("sweep interrupted; run the same command again to continue (completed runs are skipped, "
            "interrupted ones resume)")
        raise
    return outcome


def run_sweep(config_path: Path | None, overrides: list[str], root: Path | None = None, name: str | None = None,
              jobs: int = 1, say=info) -> tuple[Path, list[dict]]:
    """Run the grid; return the sweep folder and one summary per run (see ``listing.summarize``)."""
    if name is not None and not config.NAME.match(name):
        raise ConfigError(f"--name {config.excerpt(name)}: a sweep's name is a plain folder name of at most 200 "
                          "letters, digits and . _ - + = , : @ that starts with a letter or digit")
    fixed, axes, planned = plan(config_path, overrides)
    for dcfg in {p.cfg.data: None for p in planned}:  # each data set once
        if not (data.prepared_dir(dcfg) / "prepared.json").is_file():
            data.load_dataset(dcfg)  # raises the error that says what to prepare, before any run starts
    root = Path(root or planned[0].cfg.output.root)
    sweep_dir = root / (name or f"sweep-{Path(config_path).stem if config_path else 'defaults'}")
    made = not sweep_dir.exists()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    held = try_lock(sweep_dir / LOCK)
    if held is None:
        raise UserError(f"another sweep is running in {sweep_dir} right now; wait for it to end (or stop it), "
                        "or give this one its own --name")
    with held:
        try:
            return _run_locked(sweep_dir, config_path, fixed, axes, planned, jobs, say)
        except BaseException:
            if made:  # a sweep that started no run (a full disk) leaves nothing behind
                _remove_unstarted(sweep_dir)
            raise


def _remove_unstarted(sweep_dir: Path) -> None:
    """Delete a sweep folder this sweep made if no run wrote to it: it holds only its lock, sweep.json and
    logs/ with empty logs."""
    with contextlib.suppress(OSError):
        logs = list((sweep_dir / "logs").iterdir()) if (sweep_dir / "logs").is_dir() else []
        if {p.name for p in sweep_dir.iterdir()} <= {LOCK, "logs", "sweep.json"} and all(
                p.is_file() and not p.is_symlink() and p.stat().st_size == 0 for p in logs):
            for p in [*logs, sweep_dir / "sweep.json", sweep_dir / LOCK]:
                p.unlink(missing_ok=True)
            with contextlib.suppress(FileNotFoundError):
                (sweep_dir / "logs").rmdir()
            sweep_dir.rmdir()


def _run_locked(sweep_dir: Path, config_path, fixed, axes, planned: list[Planned], jobs: int,
                say) -> tuple[Path, list[dict]]:
    """``run_sweep`` with the sweep folder locked."""
    (sweep_dir / "logs").mkdir(exist_ok=True)
    for p in planned:  # what `train` records for the run
        p.cfg = config.updated(p.cfg, {"output.root": str(sweep_dir), "output.name": p.name})
    states = {p.name: _state(RunDir(sweep_dir / p.name), p.cfg) for p in planned}
    clash = [n for n, s in states.items() if s == "other-config"]
    if clash:
        raise UserError(f"{sweep_dir} already holds run(s) with these names trained with another config: "
                        f"{', '.join(clash)}; give this sweep its own --name")
    write_text(sweep_dir / "sweep.json", json.dumps({
        "config": str(config_path) if config_path else None, "fixed": fixed,
        "grid": {k: v for k, v in axes}, "runs": [p.name for p in planned],
        "command": provenance.command()}, indent=2) + "\n")
    busy = [p.name for p in planned if states[p.name] == "busy"]
    for n in busy:
        say(f"  {n}: another process is training it right now; left alone (run the sweep again once it has ended)")
    todo = [p for p in planned if states[p.name] not in ("completed", "busy")]
    say(f"sweep {sweep_dir}: {len(planned)} runs ({' x '.join(str(len(v)) for _, v in axes)} over "
        f"{', '.join(k for k, _ in axes)}); {len(planned) - len(todo) - len(busy)} already completed, "
        f"{len(todo)} to run, {jobs} at a time")
    outcome = {p.name: "completed earlier" for p in planned if states[p.name] == "completed"}
    outcome.update({n: "busy" for n in busy})
    outcome.update(_run_all(sweep_dir, config_path, fixed, todo, states, jobs, len(planned), say))
    summaries = []
    for p in planned:  # every run, those that failed before their folder existed too
        s = listing.summarize(RunDir(sweep_dir / p.name), sweep_dir)
        s["sweep_outcome"] = outcome.get(p.name, "not run")
        if s["sweep_outcome"] == "failed" and not (sweep_dir / p.name).exists():
            s.update(status="failed", error=_last_line(sweep_dir / "logs" / f"{p.name}.log"))
        summaries.append(s)
    return sweep_dir, summaries
