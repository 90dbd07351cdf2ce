import gzip
import hashlib
import json
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from helpers import (
    DEBIAN,
    FILES,
    assert_user_error,
    needs_debian,
    peak_rss_mib,
    run_cli,
    run_subprocess,
    synthetic_arrays,
    write_idx_folder,
)
from mnist_kit import config, data, datasets
from mnist_kit.data import idx, sources
from mnist_kit.data.splits import split_train_val

# ---------------------------------------------------------------- IDX format

def test_idx_round_trip_raw_and_gzip(tmp_path):
    a = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    for name in ("x.idx", "x.idx.gz"):
        idx.write_idx(tmp_path / name, a)
        assert np.array_equal(idx.read_idx(tmp_path / name, ndim=3), a)
    assert (tmp_path / "x.idx.gz").read_bytes()[:2] == b"\x1f\x8b"


@pytest.mark.parametrize("mangle,message", [
    (lambda b: b[:-5], "truncated"),
    (lambda b: b + b"\0", "trailing bytes"),
    (lambda b: b"\x00\x00\x0d\x03" + b[4:], "not an IDX file of unsigned bytes"),
    (lambda b: b"PK\x03\x04" + b[4:], "not an IDX file"),
    (lambda b: b[:6], "truncated header"),
    (lambda b: b[:2], "too short"),
])
def test_malformed_idx_is_a_clear_error(mangle, message):
    good = idx.to_idx_bytes(np.zeros((3, 28, 28), np.uint8))
    with pytest.raises(idx.IdxError, match=message):
        idx.parse_idx(mangle(good), "f", ndim=3)


def test_swapped_files_are_detected():
    labels = idx.to_idx_bytes(np.zeros(5, np.uint8))
    with pytest.raises(idx.IdxError, match="expected images .* 1 dimension.*swapped"):
        idx.parse_idx(labels, "train-images", ndim=3)


