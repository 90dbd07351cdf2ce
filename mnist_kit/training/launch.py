"""``mnist-kit train --nproc N``: run ``paddle.distributed.launch`` for the user and tidy up after it.

The run folder is created here, by the one naming rule (``RunDir.create``), and handed to rank 0 through
``$MNIST_KIT_RESERVED_RUN``; if the job ends before rank 0 wrote anything into it, the empty folder is
removed again. The workers' logs (``workerlog.N``) are moved into the run's logs folder. The launcher's
``envlog.N``, ``backup_env.N.json`` and job log hold the whole environment: they are deleted as soon as
nobody needs them (``envlog``: at once; ``backup_env``, which workers read while they connect: once the
run has its config), and at the end in any case; those of a launch whose process was killed, by the next.

Ctrl-C, SIGTERM and SIGHUP are forwarded to the launcher as SIGTERM (it stops its workers, which stop
between steps: status ``interrupted``); the launcher dies with this process (``kill -9`` included); and
when it has ended, any process of the job still alive (found by ``$MNIST_KIT_LAUNCH``) is stopped. The
launcher's own chatter (its configuration, glog lines, tracebacks of workers that lost a peer) is not
shown: the error names the failing process, and every line is in the worker logs.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from mnist_kit.errors import UserError
from mnist_kit.experiments.rundir import RESERVED_ENV, RunDir
from mnist_kit.util import readback
from mnist_kit.util.files import process_alive
from mnist_kit.util.interrupts import die_with_parent

if TYPE_CHECKING:
    from mnist_kit.config import Config

LAUNCH_ENV = "MNIST_KIT_LAUNCH"  # a token in the environment of every process of one launch
NOISE = re.compile(r"^(LAUNCH INFO|\s*warnings\.warn\(|.*No ccache found|=+( Modified FLAGS detected =+)?$|FLAGS\(name="
                   r"|[IWE]\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+ \S+:\d+\])")
EXCEPTION = re.compile(r"^[A-Za-z_.]*(Error|Exception)(: |$)")  # the last line of a Python traceback
FAILED_RANK = re.compile(r"Container rank (\d+) status failed .* code (-?\d+)")


def _script() -> str:
    found = shutil.which("mnist-kit") or str(Path(sys.executable).parent / "mnist-kit")
    if not Path(found).is_file():
        raise UserError("--nproc needs the mnist-kit command on PATH (pip install -e .)")
    return found


def _failure(logs: list[Path], codes: dict[int, int]) -> str:
    """The most telling error: a process killed by a signal, or a real error in a worker's log, before a
    peer's lost connection or abort (a consequence, not the cause)."""
    for rank, code in sorted(codes.items()):
        if code < 0:
            return f"rank {rank} was killed by {signal.Signals(-code).name}"
    found = []
    for log in logs:
        lines = readback.tail_text(log, 1 << 20).strip().splitlines()
        errors = [line for line in lines if EXCEPTION.match(line)
                  and not line.startswith("Error Message Summary")]
        aborted = any(line.startswith("Error Message Summary") for line in lines)
        if errors or aborted:
            last = errors[-1] if errors else "aborted (see its log)"
            secondary = aborted or any(w in last for w in ("gloo", "TIMEOUT", "Connection", "connection", "peer"))
            found.append((secondary, log.name.replace("workerlog.", "rank "), last))
    found.sort()
    return f"{found[0][1]}: {found[0][2]}" if found else "see the worker logs"


def _relay(stream, codes: dict[int, int]) -> None:
    """Show the launcher's output (rank 0's) without its noise; note the exit codes of failed ranks."""
    skipping = False  # inside a traceback, or the launcher's repeat of a failed worker's log
    for line in stream:
        failed = FAILED_RANK.search(line)
        if failed:
            codes[int(failed.group(1))] = int(failed.group(2))
        if line.startswith("Traceback (most recent call last)") or "ERROR LOG DETAIL" in line:
            skipping = True
        elif skipping and (line.startswith("LAUNCH") or EXCEPTION.match(line)):
            skipping = False
            continue
        if not (skipping or failed or NOISE.match(line) or line.startswith("LAUNCH ERROR")
                or line.startswith("Container rank")):
            sys.stderr.write(line)
            sys.stderr.flush()


def check_devices(devices: str, nproc: int, device: str, has_cuda: bool) -> None:
    """``--devices``: a list of GPU indices, one per process, on a Paddle that has CUDA (``has_cuda``); else
    UserError (on a machine without GPUs the launcher's own --devices crashes)."""
    ids = devices.split(",")
    if not all(i.strip().isdigit() for i in ids) or len(set(ids)) != len(ids):
        raise UserError(f"--devices {devices!r}: GPU indices separated by commas, each once, e.g. --devices 0,1")
    if len(ids) != nproc:
        raise UserError(f"--devices names {len(ids)} GPU(s) and --nproc is {nproc}: one process per GPU; "
                        f"use --nproc {len(ids)}")
    if device == "cpu":
        raise UserError("--devices chooses GPUs, and train.device is cpu; leave one of them out")
    if not has_cuda:
        raise UserError("--devices chooses GPUs, and this Paddle is the CPU build (install paddlepaddle-gpu); "
                        "on the CPU use --nproc alone")


def launch_command(nproc: int, argv: list[str], run_name: str, logs: Path, devices: str | None = None) -> list[str]:
    """The launcher's command line for ``mnist-kit train ARGV`` in ``nproc`` processes (on ``devices``)."""
    return [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", str(nproc),
            *(["--devices", devices] if devices else []), "--log_dir", str(logs), _script(), "train", *argv,
            "--name", run_name]


