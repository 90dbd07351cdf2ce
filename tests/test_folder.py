"""Image-folder data sets: a user's own images, one sub-folder per class, through the whole pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import EPS, FOLDER_CLASSES, folder_image, run_cli, run_subprocess, write_image_folder
from mnist_kit import config, data
from mnist_kit.data.splits import oversample, stratified_split
from mnist_kit.util.images import fit, load_image

SIZE = ["-o", "data.image_size=[16,32]"]


def folder_cfg(folder: Path, *overrides: str) -> dict:
    return config.load(None, ["data.name=image_folder", f"data.folder={folder}", "data.image_size=[16,32]",
                              *overrides])


# ---------------------------------------------------------------- images


def test_fit_gives_the_configured_size_and_channels(tmp_path):
    img = folder_image("box", np.random.default_rng(0), size=(50, 100))
    assert fit(img, (16, 32)).shape == (16, 32)
    assert fit(img, (16, 32), color="rgb").shape == (16, 32, 3)
    assert fit(img.convert("RGBA"), (20, 20), resize="pad").shape == (20, 20)
    assert fit(img, (16, 32)).dtype == np.uint8


def test_pad_keeps_the_aspect_ratio_and_fills_with_the_border_colour():
    img = Image.new("L", (100, 50), 200)  # wide, light grey
    img.paste(0, (40, 10, 60, 40))  # a dark block in the middle
    out = fit(img, (40, 40), resize="pad")
    assert out[0, 0] == 200 and out[-1, -1] == 200  # padding above and below in the paper's colour
    assert out[20, 20] < 50  # the block, still in the middle
    stretched = fit(img, (40, 40))
    assert stretched[0, 0] == 200 and stretched.shape == (40, 40)


def test_transparency_is_laid_on_white_and_16_bit_is_scaled(tmp_path):
    rgba = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    assert fit(rgba, (10, 10)).min() == 255
    sixteen = Image.fromarray(np.full((10, 10), 65535, np.uint16))
    sixteen.save(tmp_path / "w16.png")
    assert load_image(tmp_path / "w16.png", (10, 10)).min() == 255


# ---------------------------------------------------------------- splits


def test_stratified_split_holds_out_the_same_share_of_every_class_deterministically():
    y = np.repeat(np.arange(4), [40, 12, 24, 3])
    kept, held = stratified_split(y, 0.25, seed=1)
    assert sorted(np.concatenate([kept, held]).tolist()) == list(range(len(y)))  # disjoint, complete
    assert np.bincount(y[held]).tolist() == [10, 3, 6, 1]  # a class of 3 still gives one image
    again, _ = stratified_split(y, 0.25, seed=1)
    other, _ = stratified_split(y, 0.25, seed=2)
    assert np.array_equal(kept, again) and not np.array_equal(kept, other)
    _, none = stratified_split(y, 0.0, seed=1)
    assert len(none) == 0
    kept_all, _ = stratified_split(np.array([0, 0, 1]), 0.9, seed=0)
    assert set(np.array([0, 0, 1])[kept_all]) == {0, 1}  # never a whole class


def test_oversampling_evens_the_classes_with_every_image_used():
    y = np.repeat(np.arange(3), [10, 3, 7])
    idx = oversample(y, seed=0)
    assert np.bincount(y[idx]).tolist() == [10, 10, 10]
    assert set(idx.tolist()) == set(range(len(y)))
    assert np.array_equal(idx, oversample(y, seed=0))


# ---------------------------------------------------------------- prepare


def test_prepare_rejects_unreadable_files_with_a_list_and_writes_nothing(tmp_path):
    folder = write_image_folder(tmp_path / "cards")
    r = run_subprocess("prepare", "-o", "data.name=image_folder", "-o", f"data.folder={folder}", *SIZE)
    assert r.returncode == 1
    assert "1 of 85 files" in r.stderr and "box/broken.png" in r.stderr and "data.bad_files=skip" in r.stderr
    assert "Traceback" not in r.stderr
    assert not list((tmp_path / "data").rglob("arrays*.npz"))


def test_prepare_never_runs_ghostscript_on_a_file_that_is_eps_inside(tmp_path, fake_ghostscript):
    env, gs_ran = fake_ghostscript
    folder = write_image_folder(tmp_path / "cards", corrupt=False)
    (folder / "box" / "evil.png").write_bytes(EPS)  # named as an image: Pillow goes by content
    args = ["prepare", "-o", "data.name=image_folder", "-o", f"data.folder={folder}", *SIZE]
    refused = run_subprocess(*args, env=env)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert "box/evil.png" in refused.stderr and "not an image in a format mnist-kit reads" in refused.stderr
    skipped = run_subprocess(*args, "-o", "data.bad_files=skip", env=env)
    assert skipped.returncode == 0 and "skipped 1 unreadable file" in skipped.stdout + skipped.stderr, skipped.stderr
    assert not gs_ran.exists()


def test_prepare_skips_bad_files_on_request_and_reports_counts_per_class(tmp_path):
    folder = write_image_folder(tmp_path / "cards")
    args = ["prepare", "-o", "data.name=image_folder", "-o", f"data.folder={folder}", *SIZE,
            "-o", "data.bad_files=skip", "-o", "data.balance=oversample"]
    r = run_cli(*args)
    assert r.exit_code == 0, r.output
    assert "84 images, 4 classes" in r.output and "skipped 1 unreadable file" in r.output
    assert "ignored 1 file(s) that are not images" in r.output  # hbar/readme.txt
    rows = {line.split()[0]: line.split()[1:] for line in r.output.splitlines() if line.startswith("  ")}
    assert [int(rows[c][0]) for c in FOLDER_CLASSES] == list(FOLDER_CLASSES.values())  # all, per class
    balanced = [int(rows[c][4]) for c in FOLDER_CLASSES]
    assert len(set(balanced)) == 1 and balanced[0] == max(int(rows[c][1]) for c in FOLDER_CLASSES)
    cfg = folder_cfg(folder, "data.bad_files=skip")
    prepared = data.load_dataset(cfg.data)
    assert prepared.classes == tuple(sorted(FOLDER_CLASSES)) and prepared.input_shape == (1, 16, 32)
    assert prepared.x_train.shape[1:] == (16, 32) and prepared.x_train.dtype == np.uint8
    vdl = list((data.prepared_dir(cfg.data) / "vdl").glob("vdlrecords*"))
    assert vdl, "prepare logs the samples of each class for VisualDL"
    again = run_cli(*args)
    assert "already prepared" in again.output


def test_a_changed_folder_is_noticed(tmp_path, capsys):
    folder = write_image_folder(tmp_path / "cards", corrupt=False)
    cfg = folder_cfg(folder)
    data.prepare_folder(cfg.data, data.data_root())
    folder_image("vbar", np.random.default_rng(9)).save(folder / "vbar" / "new.png")
    data.load_dataset(cfg.data)
    assert "changed since it was prepared" in capsys.readouterr().err
    meta = data.prepare_folder(cfg.data, data.data_root())
    assert meta["counts"]["all"] == sum(FOLDER_CLASSES.values()) + 1


@pytest.mark.slow
def test_evaluating_a_run_after_its_folder_was_prepared_again_warns(tmp_path):
    folder = write_image_folder(tmp_path / "cards", counts={"box": 10, "hbar": 10}, corrupt=False)
    common = ["-o", "data.name=image_folder", "-o", f"data.folder={folder}", *SIZE]
    assert run_cli("prepare", *common).exit_code == 0
    r = run_cli("train", *common, "-o", "train.epochs=1", "-o", "model.name=linear", "--name", "r")
    assert r.exit_code == 0, r.output
    assert "prepared again" not in run_subprocess("eval", "--run", "checkpoints/r").stderr
    folder_image("box", np.random.default_rng(5)).save(folder / "box" / "extra.png")
    assert run_cli("prepare", *common).exit_code == 0
    r = run_subprocess("eval", "--run", "checkpoints/r")
    assert r.returncode == 0 and "prepared again since checkpoints/r was trained" in r.stderr, r.stderr


@pytest.mark.parametrize("overrides, message", [
    (["-o", "data.name=image_folder"], "data.folder is required"),
    (["-o", "data.name=image_folder", "-o", "data.folder=nowhere"], "is not a folder"),
    (["-o", "data.name=image_folder", "-o", "data.folder=x", "-o", "data.val_size=5"], "does not apply"),
    (["-o", "data.folder=x"], "does not apply to data 'mnist'"),
    (["-o", "data.name=image_folder", "-o", "data.folder=x", "-o", "data.image_size=[8]"], "[height, width]"),
    (["-o", "data.name=image_folder", "-o", "data.folder=x", "-o", "data.val_ratio=0.5",
      "-o", "data.test_ratio=0.5"], "leave at least 5%"),
    (["-o", "data.name=image_folder", "-o", "data.folder=x", "-o", "data.image_size=[8,64]",
      "-o", "model.channels=[4,4,4,4]"], "block 4 of model.channels makes the 1x8 input it gets 0x4"),
])
def test_bad_folder_settings_get_one_clear_error(overrides, message):
    r = run_subprocess("prepare", *overrides)
    assert r.returncode in (1, 2) and message in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_a_folder_that_is_not_a_class_tree_is_explained(tmp_path):
    (tmp_path / "flat").mkdir()
    folder_image("box", np.random.default_rng(0)).save(tmp_path / "flat" / "a.png")
    r = run_subprocess("prepare", "-o", "data.name=image_folder", "-o", f"data.folder={tmp_path / 'flat'}")
    assert r.returncode == 1 and "needs at least 2" in r.stderr and "<class name>/<image files>" in r.stderr


@pytest.mark.slow
def test_training_before_prepare_says_what_to_run(tmp_path):
    folder = write_image_folder(tmp_path / "cards", corrupt=False)
    r = run_subprocess("train", "-o", "data.name=image_folder", "-o", f"data.folder={folder}", *SIZE)
    assert r.returncode == 1 and "is not prepared" in r.stderr and "mnist-kit prepare" in r.stderr
    r = run_subprocess("train", "-o", "data.name=image_folder", "-o", "data.folder=nowhere")
    assert r.returncode == 1 and f"data.folder {tmp_path / 'nowhere'} is not a folder" in r.stderr, r.stderr


def test_a_tree_of_other_folders_is_refused_with_a_short_list(tmp_path):
    for i in range(25):
        (tmp_path / "etc" / f"conf{i:02d}").mkdir(parents=True)
        (tmp_path / "etc" / f"conf{i:02d}" / "settings.conf").write_text("x")
    r = run_subprocess("prepare", "-o", "data.name=image_folder", "-o", f"data.folder={tmp_path / 'etc'}")
    assert r.returncode == 1 and "25 class folder(s) without image files" in r.stderr
    assert "conf19 and 5 more" in r.stderr and "conf24" not in r.stderr


# ---------------------------------------------------------------- the whole pipeline


@pytest.mark.slow
def test_prepare_train_eval_export_predict_on_an_image_folder(tmp_path):
    folder = write_image_folder(tmp_path / "cards")
    common = ["-o", "data.name=image_folder", "-o", f"data.folder={folder}", *SIZE, "-o", "data.bad_files=skip",
              "-o", "data.balance=oversample"]
    r = run_subprocess("prepare", *common)
    assert r.returncode == 0, r.stderr
    r = run_subprocess("train", *common, "-o", "train.epochs=6", "-o", "train.batch_size=16", "-o",
                       "optimizer.lr=0.003", "-o", "model.channels=[8,16]", "-o", "model.kernel_size=3",
                       "-o", "log.embeddings=20", "--name", "cards")
    assert r.returncode == 0, r.stderr
    run = Path("checkpoints/cards")
    info = json.loads((run / "run.json").read_text())
    assert info["input_shape"] == [1, 16, 32] and info["classes"] == sorted(FOLDER_CLASSES)
    # box: 40 images = 6 test + 6 validation + 28 training; every class oversampled to 28 training images
    assert info["dataset"]["train"] == 4 * 28 and info["dataset"]["val"] == 6 + 2 + 4 + 1
    r = run_subprocess("eval", "--run", run, "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["classes"] == sorted(FOLDER_CLASSES) and result["samples"] == 6 + 2 + 4 + 1  # 15% of each class
    assert result["accuracy"] >= 0.7, result
    r = run_subprocess("export", "--run", run)
    assert r.returncode == 0, r.stderr
    meta = json.loads(next(run.glob("export/*/mnist_kit_model.json")).read_text())
    assert meta["input_shape"] == [None, 1, 16, 32] and meta["preprocess"] == "folder"
    assert meta["image"] == {"image_size": [16, 32], "color": "grayscale", "resize": "stretch"}
    assert meta["classes"] == sorted(FOLDER_CLASSES)
    # new images of each class, in other sizes and formats than the training ones
    rng = np.random.default_rng(123)
    new = tmp_path / "new"
    new.mkdir()
    expected = {}
    for kind in FOLDER_CLASSES:
        for i in range(3):
            path = new / f"{kind}_{i}.{['png', 'jpg', 'bmp'][i]}"
            folder_image(kind, rng, size=(45, 90)).convert("RGB").save(path)
            expected[str(path)] = kind
    (new / "broken.png").write_bytes(b"not an image")
    r = run_subprocess("predict", "--json", *expected, new / "broken.png", "--save-preprocessed", tmp_path / "seen")
    assert r.returncode == 1  # the broken file fails, the others are predicted
    results = [json.loads(line) for line in r.stdout.splitlines()]
    assert "error" in results[-1]
    right = sum(res["label"] == expected[res["file"]] for res in results[:-1])
    assert right >= 10, results  # of 12
    assert Image.open(next((tmp_path / "seen").iterdir())).size == (32, 16)


@pytest.mark.slow
def test_rgb_folders_train_with_three_channel_input(tmp_path):
    folder = write_image_folder(tmp_path / "cards", counts={"box": 10, "hbar": 10}, corrupt=False)
    common = ["-o", "data.name=image_folder", "-o", f"data.folder={folder}", "-o", "data.image_size=[12,24]",
              "-o", "data.color=rgb", "-o", "data.resize=pad", "-o", "data.test_ratio=0"]
    assert run_cli("prepare", *common).exit_code == 0
    r = run_cli("train", *common, "-o", "train.epochs=1", "-o", "model.channels=[4]", "-o", "log.graph=false",
                "--name", "rgb")
    assert r.exit_code == 0, r.output
    assert json.loads(Path("checkpoints/rgb/run.json").read_text())["input_shape"] == [3, 12, 24]
    r = run_subprocess("eval", "--run", "checkpoints/rgb")
    assert r.returncode == 1 and "no test split" in r.stderr and "--split val" in r.stderr
    r = run_subprocess("eval", "--run", "checkpoints/rgb", "--split", "val", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["samples"] == 4, r.stderr
    r = run_subprocess("export", "--run", "checkpoints/rgb")
    assert r.returncode == 0, r.stderr
    meta = json.loads(next(Path("checkpoints/rgb").glob("export/*/mnist_kit_model.json")).read_text())
    assert meta["input_shape"] == [None, 3, 12, 24] and meta["image"]["color"] == "rgb"
    r = run_subprocess("predict", "--json", folder / "box", "--save-preprocessed", tmp_path / "seen")
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 8  # box/*.png, *.PNG and *.jpg (the 2 .bmp files are in box/more)
    seen = Image.open(next((tmp_path / "seen").iterdir()))
    assert seen.mode == "RGB" and seen.size == (24, 12)


def test_the_folder_is_recorded_as_an_absolute_path(tmp_path):
    cfg = config.load(None, ["data.name=image_folder", "data.folder=cards"])
    assert cfg.data.folder == str(tmp_path / "cards")  # the tests run in tmp_path
