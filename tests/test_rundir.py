"""The run directory's owner: naming, the reservation `train --nproc` makes, records, setting work aside,
and the commands' --root taken from a config's output.root."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from helpers import FAST, assert_user_error, metrics_rows, run_cli, run_subprocess
from mnist_kit import UserError
from mnist_kit.experiments import listing
from mnist_kit.experiments.rundir import RESERVED_ENV, RunDir


def test_one_naming_rule_generated_names_never_collide_given_names_never_reuse(tmp_path):
    a = RunDir.create(tmp_path / "runs", None, "cnn")
    b = RunDir.create(tmp_path / "runs", None, "cnn")
    assert a.name.startswith("cnn-") and a != b and b.name.startswith(a.name)  # same second: "-2"
    RunDir.create(tmp_path / "runs", "mine", "cnn")
    with pytest.raises(UserError, match="already exists; choose another --name"):
        RunDir.create(tmp_path / "runs", "mine", "cnn")
    with pytest.raises(UserError, match="must be a plain folder name"):
        RunDir.create(tmp_path / "runs", "../escape", "cnn")


def test_the_folder_reserved_by_train_nproc_is_taken_over_only_while_empty(tmp_path, monkeypatch):
    reserved = RunDir.create(tmp_path, "job", "cnn")
    monkeypatch.setenv(RESERVED_ENV, str(reserved.path))
    assert RunDir.create(tmp_path, "job", "cnn") == reserved  # rank 0 of the launched job
    (reserved.path / "config.yaml").write_text("x")
    with pytest.raises(UserError, match="already exists"):  # a second job must not take a started run
        RunDir.create(tmp_path, "job", "cnn")
    monkeypatch.setenv(RESERVED_ENV, str(tmp_path / "other"))
    RunDir.create(tmp_path, "empty", "cnn")
    with pytest.raises(UserError, match="already exists"):  # reserved for someone else
        RunDir.create(tmp_path, "empty", "cnn")


def test_records_metrics_rows_and_setting_aside(tmp_path):
    run = RunDir.create(tmp_path, "r", "cnn")
    with pytest.raises(UserError, match="is not a mnist-kit run"):
        run.read_info()
    run.write_info({"status": "running"})
    assert run.read_info() == {"status": "running"}
    for step in (10, 20, 30):
        run.append_metrics({"epoch": step // 10 - 1, "step": step})
    with open(run.metrics_file, "a") as f:
        f.write('{"epoch": 3, "st')  # a row cut short by a crash
    assert [r["step"] for r in run.read_metrics()] == [10, 20, 30]
    run.ckpt_dir.mkdir()
    dest, moved = run.set_aside_after(15)
    assert moved == ["3 metrics row(s)"] and dest.parent == run.path / "superseded"  # 20, 30, the cut one
    assert [r["step"] for r in run.read_metrics()] == [10]
    assert len((dest / "metrics.jsonl").read_text().splitlines()) == 4  # everything as it was, kept aside
    run.info_file.write_text("{damaged")
    with pytest.raises(UserError, match="run.json is damaged"):
        run.read_info()


def test_find_and_latest(tmp_path):
    assert listing.find(tmp_path / "nothing") == []
    with pytest.raises(UserError, match="no runs found"):
        listing.latest(tmp_path)
    for name, started in (("old", 1.0), ("new", 2.0)):
        RunDir.create(tmp_path, name, "x").write_info({"started": started})
    sweep = RunDir.create(tmp_path / "sweep-cnn", "lr=0.1", "x")
    sweep.write_info({"started": 3.0})
    aside = RunDir.create(tmp_path / "old" / "superseded", "r", "x")
    aside.write_info({})
    assert [r.name for r in listing.find(tmp_path)] == ["new", "old", "lr=0.1"]
    assert listing.latest(tmp_path).name == "new"  # a sweep's runs are not "the newest run"


def test_commands_look_for_runs_under_the_configs_output_root(prepared, tmp_path):
    cfg = tmp_path / "elsewhere.yaml"
    cfg.write_text(yaml.safe_dump({"output": {"root": "runs-elsewhere"}, "train": {"epochs": 1}}))
    result = run_cli("train", "--config", cfg, *FAST, "-o", "train.epochs=1", "--name", "e")
    assert result.exit_code == 0, result.output
    assert not Path("checkpoints").exists()
    assert "no runs found under checkpoints" in run_cli("eval").output  # the built-in default root
    for args in (["eval", "--json"], ["eval", "--root", "runs-elsewhere", "--json"]):
        out = run_cli(*args, "--config", cfg) if "--root" not in args else run_cli(*args)
        assert out.exit_code == 0, out.output
        assert json.loads(out.stdout)["run"] == os.path.join("runs-elsewhere", "e")
    listing = run_cli("runs", "--config", cfg)
    assert listing.exit_code == 0 and listing.stdout.splitlines()[2].startswith("e ")
    exported = run_cli("export", "-c", cfg)
    assert exported.exit_code == 0, exported.output
    img = tmp_path / "img.png"
    from PIL import Image

    digit = Image.new("L", (28, 28), 0)
    digit.paste(255, (10, 6, 18, 22))
    digit.save(img)
    predicted = run_cli("predict", "-c", cfg, img, "--json")
    assert predicted.exit_code == 0 and "class" in json.loads(predicted.stdout), predicted.output


def test_a_multi_process_job_that_fails_before_training_leaves_no_run_folder(tmp_path):
    proc = run_subprocess("train", "--nproc", 2, "-o", "data.name=fashion-mnist", "-o",
                          f"data.root={tmp_path / 'empty'}", "--name", "never", timeout=240)
    assert proc.returncode == 1
    assert "Fashion-MNIST is not prepared" in proc.stderr and "Traceback" not in proc.stderr.split("Error:")[-1]
    assert not Path("checkpoints/never").exists()


# ---------------------------------------------------------------- edited run files

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
    assert [r["epoch"] for r in metrics_rows(trained)] == [0, 1, 2]


def test_ctrl_c_before_the_first_checkpoint_does_not_suggest_resume(trained, monkeypatch):
    monkeypatch.setenv("MNIST_KIT_FAULT", "interrupt@step:3")
    result = run_cli("train", *FAST, "--name", "early")
    assert result.exit_code == 130
    assert "nothing to resume; train it again" in result.output and "mnist-kit resume" not in result.output
