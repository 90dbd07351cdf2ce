"""mnist-kit tune under faults: a tuner killed (kill -9, injected and real), stopped by SIGTERM or Ctrl-C, a
command with --jobs killed; two tuners on one SQLite file; tuners sharing a study on a real PostgreSQL server
started here on 127.0.0.1 (Debian's postgresql, a throwaway cluster in a temporary folder)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from helpers import FAST, checkpoints_of, child_pids, free_port, metrics_rows, run_subprocess, wait_for

pytestmark = pytest.mark.slow  # tuners as processes, a database server

SPACE = ["--space", "optimizer.lr=1e-3..1e-2:log"]


def _tune(*args, env=None, **kw):
    return subprocess.Popen([sys.executable, "-m", "mnist_kit", "tune", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})}, **kw)


def _show(*args) -> dict:
    r = run_subprocess("tune", "--show", "--json", *args)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


def test_a_killed_tuner_s_trial_is_retried_and_resumes_its_run_exactly(prepared, tmp_path):
    args = ["--config", "cnn", *FAST, "-o", "train.epochs=3", *SPACE, "-n", "2", "--no-prune"]
    r = run_subprocess("tune", *args, env={"MNIST_KIT_FAULT": "kill@epoch:0"})  # kill -9 after epoch 0's checkpoint
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert [t["state"] for t in _show()["trials"]] == ["running"]
    r = run_subprocess("tune", *args)
    assert r.returncode == 0, r.stderr
    assert "trial 0 was left running by a tuner that died on this machine" in r.stderr
    trials = _show()["trials"]
    assert [t["state"] for t in trials] == ["failed", "complete", "complete"]
    assert trials[1]["note"] == "retry of trial 0" and trials[1]["params"] == trials[0]["params"]
    run = Path(trials[1]["run"])
    assert run == Path(trials[0]["run"]) and run.name == "trial-0000"  # the same folder, resumed in place
    info = json.loads((run / "run.json").read_text())
    assert [x["from"] for x in info["resumes"]] == ["epoch_000.pdckpt"] and info["status"] == "completed"
    # exactly the training of a run never stopped: the same config trained in one go
    fresh = run_subprocess("train", "--config", run / "config.yaml", "-o", f"output.root={tmp_path / 'fresh'}",
                           "-o", "output.name=same")
    assert fresh.returncode == 0, fresh.stderr
    assert metrics_rows(run) == metrics_rows(tmp_path / "fresh" / "same")
    assert trials[1]["value"] == max(r["val_acc"] for r in metrics_rows(run))


def test_sigterm_then_ctrl_c_each_queue_the_trial_again_and_it_resumes_where_it_stopped(prepared, tmp_path):
    args = ["--config", "cnn", *FAST, "-o", "train.epochs=400", *SPACE, "-n", "1"]
    proc = _tune(*args)
    run = tmp_path / "checkpoints" / "tune-cnn" / "trial-0000"
    try:
        wait_for(lambda: checkpoints_of(run), 300, "the first trial's first checkpoint")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "trial 0 interrupted; it is queued again" in err and "run the same command again" in err
    trials = _show()["trials"]
    assert [(t["state"], t["note"]) for t in trials] == [("failed", "interrupted by SIGTERM"),
                                                         ("waiting", "retry of trial 0")]
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"
    last = max(r["epoch"] for r in metrics_rows(run))
    # again, with Ctrl-C (injected) after the next epoch: the retry resumed the same run from its newest checkpoint
    r = run_subprocess("tune", *args, env={"MNIST_KIT_FAULT": f"interrupt@epoch:{last + 1}"})
    assert r.returncode == 130, r.stderr
    info = json.loads((run / "run.json").read_text())
    assert [x["from"] for x in info["resumes"]] == [f"epoch_{last:03d}.pdckpt"]
    assert [row["epoch"] for row in metrics_rows(run)] == list(range(last + 2))
    trials = _show()["trials"]
    assert [t["state"] for t in trials] == ["failed", "failed", "waiting"]
    assert trials[1]["note"] == "retry of trial 0; interrupted by Ctrl-C" and trials[2]["note"] == "retry of trial 1"
    assert {t["run"] for t in trials} == {str(run)}


def test_kill_9_of_the_command_stops_its_tuner_processes_which_queue_their_trials_again(prepared, tmp_path):
    proc = _tune("--config", "cnn", *FAST, "-o", "train.epochs=400", *SPACE, "-n", "2", "-j", "2",
                 start_new_session=True)
    study = tmp_path / "checkpoints" / "tune-cnn"
    kids: list[int] = []
    try:
        wait_for(lambda: checkpoints_of(study / "trial-0000") and checkpoints_of(study / "trial-0001"), 300,
                 "a checkpoint in both trials")
        kids = child_pids(proc.pid)
        assert len(kids) == 2
        proc.kill()
        proc.wait(timeout=60)
        wait_for(lambda: not any(_alive(k) for k in kids), 300, "the tuner processes to stop")
    finally:
        for k in kids:
            if _alive(k):
                os.kill(k, signal.SIGKILL)
    trials = _show()["trials"]
    assert sorted((t["state"], t["note"]) for t in trials) == [
        ("failed", "interrupted by SIGTERM"), ("failed", "interrupted by SIGTERM"),
        ("waiting", "retry of trial 0"), ("waiting", "retry of trial 1")]
    for name in ("trial-0000", "trial-0001"):
        assert json.loads((study / name / "run.json").read_text())["status"] == "interrupted"


def test_two_tuners_share_one_sqlite_study(prepared, tmp_path):
    args = ["--config", "linear", *FAST, *SPACE, "-n", "8", "--study", "shared", "--no-prune"]
    procs = [_tune(*args) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    db = tmp_path / "checkpoints" / "tune.db"
    with sqlite3.connect(db) as conn:
        assert conn.execute("pragma integrity_check").fetchone() == ("ok",)
    trials = _show("--study", "shared")["trials"]
    # the budget is counted in the study: one tuner may start a trial while the other ends the 8th
    assert 8 <= len(trials) <= 9 and {t["state"] for t in trials} == {"complete"}
    runs = [t["run"] for t in trials]
    assert len(set(runs)) == len(runs) and all((Path(r) / "metrics.jsonl").is_file() for r in runs)
    assert sorted(t["trial"] for t in trials) == list(range(len(trials)))


# ---------------------------------------------------------------- PostgreSQL, as several machines use it

def _as_postgres() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []


@pytest.fixture(scope="module")
def postgres():
    """A throwaway PostgreSQL cluster on 127.0.0.1 (a free port, its socket in its own folder), stopped and
    deleted at the end."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found or (os.getuid() == 0 and not shutil.which("runuser")):
        pytest.skip("Debian's postgresql is not installed (scripts/setup.sh --test installs it)")
    bin_dir = found[-1].parent
    folder = Path(tempfile.mkdtemp(prefix="mnist-kit-pg-"))
    folder.chmod(0o755)
    if os.getuid() == 0:
        import pwd

        entry = pwd.getpwnam("postgres")
        os.chown(folder, entry.pw_uid, entry.pw_gid)
    data = folder / "data"
    pg_ctl = [*_as_postgres(), str(bin_dir / "pg_ctl"), "-D", str(data)]
    try:
        subprocess.run([*_as_postgres(), str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
                       check=True, capture_output=True, timeout=300)
        for _ in range(5):  # a free port can be taken by another process before the server binds it
            port = free_port()
            started = subprocess.run([*pg_ctl, "-o", f"-p {port} -k {folder} -c listen_addresses=127.0.0.1",
                                      "-l", str(folder / "log"), "-w", "-t", "120", "start"],
                                     capture_output=True, timeout=300)
            if started.returncode == 0:
                break
        else:
            pytest.fail("PostgreSQL did not start: " + (folder / "log").read_text()[-2000:])
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*pg_ctl, "-m", "fast", "stop"], capture_output=True, timeout=300)
        shutil.rmtree(folder, ignore_errors=True)


