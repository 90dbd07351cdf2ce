"""Checkpoints that lose nothing: exact resume, crash safety, damaged files, config changes."""

import fcntl
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from helpers import FAST, REPO, checkpoints_of, run_cli, run_subprocess, wait_for
from mnist_kit.experiments import checkpoint, rundir
from mnist_kit.logbook.writer import read_records

pytestmark = pytest.mark.slow  # trains, interrupts and resumes runs

E3 = [*FAST, "-o", "train.epochs=3", "-o", "train.log_every=1"]  # 3 epochs x 10 steps, loss logged every step


def _train(*args, name, env_fault=None, monkeypatch=None, expect=0):
    if env_fault:
        monkeypatch.setenv("MNIST_KIT_FAULT", env_fault)
    result = run_cli("train", *E3, *args, "--name", name)
    if env_fault:
        monkeypatch.delenv("MNIST_KIT_FAULT")
    assert result.exit_code == expect, result.output
    return Path("checkpoints") / name


def _resume(run, *args, expect=0):
    result = run_cli("resume", "--run", run, *args)
    assert result.exit_code == expect, result.output
    return result


def _param_hash(run, epoch):
    state = checkpoint.load(Path(run) / "ckpt" / checkpoint.epoch_file(epoch))
    h = hashlib.sha256()
    for key in sorted(state["model"]):
        h.update(key.encode())
        h.update(np.asarray(state["model"][key].numpy()).tobytes())
    for key, value in sorted(((state.get("ema") or {}).get("weights") or {}).items()):  # train.ema's average
        h.update(f"ema/{key}".encode())
        h.update(np.asarray(value).tobytes())
    return h.hexdigest()


