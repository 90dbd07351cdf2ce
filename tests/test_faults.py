"""Faults and hostile inputs (issue 14): every one ends in one ``Error:`` line and a non-zero exit, and
nothing mnist-kit did not write is deleted or damaged. Each test here failed before its fix, except two kept
as regression tests: the torn metrics row (fixed by the restructure of issue 13) and the resume case of an
edited config.yaml (resume already refused it)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FAST, checkpoints_of, run_cli, run_subprocess, synthetic_arrays, wait_for, write_idx_folder
from mnist_kit import UserError


def snapshot(folder: Path) -> dict:
    """Every file under ``folder`` and its SHA-256: what 'nothing changed' compares."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def assert_user_error(result, *phrases):
    """One ``Error:`` message naming the problem (its first line, with any list below it), a non-zero exit,
    no traceback."""
    out = result.output if hasattr(result, "output") else result.stdout + result.stderr
    assert result.exit_code if hasattr(result, "exit_code") else result.returncode, out
    assert "Traceback" not in out, out
    errors = [line for line in out.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, out
    message = out[out.index(errors[0]):]
    for phrase in phrases:
        assert phrase in message, out


@pytest.fixture(scope="module")
def trained_template(tmp_path_factory):
    """A small trained run (2 epochs on synthetic data) and its prepared data, made once for this module."""
    base = tmp_path_factory.mktemp("template")
    env = {"MNIST_KIT_DATA": str(base / "data")}
    idx = write_idx_folder(base / "idx", synthetic_arrays())
    for args in (("prepare", "--dataset", "mnist", "--from-dir", idx, "--no-verify"),
                 ("train", *FAST, "-o", "output.visualdl=false", "-o", f"output.root={base / 'checkpoints'}",
                  "--name", "base")):
        done = run_subprocess(*args, env=env)
        assert done.returncode == 0, done.stderr
    return base


@pytest.fixture
def trained(trained_template, tmp_path):
    """A copy of the template run (and its data) in this test's folder: ``checkpoints/base``."""
    shutil.copytree(trained_template / "data", tmp_path / "data")
    shutil.copytree(trained_template / "checkpoints", tmp_path / "checkpoints")
    return tmp_path / "checkpoints" / "base"


# ---------------------------------------------------------------- 1, 8: export never deletes what it did not write

@pytest.mark.parametrize("where", [".", "RUN", "HOME"])
def test_export_refuses_a_folder_that_is_not_an_export(trained, tmp_path, where):
    folder = {".": tmp_path, "RUN": trained, "HOME": tmp_path / "home"}[where]
    folder.mkdir(exist_ok=True)
    (folder / "thesis.tex").write_text("years of work\n")
    before = snapshot(tmp_path)
    result = run_cli("export", "--out", folder)
    assert_user_error(result, "is not empty and is not an mnist-kit export", "--out")
    assert snapshot(tmp_path) == before


def test_export_replaces_only_its_own_earlier_export(trained, tmp_path):
    out = tmp_path / "deployed"
    assert run_cli("export", "--out", out, "--last").exit_code == 0
    first = json.loads((out / "mnist_kit_model.json").read_text())
    (out / "NOTES.md").write_text("how we deploy this\n")
    (out / "model.onnx").write_text("an earlier ONNX file, which the new paddle-only export does not have\n")
    result = run_cli("export", "--out", out, "--epoch", 0, "--format", "paddle")
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "mnist_kit_model.json").read_text())
    assert (first["source"]["epoch"], meta["source"]["epoch"]) == (1, 0)
    assert (out / "NOTES.md").read_text() == "how we deploy this\n"  # the user's file, carried over
    assert not (out / "model.onnx").exists()  # the earlier export's own file, gone with it
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary folder left


def test_export_into_an_empty_folder_and_readable_by_others(trained, tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    old_umask = os.umask(0o022)
    try:
        assert run_cli("export", "--out", out).exit_code == 0
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755  # a service user can read a deployed model
    for f in out.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) & 0o044 == 0o044, f


def test_a_killed_export_is_never_found_and_is_cleaned_up(trained):
    assert run_cli("export").exit_code == 0
    good = trained / "export" / "best"
    killed = run_subprocess("export", "--last", env={"MNIST_KIT_FAULT": "kill@export:0"})
    assert killed.returncode == -9
    hidden = [p for p in (trained / "export").iterdir() if p.name.startswith(".")]
    assert len(hidden) == 1 and (hidden[0] / "mnist_kit_model.json").is_file()  # complete, not yet in place
    os.utime(hidden[0] / "mnist_kit_model.json")  # newer than the good export
    from mnist_kit.deploy.predict import newest_export

    assert newest_export(Path("checkpoints")).resolve() == good  # the complete export, never the hidden one
    assert run_cli("export", "--last").exit_code == 0  # and the next export cleans the killed one's folder up
    assert sorted(p.name for p in (trained / "export").iterdir()) == ["best", "epoch_001"]


# ---------------------------------------------------------------- 2, 17: a manifest names only mnist-kit's checkpoints

