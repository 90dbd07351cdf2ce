"""Signals: SIGTERM, SIGHUP and kill -9 of training, the graph child that dies with it, and a stopped
multi-process job that leaves no process behind."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import FAST, as_in_a_terminal, checkpoints_of, run_cli, run_subprocess, wait_for

pytestmark = pytest.mark.slow  # sends signals to training processes

# ---------------------------------------------------------------- SIGTERM and kill -9 of train

def _start_training(name: str, *extra) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mnist_kit", "train", *FAST, "-o", "train.epochs=500",
                             "-o", "log.images=false", "--name", name, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=as_in_a_terminal)


def _graph_children(pid: int) -> list[int]:
    """The children of ``pid`` that are the VisualDL graph writer (``python -m mnist_kit.logbook.graph``)."""
    done = subprocess.run(["pgrep", "-P", str(pid), "-f", "mnist_kit.logbook.graph"], capture_output=True, text=True)
    return [int(p) for p in done.stdout.split()]


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] == "Z"  # a zombie is gone but for its parent's wait
    except FileNotFoundError:
        return True


@pytest.mark.parametrize("signum", ["SIGTERM", "SIGHUP"])
def test_sigterm_stops_training_between_steps_like_ctrl_c(trained, signum):
    import signal

    run = Path("checkpoints/term")
    proc = _start_training("term", "-o", "log.graph=true")
    wait_for(lambda: (run / "metrics.jsonl").is_file() and (run / "metrics.jsonl").read_text())
    proc.send_signal(getattr(signal, signum))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + getattr(signal, signum), err
    assert "Traceback" not in err and "FatalError" not in err, err
    assert f"{signum} received: stopping after this step" in err and "to continue: mnist-kit resume" in err
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"
    # on the CPU the graph is written after the last epoch: an interrupted run has none, and its resume
    # writes it once training is over
    assert not (run / "graph").exists()
    done = len((run / "metrics.jsonl").read_text().splitlines())
    assert run_cli("resume", "--run", run, "-o", f"train.epochs={done + 1}").exit_code == 0
    graph = run / "graph" / "term"
    assert (graph / "model.pdmodel").is_file() and len(list(graph.glob("vdlgraph.*"))) == 1


def test_the_graph_writer_dies_with_a_killed_training(trained):
    """The graph child (started after the last epoch on the CPU) gets SIGKILL when training is killed."""
    import signal

    proc = _start_training("killed", "-o", "log.graph=true", "-o", "train.epochs=1")
    # the graph child, by its command line (Paddle starts short-lived children of its own at import)
    wait_for(lambda: _graph_children(proc.pid), what=lambda: proc.poll())
    children = _graph_children(proc.pid)
    assert json.loads(Path("checkpoints/killed/run.json").read_text())["status"] == "completed"
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    wait_for(lambda: all(_gone(pid) for pid in children), timeout=10)
    # gone before it wrote anything: a dead process writes no more (the folder is made whole or not at all)
    run = Path("checkpoints/killed")
    assert not (run / "graph" / "killed").exists()


def test_ctrl_c_while_the_graph_child_starts_leaves_no_child(tmp_path, monkeypatch):
    """The race a loaded CI machine hit: Ctrl-C after the child was forked but before Popen returned lost
    the child and the graph message. A real SIGINT, sent to this process from inside Popen."""
    import signal
    import subprocess

    from mnist_kit.logbook import graph

    started = []
    real = subprocess.Popen

    def popen_then_ctrl_c(*args, **kwargs):
        proc = real(*args, **kwargs)
        started.append(proc)
        os.kill(os.getpid(), signal.SIGINT)  # arrives before Popen is seen to return
        return proc

    monkeypatch.setattr(graph.subprocess, "Popen", popen_then_ctrl_c)
    # Ctrl-C raises, as in a terminal, even where this test runs as a background job (SIGINT ignored)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            graph.start(tmp_path / "run")
    finally:
        signal.signal(signal.SIGINT, previous)
    assert started and started[0].returncode is not None  # killed and reaped by start itself


def test_ctrl_c_while_the_graph_is_written_keeps_the_completed_run(trained):
    import signal

    proc = _start_training("graph-int", "-o", "log.graph=true", "-o", "train.epochs=1")
    wait_for(lambda: _graph_children(proc.pid), what=lambda: proc.poll())
    children = _graph_children(proc.pid)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "the run is complete; only its graph for VisualDL was not written" in err
    assert all(_gone(pid) for pid in children)
    run = Path("checkpoints/graph-int")
    assert json.loads((run / "run.json").read_text())["status"] == "completed"
    assert (run / "ckpt" / "best.pdckpt").is_file()


# ---------------------------------------------------------------- signals to a multi-process job

def _processes_of(run: Path) -> list[int]:
    """The processes working on ``run`` (the reserved folder is in the environment of the whole job)."""
    marker = f"MNIST_KIT_RESERVED_RUN={run.resolve()}".encode() + b"\0"
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "environ").read_bytes() and not _gone(int(entry.name)):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


@contextlib.contextmanager
def _env(name: str, value: str):
    import tempfile

    old = os.environ.get(name)
    os.environ[name] = value
    tempfile.tempdir = None  # gettempdir() reads TMPDIR again
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name)
        else:
            os.environ[name] = old
        tempfile.tempdir = None


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_a_stopped_multi_process_job_leaves_no_process_and_no_environment(trained, tmp_path, how):
    import signal

    launch_tmp = tmp_path / "tmp"
    launch_tmp.mkdir()
    run = Path("checkpoints/np")
    proc = subprocess.Popen([sys.executable, "-m", "mnist_kit", "train", "--nproc", "2", *FAST, "-o",
                             "train.epochs=500", "-o", "log.images=false", "--name", "np"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TMPDIR": str(launch_tmp)})
    # what the resume at the end needs: a checkpoint in the manifest (the first metrics row comes before it)
    wait_for(lambda: checkpoints_of(run), timeout=180, what="the first checkpoint")
    proc.send_signal(getattr(signal, how))
    _, err = proc.communicate(timeout=120)
    wait_for(lambda: not _processes_of(run), timeout=30, what=lambda: f"{_processes_of(run)} to end")
    if how == "SIGTERM":
        assert proc.returncode == 143 and "Traceback" not in err, err
        assert "LAUNCH INFO" not in err and "ccache" not in err, err
    if how == "SIGTERM":
        wait_for(lambda: json.loads((run / "run.json").read_text())["status"] == "interrupted", timeout=30,
                  what=lambda: (run / "run.json").read_text())
    else:
        # mnist-kit is gone: the Paddle launcher stops the workers on its own, and when it sees one fail it
        # force-kills the others after 3 s (its pod.stop(timeout=3)); a rank 0 still inside a slow step then
        # cannot record "interrupted". Either way the run is not running (every process of it is gone,
        # waited for above), and `runs` says stopped
        status = json.loads((run / "run.json").read_text())["status"]
        assert status == "interrupted" or (status == "running" and "stopped" in run_cli("runs").output), status
        # the environment files of a killed launch are removed by the next launch, if not already gone
        from mnist_kit.training import launch

        with _env("TMPDIR", str(launch_tmp)):
            launch._scrub_stale()
    assert not list(launch_tmp.rglob("envlog.*")) and not list(launch_tmp.rglob("backup_env.*"))
    done = len((run / "metrics.jsonl").read_text().splitlines())
    result = run_cli("resume", "--run", run, "-o", f"train.epochs={done + 1}")  # nobody trains it any more
    assert result.exit_code == 0, result.output


def test_a_job_that_fails_before_its_run_exists_keeps_no_environment(trained, tmp_path):
    launch_tmp = tmp_path / "tmp"
    launch_tmp.mkdir()
    proc = run_subprocess("train", "--nproc", "2", *FAST, "-o", "train.device=gpu",  # fails in the workers
                          env={"TMPDIR": str(launch_tmp)}, timeout=240)
    assert proc.returncode == 1 and "GPU" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert sorted(p.name for p in launch_tmp.rglob("*") if p.is_file()) == ["workerlog.0", "workerlog.1"]
    assert [p.name for p in Path("checkpoints").iterdir()] == ["base"]  # no empty run folder left
