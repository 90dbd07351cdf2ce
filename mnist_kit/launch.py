"""``mnist-kit train --nproc N``: run ``paddle.distributed.launch`` for the user and tidy up after it.

The workers' logs (``workerlog.N``) are moved into ``RUN/logs/``; the launcher's ``envlog.N`` files, which
hold the whole environment, are deleted. If any process fails, the launcher ends the job; this then
shows the failing process's own error rather than its peers' "connection lost".
"""

from __future__ import annotations

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


def launch_train(nproc: int, argv: list[str], run_dir: Path, cpu: bool) -> None:
    logs = Path(tempfile.mkdtemp(prefix="mnist-kit-launch-"))
    env = dict(os.environ)
    if cpu:  # on CPU, an exported CUDA_VISIBLE_DEVICES makes the launcher or its workers fail
        env["PADDLE_DISTRI_BACKEND"] = "gloo"
        env.pop("CUDA_VISIBLE_DEVICES", None)
    cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", str(nproc), "--log_dir",
           str(logs), _script(), "train", *argv, "--name", run_dir.name]
    start = time.time()
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        os.killpg(proc.pid, signal.SIGTERM)  # the launcher reaps its workers on SIGTERM
        proc.wait(timeout=60)
        raise
    finally:
        worker_logs = sorted(logs.glob("workerlog.*"))
        kept = []
        if run_dir.is_dir():
            (run_dir / "logs").mkdir(exist_ok=True)
            for log in worker_logs:
                kept.append(Path(shutil.move(str(log), run_dir / "logs" / log.name)))
        else:
            kept = worker_logs
        for env_log in logs.glob("envlog.*"):
            env_log.unlink()
        if run_dir.is_dir():
            shutil.rmtree(logs, ignore_errors=True)
    if code != 0:
        where = run_dir / "logs" if run_dir.is_dir() else logs
        raise UserError(f"the {nproc}-process training failed after {time.time() - start:.0f} s (exit code {code}): "
                        f"{_failure(kept)}; worker logs: {where}")
