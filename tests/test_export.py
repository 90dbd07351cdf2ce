"""export never deletes or damages what it did not write, refuses folders that are not exports, and refuses
edited export metadata."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from helpers import FAST, assert_user_error, dark_bar_image, run_cli, run_subprocess, snapshot

# ---------------------------------------------------------------- export never deletes what it did not write

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


# ---------------------------------------------------------------- edited export metadata

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
    result = run_cli("predict", "--model", "exp", dark_bar_image(tmp_path / "one.png"))
    assert_user_error(result, "export the run again")


def test_another_models_parameters_in_an_export_are_refused(trained, tmp_path):
    assert run_cli("export", "--out", "exp").exit_code == 0
    assert run_cli("train", *FAST, "-o", "model.name=mlp", "-o", "train.epochs=1", "--name", "mlp").exit_code == 0
    assert run_cli("export", "--run", "checkpoints/mlp", "--out", "mlp_exp").exit_code == 0
    shutil.copy(tmp_path / "mlp_exp" / "model.pdiparams", tmp_path / "exp" / "model.pdiparams")
    result = run_cli("predict", "--model", "exp", "--runtime", "paddle", dark_bar_image(tmp_path / "one.png"))
    assert result.exit_code == 1 and "Traceback" not in result.output and "Error:" in result.output, result.output
    # another model's ONNX file runs (it is whole in itself), so its digest is checked against the export's
    shutil.copy(tmp_path / "mlp_exp" / "model.onnx", tmp_path / "exp" / "model.onnx")
    for runtime in ("auto", "onnxruntime"):
        result = run_cli("predict", "--model", "exp", "--runtime", runtime, dark_bar_image(tmp_path / "one.png"))
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        assert "model.onnx is not the file export checked" in result.output, result.output


def test_a_paddle_inference_predictor_leaves_the_process_threads_as_they_were(small_export):
    # making one set the process's OpenMP threads to its own count (1 -> 2), and Paddle's eager kernels in the
    # same process then ran on 2 threads, which changed their float rounding (an order-dependent test failure)
    import numpy as np

    from mnist_kit.backend import paddle_inference
    from mnist_kit.backend.openmp import openmp
    from mnist_kit.backend.runtime import paddle  # noqa: F401 - loads the OpenMP runtime that is looked up
    from mnist_kit.deploy.inference import PROGRAM

    omp = openmp()
    assert omp.lib is not None
    with omp.threads(1):
        program = paddle_inference.Program(*paddle_inference.program_files(small_export / PROGRAM), threads=2)
        assert omp.get() == 1
        assert program.logits(np.zeros((3, 1, 28, 28), np.float32)).shape == (3, 10)
        assert omp.get() == 1