def _edit_manifest(run: Path, edit) -> None:
    path = run / "ckpt" / "manifest.json"
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))


def test_retention_never_deletes_a_file_a_manifest_points_outside_to(trained, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("not mnist-kit's\n")
    _edit_manifest(trained, lambda m: {**m, "../../../victim.txt": dict(m["epoch_000.pdckpt"], step=0)})
    before = snapshot(tmp_path)
    result = run_cli("resume", "-o", "train.epochs=3", "-o", "checkpoint.keep_last=1")
    assert_user_error(result, "manifest.json is damaged", "'../../../victim.txt' is not the name of a checkpoint")
    assert victim.read_text() == "not mnist-kit's\n" and snapshot(tmp_path) == before


@pytest.mark.parametrize("edit,reason", [
    (lambda m: {**m, "epoch_000.pdckpt": {}}, "the entry of epoch_000.pdckpt has no valid sha256"),
    (lambda m: {**m, "epoch_000.pdckpt": {k: v for k, v in m["epoch_000.pdckpt"].items() if k != "sha256"}},
     "no valid sha256"),
    (lambda m: {**m, "epoch_000.pdckpt": dict(m["epoch_000.pdckpt"], step="forty")}, "an invalid step"),
    (lambda m: [1, 2], "it holds a JSON list, not an object of checkpoints"),
])
@pytest.mark.parametrize("command", [["resume", "-o", "train.epochs=3"], ["eval"], ["export"]])
def test_an_edited_manifest_is_a_clear_error(trained, tmp_path, edit, reason, command):
    _edit_manifest(trained, edit)
    before = snapshot(tmp_path)
    assert_user_error(run_cli(*command), "manifest.json is damaged", reason)
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------- 5, 14: full disks

TIMING = ("images_per_sec", "epoch_seconds", "elapsed_seconds")


def _rows(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_torn_metrics_row_is_dropped_and_resume_repairs_the_file(trained, monkeypatch):
    """A full disk cut epoch 1's row short (the page the file had room in) and its checkpoint failed."""
    monkeypatch.setenv("MNIST_KIT_FAULT", "enospc@checkpoint-write:20")
    args = ("train", *FAST, "-o", "output.visualdl=false", "--name", "torn")
    assert_user_error(run_cli(*args), "No space left on device")
    monkeypatch.delenv("MNIST_KIT_FAULT")
    run = Path("checkpoints/torn")
    lines = (run / "metrics.jsonl").read_text().splitlines(keepends=True)
    (run / "metrics.jsonl").write_text(lines[0] + lines[1][:57])  # ends in half a row, no newline
    assert {r["run"]: r["epochs_done"] for r in json.loads(run_cli("runs", "--json").stdout)} == {"base": 2, "torn": 1}
    result = run_cli("resume", "--run", run)
    assert result.exit_code == 0, result.output
    assert _rows(run) == _rows(trained)  # as if the disk had never been full


@pytest.fixture
def small_disk(tmp_path):
    """A real 64 MiB file system (tmpfs), to fill up."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)


def test_a_full_disk_while_saving_records_the_failure_and_resumes(trained, small_disk):
    filler = small_disk / "filler"
    args = ("train", *FAST, "-o", f"output.root={small_disk}", "--name", "full")
    proc = run_subprocess(*args, env={"MNIST_KIT_FAULT": "fill@step:15", "MNIST_KIT_FILL": str(filler)})
    assert_user_error(proc, "No space left on device", "intact")
    assert json.loads((small_disk / "full" / "run.json").read_text())["status"] == "failed"
    filler.unlink()  # room again: the run continues where its last intact checkpoint left it
    proc = run_subprocess("resume", "--run", small_disk / "full")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((small_disk / "full" / "run.json").read_text())["status"] == "completed"
    assert [r["epoch"] for r in _rows(small_disk / "full")] == [0, 1]


# ---------------------------------------------------------------- 17: edited run files

@pytest.mark.parametrize("content,reason", [("[1]", "it holds a JSON list, not an object"),
                                            ('{"started": "yesterday"}', 'started is "yesterday", not a number'),
                                            ("{", "Expecting")])
def test_a_damaged_run_json_is_an_error_for_that_run_and_skipped_for_the_others(trained, content, reason):
    shutil.copytree(trained, trained.parent / "zz-damaged")
    (trained.parent / "zz-damaged" / "run.json").write_text(content)
    assert_user_error(run_cli("eval", "--run", trained.parent / "zz-damaged"), "run.json is damaged", reason)
    listed = run_cli("runs", "--json")
    assert listed.exit_code == 0, listed.output
    assert {r["run"]: r["status"] for r in json.loads(listed.stdout)} == {"base": "completed",
                                                                          "zz-damaged": "unreadable"}
    newest = run_cli("eval", "--json")  # the newest run: the damaged one is skipped with a warning
    assert newest.exit_code == 0, newest.output
    assert "warning: skipping checkpoints/zz-damaged" in newest.output
    assert json.loads(newest.stdout)["run"].endswith("base")


def test_garbage_lines_in_metrics_are_left_out(trained):
    with open(trained / "metrics.jsonl", "a") as f:
        f.write('garbage\n{"epoch": "x", "step": 5}\n[1, 2]\n{"epoch": 1, "step": 20, "val_acc": "high"}\n')
    listed = run_cli("runs", "--json")
    assert listed.exit_code == 0 and json.loads(listed.stdout)[0]["epochs_done"] == 2, listed.output
    result = run_cli("resume", "-o", "train.epochs=3")
    assert result.exit_code == 0, result.output
    assert [r["epoch"] for r in _rows(trained)] == [0, 1, 2]


def test_ctrl_c_before_the_first_checkpoint_does_not_suggest_resume(trained, monkeypatch):
    monkeypatch.setenv("MNIST_KIT_FAULT", "interrupt@step:3")
    result = run_cli("train", *FAST, "--name", "early")
    assert result.exit_code == 130
    assert "nothing to resume; train it again" in result.output and "mnist-kit resume" not in result.output


# ---------------------------------------------------------------- 7: never a silently wrong model

def _edit_config(run: Path, old: str, new: str) -> None:
    text = (run / "config.yaml").read_text()
    assert old in text
    (run / "config.yaml").write_text(text.replace(old, new))


@pytest.mark.parametrize("command", [["eval"], ["export"], ["resume", "-o", "train.epochs=3"]])
def test_an_edited_config_yaml_does_not_load_other_weights(trained, tmp_path, command):
    _edit_config(trained, "channels: [20, 20]", "channels: [8, 8]")
    before = snapshot(tmp_path)
    result = run_cli(*command)
    assert_user_error(result, "model.channels")
    assert "Skip loading" not in result.output and snapshot(tmp_path) == before


def test_checkpoints_of_another_model_are_refused_by_name(trained, tmp_path, monkeypatch):
    """Another run's ckpt/ copied in, its config included: the weights themselves are checked."""
    small = run_cli("train", *FAST, "-o", "model.channels=[4,4]", "-o", "train.epochs=1", "--name", "small")
    assert small.exit_code == 0
    shutil.rmtree(trained / "ckpt")
    shutil.copytree(tmp_path / "checkpoints" / "small" / "ckpt", trained / "ckpt")
    assert_user_error(run_cli("export", "--run", trained), "model.channels")
    from mnist_kit.models import networks
    from mnist_kit.runs.checkpoint import load

    state = load(trained / "ckpt" / "epoch_000.pdckpt")
    model = networks.build_model({**state["config"]["model"], "channels": [20, 20]})
    with pytest.raises(UserError, match=r"body\.0\.weight has shape \[4, 1, 5, 5\], the model's is \[20, 1, 5, 5\]"):
        networks.load_weights(model, state["model"], "epoch_000.pdckpt")


# ---------------------------------------------------------------- 3, 6, 19: data files

def _bomb(path: Path, shape=(60000, 28, 28), expands_to=1 << 31) -> None:
    """A valid-looking gzip IDX archive of ~2 MB whose content goes on far beyond what its header declares."""
    import struct
    import zlib

    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    with open(path, "wb") as f:
        f.write(packer.compress(struct.pack(f">HBB{len(shape)}I", 0, 8, len(shape), *shape)))
        zeros = b"\0" * (1 << 24)
        for _ in range(expands_to >> 24):
            f.write(packer.compress(zeros))
        f.write(packer.flush())


def _peak_rss_mib(proc_args, **kw) -> tuple[subprocess.CompletedProcess, float]:
    """Run ``python -m mnist_kit ARGS`` and return it with its peak resident memory (MiB): VmHWM, which
    starts afresh at exec (ru_maxrss would carry over the forking test process's own peak)."""
    code = ("import runpy, sys; sys.argv = ['mnist-kit'] + sys.argv[1:]\n"
            "try:\n    runpy.run_module('mnist_kit', run_name='__main__')\n"
            "finally:\n    print('PEAK', [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0],"
            " file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code, *map(str, proc_args)], capture_output=True, text=True, **kw)
    peak = [line for line in done.stderr.splitlines() if line.startswith("PEAK")]
    assert peak, done.stderr
    return done, int(peak[0].split()[1]) / 1024


@pytest.fixture(scope="module")
def bomb_folder(tmp_path_factory):
    folder = write_idx_folder(tmp_path_factory.mktemp("bomb"), synthetic_arrays())
    _bomb(folder / "train-images-idx3-ubyte.gz")
    assert (folder / "train-images-idx3-ubyte.gz").stat().st_size < 3 << 20
    return folder


@pytest.mark.parametrize("verify,message", [(True, "does not match the published MNIST checksums"),
                                            (False, "has trailing bytes")])
def test_a_decompression_bomb_is_refused_without_expanding_it(bomb_folder, verify, message):
    args = ["prepare", "--dataset", "mnist", "--from-dir", bomb_folder] + ([] if verify else ["--no-verify"])
    done, peak = _peak_rss_mib(args)
    done.exit_code = done.returncode
    assert_user_error(done, message)
    assert peak < 400, f"peak memory {peak:.0f} MiB for a 2 GiB bomb"  # 4.2 GB before the fix


def test_a_decompression_bomb_from_a_mirror_is_discarded(bomb_folder, http_server, tmp_path):
    mirror = http_server(bomb_folder)
    done, peak = _peak_rss_mib(["prepare", "--dataset", "mnist", "--source", "download", "--mirror", mirror,
                                "--retries", "1"], env={**os.environ, "MNIST_KIT_DATA": str(tmp_path / "data")})
    done.exit_code = done.returncode
    assert_user_error(done, "checksum mismatch", "file discarded")
    assert peak < 400, f"peak memory {peak:.0f} MiB"
    assert not list((tmp_path / "data" / "mnist" / "raw").iterdir())


@pytest.mark.parametrize("gz", [True, False])
def test_an_idx_header_declaring_an_enormous_shape_is_refused(tmp_path, gz):
    import gzip
    import struct

    folder = write_idx_folder(tmp_path / "idx", synthetic_arrays(), gz=gz)
    header = struct.pack(">HBB3I", 0, 8, 3, 2 ** 31, 2 ** 31, 4) + b"\0" * 100
    name = "train-images-idx3-ubyte" + (".gz" if gz else "")
    (folder / name).write_bytes(gzip.compress(header) if gz else header)
    assert_user_error(run_cli("prepare", "--dataset", "mnist", "--from-dir", folder, "--no-verify"),
                      "the header declares shape (2147483648, 2147483648, 4)", "more than the 1,073,741,824 bytes")


def test_an_idx_set_without_training_images_is_refused(tmp_path):
    import numpy as np

    arrays = synthetic_arrays()
    arrays["train_images"], arrays["train_labels"] = np.zeros((0, 28, 28), np.uint8), np.zeros(0, np.uint8)
    folder = write_idx_folder(tmp_path / "idx", arrays)
    assert_user_error(run_cli("prepare", "--dataset", "mnist", "--from-dir", folder, "--no-verify"),
                      "training set has no images")


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_a_fifo_or_device_instead_of_an_idx_file_is_named(tmp_path, kind):
    folder = write_idx_folder(tmp_path / "idx", synthetic_arrays())
    (folder / "train-images-idx3-ubyte.gz").unlink()
    if kind == "fifo":
        os.mkfifo(folder / "train-images-idx3-ubyte.gz")
    else:
        (folder / "train-images-idx3-ubyte.gz").symlink_to("/dev/zero")
    assert_user_error(run_cli("prepare", "--dataset", "mnist", "--from-dir", folder, "--no-verify"),
                      "is not a regular file")


def test_prepare_force_killed_at_the_switch_keeps_a_usable_cache(prepared, tmp_path):
    from mnist_kit import data

    before = data.load("mnist", prepared).x_train
    other = write_idx_folder(tmp_path / "other", synthetic_arrays(seed=7))
    killed = run_subprocess("prepare", "--from-dir", other, "--no-verify", "--force",
                            env={"MNIST_KIT_FAULT": "kill@prepare-switch:0"})
    assert killed.returncode == -9
    assert (data.load("mnist", prepared).x_train == before).all()  # the old cache, intact
    dead = subprocess.Popen(["true"])
    dead.wait()
    partial = prepared / "mnist" / f".arrays-0123.npz.{dead.pid}-abcd.partial"  # as a kill while writing leaves
    partial.write_bytes(b"half")
    mine = prepared / "mnist" / "my-notes.txt"
    mine.write_text("mine\n")
    assert run_cli("prepare", "--from-dir", other, "--no-verify", "--force").exit_code == 0
    assert not (data.load("mnist", prepared).x_train == before).all()  # the new one
    left = sorted(p.name for p in (prepared / "mnist").iterdir())
    assert len([n for n in left if n.startswith("arrays")]) == 1 and not partial.exists() and mine.exists(), left


# ---------------------------------------------------------------- 20: SIGTERM and kill -9 of train

def _as_in_a_terminal():
    """Default dispositions for the signals a terminal sends: a test run under nohup or in a background job
    inherits SIGHUP and SIGINT ignored, and mnist-kit rightly leaves ignored signals ignored."""
    import signal

    for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(signum, signal.SIG_DFL)


def _start_training(name: str, *extra) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mnist_kit", "train", *FAST, "-o", "train.epochs=500",
                             "-o", "log.images=false", "--name", name, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_as_in_a_terminal)


def _children(pid: int) -> list[int]:
    done = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(p) for p in done.stdout.split()]


def _graph_children(pid: int) -> list[int]:
    """The children of ``pid`` that are the VisualDL graph writer (``python -m mnist_kit.board.graph``)."""
    done = subprocess.run(["pgrep", "-P", str(pid), "-f", "mnist_kit.board.graph"], capture_output=True, text=True)
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

    from mnist_kit.board import graph

    started = []
    real = subprocess.Popen

    def popen_then_ctrl_c(*args, **kwargs):
        proc = real(*args, **kwargs)
        started.append(proc)
        os.kill(os.getpid(), signal.SIGINT)  # arrives before Popen is seen to return
        return proc

    monkeypatch.setattr(graph.subprocess, "Popen", popen_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        graph.start(tmp_path / "run")
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


# ---------------------------------------------------------------- 4: signals to a multi-process job

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
        from mnist_kit.train import launch

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


# ---------------------------------------------------------------- 9: the board

def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _visualdl_servers() -> set[int]:
    done = subprocess.run(["pgrep", "-f", "visualdl.server.app"], capture_output=True, text=True)
    return {int(p) for p in done.stdout.split()}


def _shrink_pipe(pid: int, fd: int, size: int = 4096) -> None:
    """Make the pipe on file descriptor ``fd`` of process ``pid`` hold only ``size`` bytes (Linux)."""
    import fcntl

    f_setpipe_sz = 1031
    handle = os.open(f"/proc/{pid}/fd/{fd}", os.O_WRONLY | os.O_NONBLOCK)
    try:
        fcntl.fcntl(handle, f_setpipe_sz, size)
    finally:
        os.close(handle)


def test_the_board_keeps_answering_after_many_logged_errors(trained, tmp_path):
    """VisualDL logs each failed request with its traceback to stderr (~1.2 KB, after 4 s of retrying):
    a pipe that nobody reads fills up and blocks it. The pipe is shrunk to one page so that a few errors
    fill it, instead of ~60 (4 minutes)."""
    import urllib.error
    import urllib.request

    logs = _logdir_with_a_run(trained, tmp_path)
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mnist_kit", "board", "--logdir", logs, "--port",
                             str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "HOME": str(tmp_path)})
    try:
        assert "VisualDL is serving" in proc.stderr.readline()
        (server,) = _children(proc.pid)
        _shrink_pipe(server, 2)
        for _ in range(6):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/app/api/scalar/list?run=gone&tag=x", timeout=30)
            except urllib.error.HTTPError:
                pass
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/alive", timeout=10) as answer:
            assert answer.status in (200, 204)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _logdir_with_a_run(trained, tmp_path) -> Path:
    from mnist_kit.board.writer import Logbook

    book = Logbook(tmp_path / "logs" / "r" / "vdl", display_name="r")
    book.scalar("x", 1.0, 0)
    book.close()
    return tmp_path / "logs"


