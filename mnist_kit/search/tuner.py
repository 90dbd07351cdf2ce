"""``mnist-kit tune``'s loop, on Optuna's ask-and-tell interface: each tuner process asks the study for a trial
(TPE's suggestion, or a retry waiting in the queue), trains it as a run, tells the study how it ended, and
stops when the study has ``--trials`` trials done (counted in the storage, so any number of processes and
machines share one budget) or ``--timeout`` has passed (no new trial starts after it).

``--jobs N`` starts N tuner processes on this machine (``python -m mnist_kit.search.tuner``), each on its share
of the cores; they die with the command, ``kill -9`` included, and Ctrl-C or SIGTERM is passed on to them.
A trial stopped by Ctrl-C, SIGTERM or a full disk is marked FAIL ("interrupted") and queued again at once;
one whose tuner was killed is given back by the next tuner that looks (``storage.take_back_dead``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mnist_kit import config
from mnist_kit.errors import ConfigError, UserError
from mnist_kit.search import space, storage
from mnist_kit.search import study as studies
from mnist_kit.search import trial as trials
from mnist_kit.util import interrupts
from mnist_kit.util.console import info

PRUNERS = ("median", "halving")


@dataclass
class Settings:
    url: str
    study: str
    trials: int
    timeout: float | None = None
    jobs: int = 1
    prune: bool = True
    pruner: str = "median"
    sampler_seed: int | None = None
    worker: int = 0  # which of the --jobs processes this is


def _sampler(settings: Settings, trials_before: int = 0):
    """TPE, seeded (``--sampler-seed``) per process and per start: a continued study or a second process draws
    new trials, not the first ones again."""
    seed = settings.sampler_seed
    if seed is not None:
        seed = (seed + 7919 * settings.worker + trials_before) % 2**32
    return storage.optuna().samplers.TPESampler(seed=seed)


def _pruner(settings: Settings):
    pruners = storage.optuna().pruners
    if not settings.prune:
        return pruners.NopPruner()
    if settings.pruner == "halving":
        return pruners.SuccessiveHalvingPruner()
    return pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)


def open_study(settings: Settings, direction: str | None = None):
    """The study in the storage: made (``direction`` given) or loaded; one line if it cannot be."""
    mod = storage.optuna()
    st = storage.open_storage(settings.url)
    try:
        if direction is not None:
            found = mod.create_study(storage=st, study_name=settings.study, direction=direction, load_if_exists=True,
                                     pruner=_pruner(settings))
        else:
            found = mod.load_study(study_name=settings.study, storage=st, pruner=_pruner(settings))
        found.sampler = _sampler(settings, len(found.get_trials(deepcopy=False)))
        return found
    except KeyError:
        raise UserError(f"no study {settings.study} in {storage.shown(settings.url)}; mnist-kit tune --show lists "
                        "the studies there") from None
    except storage.db_errors() as e:
        raise storage.storage_error(e, settings.url) from None


def _counts(study) -> tuple[int, int]:
    """(trials done, trials running): done counts complete, pruned and failed trials, but not the interrupted
    ones, whose retries count instead."""
    done = running = 0
    for t in study.get_trials(deepcopy=False):
        name = t.state.name
        if name in ("COMPLETE", "PRUNED") or name == "FAIL" and not t.user_attrs.get("interrupted"):
            done += 1
        elif name == "RUNNING":
            running += 1
    return done, running


def _progress(study, settings: Settings, objective: trials.Objective) -> str:
    done, _ = _counts(study)
    best = studies.best(study)
    shown = f"trial {best.number}, {objective.describe(best.value)}" if best else "none yet"
    return f"[{done}/{settings.trials}] best: {shown}"


def _fail(study, trial, why: str, interrupted: bool = False) -> None:
    mod = storage.optuna()
    trial.set_user_attr("interrupted" if interrupted else "error", why[:500])
    study.tell(trial, state=mod.trial.TrialState.FAIL)
    if interrupted:
        storage.enqueue_retry(study, study._storage.get_trial(trial._trial_id))


def _one(study, trial, plan: trials.Plan, settings: Settings, say) -> None:
    """Run one trial and tell the study how it ended."""
    mod = storage.optuna()
    started = time.perf_counter()
    log = plan.study_dir / "logs" / f"trial-{trial.number:04d}.log"
    try:
        with storage.heartbeat(study._storage, trial._trial_id):
            rows, pruned = trials.run(trial, plan, log)
    except ConfigError as e:  # a combination of values that the schema refuses (a model's key with another...)
        _fail(study, trial, e.problems[-1] if e.problems else str(e))
        say(f"trial {trial.number}: {space.describe(trial.params)} -> not a valid config: {e}")
        return
    except (UserError, OSError) as e:
        if isinstance(e, UserError) and str(e).startswith("training diverged"):
            _fail(study, trial, str(e))
            say(f"trial {trial.number}: {space.describe(trial.params)} -> diverged | "
                f"{_progress(study, settings, plan.objective)}")
            return
        if isinstance(e, OSError) and interrupts.wrapped_interrupt(e):  # Ctrl-C inside Paddle's autograd
            _fail(study, trial, "interrupted by Ctrl-C", interrupted=True)
            raise KeyboardInterrupt from None
        _fail(study, trial, str(e), interrupted=True)  # a full disk: not the parameters' fault
        raise
    except KeyboardInterrupt as e:
        what = "SIGTERM" if isinstance(e, interrupts.Terminated) else "Ctrl-C"
        _fail(study, trial, f"interrupted by {what}", interrupted=True)
        say(f"trial {trial.number} interrupted; it is queued again and will resume from its newest checkpoint")
        raise
    except BaseException as e:
        _fail(study, trial, f"{type(e).__name__}: {e}")
        raise
    seconds = time.perf_counter() - started
    where = f"{len(rows)} epoch(s), {seconds:.0f} s"
    if pruned is not None:
        study.tell(trial, state=mod.trial.TrialState.PRUNED)
        outcome = f"pruned after epoch {pruned} (val acc {100 * rows[-1]['val_acc']:.2f}%)"
    else:
        value = plan.objective.value(rows)
        study.tell(trial, value)
        outcome = plan.objective.describe(value)
    say(f"trial {trial.number}: {space.describe(trial.params)} -> {outcome} ({where}) | "
        f"{_progress(study, settings, plan.objective)}")


def work(plan: trials.Plan, settings: Settings, say=info, study=None) -> None:
    """One tuner process: trials until the study's budget or the timeout is reached (``study``: the one this
    process has open, else it is opened)."""
    study = study if study is not None else open_study(settings)
    deadline = time.monotonic() + settings.timeout if settings.timeout else math.inf
    with storage.tuner_lock(plan.study_dir) as lock:
        plan.tuner_lock = lock
        try:
            while time.monotonic() < deadline:
                storage.take_back_dead(study, say)
                done, running = _counts(study)
                if done + running >= settings.trials:
                    break
                trial = study.ask()
                try:
                    trial.set_user_attr("host", storage.HOST)
                    trial.set_user_attr("tuner_lock", str(lock))
                except BaseException:  # Ctrl-C right after the ask: the trial is not left running
                    _fail(study, trial, "interrupted before it started", interrupted=True)
                    raise
                _one(study, trial, plan, settings, say)
        except storage.db_errors() as e:
            raise storage.storage_error(e, settings.url) from None


# ---------------------------------------------------------------- several processes on this machine

def _child_setup(k: int, jobs: int):
    """In tuner process ``k``: it dies with the command (SIGTERM: it stops between steps and records that),
    takes SIGINT and SIGTERM, and runs on its share of the cores."""
    die, parent = interrupts.die_with_parent(signal.SIGTERM), os.getpid()

    def setup():
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_DFL)
        die()
        if os.getppid() != parent:
            os._exit(1)
        if hasattr(os, "sched_getaffinity"):
            cores = sorted(os.sched_getaffinity(0))
            if len(cores) >= jobs:
                share = len(cores) // jobs
                os.sched_setaffinity(0, cores[k * share:(k + 1) * share])

    return setup


def _job(plan: trials.Plan, settings: Settings) -> str:
    return json.dumps({"base": plan.base.to_dict(), "config_name": plan.config_name,
                       "space": [f"{p.key}={p.spec}" for p in plan.params], "objective": plan.objective.text,
                       "study_dir": str(plan.study_dir), "settings": asdict(settings)})


def run_jobs(plan: trials.Plan, settings: Settings, say=info) -> None:
    """``settings.jobs`` tuner processes; Ctrl-C or SIGTERM is passed on to them once, as it came."""
    procs = []
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        for k in range(settings.jobs):
            job = _job(plan, dataclasses.replace(settings, worker=k))
            proc = subprocess.Popen([sys.executable, "-m", "mnist_kit.search.tuner"], stdin=subprocess.PIPE,
                                    start_new_session=True, preexec_fn=_child_setup(k, settings.jobs), env=env)
            assert proc.stdin is not None
            proc.stdin.write(job.encode())
            proc.stdin.close()
            procs.append(proc)
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt as e:
        signum = e.signum if isinstance(e, interrupts.Terminated) else signal.SIGINT
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)
        for p in procs:
            try:
                p.wait(timeout=120)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        raise
    failed = [(k, c) for k, c in enumerate(codes) if c != 0]
    if failed:
        raise UserError("tuner process(es) " + ", ".join(f"{k + 1} (exit {c})" for k, c in failed)
                        + " ended with an error (above); the study keeps every finished trial: run the same "
                        "command again to continue")


def _main() -> int:
    """A tuner process of ``--jobs N``: its job as JSON on stdin; errors as the CLI ends a command."""
    interrupts.handle_termination()
    job = json.loads(sys.stdin.read())
    try:
        plan = trials.Plan(Path(job["study_dir"]), config.validate(job["base"]), job["config_name"],
                           [space.parse(t) for t in job["space"]], trials.Objective.parse(job["objective"]))
        work(plan, Settings(**job["settings"]), say=lambda line: print(line, flush=True))
    except KeyboardInterrupt as e:
        return interrupts.exit_code(e)
    except UserError as e:
        print(f"Error: {e}", file=sys.stderr, flush=True)
        return e.exit_code
    except OSError as e:
        if interrupts.wrapped_interrupt(e):
            return 130
        print(f"Error: cannot use {e.filename or ''}: {e.strerror or e}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main())


# ---------------------------------------------------------------- the command

def tune(plan: trials.Plan, settings: Settings, say=info) -> dict:
    """Run (or continue) the study; return what ``summary`` says of it."""
    studies.check_folder(plan.study_dir)
    study = open_study(settings, plan.objective.direction)
    try:
        plan.study_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the study's folder {plan.study_dir}: {e.strerror}; set output.root to a "
                        "writable folder") from None
    studies.record(study, plan.study_dir, settings.url, plan.params, plan.objective, plan.base, plan.config_name)
    done, running = _counts(study)
    pruning = f"{settings.pruner} pruner" if settings.prune else "no pruning"
    say(f"study {settings.study} in {storage.shown(settings.url)}: {done} of {settings.trials} trials done"
        + (f", {running} running elsewhere" if running else "") + f"; objective {plan.objective.text} "
        f"({plan.objective.direction}), {pruning}, {settings.jobs} process(es); runs in {plan.study_dir}")
    say(f"searching: {', '.join(f'{p.key}={p.spec}' for p in plan.params)}")
    try:
        if settings.jobs > 1:
            run_jobs(plan, settings, say)
        else:
            work(plan, settings, say, study)
    except KeyboardInterrupt:
        say("tune interrupted: run the same command again to continue the study (finished trials are kept; an "
            "interrupted trial is queued again and resumes from its newest checkpoint)")
        raise
    return summary(study, plan, settings, say)


def summary(study, plan: trials.Plan, settings: Settings, say=info) -> dict:
    """The study's trials and its best one; the best trial's config written as a YAML file."""
    rows = studies.rows(study)
    best = studies.best(study)
    out: dict[str, Any] = {
        "study": settings.study, "storage": storage.shown(settings.url), "folder": str(plan.study_dir),
        "objective": plan.objective.text, "direction": plan.objective.direction,
        "trials": [r.to_dict() for r in rows], "best": None, "best_config": None}
    if best is None:
        say("no trial has completed yet" if not any(r.state == "complete" for r in rows) else
            f"no trial reached the objective {plan.objective.text} yet")
        return out
    cfg = config.updated(plan.base, space.overrides(plan.params, best.params))
    path = studies.write_best(plan.study_dir, settings.study, best, cfg, plan.objective)
    out["best"] = next(r.to_dict() for r in rows if r.number == best.number)
    out["best_config"] = str(path)
    counts = {s: sum(r.state == s for r in rows) for s in ("complete", "pruned", "failed")}
    say(f"{counts['complete']} complete, {counts['pruned']} pruned, {counts['failed']} failed; best: trial "
        f"{best.number}, {plan.objective.describe(best.value)}: {space.describe(dict(best.params))}")
    say(f"its run: {best.user_attrs.get('run', '-')}")
    say(f"its config: {path} (mnist-kit train --config {path})")
    return out
