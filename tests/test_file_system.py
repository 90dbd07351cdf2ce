"""File-system errors and odd inputs: read-only and unusable folders, symbolic-link loops, a full disk under
export, FIFOs and devices, file names that are not UTF-8: one Error: line each, nothing damaged."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import FAST, assert_user_error, dark_bar_image, peak_rss_mib, run_cli, snapshot, write_image_folder

# ---------------------------------------------------------------- file-system errors

@pytest.fixture
def read_only(small_disk, trained):
    """A read-only file system holding a copy of the trained run (``RO/base``) and of its data."""
    shutil.copytree(trained, small_disk / "base")
    shutil.copytree(trained.parent.parent / "data", small_disk / "data")
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    yield small_disk
    subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)


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
        "predict": (["predict", dark_bar_image(tmp_path / "one.png"), "--save-preprocessed", ro / "seen"],
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_eval_photo_options_are_checked_and_a_short_test_split_is_said(trained):
    bad = run_cli("eval", "--photos", "5", "--photo-seed", "-1")
    assert bad.exit_code == 2 and "--photo-seed" in bad.output and "Traceback" not in bad.output, bad.output
    from mnist_kit import data
    from mnist_kit.experiments.rundir import RunDir

    test_size = len(data.load_dataset(RunDir(trained).read_config().data).y_test)
    more = run_cli("eval", "--photos", str(test_size + 100))
    assert more.exit_code == 0, more.output
    assert f"note: --photos {test_size + 100}, but the test split holds {test_size} images" in more.output
    assert f"on {test_size} photos" in more.output


# ---------------------------------------------------------------- file names that are not UTF-8

def test_an_image_file_name_that_is_not_utf8(tmp_path):

    folder = write_image_folder(tmp_path / "cards", corrupt=False)
    os.rename(folder / "box" / "box_0.png", os.fsencode(folder / "box") + b"/bad\xff.png")
    (Path(os.fsdecode(os.fsencode(folder / "box") + b"/broken\xfe.png"))).write_bytes(b"not a picture")
    args = ["-o", "data.name=image_folder", "-o", f"data.folder={folder}", "-o", "data.image_size=[16,32]"]
    assert_user_error(run_cli("prepare", *args), "box/broken\ufffd.png: not an image")
    result = run_cli("prepare", *args, "-o", "data.bad_files=skip")
    assert result.exit_code == 0 and "skipped 1 unreadable file(s)" in result.output, result.output


# ---------------------------------------------------------------- odd inputs, and a run missing its config

@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_a_fifo_or_device_as_an_input_is_named(trained, tmp_path, kind):
    special = tmp_path / "special"
    os.mkfifo(special) if kind == "fifo" else special.symlink_to("/dev/zero")
    assert run_cli("export").exit_code == 0
    result = run_cli("predict", special)
    assert result.exit_code == 1 and "not a regular file" in result.output, result.output
    assert_user_error(run_cli("train", "--config", special), "not a regular file")


def test_a_small_png_of_enormous_size_is_predicted_in_bounded_memory(trained, tmp_path):
    import numpy as np
    from PIL import Image

    img = np.full((6300, 6300), 255, np.uint8)
    img[2000:4500, 3000:3400] = 0  # a "1"
    Image.fromarray(img).convert("1").save(tmp_path / "huge.png", optimize=True)
    assert (tmp_path / "huge.png").stat().st_size < 200_000
    assert run_cli("export").exit_code == 0
    done, peak = peak_rss_mib(["predict", tmp_path / "huge.png"], env={**os.environ})
    assert done.returncode == 0, done.stderr
    assert peak < 900, f"peak memory {peak:.0f} MiB"  # 1.66 GB before


def test_a_run_without_config_yaml_says_so(trained):
    (trained / "config.yaml").unlink()
    assert_user_error(run_cli("eval", "--run", trained), "has no config.yaml", "not a complete mnist-kit run")




def test_save_preprocessed_writes_only_new_files_and_never_through_a_link(small_export, tmp_path):
    """An existing file of a name it would write, or a link there to a file elsewhere, is refused before anything
    is written (issue 40: it replaced the file, and wrote PNG bytes through the link); a new folder is written."""
    image = dark_bar_image(tmp_path / "t0.png")
    seen = tmp_path / "seen"
    assert run_cli("predict", "--model", small_export, image, "--save-preprocessed", seen).exit_code == 0
    first = (seen / "0000_t0.png").read_bytes()
    assert first.startswith(b"\x89PNG")
    assert_user_error(run_cli("predict", "--model", small_export, image, "--save-preprocessed", seen),
                      "already holds 0000_t0.png", "new or empty folder")
    assert (seen / "0000_t0.png").read_bytes() == first  # the earlier file, untouched
    outside = tmp_path / "precious.txt"
    outside.write_text("the user's own file\n")
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "0000_t0.png").symlink_to(outside)
    assert_user_error(run_cli("predict", "--model", small_export, image, "--save-preprocessed", linked),
                      "already holds 0000_t0.png")
    assert outside.read_text() == "the user's own file\n" and sorted(os.listdir(linked)) == ["0000_t0.png"]
    (linked / "0000_t0.png").unlink()
    (linked / "0000_t0.png").symlink_to(tmp_path / "nowhere")  # a dangling link: not created through either
    assert_user_error(run_cli("predict", "--model", small_export, image, "--save-preprocessed", linked),
                      "already holds 0000_t0.png")
    assert not (tmp_path / "nowhere").exists()


def _fill(disk: Path, leave_kib: int) -> Path:
    """Fill ``disk`` until about ``leave_kib`` KiB are free; return the filler file."""
    filler = disk / "filler"
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    with open(filler, "ab") as f:
        f.write(b"\0" * max(0, free - leave_kib * 1024))
    return filler


@pytest.mark.parametrize("command", ["train", "sweep", "prepare"])
def test_a_full_disk_at_the_start_names_the_file_and_leaves_nothing_behind(prepared, idx_folder, small_disk, command):
    """Issue 40: "cannot use: No space left on device" named no file, and a sweep left its folder behind. With
    the disk full at the start (0 and 4 KiB free), each is one line naming the file it could not write, and no
    run or sweep folder is left."""
    root = small_disk / "runs"
    args = {"train": ["train", *FAST, "-o", f"output.root={root}"],
            "sweep": ["sweep", *FAST, "-o", "optimizer.lr=0.1,0.01", "-o", f"output.root={root}"],
            "prepare": ["prepare", "--dataset", "mnist", "--from-dir", idx_folder, "--no-verify",
                        "--root", small_disk / "data"]}[command]
    for kib in (0, 4):
        filler = _fill(small_disk, kib)
        result = run_cli(*args)
        filler.unlink()
        assert_user_error(result, f"cannot use {small_disk}/", "No space left on device")
        left = sorted(str(p.relative_to(small_disk)) for p in small_disk.rglob("*"))
        assert left in ([], ["runs"], ["data"], ["data", "data/mnist"]), (kib, left)