def launch_train(nproc: int, argv: list[str], run: RunDir, cpu: bool, devices: str | None = None) -> None:
    """Train ``run`` (created by the caller, still empty) with ``mnist-kit train ARGV`` in ``nproc`` processes
    (on the GPUs ``devices``, when given)."""
    _scrub_stale()
    logs = Path(tempfile.mkdtemp(prefix=f"mnist-kit-launch-{os.getpid()}-"))
    token = secrets.token_hex(8)
    env = {**os.environ, RESERVED_ENV: str(run.path.resolve()), LAUNCH_ENV: token}
    env.setdefault("GLOG_minloglevel", "1")  # glog's INFO lines: connections made, ports opened
    if cpu:  # on CPU, an exported CUDA_VISIBLE_DEVICES makes the launcher or its workers fail
        env["PADDLE_DISTRI_BACKEND"] = "gloo"
        env.pop("CUDA_VISIBLE_DEVICES", None)
    cmd = launch_command(nproc, argv, run.name, logs, devices)
    start, ended = time.time(), threading.Event()
    codes: dict[int, int] = {}
    threading.Thread(target=_scrub, args=(logs, run, ended), daemon=True).start()
    try:
        proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors="replace",
                                preexec_fn=die_with_parent(signal.SIGTERM))
        try:
            _relay(proc.stdout, codes)
            code = proc.wait()
        except KeyboardInterrupt:  # Ctrl-C, SIGTERM, SIGHUP: the launcher stops its workers on SIGTERM
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            threading.Thread(target=_relay, args=(proc.stdout, codes), daemon=True).start()  # its pipe must not fill
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=60)
            raise
    finally:
        ended.set()
        _reap(token)
        kept = _tidy(logs, run)
    if code != 0:
        where = run.logs_dir if run.path.is_dir() else logs
        raise UserError(f"the {nproc}-process training failed after {time.time() - start:.0f} s (exit code {code}): "
                        f"{_failure(kept, codes)}; worker logs: {where}")


def train_parallel(cfg: Config, config_name: str, nproc: int, devices: str | None = None) -> Path:
    """``train --nproc N`` (and ``--devices``): check what can be checked before launching (the devices, the
    data prepared, a training step for every process), reserve the run folder, and launch ``mnist-kit train``
    on the config (written to a file the processes read: the config as validated here). Returns the run."""
    from mnist_kit import config, data
    from mnist_kit.backend.runtime import paddle

    has_cuda = paddle.device.is_compiled_with_cuda()
    if devices is not None:
        check_devices(devices, nproc, cfg.train.device, has_cuda)
    if nproc == 1 and devices is None:
        raise UserError("train_parallel is for 2 or more processes; train with start.train")
    data.load_splits(cfg, world=nproc)  # data prepared, a step for each process: checked before launching
    run = RunDir.create(cfg.output.root, cfg.output.name, config_name)
    with tempfile.TemporaryDirectory(prefix="mnist-kit-config-") as folder:
        path = Path(folder) / f"{config_name}.yaml"  # its name is the run's config_name in run.json
        path.write_text(config.dump(cfg))
        launch_train(nproc, ["--config", str(path)], run, cfg.train.device == "cpu" or not has_cuda, devices)
    return run.path


def _environment_files(logs: Path, backup: bool = True) -> list[Path]:
    """The launcher's files that hold the environment: ``envlog.N``, its own log ``default.*.log`` (it prints
    the environment there when a worker fails), and the workers' ``backup_env.N.json``."""
    return [*logs.glob("envlog.*"), *logs.glob("default.*.log"), *(logs.glob("backup_env.*") if backup else [])]


def _scrub(logs: Path, run: RunDir, ended: threading.Event) -> None:
    """Delete the environment files while the job runs (see the module's docstring)."""
    while not ended.wait(0.2):
        for f in _environment_files(logs, backup=run.config_file.is_file()):
            f.unlink(missing_ok=True)


def _scrub_stale() -> None:
    """Delete the environment files of earlier launches whose process was killed before it could."""
    for folder in Path(tempfile.gettempdir()).glob("mnist-kit-launch-*-*"):
        pid = folder.name.split("-")[3]
        if pid.isdigit() and not process_alive(int(pid)):
            for f in _environment_files(folder):
                with contextlib.suppress(OSError):
                    f.unlink()


def _job_processes(token: str) -> list[int]:
    """The processes whose environment carries this launch's token."""
    marker = f"{LAUNCH_ENV}={token}".encode() + b"\0"
    found = []
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                if marker in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
    return found


def _reap(token: str, grace: float = 10.0) -> None:
    """Stop every process of the launch still alive: SIGTERM, then SIGKILL after ``grace`` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 0)):
        alive = _job_processes(token)
        for pid in alive:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.time() + wait
        while alive and time.time() < deadline and _job_processes(token):
            time.sleep(0.1)


def _tidy(logs: Path, run: RunDir) -> list[Path]:
    """Delete the environment logs; move the worker logs into the run, or, if the run never started (its
    folder is still empty: removed), leave them in ``logs``. Return where the worker logs are."""
    for env_log in _environment_files(logs):
        env_log.unlink()
    worker_logs = sorted(logs.glob("workerlog.*"))
    with contextlib.suppress(OSError):
        run.path.rmdir()  # only if empty: nothing of the run was written
    if not run.path.is_dir():
        return worker_logs
    run.logs_dir.mkdir(exist_ok=True)
    kept = [Path(shutil.move(str(log), run.logs_dir / log.name)) for log in worker_logs]
    shutil.rmtree(logs, ignore_errors=True)
    return kept