def test_the_board_refuses_a_port_that_is_taken(trained, tmp_path):
    import socket

    logs = _logdir_with_a_run(trained, tmp_path)
    with socket.socket() as silent:  # listens and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        before = _visualdl_servers()
        assert_user_error(run_cli("board", "--logdir", logs, "--port", port), f"port {port} is in use", "--port")
        assert _visualdl_servers() == before


@pytest.mark.parametrize("host", ["a b", "192.0.2.1", "no-such-host.invalid"])
def test_the_board_refuses_a_host_it_cannot_listen_on(trained, tmp_path, host):
    logs = _logdir_with_a_run(trained, tmp_path)
    before = _visualdl_servers()
    assert_user_error(run_cli("board", "--logdir", logs, "--host", host, "--port", _free_port()), "--host" if
                      host != "192.0.2.1" else "cannot listen on 192.0.2.1")
    assert _visualdl_servers() == before


# ---------------------------------------------------------------- 10, 11, 12: configs that cannot train

def test_a_config_that_yields_no_training_step_is_an_error(trained):
    assert_user_error(run_cli("train", "--nproc", 2, *FAST, "-o", "train.batch_size=1000", "--name", "big"),
                      "no training step: the training split has 500 images and a step takes 2 processes x 1000",
                      "train.batch_size")
    assert not Path("checkpoints/big").exists()


