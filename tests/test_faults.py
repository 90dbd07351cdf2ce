"""Faults and hostile inputs (issue 14): every one ends in one ``Error:`` line and a non-zero exit, and
nothing mnist-kit did not write is deleted or damaged. Each test here failed before its fix."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FAST, run_cli, run_subprocess, synthetic_arrays, write_idx_folder


def snapshot(folder: Path) -> dict:
    """Every file under ``folder`` and its SHA-256: what 'nothing changed' compares."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def assert_user_error(result, *phrases):
    """One ``Error:`` line naming the problem, a non-zero exit, no traceback."""
    out = result.output if hasattr(result, "output") else result.stdout + result.stderr
    assert result.exit_code if hasattr(result, "exit_code") else result.returncode, out
    assert "Traceback" not in out, out
    errors = [line for line in out.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, out
    for phrase in phrases:
        assert phrase in errors[0], out


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
    result = run_cli("export", "--out", out, "--epoch", 0)
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
