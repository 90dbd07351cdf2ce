"""Checkpoints on disk: the manifest names only mnist-kit's files, a full disk while saving is recorded and
resumed from, and weights never load into another network."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from helpers import FAST, assert_user_error, metrics_rows, run_cli, run_subprocess, snapshot
from mnist_kit import UserError
from mnist_kit.experiments import checkpoint

# ---------------------------------------------------------------- the checkpoint folder, in this process

def _state(epoch: int, step: int, complete: bool = True) -> dict:
    """A small state of the shape Trainer.state writes (what the folder's functions read of it)."""
    return {"model": {"w": np.full((2, 3), float(step), np.float32)}, "epoch": epoch, "step": step,
            "epoch_complete": complete, "step_in_epoch": 0 if complete else step % 10}


def _saved(folder: Path, *states) -> Path:
    for name, state in states:
        checkpoint.save(folder, name, state)
    return folder


def test_a_saved_checkpoint_is_listed_with_its_digest_and_loads_back(tmp_path):
    path = checkpoint.save(tmp_path, checkpoint.epoch_file(0), _state(0, 10))
    entry = checkpoint.manifest(tmp_path)[path.name]
    assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() and entry["bytes"] == path.stat().st_size
    assert (entry["epoch"], entry["step"], entry["complete_epoch"]) == (0, 10, True)
    loaded = checkpoint.load(path)
    assert loaded["step"] == 10 and np.array_equal(np.asarray(loaded["model"]["w"]), np.full((2, 3), 10.0))


def test_load_refuses_a_file_the_manifest_does_not_list_or_that_changed(tmp_path):
    path = checkpoint.save(tmp_path, checkpoint.epoch_file(0), _state(0, 10))
    shutil.copy(path, tmp_path / "epoch_009.pdckpt")
    with pytest.raises(checkpoint.CheckpointError, match="is not listed in"):
        checkpoint.load(tmp_path / "epoch_009.pdckpt")
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(checkpoint.CheckpointError, match="is damaged"):
        checkpoint.load(path)


def test_retention_keeps_the_newest_epochs_and_step_checkpoints_and_the_best(tmp_path):
    folder = _saved(tmp_path, *[(checkpoint.epoch_file(e), _state(e, 10 * (e + 1))) for e in range(4)],
                    (checkpoint.step_file(35), _state(3, 35, complete=False)),  # before epoch 3 ended: stale
                    (checkpoint.step_file(45), _state(4, 45, complete=False)),
                    (checkpoint.BEST, _state(1, 20)))
    removed = checkpoint.apply_retention(folder, keep_last=2)
    assert sorted(removed) == ["epoch_000.pdckpt", "epoch_001.pdckpt", "step_0000035.pdckpt"]
    assert sorted(checkpoint.manifest(folder)) == ["best.pdckpt", "epoch_002.pdckpt", "epoch_003.pdckpt",
                                                   "step_0000045.pdckpt"]
    assert sorted(p.name for p in folder.glob("*.pdckpt")) == sorted(checkpoint.manifest(folder))


def test_choosing_a_checkpoint_to_use_or_to_resume_from(tmp_path, capsys):
    folder = _saved(tmp_path, *[(checkpoint.epoch_file(e), _state(e, 10 * (e + 1))) for e in range(3)],
                    (checkpoint.step_file(35), _state(3, 35, complete=False)), (checkpoint.BEST, _state(1, 20)))
    assert checkpoint.for_use(folder).name == "best.pdckpt"
    assert checkpoint.for_use(folder, last=True).name == "epoch_002.pdckpt"
    assert checkpoint.for_use(folder, epoch=1).name == "epoch_001.pdckpt"
    with pytest.raises(checkpoint.CheckpointError, match="epoch 7"):
        checkpoint.for_use(folder, epoch=7)
    path, state = checkpoint.for_resume(folder)
    assert path.name == "step_0000035.pdckpt" and state["step"] == 35  # the newest, mid-epoch ones included
    (folder / "step_0000035.pdckpt").write_bytes(b"torn")
    path, state = checkpoint.for_resume(folder)  # a damaged newest one is passed over, with a warning
    assert path.name == "epoch_002.pdckpt" and "step_0000035.pdckpt" in capsys.readouterr().err
    assert checkpoint.for_resume(folder, epoch=0)[1]["step"] == 10


def test_a_manifest_naming_a_file_outside_the_folder_is_refused(tmp_path):
    checkpoint.save(tmp_path, checkpoint.epoch_file(0), _state(0, 10))
    entries = json.loads((tmp_path / checkpoint.MANIFEST).read_text())
    entries["../../etc/passwd"] = entries["epoch_000.pdckpt"]
    (tmp_path / checkpoint.MANIFEST).write_text(json.dumps(entries))
    with pytest.raises(checkpoint.CheckpointError, match="is not the name of a checkpoint mnist-kit writes"):
        checkpoint.manifest(tmp_path)


# ---------------------------------------------------------------- a manifest names only mnist-kit's checkpoints

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


# ---------------------------------------------------------------- full disks


def test_a_torn_metrics_row_is_dropped_and_resume_repairs_the_file(trained):
    """A full disk cut epoch 1's row short (the page the file had room in) and its checkpoint failed. Training
    and resuming run as processes, as the run they are compared with was made (an earlier test's Paddle
    Inference predictor once left this process's OpenMP on another thread count; backend/openmp.py now keeps
    the count)."""
    args = ("train", *FAST, "-o", "output.visualdl=false", "--name", "torn")
    assert_user_error(run_subprocess(*args, env={"MNIST_KIT_FAULT": "enospc@checkpoint-write:20"}),
                      "No space left on device")
    run = Path("checkpoints/torn")
    lines = (run / "metrics.jsonl").read_text().splitlines(keepends=True)
    (run / "metrics.jsonl").write_text(lines[0] + lines[1][:57])  # ends in half a row, no newline
    assert {r["run"]: r["epochs_done"] for r in json.loads(run_cli("runs", "--json").stdout)} == {"base": 2, "torn": 1}
    result = run_subprocess("resume", "--run", run)
    assert result.returncode == 0, result.stdout + result.stderr
    assert metrics_rows(run) == metrics_rows(trained)  # as if the disk had never been full


@pytest.mark.slow
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
    assert [r["epoch"] for r in metrics_rows(small_disk / "full")] == [0, 1]


# ---------------------------------------------------------------- never a silently wrong model

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
    from mnist_kit.experiments.checkpoint import load
    from mnist_kit.models import networks

    state = load(trained / "ckpt" / "epoch_000.pdckpt")
    model = networks.build_model({**state["config"]["model"], "channels": [20, 20]})
    with pytest.raises(UserError, match=r"body\.0\.weight has shape \[4, 1, 5, 5\], the model's is \[20, 1, 5, 5\]"):
        networks.load_weights(model, state["model"], "epoch_000.pdckpt")