def test_a_sweep_run_that_fails_before_its_folder_exists_is_reported(trained):
    proc = run_subprocess("sweep", *FAST, "-o", "train.device=cpu,gpu", "--name", "devices")
    assert proc.returncode == 1, proc.stderr
    table = proc.stdout.splitlines()
    assert any(line.startswith("device=gpu") and "failed" in line for line in table), proc.stdout
    assert any(line.startswith("device=cpu") and "completed" in line for line in table), proc.stdout
    assert "1 run(s) failed: device=gpu" in proc.stderr


def test_an_image_folder_too_small_to_validate_says_so(tmp_path):
    from conftest import write_image_folder

    folder = write_image_folder(tmp_path / "cards", counts={"box": 2, "hbar": 2}, corrupt=False)
    args = ["-o", "data.name=image_folder", "-o", f"data.folder={folder}", "-o", "data.image_size=[16,32]"]
    prepared = run_cli("prepare", *args)
    assert prepared.exit_code == 0 and "warning: the validation split is empty" in prepared.output
    assert_user_error(run_cli("train", *args, "-o", "train.epochs=1"), "the validation split is empty",
                      "data.val_ratio")


# ---------------------------------------------------------------- 15: every number has a range; YAML is bounded

@pytest.mark.parametrize("args,phrase", [
    (["--seed", "-1"], "train.seed must be >= 0"),
    (["--seed", "99999999999999999999999"], "train.seed must be <= 4294967295, got 99999999999999999999999"),
    (["-o", "data.split_seed=-5"], "data.split_seed must be >= 0"),
    (["-o", "train.batch_size=99999999999999999999"], "train.batch_size must be <= 65536"),
    (["-o", "model.channels=[100000,100000]"], "model.channels must be <= 1024"),
    (["-o", "model.kernel_size=100001"], "model.kernel_size must be <= 31"),
    (["-o", "data.name=image_folder", "-o", "data.folder=x", "-o", "data.image_size=[30000,30000]"],
     "data.image_size must be <= 4096"),
    (["-o", "model.channels=[" + ",".join(["8"] * 1000) + "]"], "model.channels has 1000 values; at most 64"),
])
def test_numbers_out_of_range_are_refused(args, phrase):
    result = run_cli("train", *args, "--print-config")
    assert_user_error(result, phrase)
    assert result.exit_code == 2 and len(result.output) < 2000