def test_damaged_gzip_is_a_clear_error():
    blob = gzip.compress(idx.to_idx_bytes(np.zeros((3, 28, 28), np.uint8)))
    with pytest.raises(idx.IdxError, match="damaged gzip"):
        idx.parse_idx(blob[: len(blob) // 2], "f")


# ---------------------------------------------------------------- prepare from a folder

@pytest.mark.parametrize("gz", [True, False])
def test_prepare_from_dir_caches_arrays_and_reports_balance(tmp_path, gz):
    arrays = synthetic_arrays()
    folder = write_idx_folder(tmp_path / "idx", arrays, gz=gz)
    result = run_cli("prepare", "--dataset", "mnist", "--from-dir", folder, "--no-verify")
    assert result.exit_code == 0, result.output
    assert "600 training and 200 test images" in result.stdout
    assert "NOT verified" in result.stdout
    assert "0 0                 60  10.0%      20  10.0%" in result.stdout
    loaded = data.load("mnist", tmp_path / "data")
    assert np.array_equal(loaded.x_train, arrays["train_images"])
    assert np.array_equal(loaded.y_test, arrays["test_labels"])
    assert loaded.y_train.dtype == np.int64
    meta = json.loads((tmp_path / "data" / "mnist" / "prepared.json").read_text())
    assert meta["counts"] == {"train": 600, "test": 200}


def test_prepare_from_dir_verifies_checksums_by_default(idx_folder):
    result = run_cli("prepare", "--dataset", "mnist", "--from-dir", idx_folder)
    assert result.exit_code == 1
    assert "does not match the published MNIST checksums" in result.output
    assert "--no-verify" in result.output
    assert not (Path("data") / "mnist" / "prepared.json").exists()


def test_prepare_from_dir_lists_missing_files(tmp_path, idx_folder):
    (idx_folder / "t10k-labels-idx1-ubyte.gz").unlink()
    result = run_cli("prepare", "--from-dir", idx_folder, "--no-verify")
    assert result.exit_code == 1
    assert "lacks t10k-labels-idx1-ubyte[.gz]" in result.output


def test_prepare_rejects_mismatched_counts(tmp_path):
    arrays = synthetic_arrays()
    arrays["train_labels"] = arrays["train_labels"][:-1]
    folder = write_idx_folder(tmp_path / "idx", arrays)
    result = run_cli("prepare", "--from-dir", folder, "--no-verify")
    assert result.exit_code == 1
    assert "600 images but 599 labels" in result.output


def test_truncated_file_in_folder_is_named_without_traceback(tmp_path):
    folder = write_idx_folder(tmp_path / "idx", synthetic_arrays(), gz=False)
    f = folder / "train-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:1000])
    proc = run_subprocess("prepare", "--from-dir", folder, "--no-verify")
    assert proc.returncode == 1
    assert "train-images-idx3-ubyte: truncated" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_failed_prepare_keeps_the_earlier_cache(prepared, tmp_path):
    before = {p.name: p.read_bytes() for p in (prepared / "mnist").iterdir() if p.is_file()}
    bad = write_idx_folder(tmp_path / "bad", synthetic_arrays())
    (bad / "train-images-idx3-ubyte.gz").write_bytes(b"garbage")
    result = run_cli("prepare", "--from-dir", bad, "--no-verify", "--force")
    assert result.exit_code == 1
    assert {p.name: p.read_bytes() for p in (prepared / "mnist").iterdir() if p.is_file()} == before
    data.load("mnist", prepared)  # still intact


def test_prepared_cache_is_reused_and_damage_is_detected(prepared):
    result = run_cli("prepare", "--dataset", "mnist")
    assert result.exit_code == 0 and "already prepared" in result.output
    arrays = prepared / "mnist" / json.loads((prepared / "mnist" / "prepared.json").read_text())["arrays"]
    blob = bytearray(arrays.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    arrays.write_bytes(bytes(blob))
    with pytest.raises(data.DataError, match="damaged.*mnist-kit prepare --dataset mnist --force"):
        data.load("mnist", prepared)


def test_missing_cache_says_how_to_prepare(tmp_path):
    with pytest.raises(data.DataError, match="not prepared .* run: mnist-kit prepare --dataset fashion-mnist"):
        data.load("fashion-mnist", tmp_path / "data")


def test_split_is_deterministic_disjoint_and_keeps_every_image():
    x = np.arange(1000).reshape(1000, 1, 1).astype(np.uint8)
    y = np.arange(1000)
    a = split_train_val(x, y, config.validate({"data": {"name": "mnist", "val_size": 100, "split_seed": 3}}).data)
    b = split_train_val(x, y, config.validate({"data": {"name": "mnist", "val_size": 100, "split_seed": 3}}).data)
    c = split_train_val(x, y, config.validate({"data": {"name": "mnist", "val_size": 100, "split_seed": 4}}).data)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert not np.array_equal(a[3], c[3])
    assert len(a[3]) == 100 and len(a[1]) == 900
    assert sorted(np.concatenate([a[1], a[3]]).tolist()) == list(range(1000))
    with pytest.raises(data.DataError, match="val_size is 1000"):
        split_train_val(x, y, config.validate({"data": {"name": "mnist", "val_size": 1000, "split_seed": 0}}).data)


def test_batches_cover_each_image_once_per_epoch_in_a_seeded_order():
    x = np.zeros((103, 28, 28), np.uint8)
    y = np.arange(103)
    norm = data.Normalization(0.5, 0.25)
    b = data.Batches(x, y, 10, norm, shuffle=True, seed=1)
    assert len(b) == 11
    e0 = np.concatenate([yb for _, yb in b.epoch(0)])
    e1 = np.concatenate([yb for _, yb in b.epoch(1)])
    assert sorted(e0.tolist()) == list(range(103)) and not np.array_equal(e0, e1)
    assert np.array_equal(e0, np.concatenate([yb for _, yb in data.Batches(x, y, 10, norm, True, 1).epoch(0)]))
    # resuming inside an epoch yields exactly the remaining batches
    assert np.array_equal(np.concatenate([yb for _, yb in b.epoch(0, start_step=4)]), e0[40:])
    xb, _ = next(b.epoch(0))
    assert xb.shape == (10, 1, 28, 28) and xb.dtype == np.float32
    assert np.allclose(xb, (0 - 0.5) / 0.25)


def test_normalization_auto_is_measured_on_the_training_split():
    x = np.array([[[0, 255]]], dtype=np.uint8).repeat(4, axis=0)
    norm = data.Normalization.from_config(config.validate({"data": {"mean": "auto", "std": "auto"}}).data, x)
    assert norm == data.Normalization(0.5, 0.5)
    given = config.validate({"data": {"mean": 0.1307, "std": 0.3081}}).data
    assert data.Normalization.from_config(given, x) == data.Normalization(0.1307, 0.3081)


# ---------------------------------------------------------------- download

def _synthetic_info(folder: Path, arrays) -> datasets.DataSet:
    """MNIST's entry with the checksums of the synthetic files, as if they were the published ones."""
    base = datasets.get("mnist")
    files = {}
    for role, spec in base.files.items():
        blob = (folder / spec.filename).read_bytes()
        files[role] = replace(spec, md5_gz=hashlib.md5(blob).hexdigest(), sha256_gz=hashlib.sha256(blob).hexdigest(),
                              md5_raw=hashlib.md5(idx.to_idx_bytes(arrays[role])).hexdigest())
    return replace(base, files=files)


def test_download_tries_mirrors_in_turn_retries_and_verifies(tmp_path, http_server):
    arrays = synthetic_arrays()
    good = write_idx_folder(tmp_path / "good", arrays)
    empty = tmp_path / "empty"
    empty.mkdir()
    info_ = _synthetic_info(good, arrays)
    dead = http_server(empty)  # 404 for everything: skipped without retries
    flaky = http_server(good, fail_first={"train-images-idx3-ubyte.gz": 2}, truncate={"t10k-images-idx3-ubyte.gz"})
    out = sources.download(info_, tmp_path / "raw", mirrors=[dead, flaky], retries=3, backoff=0.01)
    assert set(out) == set(FILES)
    for role, name in FILES.items():
        assert (tmp_path / "raw" / f"{name}.gz").read_bytes() == (good / f"{name}.gz").read_bytes()
    assert not list((tmp_path / "raw").glob("*.partial"))


def test_download_discards_files_that_fail_verification(tmp_path, http_server):
    arrays = synthetic_arrays()
    good = write_idx_folder(tmp_path / "good", arrays)
    info_ = _synthetic_info(good, arrays)
    evil = write_idx_folder(tmp_path / "evil", synthetic_arrays(seed=1))
    with pytest.raises(sources.SourceError) as e:
        sources.download(info_, tmp_path / "raw", mirrors=[http_server(evil)], retries=2, backoff=0.01)
    assert "checksum mismatch" in str(e.value) and "--from-dir" in str(e.value)
    assert list((tmp_path / "raw").iterdir()) == []


def test_download_gives_up_after_retries_with_every_failure_listed(tmp_path, http_server):
    arrays = synthetic_arrays()
    good = write_idx_folder(tmp_path / "good", arrays)
    url = http_server(good, fail_first={"train-images-idx3-ubyte.gz": 99})
    with pytest.raises(sources.SourceError) as e:
        sources.download(_synthetic_info(good, arrays), tmp_path / "raw", mirrors=[url], retries=3, backoff=0.01)
    assert str(e.value).count("HTTP 503") == 3
    assert "attempt 3 of 3" in str(e.value)


def test_offline_prepare_is_one_clear_message(tmp_path):
    proc = run_subprocess("prepare", "--dataset", "mnist", "--source", "download",
                          "--mirror", "http://mirror.invalid/mnist/", "--retries", "1")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "could not download train-images-idx3-ubyte.gz of MNIST" in proc.stderr
    assert "mnist-kit prepare --dataset mnist --from-dir FOLDER" in proc.stderr


@needs_debian
def test_download_through_the_cli_verifies_real_fashion_mnist(tmp_path, http_server):
    """Debian's re-compressed files are served by a local mirror; they pass by their content's checksum."""
    url = http_server(DEBIAN)
    result = run_cli("prepare", "--dataset", "fashion-mnist", "--source", "download", "--mirror", url)
    assert result.exit_code == 0, result.output
    assert "60000 training and 10000 test images" in result.stdout and "checksums verified" in result.stdout
    assert sorted(p.name for p in (tmp_path / "data" / "fashion-mnist" / "raw").iterdir()) == sorted(
        f"{n}.gz" for n in FILES.values())


@needs_debian
def test_prepare_from_debian_package():
    result = run_cli("prepare", "--dataset", "fashion-mnist", "--source", "debian")
    assert result.exit_code == 0, result.output
    assert "Debian package dataset-fashion-mnist" in result.stdout
    loaded = data.load("fashion-mnist", Path("data"))
    assert loaded.x_train.shape == (60000, 28, 28) and loaded.x_test.shape == (10000, 28, 28)
    assert np.bincount(loaded.y_train).tolist() == [6000] * 10


def test_debian_source_for_mnist_is_a_clear_error():
    result = run_cli("prepare", "--dataset", "mnist", "--source", "debian")
    assert result.exit_code == 1
    assert "Debian has no package with MNIST" in result.output


# ---------------------------------------------------------------- data files

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


@pytest.fixture(scope="module")
def bomb_folder(tmp_path_factory):
    folder = write_idx_folder(tmp_path_factory.mktemp("bomb"), synthetic_arrays())
    _bomb(folder / "train-images-idx3-ubyte.gz")
    assert (folder / "train-images-idx3-ubyte.gz").stat().st_size < 3 << 20
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("verify,message", [(True, "does not match the published MNIST checksums"),
                                            (False, "has trailing bytes")])
def test_a_decompression_bomb_is_refused_without_expanding_it(bomb_folder, verify, message):
    args = ["prepare", "--dataset", "mnist", "--from-dir", bomb_folder] + ([] if verify else ["--no-verify"])
    done, peak = peak_rss_mib(args)
    done.exit_code = done.returncode
    assert_user_error(done, message)
    assert peak < 400, f"peak memory {peak:.0f} MiB for a 2 GiB bomb"  # 4.2 GB before the fix


@pytest.mark.slow
def test_a_decompression_bomb_from_a_mirror_is_discarded(bomb_folder, http_server, tmp_path):
    mirror = http_server(bomb_folder)
    done, peak = peak_rss_mib(["prepare", "--dataset", "mnist", "--source", "download", "--mirror", mirror,
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
