"""``mnist-kit train --nproc N``: run ``paddle.distributed.launch`` for the user and tidy up after it.

The run folder is created here, by the one naming rule (``RunDir.create``), and handed to rank 0 through
``$MNIST_KIT_RESERVED_RUN``; if the job ends before rank 0 wrote anything into it, the empty folder is
removed again. The workers' logs (``workerlog.N``) are moved into the run's logs folder; the launcher's
``envlog.N`` files, which hold the whole environment, are deleted. If any process fails, the launcher ends
the job; this then shows the failing process's own error rather than its peers' "connection lost".
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mnist_kit import UserError
from mnist_kit.rundir import RESERVED_ENV, RunDir


def _script() -> str:
    found = shutil.which("mnist-kit") or str(Path(sys.executable).parent / "mnist-kit")
    if not Path(found).is_file():
        raise UserError("--nproc needs the mnist-kit command on PATH (pip install -e .)")
    return found


def _failure(logs: list[Path]) -> str:
    """The most telling error among the workers' logs: a real one before a peer's lost connection."""
    found = []
    for log in logs:
        lines = log.read_text(errors="replace").strip().splitlines()
        errors = [line for line in lines if re.match(r"^[A-Za-z_.]*(Error|Exception)(: |$)", line)
                  and not line.startswith("Error Message Summary")]
        aborted = any(line.startswith("Error Message Summary") for line in lines)
        if errors or aborted:
            last = errors[-1] if errors else "aborted (see its log)"
            # a peer that lost its connection, or aborted inside a collective, is a consequence, not the cause
            secondary = aborted or any(w in last for w in ("gloo", "TIMEOUT", "Connection", "connection", "peer"))
            found.append((secondary, log.name.replace("workerlog.", "rank "), last))
    found.sort()
    return f"{found[0][1]}: {found[0][2]}" if found else "see the worker logs"


def launch_train(nproc: int, argv: list[str], run: RunDir, cpu: bool) -> None:
    """Train ``run`` (created by the caller, still empty) with ``mnist-kit train ARGV`` in ``nproc`` processes."""
    logs = Path(tempfile.mkdtemp(prefix="mnist-kit-launch-"))
    env = {**os.environ, RESERVED_ENV: str(run.path.resolve())}
    if cpu:  # on CPU, an exported CUDA_VISIBLE_DEVICES makes the launcher or its workers fail
        env["PADDLE_DISTRI_BACKEND"] = "gloo"
        env.pop("CUDA_VISIBLE_DEVICES", None)
    cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", str(nproc), "--log_dir",
           str(logs), _script(), "train", *argv, "--name", run.name]
    start = time.time()
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        os.killpg(proc.pid, signal.SIGTERM)  # the launcher reaps its workers on SIGTERM
        proc.wait(timeout=60)
        raise
    finally:
        kept = _tidy(logs, run)
    if code != 0:
        where = run.logs_dir if run.path.is_dir() else logs
        raise UserError(f"the {nproc}-process training failed after {time.time() - start:.0f} s (exit code {code}): "
                        f"{_failure(kept)}; worker logs: {where}")


def _tidy(logs: Path, run: RunDir) -> list[Path]:
    """Delete the environment logs; move the worker logs into the run, or, if the run never started (its
    folder is still empty: removed), leave them in ``logs``. Return where the worker logs are."""
    for env_log in logs.glob("envlog.*"):
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