def test_every_number_in_the_schema_has_a_range():
    from mnist_kit.config import SCHEMA

    unbounded = [f"{s}.{k}" for s, fields in SCHEMA.items() for k, f in fields.items()
                 if f.kind in ("int", "float", "ints", "float_or_auto") and (f.min is None or f.max is None)]
    assert unbounded == []


@pytest.mark.parametrize("text,phrase", [
    ("train:\n  epochs: " + "[" * 20000 + "\n", "nested more than 8 levels deep"),
    ("a: &a [1,1,1,1,1,1,1,1,1]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
     "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
     "g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\nmodel:\n  channels: *g\n", "aliases (*name) are not allowed"),
    ("train:\n  epochs: 3\n  epochs: 5\n", "'epochs' is given twice"),
])
def test_hostile_yaml_is_refused_quickly_with_a_short_message(tmp_path, text, phrase):
    import time

    path = tmp_path / "hostile.yaml"
    path.write_text(text)
    start = time.perf_counter()
    result = run_cli("train", "--config", path, "--print-config")
    assert time.perf_counter() - start < 10
    assert_user_error(result, phrase)
    assert len(result.output) < 2000


@pytest.mark.parametrize("name", ["a\nb", " ", "~", "-o", ".hidden", "x" * 300, "a/b", ".."])
def test_run_names_are_plain_folder_names(trained, tmp_path, name):
    before = snapshot(tmp_path)
    assert_user_error(run_cli("train", *FAST, "--name", name), "output.name",
                      "control characters" if "\n" in name else "a run name is a plain folder name")
    assert snapshot(tmp_path) == before