def test_tuners_on_two_machines_share_a_study_on_postgresql(prepared, tmp_path, postgres):
    """Two runs roots stand for two machines: each keeps its trials' runs; the study is in the server."""
    args = ["--config", "linear", *FAST, *SPACE, "--storage", postgres, "--study", "shared", "--no-prune"]
    first = run_subprocess("tune", *args, "-n", "3", "-o", f"output.root={tmp_path / 'a'}")
    assert first.returncode == 0, first.stderr
    second = run_subprocess("tune", *args, "-n", "5", "-o", f"output.root={tmp_path / 'b'}")
    assert second.returncode == 0, second.stderr
    assert "3 of 5 trials done" in second.stderr  # it continued the first machine's study
    assert sorted(p.name for p in (tmp_path / "b" / "shared").glob("trial-*")) == ["trial-0003", "trial-0004"]
    # both at once, on the server
    procs = [_tune(*args, "-n", "11", "-o", f"output.root={tmp_path / m}") for m in ("a", "b")]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    shown = _show("--storage", postgres, "--study", "shared")
    trials = shown["trials"]
    assert 11 <= len(trials) <= 12 and {t["state"] for t in trials} == {"complete"}
    assert sorted(t["trial"] for t in trials) == list(range(len(trials)))
    runs = [Path(t["run"]) for t in trials]
    assert len(set(runs)) == len(runs) and all(r.parent.parent in (tmp_path / "a", tmp_path / "b") for r in runs)
    assert shown["storage"] == postgres and shown["best"]["trial"] in {t["trial"] for t in trials}
