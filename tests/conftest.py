"""Shared fixtures: small synthetic IDX data sets that tests generate, and ways to run the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mnist_kit.cli import cli
from mnist_kit.data.idx import write_idx

REPO = Path(__file__).resolve().parents[1]
FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
         "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}


def synthetic_arrays(n_train=600, n_test=200, seed=0):
    """Learnable 28x28 uint8 images: class k is a bright 6x6 block at a class-specific place, plus noise."""
    rng = np.random.default_rng(seed)

    def make(n):
        y = np.arange(n) % 10
        rng.shuffle(y)
        x = rng.integers(0, 60, size=(n, 28, 28)).astype(np.uint8)
        for i, k in enumerate(y):
            r, c = 3 + (k // 5) * 12 + rng.integers(-1, 2), 2 + (k % 5) * 5 + rng.integers(-1, 2)
            x[i, r:r + 6, max(c, 0):c + 6] = rng.integers(180, 256)
        return x, y.astype(np.uint8)

    (xtr, ytr), (xte, yte) = make(n_train), make(n_test)
    return {"train_images": xtr, "train_labels": ytr, "test_images": xte, "test_labels": yte}


def write_idx_folder(folder: Path, arrays: dict, gz: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for role, name in FILES.items():
        write_idx(folder / (name + (".gz" if gz else "")), arrays[role])
    return folder


FOLDER_CLASSES = {"box": 40, "diagonal": 12, "hbar": 24, "vbar": 8}  # unequal on purpose


def folder_image(kind: str, rng, size=(40, 80)):
    """A dark drawing on light paper (like a dynamometer card): class = the shape drawn, with jitter."""
    from PIL import Image, ImageDraw

    h, w = size
    img = Image.fromarray(rng.integers(215, 256, size=(h, w)).astype(np.uint8), "L")
    d = ImageDraw.Draw(img)
    j = lambda s: int(rng.integers(-s, s + 1))  # noqa: E731
    width = 3 + j(1)
    if kind == "box":
        d.rectangle([w // 5 + j(3), h // 5 + j(2), 4 * w // 5 + j(3), 4 * h // 5 + j(2)], outline=20, width=width)
    elif kind == "diagonal":
        d.line([(w // 10 + j(3), h // 10 + j(2)), (9 * w // 10 + j(3), 9 * h // 10 + j(2))], fill=20, width=width)
    elif kind == "hbar":
        y = h // 2 + j(5)
        d.line([(w // 10 + j(3), y), (9 * w // 10 + j(3), y)], fill=20, width=width + 2)
    else:  # vbar
        for x in (w // 3 + j(3), 2 * w // 3 + j(3)):
            d.line([(x, h // 8 + j(2)), (x, 7 * h // 8 + j(2))], fill=20, width=width)
    return img


def write_image_folder(folder: Path, counts=None, seed=0, corrupt=True) -> Path:
    """``folder/<class>/...``: several classes with unequal counts, mixed formats and sizes (grayscale PNG,
    RGB JPEG, BMP, RGBA PNG, a sub-folder), a text file that is not an image, and (``corrupt``) one damaged
    PNG. The classes are learnable at 16x32."""
    rng = np.random.default_rng(seed)
    for k, (kind, n) in enumerate((counts or FOLDER_CLASSES).items()):
        d = folder / kind
        (d / "more").mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = folder_image(kind, rng, size=(40, 80) if i % 2 else (50, 100))
            fmt = i % 4
            if fmt == 0:
                img.save(d / f"{kind}_{i}.png")
            elif fmt == 1:
                img.convert("RGB").save(d / f"{kind}_{i}.jpg", quality=95)
            elif fmt == 2:
                img.save(d / "more" / f"{kind}_{i}.bmp")
            else:
                rgba = img.convert("RGBA")
                rgba.putalpha(255)
                rgba.save(d / f"{kind}_{i}.PNG")
    (folder / "notes.txt").write_text("not a class folder, and not an image\n")
    (folder / "hbar" / "readme.txt").write_text("not an image\n")
    if corrupt:
        (folder / "box" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    return folder


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Every test gets its own data root and working directory."""
    monkeypatch.setenv("MNIST_KIT_DATA", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def idx_folder(tmp_path):
    return write_idx_folder(tmp_path / "idx", synthetic_arrays())


@pytest.fixture
def prepared(idx_folder, tmp_path):
    """Synthetic data prepared as 'mnist' in the test's data root."""
    result = run_cli("prepare", "--dataset", "mnist", "--from-dir", str(idx_folder), "--no-verify")
    assert result.exit_code == 0, result.output
    return tmp_path / "data"


# Small and fast: the synthetic set has 600 training images.
FAST = ["-o", "data.val_size=100", "-o", "train.epochs=2", "-o", "train.batch_size=50", "-o", "train.log_every=5",
        "-o", "train.eval_batch_size=64", "-o", "log.graph=false"]  # the graph has tests of its own


class _Result:
    """click 8.1's result with 8.2's meaning: ``stdout`` the standard output alone, ``output`` all of it."""

    def __init__(self, result):
        self._result = result
        self.output = result.stdout + result.stderr

    def __getattr__(self, name):
        return getattr(self._result, name)


def run_cli(*args):
    """``mnist-kit ARGS`` in this process: ``.output`` holds what the user sees, ``.stdout`` standard output."""
    args = [str(a) for a in args]
    try:
        runner = CliRunner(mix_stderr=False)  # click < 8.2 (the newest for Python 3.9) mixes them otherwise
    except TypeError:  # click >= 8.2: stdout alone, and output interleaves both
        return CliRunner().invoke(cli, args, catch_exceptions=False)
    return _Result(runner.invoke(cli, args, catch_exceptions=False))


def run_subprocess(*args, timeout=600, env=None):
    """Run ``python -m mnist_kit ARGS`` as a user would; returns CompletedProcess with text output."""
    return subprocess.run([sys.executable, "-m", "mnist_kit", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


# ---------------------------------------------------------------- a mirror on 127.0.0.1

class _Handler(SimpleHTTPRequestHandler):
    """Serves a folder; can fail the first requests or cut a transfer short, per file name."""

    fail_first: dict = {}
    truncate: set = set()

    def log_message(self, *args):
        pass

    def do_GET(self):
        name = self.path.rsplit("/", 1)[-1]
        if self.fail_first.get(name, 0) > 0:
            self.fail_first[name] -= 1
            self.send_error(503, "try again")
            return
        if name in self.truncate:
            body = (Path(self.directory) / name).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.truncate.discard(name)
            return
        super().do_GET()


@pytest.fixture
def http_server():
    servers = []

    def start(folder, fail_first=None, truncate=()):
        handler = type("H", (_Handler,), {"fail_first": dict(fail_first or {}), "truncate": set(truncate)})
        server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(folder)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}/"

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


# ---------------------------------------------------------------- a model that reads drawn digits

@pytest.fixture(scope="session")
def digit_export(tmp_path_factory):
    """An export (with model.onnx) of the default CNN trained on digits rendered from 30 fonts
    (scripts/font_digits.py): it reads digits drawn with a mouse. Made once per session, in about 20 s."""
    base = tmp_path_factory.mktemp("digit_export")
    made = subprocess.run([sys.executable, str(REPO / "scripts" / "font_digits.py"), str(base / "idx"),
                           "--train", "4000", "--test", "500"], capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    env = {"MNIST_KIT_DATA": str(base / "data")}
    for args in (["prepare", "--from-dir", base / "idx", "--no-verify"],
                 ["train", "-o", "data.val_size=500", "-o", "train.epochs=4", "-o", "output.visualdl=false",
                  "-o", "log.graph=false", "-o", f"output.root={base / 'runs'}", "--name", "digits"],
                 ["export", "--run", base / "runs" / "digits", "--out", base / "export"]):
        result = run_subprocess(*args, env=env)
        assert result.returncode == 0, result.stdout + result.stderr
    return base / "export"


# ---------------------------------------------------------------- a hostile file: EPS (Pillow runs Ghostscript)

# Pillow recognises EPS by content, whatever the file's name, and runs `gs` (no timeout) to decode it
EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\n{ } loop\n"


@pytest.fixture
def fake_ghostscript(tmp_path):
    """A `gs` first on PATH that records that it ran (and fails at once, so that a test of code that still
    runs it ends quickly; real gs would hang on this EPS's endless loop). Yields
    (environment for a subprocess, the file that exists once gs ran); PATH is set in this process too."""
    bin_dir, ran = tmp_path / "fake-gs-bin", tmp_path / "gs-ran"
    bin_dir.mkdir()
    gs = bin_dir / "gs"
    gs.write_text(f"#!/bin/sh\ntouch '{ran}'\nexit 1\n")
    gs.chmod(0o755)
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    old = os.environ["PATH"]
    os.environ["PATH"] = env["PATH"]
    try:
        yield env, ran
    finally:
        os.environ["PATH"] = old


def checkpoints_of(run: Path) -> list:
    """The epoch and step checkpoints a run's manifest lists (none while it cannot be read): what a test waits
    for before it stops a run that it resumes afterwards (the first metrics row is written before them)."""
    from mnist_kit import UserError
    from mnist_kit.runs import checkpoint

    try:
        return checkpoint.periodic(Path(run) / "ckpt")
    except (UserError, OSError):
        return []


def wait_for(condition, timeout: float = 120, what="") -> None:
    """Poll ``condition`` until it holds (the event a test needs, never a fixed sleep); fail after ``timeout``
    seconds naming ``what`` (a text, or a function giving one)."""
    import time

    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what() if callable(what) else what}"
        time.sleep(0.1)