def test_a_relative_data_root_is_recorded_as_an_absolute_path(trained, tmp_path, monkeypatch):
    import yaml

    monkeypatch.delenv("MNIST_KIT_DATA")
    result = run_cli("train", *FAST, "-o", "data.root=data", "-o", "train.epochs=1", "--name", "rel")
    assert result.exit_code == 0, result.output
    saved = yaml.safe_load(Path("checkpoints/rel/config.yaml").read_text())
    assert saved["data"]["root"] == str(tmp_path / "data")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    evaluated = run_cli("eval", "--run", tmp_path / "checkpoints" / "rel")  # the same data from another folder
    assert evaluated.exit_code == 0 and "prepared again" not in evaluated.output, evaluated.output


# ---------------------------------------------------------------- 16: file-system errors

@pytest.fixture
def read_only(small_disk, trained):
    """A read-only file system holding a copy of the trained run (``RO/base``) and of its data."""
    shutil.copytree(trained, small_disk / "base")
    shutil.copytree(trained.parent.parent / "data", small_disk / "data")
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    yield small_disk
    subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)


def _photo(path: Path) -> Path:
    import numpy as np
    from PIL import Image

    img = np.full((60, 60), 230, np.uint8)
    img[15:45, 27:33] = 20
    Image.fromarray(img).save(path)
    return path


@pytest.mark.parametrize("case", ["train", "prepare", "resume", "export", "predict", "long-name"])
def test_read_only_and_unusable_folders_are_one_line_with_what_to_do(read_only, trained, tmp_path, case):
    ro = read_only
    if case == "predict":
        assert run_cli("export").exit_code == 0
    before = snapshot(tmp_path / "checkpoints")
    args, phrases = {
        "train": (["train", *FAST, "-o", f"output.root={ro}/runs"], ["Read-only file system", "output.root"]),
        "prepare": (["prepare", "--dataset", "mnist", "--root", ro / "fresh"], ["Read-only file system", "--root"]),
        "resume": (["resume", "--run", ro / "base", "-o", "train.epochs=3"], ["Read-only", "copy it"]),
        "export": (["export", "--run", ro / "base"], ["Read-only file system", "--out"]),
        "predict": (["predict", _photo(tmp_path / "one.png"), "--save-preprocessed", ro / "seen"],
                    ["Read-only file system", "--save-preprocessed"]),
        "long-name": (["train", *FAST, "-o", f"output.root={tmp_path / ('x' * 300)}"], ["File name too long"]),
    }[case]
    assert_user_error(run_cli(*args), *phrases)
    assert snapshot(tmp_path / "checkpoints") == before