def _history(run):
    """Per-step losses from VisualDL and per-epoch metrics without timings."""
    files = list((Path(run) / "vdl").glob("vdlrecords*"))
    assert len(files) == 1, files
    losses = [(v.id, v.value) for r in read_records(files[0]) for v in r.values if v.tag == "train/loss"]
    rows = [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        for key in rundir.TIMING_KEYS:
            r.pop(key)
    return losses, rows


def _assert_identical(full, part, epochs=3):
    assert _param_hash(full, epochs - 1) == _param_hash(part, epochs - 1)
    losses_full, rows_full = _history(full)
    losses_part, rows_part = _history(part)
    assert [i for i, _ in losses_full] == list(range(1, 10 * epochs + 1))  # every step once, none missing
    assert losses_part == losses_full
    assert rows_part == rows_full


CASES = {
    "cnn.yaml+dropout": ["--config", REPO / "configs/cnn.yaml", "-o", "model.dropout=0.3"],
    "mlp.yaml": ["--config", REPO / "configs/mlp.yaml"],
    "cnn+augment": ["--config", REPO / "configs/cnn.yaml", "-o", "augment.rotate=15", "-o", "augment.scale=0.1",
                    "-o", "augment.translate=0.1", "-o", "augment.shear=5", "-o", "augment.stroke=0.7",
                    "-o", "augment.elastic=20", "-o", "augment.erase=0.3"],
    "linear.yaml": ["--config", REPO / "configs/linear.yaml"],
    "sgd": ["-o", "model.name=mlp", "-o", "optimizer.name=sgd", "-o", "optimizer.lr=0.05"],
    "momentum": ["-o", "model.name=mlp", "-o", "optimizer.name=momentum", "-o", "optimizer.lr=0.01",
                 "-o", "optimizer.nesterov=true", "-o", "optimizer.weight_decay=0.001"],
    "adagrad": ["-o", "model.name=mlp", "-o", "optimizer.name=adagrad", "-o", "optimizer.lr=0.01"],
    "rmsprop": ["-o", "model.name=mlp", "-o", "optimizer.name=rmsprop", "-o", "optimizer.grad_clip=1.0"],
    "adamw+batchnorm": ["-o", "optimizer.name=adamw", "-o", "optimizer.weight_decay=0.01", "-o",
                        "model.batch_norm=true", "-o", "model.channels=[4, 4]"],
    "step": ["-o", "model.name=linear", "-o", "schedule.name=step", "-o", "schedule.step_epochs=0.5"],
    "polynomial+warmup": ["-o", "model.name=linear", "-o", "schedule.name=polynomial", "-o",
                          "schedule.warmup_epochs=1.5", "-o", "schedule.power=2"],
    "ema+batchnorm": ["-o", "train.ema=0.9", "-o", "model.batch_norm=true", "-o", "model.channels=[4, 4]"],
    "cosine+label_smoothing": ["-o", "model.name=mlp", "-o", "schedule.name=cosine", "-o", "schedule.end_lr=0.0001",
                               "-o", "loss.label_smoothing=0.1", "-o", "model.dropout=0.5"],
}


@pytest.mark.parametrize("case", list(CASES))
def test_interrupt_after_an_epoch_then_resume_is_bit_identical(prepared, monkeypatch, case):
    full = _train(*CASES[case], name="full")
    part = _train(*CASES[case], name="part", env_fault="interrupt@epoch:0", monkeypatch=monkeypatch, expect=130)
    assert json.loads((part / "run.json").read_text())["status"] == "interrupted"
    result = _resume(part)
    assert "from epoch_000.pdckpt: the end of epoch 0 (global step 10)" in result.output
    _assert_identical(full, part)
    info = json.loads((part / "run.json").read_text())
    assert info["status"] == "completed" and info["resumes"][0]["from"] == "epoch_000.pdckpt"


@pytest.mark.parametrize("case", ["cnn.yaml+dropout", "cnn+augment", "mlp.yaml", "adamw+batchnorm", "polynomial+warmup",
                                  "ema+batchnorm"])
def test_mid_epoch_checkpoint_resume_is_bit_identical(prepared, monkeypatch, case):
    full = _train(*CASES[case], name="full")
    part = _train(*CASES[case], "-o", "checkpoint.every_steps=3", name="part", env_fault="interrupt@step:14",
                  monkeypatch=monkeypatch, expect=130)
    result = _resume(part)
    assert "from step_0000012.pdckpt: step 2 of epoch 1 (global step 12)" in result.output
    _assert_identical(full, part)
    # the records of steps 13-14, logged before the interruption, were set aside, not duplicated
    assert list((part / "superseded").glob("*/vdl-set-aside*"))  # renamed: the board must not show it


def test_kill_9_during_training_then_resume_loses_nothing(prepared):
    full = _train(*CASES["mlp.yaml"], name="full")
    args = ["train", *E3, *CASES["mlp.yaml"], "-o", "checkpoint.every_steps=4", "--name", "part"]
    proc = run_subprocess(*args, env={"MNIST_KIT_FAULT": "kill@step:23"})
    assert proc.returncode == -9
    part = Path("checkpoints/part")
    assert json.loads((part / "run.json").read_text())["status"] == "running"  # it never knew
    proc = run_subprocess("resume", "--run", part)
    assert proc.returncode == 0, proc.stderr
    assert "from epoch_001.pdckpt" in proc.stderr  # step 20 was the end of epoch 1
    _assert_identical(full, part)


def test_kill_9_while_writing_a_checkpoint_leaves_the_previous_one_usable(prepared):
    full = _train(*CASES["cnn.yaml+dropout"], name="full")
    args = ["train", *E3, *CASES["cnn.yaml+dropout"], "--name", "part"]
    proc = run_subprocess(*args, env={"MNIST_KIT_FAULT": "kill@checkpoint-write:20"})
    assert proc.returncode == -9
    part = Path("checkpoints/part")
    assert list((part / "ckpt").glob(".*.partial"))  # the half-written file is there ...
    assert all(not n.startswith(".") for n in checkpoint.manifest(part / "ckpt"))  # ... but never listed
    proc = run_subprocess("resume", "--run", part)
    assert proc.returncode == 0, proc.stderr
    assert "removed 1 half-written checkpoint file" in proc.stderr
    assert "from epoch_000.pdckpt" in proc.stderr
    assert not list((part / "ckpt").glob(".*.partial"))
    _assert_identical(full, part)


def test_disk_full_while_saving_is_a_clear_error_and_keeps_the_previous_checkpoint(prepared, monkeypatch):
    run = _train(name="full_disk", env_fault="enospc@checkpoint-write:20", monkeypatch=monkeypatch, expect=1)
    manifest = checkpoint.manifest(run / "ckpt")
    assert "epoch_000.pdckpt" in manifest and "epoch_001.pdckpt" not in manifest
    checkpoint.load(run / "ckpt" / "epoch_000.pdckpt")
    assert json.loads((run / "run.json").read_text())["status"] == "failed"
    assert not list((run / "ckpt").glob(".*.partial"))
    result = _resume(run)
    assert "from epoch_000.pdckpt" in result.output


def test_no_space_message(prepared, monkeypatch):
    monkeypatch.setenv("MNIST_KIT_FAULT", "enospc@checkpoint-write:10")
    result = run_cli("train", *E3, "--name", "nospace")
    assert result.exit_code == 1
    assert "cannot write checkpoint" in result.output and "No space left on device" in result.output
    assert "the earlier checkpoints are intact" in result.output


@pytest.mark.parametrize("damage", ["flip", "truncate", "foreign"])
def test_damaged_newest_checkpoint(prepared, monkeypatch, damage):
    other = _train("-o", "train.seed=9", name="other", env_fault="interrupt@epoch:1", monkeypatch=monkeypatch,
                   expect=130)
    run = _train(name="run", env_fault="interrupt@epoch:1", monkeypatch=monkeypatch, expect=130)
    newest = run / "ckpt" / "epoch_001.pdckpt"
    blob = newest.read_bytes()
    if damage == "flip":
        newest.write_bytes(blob[:500] + bytes([blob[500] ^ 0xFF]) + blob[501:])
    elif damage == "truncate":
        newest.write_bytes(blob[: len(blob) // 2])
    else:
        newest.write_bytes((other / "ckpt" / "epoch_001.pdckpt").read_bytes())
    # naming the epoch: the damaged file is named and nothing runs
    proc = run_subprocess("resume", "--run", run, "--epoch", 1)
    assert proc.returncode == 1
    assert "epoch_001.pdckpt is damaged" in proc.stderr and "Traceback" not in proc.stderr
    # plain resume: falls back to the newest intact checkpoint and says so
    result = _resume(run)
    assert "skipping a damaged checkpoint" in result.output
    assert "falling back to the newest intact checkpoint, epoch_000.pdckpt" in result.output
    assert json.loads((run / "run.json").read_text())["status"] == "completed"


def test_damaged_manifest(prepared, monkeypatch):
    run = _train(name="m", env_fault="interrupt@epoch:0", monkeypatch=monkeypatch, expect=130)
    (run / "ckpt" / "manifest.json").write_text("{not json")
    proc = run_subprocess("resume", "--run", run)
    assert proc.returncode == 1 and "manifest.json is damaged" in proc.stderr and "Traceback" not in proc.stderr


def test_resume_refuses_changes_to_model_or_data_and_lists_them(prepared, monkeypatch):
    run = _train(name="c", env_fault="interrupt@epoch:0", monkeypatch=monkeypatch, expect=130)
    result = _resume(run, "-o", "optimizer.lr=0.1", "-o", "data.val_size=50", expect=1)
    assert "optimizer.lr: 0.001 -> 0.1" in result.output and "data.val_size: 100 -> 50" in result.output
    assert "Safe to change on resume" in result.output
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"  # nothing touched


def test_resume_with_safe_changes_trains_longer_and_records_them(prepared):
    run = _train(name="longer")
    _resume(run, expect=1)  # already complete: says how to train longer
    result = _resume(run, "-o", "train.epochs=4", "-o", "train.log_every=2")
    assert "changed on resume: train.epochs: 3 -> 4" in result.output
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3]
    info = json.loads((run / "run.json").read_text())
    assert info["resumes"][0]["changes"]["train.epochs"] == [3, 4]
    assert "epochs: 4" in (run / "config.yaml").read_text()


def test_extending_a_cosine_run_is_refused(prepared):
    run = _train("-o", "schedule.name=cosine", name="cos")
    result = _resume(run, "-o", "train.epochs=5", expect=1)
    assert "cannot change train.epochs on resume with the cosine schedule" in result.output


def test_resume_from_an_earlier_epoch_sets_later_work_aside(prepared):
    run = _train(name="early")
    before = _history(run)
    result = _resume(run, "--epoch", 0)
    assert "set aside" in result.output
    assert _history(run) == before  # redone exactly
    aside = list((run / "superseded").iterdir())
    assert len(aside) == 1 and (aside[0] / "epoch_001.pdckpt").is_file() and (aside[0] / "metrics.jsonl").is_file()


def test_resume_epoch_that_does_not_exist_lists_the_existing_ones(prepared, monkeypatch):
    run = _train(name="few", env_fault="interrupt@epoch:1", monkeypatch=monkeypatch, expect=130)
    result = _resume(run, "--epoch", 5, expect=1)
    assert "no checkpoint of epoch 5; it has epochs 0, 1" in result.output


def test_resume_defaults_to_the_newest_run(prepared, monkeypatch):
    _train(name="old")
    _train(name="new", env_fault="interrupt@epoch:0", monkeypatch=monkeypatch, expect=130)
    result = run_cli("resume")
    assert result.exit_code == 0 and "resuming checkpoints/new" in result.output


def test_retention_keeps_the_last_k_and_the_best(prepared):
    run = _train("-o", "train.epochs=5", "-o", "checkpoint.keep_last=2", "-o", "checkpoint.every_steps=3",
                 name="keep")
    names = sorted(p.name for p in (run / "ckpt").iterdir())
    assert names == ["best.pdckpt", "epoch_003.pdckpt", "epoch_004.pdckpt", "manifest.json"]
    assert sorted(checkpoint.manifest(run / "ckpt")) == ["best.pdckpt", "epoch_003.pdckpt", "epoch_004.pdckpt"]


def test_a_run_is_trained_by_one_process_at_a_time(prepared, monkeypatch):
    run = _train(name="locked", env_fault="interrupt@epoch:0", monkeypatch=monkeypatch, expect=130)
    with open(run / ".lock", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        proc = run_subprocess("resume", "--run", run)
    assert proc.returncode == 1 and "being trained by another process" in proc.stderr


def test_nonfinite_loss_stops_naming_the_step_or_skips_the_batch(prepared):
    bad = ["-o", "model.name=mlp", "-o", "optimizer.name=sgd", "-o", "optimizer.lr=1e30"]
    result = run_cli("train", *E3, *bad, "--name", "stop")
    assert result.exit_code == 1
    assert "the loss is nan at step 2 (epoch 0)" in result.output or "the loss is inf at step 2" in result.output
    result = run_cli("train", *E3, *bad, "-o", "train.on_nonfinite=skip", "--name", "skip")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in Path("checkpoints/skip/metrics.jsonl").read_text().splitlines()]
    assert rows[0]["skipped_batches"] == 9 and rows[1]["skipped_batches"] == 10


def test_optimizer_state_survives_different_parameter_names(prepared):
    """Paddle names parameters by creation order; a checkpoint must load in a process that built other layers."""
    from mnist_kit.backend.runtime import paddle
    from mnist_kit.models.networks import build_model

    run = _train("-o", "train.epochs=1", name="names")
    state = checkpoint.load(run / "ckpt" / "epoch_000.pdckpt")
    build_model({"name": "linear"})  # shifts the generated names
    model = build_model({"name": "cnn", "channels": [20, 20], "kernel_size": 5, "batch_norm": False, "dropout": 0.0})
    local = checkpoint.local_optimizer_state(state["optimizer"], model)
    names = {p.name for p in model.parameters()}
    moments = [k for k in local if "moment1" in k]
    assert len(moments) == 6 and all(any(k.startswith(n + "_") for n in names) for k in moments)
    opt = paddle.optimizer.Adam(parameters=model.parameters())
    opt.set_state_dict(local)


def test_unwritable_output_folder_is_a_clear_error(prepared):
    Path("afile").write_text("x")
    proc = run_subprocess("train", *E3, "-o", "output.root=afile/runs")
    assert proc.returncode == 1
    assert "cannot create the output folder afile/runs" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_during_training_stops_cleanly_and_the_run_resumes(prepared, presses):
    """A real SIGINT, as Ctrl-C sends: once = stop after the current step, twice = at once. Either way: exit
    130, status interrupted, no traceback, and the run resumes (a Ctrl-C inside Paddle's autograd, where
    the conv bias's gradient runs, used to come out as a 'cannot write' error)."""
    import signal
    import subprocess
    import sys
    import time

    run = Path("checkpoints/ctrlc")
    proc = subprocess.Popen([sys.executable, "-m", "mnist_kit", "train", *FAST, "-o", "train.epochs=500",
                             "-o", "log.images=false", "-o", "log.histogram_every=0", "--name", "ctrlc"],
                            stderr=subprocess.PIPE, text=True,
                            # as from a terminal, even where this test runs as a background job (SIGINT ignored)
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    # a checkpoint to resume from: two presses stop at once, also between the first metrics row and the
    # checkpoint that follows it
    wait_for(lambda: checkpoints_of(run) or proc.poll() is not None, timeout=180, what="the first checkpoint")
    assert proc.poll() is None, proc.stderr.read()
    for _ in range(presses):
        proc.send_signal(signal.SIGINT)
        time.sleep(0.05)
    err = proc.communicate(timeout=120)[1]
    # 130, or killed by the second SIGINT after the first had been handled (a shell shows that as 130 too)
    assert proc.returncode in (130, -signal.SIGINT), err
    assert "Traceback" not in err and "cannot write" not in err, err
    assert "to continue: mnist-kit resume --run" in err
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"
    done = len((run / "metrics.jsonl").read_text().splitlines())
    _resume(run, "-o", f"train.epochs={done + 1}")
    assert json.loads((run / "run.json").read_text())["status"] == "completed"
