"""Generated hostile inputs: configs, -o values, IDX headers, run files and images. For each: exit code 1 or
2, one ``Error:`` line (predict: one error line for the file), no traceback, nothing outside the scratch
folder changed, the earlier run and its export intact. Seeded: the same cases every time."""

from __future__ import annotations

import json
import random
import shutil
import struct
from pathlib import Path

import pytest

from helpers import FAST, run_cli, snapshot, synthetic_arrays, write_idx_folder

CASES = 40  # per kind

# values that no key accepts (each key's type, range, choices or the YAML rules refuse them)
HOSTILE_VALUES = ["[[[[1]]]]", "[1, 'a']", "{a: 1}", "\"\\x00\"", "'" + "x" * 5000 + "'", "[" + "9," * 3000 + "9]",
                  "*a", "!!python/object/apply:os.system ['true']", "[-99999999999999999999]", "[1e400]",
                  "'\u202e\n'", "[.nan]", "[[]]"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A trained run and its export, made once; every case runs in a scratch folder beside them."""
    import os

    base = tmp_path_factory.mktemp("fuzz")
    os.environ["MNIST_KIT_DATA"] = str(base / "data")
    old = Path.cwd()
    os.chdir(base)
    try:
        idx = write_idx_folder(base / "idx", synthetic_arrays())
        assert run_cli("prepare", "--dataset", "mnist", "--from-dir", idx, "--no-verify").exit_code == 0
        assert run_cli("train", *FAST, "-o", "output.visualdl=false", "--name", "base").exit_code == 0
        assert run_cli("export").exit_code == 0
    finally:
        os.chdir(old)
    return base


@pytest.fixture
def arena(world, tmp_path, monkeypatch):
    """This test's copy of the world, and what must not change in it."""
    shutil.copytree(world / "data", tmp_path / "data")
    shutil.copytree(world / "checkpoints", tmp_path / "checkpoints")
    shutil.copytree(world / "idx", tmp_path / "idx")
    monkeypatch.setenv("MNIST_KIT_DATA", str(tmp_path / "data"))
    (tmp_path / "scratch").mkdir()
    return tmp_path


def _check(result, arena: Path, before: dict, predict: bool = False):
    out = result.output
    assert "Traceback" not in out, out
    assert result.exit_code in (1, 2), (result.exit_code, out[-2000:])
    if predict:
        assert " ERROR " in out and "file(s) failed" in out, out[-2000:]
    else:
        assert len([line for line in out.splitlines() if line.startswith("Error:")]) == 1, out[-2000:]
    assert len(out) < 20000, len(out)
    after = {k: v for k, v in snapshot(arena).items() if not k.startswith("scratch/")}
    assert after == before


def _before(arena: Path) -> dict:
    return {k: v for k, v in snapshot(arena).items() if not k.startswith("scratch/")}


def _hostile_config(rng: random.Random) -> str:
    """A config with at least one thing that makes it invalid."""
    from mnist_kit.config import SCHEMA

    section = rng.choice(list(SCHEMA))
    key = rng.choice(list(SCHEMA[section]))
    bad = rng.choice([
        f"{section}:\n  {key}: {rng.choice(HOSTILE_VALUES)}\n",
        f"{section}:\n  {key}: 1\n  {key}: 2\n",
        f"{section}:\n  no_such_key_{rng.randint(0, 9)}: 1\n",
        f"no_such_section:\n  {key}: 1\n",
        f"{section}: {rng.choice(['[1, 2]', '7', 'text'])}\n",
        "[" * rng.randint(9, 30000) + "\n",
        "a: &a [" + ",".join(["1"] * 9) + "]\n" + "".join(f"{c}: &{c} [" + ",".join([f"*{p}"] * 9) + "]\n"
                                                        for p, c in zip("abcdef", "bcdefg")),
        "".join(chr(rng.randint(0, 0x2FF)) for _ in range(rng.randint(1, 300))),
        f"{section}:\n" + "".join(f"  {key}{i}: {i}\n" for i in range(rng.randint(1, 50))),
    ])
    return bad


def test_hostile_configs(arena, monkeypatch):
    monkeypatch.chdir(arena / "scratch")
    rng = random.Random(1)
    before = _before(arena)
    for i in range(CASES):
        path = arena / "scratch" / f"c{i}.yaml"
        path.write_bytes(_hostile_config(rng).encode("utf-8", "surrogatepass"))
        result = run_cli("train", "--config", path, *FAST, "-o", f"output.root={arena / 'scratch' / 'runs'}")
        _check(result, arena, before)


def test_hostile_override_values(arena, monkeypatch):
    from mnist_kit.config import SCHEMA

    monkeypatch.chdir(arena / "scratch")
    rng = random.Random(2)
    before = _before(arena)
    keys = [f"{s}.{k}" for s, fields in SCHEMA.items() for k, f in fields.items()
            if f.kind in ("int", "float", "ints", "bool", "float_or_auto") or f.choices]
    for _ in range(CASES):
        key = rng.choice(keys)
        value = rng.choice(HOSTILE_VALUES)
        result = run_cli("train", *FAST, "-o", f"{key}={value}", "-o", f"output.root={arena / 'scratch' / 'runs'}")
        _check(result, arena, before)


def _hostile_idx(rng: random.Random, good: bytes) -> bytes:
    dims = rng.choice([0, 1, 2, 3, 4, 255])
    shape = [rng.choice([0, 1, 28, 2**31, 2**32 - 1, rng.randint(0, 10**6)]) for _ in range(min(dims, 4))]
    header = struct.pack(">HBB", rng.choice([0, 0, 1, 0xFFFF]), rng.choice([8, 8, 9, 0x0D]), dims)
    header += struct.pack(f">{len(shape)}I", *shape)
    payload = rng.choice([b"", good[16:16 + rng.randint(0, 5000)], bytes(rng.randint(0, 255) for _ in range(100))])
    data = header + payload
    if rng.random() < 0.5:
        import gzip

        data = gzip.compress(data)
        if rng.random() < 0.3:
            data = data[: rng.randint(2, len(data))]
    return data


def test_hostile_idx_files(arena, monkeypatch):
    monkeypatch.chdir(arena / "scratch")
    rng = random.Random(3)
    before = _before(arena)
    good = (arena / "idx" / "train-images-idx3-ubyte.gz").read_bytes()
    import gzip

    good = gzip.decompress(good)
    for i in range(CASES):
        folder = arena / "scratch" / f"idx{i}"
        shutil.copytree(arena / "idx", folder)
        target = rng.choice(["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz"])
        (folder / target).write_bytes(_hostile_idx(rng, good))
        result = run_cli("prepare", "--dataset", "mnist", "--from-dir", folder, "--no-verify",
                         "--root", arena / "scratch" / f"data{i}")
        _check(result, arena, before)


def _mutate_json(rng: random.Random, value):
    choice = rng.randint(0, 5)
    if choice == 0:
        return rng.choice([[1], "x", None, 3, [], {}])
    if isinstance(value, dict) and value:
        key = rng.choice(list(value))
        out = dict(value)
        if choice == 1:
            out.pop(key)
        else:
            out[key] = _mutate_json(rng, value[key]) if rng.random() < 0.5 else rng.choice(
                ["forty", -1, 2**70, None, [1, 2], {"a": 1}, "../../../etc/passwd", True, 1.5])
        return out
    return rng.choice(["forty", -1, None, [1, 2], {"a": 1}])


RUN_FILES = {"run.json": ["eval", "export", "resume"], "ckpt/manifest.json": ["eval", "export", "resume"]}


def test_hostile_run_files(arena, monkeypatch):
    monkeypatch.chdir(arena / "scratch")
    rng = random.Random(4)
    before = _before(arena)
    refused = 0
    for i in range(CASES):
        run = arena / "scratch" / f"run{i}"
        shutil.copytree(arena / "checkpoints" / "base", run)
        name = rng.choice(list(RUN_FILES))
        path = run / name
        text = rng.choice([
            json.dumps(_mutate_json(rng, json.loads(path.read_text()))),
            path.read_text()[: rng.randint(0, 200)],
            "\x00\xff garbage",
        ])
        path.write_text(text, errors="surrogateescape")
        command = rng.choice(RUN_FILES[name])
        args = {"eval": ["eval", "--run", run], "export": ["export", "--run", run, "--out", run.parent / f"e{i}"],
                "resume": ["resume", "--run", run, "-o", "train.epochs=3"]}[command]
        result = run_cli(*args)
        if result.exit_code == 0:  # a mutation that changed nothing that is read (e.g. a field nobody uses)
            continue
        _check(result, arena, before)
        refused += 1
    assert refused >= CASES // 2, refused


def test_hostile_images(arena, monkeypatch):
    import io

    from PIL import Image

    monkeypatch.chdir(arena / "scratch")
    rng = random.Random(5)
    before = _before(arena)
    png = io.BytesIO()
    Image.new("L", (40, 40), 200).save(png, format="PNG")
    png = png.getvalue()
    for i in range(CASES):
        path = arena / "scratch" / f"img{i}.png"
        kind = rng.randint(0, 4)
        if kind == 0:
            path.write_bytes(bytes(rng.randint(0, 255) for _ in range(rng.randint(0, 3000))))
        elif kind == 1:
            path.write_bytes(png[: rng.randint(1, len(png) - 1)])
        elif kind == 2:  # a PNG header declaring an enormous size
            path.write_bytes(png[:16] + struct.pack(">II", rng.choice([10**5, 2**31 - 1]), 70000) + png[24:])
        elif kind == 3:
            path.write_bytes(b"")
        else:
            Image.new("L", (50, 50), rng.randint(0, 255)).save(path)  # blank: no digit to find
        result = run_cli("predict", "--model", arena / "checkpoints" / "base" / "export" / "best", path)
        _check(result, arena, before, predict=True)


# ---------------------------------------------------------------- the files mnist-kit wrote, damaged (issue 40)

def _damage(path: Path, kind: str) -> None:
    from helpers import SPECIAL_FILES, make_special

    if kind in SPECIAL_FILES:
        make_special(path, kind)
        return
    path.unlink()
    if kind == "nested 2,000 deep":
        path.write_text("[" * 2000 + "]" * 2000 + "\n")
    elif kind == "not UTF-8":
        path.write_bytes(b"\xff\xfe\x00{")
    elif kind == "a list":
        path.write_text("[1, 2]\n")


CONTENTS = ["nested 2,000 deep", "not UTF-8", "a list"]
DAMAGE = ["/dev/zero", "a FIFO", "a link loop", *CONTENTS]
# each file a run or the data cache holds, and the commands that read it
READ_BY = {"run.json": ["runs", "eval", "export", "resume"], "ckpt/manifest.json": ["eval", "export", "resume"],
           "metrics.jsonl": ["runs", "resume --epoch 0"], "config.yaml": ["runs", "eval", "export", "resume"],
           "export/best/mnist_kit_model.json": ["predict", "serve"], "prepared.json": ["train", "prepare"]}


@pytest.mark.parametrize("name", list(READ_BY))
def test_damaged_files_mnist_kit_wrote(arena, monkeypatch, name):
    """Every command that reads a file back is given it as /dev/zero, a FIFO, a link loop, nested 2,000 deep, not
    UTF-8 or of the wrong type: one Error line (``runs``: the run listed as unreadable; ``prepare``: the cache made
    again), no traceback, nothing else changed. Each case ends within its timeout instead of hanging on a FIFO
    or filling memory from /dev/zero."""
    from helpers import free_port, run_subprocess

    monkeypatch.chdir(arena / "scratch")
    before = _before(arena)
    for i, kind in enumerate(DAMAGE):
        for command in READ_BY[name]:
            run = arena / "scratch" / f"{i}-{command.replace(' ', '')}" / "r"  # beside a good copy, for runs
            shutil.copytree(arena / "checkpoints" / "base", run)
            shutil.copytree(arena / "checkpoints" / "base", run.parent / "good")
            data = arena / "scratch" / f"data{i}-{command}"
            shutil.copytree(arena / "data", data)
            monkeypatch.setenv("MNIST_KIT_DATA", str(data))
            _damage(data / "mnist" / name if name == "prepared.json" else run / name, kind)
            export = run / "export" / "best"
            args = {"runs": ["runs", run.parent], "eval": ["eval", "--run", run],
                    "export": ["export", "--run", run, "--out", run.parent / "e"],
                    "resume": ["resume", "--run", run, "-o", "train.epochs=3"],
                    "resume --epoch 0": ["resume", "--run", run, "--epoch", "0", "-o", "train.epochs=3"],
                    "predict": ["predict", "--model", export, arena / "idx"],
                    "train": ["train", *FAST, "-o", f"output.root={run.parent / 'new'}"],
                    "prepare": ["prepare", "--dataset", "mnist", "--from-dir", arena / "idx", "--no-verify"]}
            where = f"{name} as {kind}, {command}"
            if command == "serve":  # a process: it must refuse to start, not serve
                done = run_subprocess("serve", "--model", export, "--port", free_port(), timeout=120)
                assert done.returncode == 1 and "Traceback" not in done.stderr, (where, done.stderr[-2000:])
                assert [line for line in done.stderr.splitlines() if line.startswith("Error:")], (where, done.stderr)
                continue
            result = run_cli(*args[command])
            if command == "runs":
                assert result.exit_code == 0 and "Traceback" not in result.output, (where, result.output[-2000:])
                rows = {line.split()[0]: line for line in result.stdout.splitlines()[2:]}
                if name == "metrics.jsonl" and kind in CONTENTS:  # a line that is not a row is left out (as a torn one)
                    assert " 0/2 " in rows["r"] and "2/2" in rows["good"], (where, result.output)
                    continue
                assert f"warning: run r cannot be read: {run / name}" in result.output, (where, result.output)
                assert "unreadable" in rows["r"] and "completed" in rows["good"], (where, result.output)
            elif name == "metrics.jsonl" and kind in CONTENTS:  # set aside with the later work, as a torn line is
                assert result.exit_code == 0, (where, result.output[-2000:])
                kept = [p.read_bytes() for p in (run / "superseded").glob("*/metrics.jsonl")]
                assert len(kept) == 1 and kept[0].startswith((b"[", b"\xff")), (where, kept)
            elif command == "prepare":
                from mnist_kit.data import cache

                assert result.exit_code == 0, (where, result.output)
                assert cache.load("mnist", data).x_train.shape == (600, 28, 28), where  # made again, usable
            else:
                _check(result, arena, before)
                assert "mnist_kit_model.json" in result.output or name.rsplit("/", 1)[-1] in result.output \
                    or name == "ckpt/manifest.json" and "manifest.json" in result.output, (where, result.output)