def test_symbolic_link_loops_are_one_line_for_export_and_eval(trained):
    Path("loop").symlink_to("loop")
    assert_user_error(run_cli("export", "--out", "loop"), "cannot use", "loop: Too many levels of symbolic links",
                      "--out")
    assert_user_error(run_cli("eval", "--photos", "2", "--save-photos", "loop"),
                      "--save-photos loop is a symbolic link to nothing")
    assert Path("loop").is_symlink()  # and nothing else happened to it


def test_export_on_a_full_disk_names_where_at_every_fill_level(trained, small_disk):
    """The disk fills at another write at each level (the program, its parameters, ONNX, the metadata, the
    check's temporary files): every failure is one line naming the export folder; the earlier export stays."""
    import os

    out = small_disk / "export"
    assert run_cli("export", "--out", out).exit_code == 0
    before = snapshot(out)
    filler = small_disk / "filler"
    seen = set()
    for kib in (4, 16, 40, 80, 120, 160, 240, 320):
        free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
        with open(filler, "ab") as f:  # leave about `kib` KiB
            f.write(b"\0" * max(0, free - kib * 1024))
        result = run_cli("export", "--out", out)
        filler.unlink()
        if result.exit_code == 0:
            continue  # room enough at this level
        assert_user_error(result, f"cannot use {out}", "No space left on device", "--out")
        seen.add(kib)
        assert snapshot(out) == before  # the earlier export is whole
    assert seen, "no fill level made the export fail"


def test_a_plain_export_over_a_pdparams_export_says_what_it_replaced(trained):
    assert run_cli("export", "--out", "ex", "--format", "pdparams").exit_code == 0
    again = run_cli("export", "--out", "ex")
    assert again.exit_code == 0
    assert ("note: the earlier export in ex held model.pdopt and model.pdparams, which this export does not write"
            in again.output), again.output
    assert "note:" not in run_cli("export", "--out", "ex").output  # nothing more to say the next time


def test_eval_photo_options_are_checked_and_a_short_test_split_is_said(trained):
    bad = run_cli("eval", "--photos", "5", "--photo-seed", "-1")
    assert bad.exit_code == 2 and "--photo-seed" in bad.output and "Traceback" not in bad.output, bad.output
    from mnist_kit import data
    from mnist_kit.runs.rundir import RunDir

    test_size = len(data.load_dataset(RunDir(trained).read_config()["data"]).y_test)
    more = run_cli("eval", "--photos", str(test_size + 100))
    assert more.exit_code == 0, more.output
    assert f"note: --photos {test_size + 100}, but the test split holds {test_size} images" in more.output
    assert f"on {test_size} photos" in more.output


# ---------------------------------------------------------------- 13: what is drawn is bounded

def test_thousands_of_classes_are_drawn_within_bounds(tmp_path):
    import numpy as np
    from PIL import Image

    from mnist_kit.board import visuals

    picture = visuals.confusion_image(np.ones((10000, 10000), np.int32), [str(i) for i in range(10000)])
    assert picture.shape[0] * picture.shape[1] < 4000 * 4000
    assert visuals.grid(np.zeros((100000, 28, 28), np.uint8), ["x"] * 100000).shape[0] < 10000

    rng = np.random.default_rng(0)
    folder = tmp_path / "many"
    for k in range(1000):  # 1,000 classes of 5 images: 1 for validation, 1 for test
        (folder / f"c{k:04d}").mkdir(parents=True)
        for i in range(5):
            Image.fromarray(rng.integers(0, 255, (8, 8)).astype(np.uint8)).save(folder / f"c{k:04d}" / f"{i}.png")
    args = ["-o", "data.name=image_folder", "-o", f"data.folder={folder}", "-o", "data.image_size=[8,8]",
            "-o", "data.val_ratio=0.2", "-o", "data.test_ratio=0.2", "-o", "model.channels=[4]"]
    done, peak = _peak_rss_mib(["prepare", *args])
    assert done.returncode == 0 and peak < 1500, (peak, done.stderr[-2000:])
    done, peak = _peak_rss_mib(["train", *args, "-o", "train.epochs=1", "-o", "log.embeddings=0", "--name", "many"])
    assert done.returncode == 0, done.stderr[-2000:]
    assert peak < 2000, f"peak memory {peak:.0f} MiB"


# ---------------------------------------------------------------- 18: edited export metadata

def _meta_edit(name):
    return {
        "std 0": lambda m: m["normalization"].update(std=0),
        "3 classes": lambda m: m.update(classes=["a", "b", "c"]),
        "no classes": lambda m: m.update(classes=[]),
        "20 classes": lambda m: m.update(classes=[str(i) for i in range(20)]),
        "folder without image": lambda m: m.update(preprocess="folder"),
        "32x32 image": lambda m: m.update(preprocess="folder", input_shape=[None, 1, 32, 32], image={
            "image_size": [32, 32], "color": "grayscale", "resize": "stretch"}),
        "rgb image": lambda m: m.update(preprocess="folder", input_shape=[None, 3, 28, 28], image={
            "image_size": [28, 28], "color": "rgb", "resize": "stretch"}),
        "extra normalisation key": lambda m: m["normalization"].update(scale=2),
        "preprocess xyz": lambda m: m.update(preprocess="xyz"),
        "edited input_shape": lambda m: m.update(input_shape=[None, 1, 30, 28]),
    }[name]


