"""Checkpoints on disk: the manifest names only mnist-kit's files, a full disk while saving is recorded and
resumed from, and weights never load into another network."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from helpers import FAST, assert_user_error, metrics_rows, run_cli, run_subprocess, snapshot
from mnist_kit import UserError

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
    assert metrics_rows(run) == metrics_rows(trained)  # as if the disk had never been full


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
    from mnist_kit.models import networks
    from mnist_kit.runs.checkpoint import load

    state = load(trained / "ckpt" / "epoch_000.pdckpt")
    model = networks.build_model({**state["config"]["model"], "channels": [20, 20]})
    with pytest.raises(UserError, match=r"body\.0\.weight has shape \[4, 1, 5, 5\], the model's is \[20, 1, 5, 5\]"):
        networks.load_weights(model, state["model"], "epoch_000.pdckpt")
