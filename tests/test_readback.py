"""The files mnist-kit reads back from its own folders are input like any other (issue 40): every reader is fed
truncated, huge, deeply nested, wrongly typed, non-UTF-8 and special files (/dev/zero, a FIFO, a link loop, a
folder, a dangling link) and must answer with one line (a ``UserError``), or leave the file out where that is
its promise, and never raise anything else. Quick: no paddle, no training; the files are built by hand."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import SPECIAL_FILES, make_special, synthetic_arrays, write_idx_folder
from mnist_kit import UserError

CLASSES = [str(d) for d in range(10)]
RUN_INFO = {"name": "r", "status": "completed", "started": 1.0, "started_at": "2026-12-05T08:00:00",
            "dataset": {"name": "mnist", "arrays_sha256": "0" * 64}, "classes": CLASSES, "world_size": 1,
            "input_shape": [1, 28, 28], "normalization": {"mean": 0.13, "std": 0.31}, "resumes": []}
ROW = {"epoch": 0, "step": 10, "train_loss": 0.5, "val_acc": 0.9, "epoch_seconds": 1.5}
MANIFEST = {"epoch_000.pdckpt": {"sha256": "a" * 64, "bytes": 10, "epoch": 0, "step": 10, "complete_epoch": True}}
EXPORT_META = {"format": "mnist-kit export 1", "normalization": {"mean": 0.13, "std": 0.31},
               "input_shape": [None, 1, 28, 28], "classes": CLASSES, "preprocess": "digit", "dataset": "mnist"}


@pytest.fixture
def place(tmp_path):
    """A run (in a sweep folder), its export, a prepared data set and a VisualDL log, all valid."""
    from visualdl import LogWriter

    from mnist_kit import config
    from mnist_kit.data import cache

    run = tmp_path / "runs" / "sweep" / "r"
    (run / "ckpt").mkdir(parents=True)
    (run / "export" / "best").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps(RUN_INFO))
    (run / "metrics.jsonl").write_text(json.dumps(ROW) + "\n")
    (run / "config.yaml").write_text(config.dump(config.defaults()))
    (run / "ckpt" / "manifest.json").write_text(json.dumps(MANIFEST))
    (run / "export" / "best" / "mnist_kit_model.json").write_text(json.dumps(EXPORT_META))
    (run.parent / "sweep.json").write_text(json.dumps({"grid": {"optimizer.lr": [0.1, 0.01]}}))
    with LogWriter(logdir=str(run / "vdl")) as writer:
        writer.add_scalar("train/loss", 0.5, 1)
    idx = write_idx_folder(tmp_path / "idx", synthetic_arrays(n_train=50, n_test=20))
    cache.prepare("mnist", tmp_path / "data", from_dir=idx, verify=False)
    return tmp_path


def _records(place: Path) -> Path:
    return next((place / "runs" / "sweep" / "r" / "vdl").glob("vdlrecords*"))


# Each reader: the file it reads, how to call it, and what it does with a file it cannot use: "raise" (a
# UserError of one line naming the file), "skip" (leaves the file or line out and goes on), or "unreadable"
# (mnist-kit runs: the run is listed as unreadable, with the reason).
def _readers():
    from mnist_kit import config
    from mnist_kit.data import cache
    from mnist_kit.deploy import inference
    from mnist_kit.experiments import checkpoint, listing
    from mnist_kit.experiments.rundir import RunDir
    from mnist_kit.logbook.writer import read_records

    run = lambda p: p / "runs" / "sweep" / "r"  # noqa: E731
    return {
        "run.json": (lambda p: run(p) / "run.json", lambda p: RunDir(run(p)).read_info(), "raise"),
        "metrics.jsonl": (lambda p: run(p) / "metrics.jsonl", lambda p: RunDir(run(p)).read_metrics(), "skip-lines"),
        "config.yaml (runs)": (lambda p: run(p) / "config.yaml", lambda p: listing.summarize(RunDir(run(p))),
                               "unreadable"),
        "config.yaml (resume, eval)": (lambda p: run(p) / "config.yaml", lambda p: RunDir(run(p)).read_config(),
                                       "raise"),
        "run.json (runs)": (lambda p: run(p) / "run.json", lambda p: listing.summarize(RunDir(run(p))), "unreadable"),
        "metrics.jsonl (runs)": (lambda p: run(p) / "metrics.jsonl", lambda p: listing.summarize(RunDir(run(p))),
                                 "unreadable-or-skip"),
        "manifest.json": (lambda p: run(p) / "ckpt" / "manifest.json", lambda p: checkpoint.manifest(run(p) / "ckpt"),
                          "raise"),
        "mnist_kit_model.json": (lambda p: run(p) / "export" / "best" / "mnist_kit_model.json",
                                 lambda p: inference.read_meta(run(p) / "export" / "best"), "raise"),
        "prepared.json": (lambda p: p / "data" / "mnist" / "prepared.json", lambda p: cache.load("mnist", p / "data"),
                          "raise"),
        "sweep.json": (lambda p: p / "runs" / "sweep" / "sweep.json", lambda p: RunDir(run(p)).sweep_keys(), "skip"),
        "VisualDL records": (_records, lambda p: read_records(_records(p)), "raise-or-skip"),
        "a config file": (lambda p: p / "my.yaml", lambda p: config.load(p / "my.yaml"), "raise"),
    }


def _json_cases(valid: bytes) -> dict:
    """Hostile contents for a JSON (or JSON lines) file, from its valid content."""
    return {
        "empty": b"", "truncated": valid[: len(valid) // 2], "not UTF-8": b"\xff\xfe" + valid,
        "nested 5,000 deep": b"[" * 5000 + b"]" * 5000, "nested 100 deep": b"[" * 100 + b"]" * 100,
        "objects nested 3,000 deep": b'{"a":' * 3000 + b"1" + b"}" * 3000,
        "a list": b"[1, 2]", "text": b'"text"', "null": b"null", "a number": b"5",
        "an integer of 5,000 digits": b"1" * 5000, "NaN": b"NaN", "NUL bytes": b"\x00" * 100,
    }


def _yaml_cases(valid: bytes) -> dict:
    bomb = "a: &a [" + ",".join(["1"] * 9) + "]\n" + "".join(
        f"{c}: &{c} [" + ",".join([f"*{p}"] * 9) + "]\n" for p, c in zip("abcdefgh", "bcdefghi"))
    return {
        "truncated": valid[: len(valid) // 3] + b"\n  - [", "not UTF-8": b"\xff\xfe" + valid,
        "alias bomb": bomb.encode(), "nested 5,000 deep": b"[" * 5000, "a list": b"[1, 2]",
        "train: [1,2]": b"train: [1,2]\n",
        "an integer of 5,000 digits": b"train:\n  epochs: " + b"1" * 5000 + b"\n",
        "a python tag": b"train: !!python/object/apply:os.system ['true']\n",
        "a set": b"train: !!set {a, b}\n", "binary": b"train:\n  epochs: !!binary aGVsbG8=\n",
        "a key given twice": b"train:\n  epochs: 1\n  epochs: 2\n", "a number key": b"1: 2\n",
    }


WRONG_SHAPES = {  # valid JSON of the wrong shape, for each file with a shape
    "run.json": [{**RUN_INFO, "status": [1]}, {**RUN_INFO, "dataset": "mnist"}, {**RUN_INFO, "started": "yesterday"}],
    "manifest.json": [{"epoch_000.pdckpt": {**MANIFEST["epoch_000.pdckpt"], "bytes": "ten"}},
                      {"../../etc/passwd": MANIFEST["epoch_000.pdckpt"]}],
    "mnist_kit_model.json": [{**EXPORT_META, "classes": "0123456789"}, {**EXPORT_META, "input_shape": [None, 1]}],
    "prepared.json": ["counts", "class_counts", "classes", "arrays", "arrays_sha256", "verified"],  # set to [[]]
}


SPECIAL = SPECIAL_FILES


def _outcome(call, place: Path):
    """("ok", value) or ("error", message); anything else than a UserError fails the test."""
    try:
        return "ok", call(place)
    except UserError as e:
        return "error", str(e)


def _check(name: str, case: str, expect: str, outcome, path: Path) -> None:
    kind, value = outcome
    where = f"{name}, {case}"
    if kind == "error":
        first, *rest = value.splitlines()
        # one line; a config's validation problems are listed below their first line, one each
        assert first.strip() and all(line.startswith("  - ") for line in rest), f"{where}: not one line: {value!r}"
        assert str(path.name) in value or str(path.parent) in value, f"{where}: the file is not named: {value}"
        assert expect.startswith("raise") or expect == "skip-lines" and case in SPECIAL, f"{where}: raised {value}"
        return
    if expect == "raise":
        pytest.fail(f"{where}: accepted ({str(value)[:200]})")
    if expect.startswith("unreadable"):
        if value["status"] != "unreadable":
            assert expect == "unreadable-or-skip" and case not in SPECIAL, f"{where}: listed as {value['status']}"
        else:
            assert "\n" not in value["error"] and path.name in value["error"], f"{where}: {value['error']!r}"
    if expect == "skip-lines":
        assert value == [] and case not in SPECIAL, f"{where}: {value}"
    if expect == "skip":
        assert value == [], f"{where}: {value}"


@pytest.mark.parametrize("name", list(_readers()))
def test_every_reader_refuses_hostile_files_in_one_line(place, name):
    where, call, expect = _readers()[name]
    path = where(place)
    if name == "a config file":
        path.write_text("train:\n  epochs: 3\n")
    assert _outcome(call, place)[0] == "ok", _outcome(call, place)  # the valid file is read
    valid = path.read_bytes()
    cases = _yaml_cases(valid) if path.suffix == ".yaml" else _json_cases(valid)
    if name == "VisualDL records":  # binary: a cut-off frame ends the list; special files are refused
        cases = {"truncated": valid[: len(valid) // 2], "a frame longer than the file": b"\xff" * 8 + valid}
    for case, content in cases.items():
        path.write_bytes(content)
        _check(name, case, "raise-or-skip" if name == "VisualDL records" else expect, _outcome(call, place), path)
    for case in SPECIAL:
        make_special(path, case)
        outcome = _outcome(call, place)
        _check(name, case, "raise" if expect == "raise-or-skip" else expect, outcome, path)
        if path.is_dir() and not path.is_symlink():
            path.rmdir()


@pytest.mark.parametrize("name", list(WRONG_SHAPES))
def test_valid_json_of_the_wrong_shape_is_refused(place, name):
    readers = _readers()
    key = next(k for k in readers if k.startswith(name))
    where, call, _ = readers[key]
    path = where(place)
    good = json.loads(path.read_text())
    for shape in WRONG_SHAPES[name]:
        value = {**good, shape: [[]]} if isinstance(shape, str) else shape
        path.write_text(json.dumps(value))
        outcome = _outcome(call, place)
        assert outcome[0] == "error" and "\n" not in outcome[1], (name, shape, outcome)


def test_prepared_arrays_that_do_not_match_their_metadata_are_refused(place):
    """prepared.json's checksum names the arrays: someone who rewrites both still gets a cache checked to hold
    uint8 28x28 images and labels of its classes."""
    import numpy as np

    from mnist_kit.data import cache

    meta = json.loads((place / "data" / "mnist" / "prepared.json").read_text())
    target = place / "data" / "mnist"
    images, small, floats = np.zeros((5, 28, 28), np.uint8), np.zeros((5, 7, 7), np.uint8), np.zeros((5, 28, 28))
    for x, y in [(images, np.full(5, 10)), (small, np.zeros(5, int)), (floats, np.zeros(5, int)),
                 (images, np.zeros(4, int))]:
        cache.write_cache(target, {"x_train": x, "y_train": y, "x_test": x, "y_test": y}, meta)
        with pytest.raises(UserError, match="are damaged") as e:
            cache.load("mnist", place / "data")
        assert "\n" not in str(e.value)


def _runs_cli(root: Path, *args) -> subprocess.CompletedProcess:
    """``mnist-kit runs`` as a process under a 2 GB address-space limit and a timeout: the old reader grew
    without end on /dev/zero (the OOM killer ended it at 23.9 GB)."""
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    return subprocess.run([sys.executable, "-m", "mnist_kit", "runs", str(root), *args], capture_output=True,
                          text=True, timeout=120, preexec_fn=limit)


@pytest.mark.parametrize("case", ["/dev/zero", "alias bomb", "nested 5,000 deep", "not UTF-8", "a list",
                                  "train: [1,2]"])
def test_runs_lists_a_run_it_cannot_read_and_every_other(place, case):
    """The repro of issue 40: one bad config.yaml among good runs. Exit 0, the bad run listed as unreadable
    with a one-line warning naming the file, the good run listed in full; --json too."""
    import shutil

    root = place / "runs" / "sweep"
    shutil.copytree(root / "r", root / "good")
    bad = root / "r" / "config.yaml"
    if case in SPECIAL:
        make_special(bad, case)
    else:
        bad.write_bytes(_yaml_cases(b"")[case])
    table = _runs_cli(root)
    assert table.returncode == 0 and "Traceback" not in table.stderr, table.stderr[-2000:]
    lines = {line.split()[0]: line for line in table.stdout.splitlines()[2:]}
    assert "unreadable" in lines["r"] and "completed" in lines["good"] and "90.00%" in lines["good"], table.stdout
    assert table.stdout.splitlines()[0].split() == ["run", "status", "model.name", "optimizer.name", "optimizer.lr",
                                                    "train.batch_size", "epochs", "best", "val", "acc", "train",
                                                    "time"], table.stdout  # no column of every key
    warnings = [line for line in table.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and str(bad) in warnings[0], table.stderr
    listed = _runs_cli(root, "--json", "--sort", "optimizer.lr")
    assert listed.returncode == 0 and "Traceback" not in listed.stderr, listed.stderr[-2000:]
    summaries = {s["run"]: s for s in json.loads(listed.stdout)}
    assert summaries["r"]["status"] == "unreadable" and str(bad) in summaries["r"]["error"]
    assert summaries["good"]["best_val_acc"] == 0.9


def test_runs_sorts_runs_whose_values_differ_in_kind(place):
    """A hand-edited config.yaml with text where another run has a number is sorted, not a TypeError."""
    import shutil

    root = place / "runs" / "sweep"
    shutil.copytree(root / "r", root / "other")
    text = (root / "other" / "config.yaml").read_text().replace("lr: 0.001", "lr: fast")
    (root / "other" / "config.yaml").write_text(text)
    listed = _runs_cli(root, "--json", "--sort", "optimizer.lr")
    assert listed.returncode == 0, listed.stderr
    assert [s["run"] for s in json.loads(listed.stdout)] == ["r", "other"]


def test_one_line_yaml_errors_for_a_config(tmp_path):
    from mnist_kit import ConfigError, config

    (tmp_path / "c.yaml").write_text("train:\n  epochs: [1, 2\n")
    with pytest.raises(ConfigError) as e:
        config.load(tmp_path / "c.yaml")
    assert "\n" not in str(e.value) and "line 3" in str(e.value), str(e.value)


@pytest.mark.parametrize("damage", ["nested 5,000 deep", "/dev/zero", "a list"])
def test_prepare_makes_a_damaged_cache_again(tmp_path, http_server, damage):
    """Issue 40: a prepared.json nested 2,000 deep ended `prepare` itself in a traceback, so the cache could not
    be made again without deleting it by hand. Now prepare says the cache is unusable and prepares it again."""
    from helpers import run_cli
    from mnist_kit.data import cache

    idx = write_idx_folder(tmp_path / "idx", synthetic_arrays(n_train=50, n_test=20))
    args = ["prepare", "--dataset", "mnist", "--root", tmp_path / "data", "--no-verify", "--retries", "1",
            "--mirror", http_server(idx)]
    assert run_cli(*args).exit_code == 0
    meta = tmp_path / "data" / "mnist" / "prepared.json"
    if damage in SPECIAL:
        make_special(meta, damage)
    else:
        meta.write_bytes(_json_cases(b"")[damage])
    result = run_cli(*args)
    assert result.exit_code == 0 and "the existing cache is unusable" in result.output, result.output
    assert "Traceback" not in result.output and str(meta) in result.output
    assert cache.load("mnist", tmp_path / "data").x_train.shape == (50, 28, 28)