@pytest.mark.parametrize("edit", ["std 0", "3 classes", "no classes", "20 classes", "folder without image",
                                  "32x32 image", "rgb image", "extra normalisation key", "preprocess xyz",
                                  "edited input_shape"])
def test_edited_export_metadata_is_refused(trained, tmp_path, edit):
    assert run_cli("export", "--out", "exp").exit_code == 0
    path = tmp_path / "exp" / "mnist_kit_model.json"
    meta = json.loads(path.read_text())
    _meta_edit(edit)(meta)
    path.write_text(json.dumps(meta))
    result = run_cli("predict", "--model", "exp", _photo(tmp_path / "one.png"))
    assert_user_error(result, "export the run again")


def test_another_models_parameters_in_an_export_are_refused(trained, tmp_path):
    assert run_cli("export", "--out", "exp").exit_code == 0
    assert run_cli("train", *FAST, "-o", "model.name=mlp", "-o", "train.epochs=1", "--name", "mlp").exit_code == 0
    assert run_cli("export", "--run", "checkpoints/mlp", "--out", "mlp_exp").exit_code == 0
    shutil.copy(tmp_path / "mlp_exp" / "model.pdiparams", tmp_path / "exp" / "model.pdiparams")
    result = run_cli("predict", "--model", "exp", "--runtime", "paddle", _photo(tmp_path / "one.png"))
    assert result.exit_code == 1 and "Traceback" not in result.output and "Error:" in result.output, result.output
    # another model's ONNX file runs (it is whole in itself), so its digest is checked against the export's
    shutil.copy(tmp_path / "mlp_exp" / "model.onnx", tmp_path / "exp" / "model.onnx")
    for runtime in ("auto", "onnxruntime"):
        result = run_cli("predict", "--model", "exp", "--runtime", runtime, _photo(tmp_path / "one.png"))
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        assert "model.onnx is not the file export checked" in result.output, result.output


# ---------------------------------------------------------------- 19: file names that are not UTF-8

def test_an_image_file_name_that_is_not_utf8(tmp_path):
    from conftest import write_image_folder

    folder = write_image_folder(tmp_path / "cards", corrupt=False)
    os.rename(folder / "box" / "box_0.png", os.fsencode(folder / "box") + b"/bad\xff.png")
    (Path(os.fsdecode(os.fsencode(folder / "box") + b"/broken\xfe.png"))).write_bytes(b"not a picture")
    args = ["-o", "data.name=image_folder", "-o", f"data.folder={folder}", "-o", "data.image_size=[16,32]"]
    assert_user_error(run_cli("prepare", *args), "box/broken\ufffd.png: not an image")
    result = run_cli("prepare", *args, "-o", "data.bad_files=skip")
    assert result.exit_code == 0 and "skipped 1 unreadable file(s)" in result.output, result.output


# ---------------------------------------------------------------- confusing messages

@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_a_fifo_or_device_as_an_input_is_named(trained, tmp_path, kind):
    special = tmp_path / "special"
    os.mkfifo(special) if kind == "fifo" else special.symlink_to("/dev/zero")
    assert run_cli("export").exit_code == 0
    result = run_cli("predict", special)
    assert result.exit_code == 1 and "not a regular file" in result.output, result.output
    assert_user_error(run_cli("train", "--config", special), "is not a regular file")


def test_a_small_png_of_enormous_size_is_predicted_in_bounded_memory(trained, tmp_path):
    import numpy as np
    from PIL import Image

    img = np.full((6300, 6300), 255, np.uint8)
    img[2000:4500, 3000:3400] = 0  # a "1"
    Image.fromarray(img).convert("1").save(tmp_path / "huge.png", optimize=True)
    assert (tmp_path / "huge.png").stat().st_size < 200_000
    assert run_cli("export").exit_code == 0
    done, peak = _peak_rss_mib(["predict", tmp_path / "huge.png"], env={**os.environ})
    assert done.returncode == 0, done.stderr
    assert peak < 900, f"peak memory {peak:.0f} MiB"  # 1.66 GB before


def test_a_run_without_config_yaml_says_so(trained):
    (trained / "config.yaml").unlink()
    assert_user_error(run_cli("eval", "--run", trained), "has no config.yaml", "not a complete mnist-kit run")


def test_eval_names_the_classes_in_its_confusion_matrix():
    import numpy as np

    from mnist_kit.evaluate import metrics

    classes = ["T-shirt/top", "Trouser", "Pullover"]
    y = np.array([0, 1, 2, 2])
    result = metrics.report(y, np.array([0, 1, 2, 1]), 3)
    result.update(split="test", dataset="fashion-mnist", samples=4, checkpoint="best.pdckpt", loss=0.1)
    text = metrics.format_report(result, classes).split("confusion matrix")[1]
    assert "0 T-shirt/top" in text and "Trouse" in text and "2 Pullover" in text
