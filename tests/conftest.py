"""The fixtures: an isolated data root and folder per test, synthetic data prepared, a mirror on 127.0.0.1, a
model that reads drawn digits, a fake Ghostscript, a trained run to damage and a small disk to fill. Helpers
that are not fixtures are in helpers.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from helpers import FAST, REPO, run_cli, run_subprocess, synthetic_arrays, write_idx_folder


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


@pytest.fixture(scope="session")
def small_export(trained_template, tmp_path_factory):
    """An export (Paddle program and model.onnx) of the session's trained run (the default CNN, 2 epochs on
    the synthetic digits), exported from a copy: enough for the serve application to answer in this process."""
    base = tmp_path_factory.mktemp("small_export")
    shutil.copytree(trained_template / "data", base / "data")
    shutil.copytree(trained_template / "checkpoints", base / "checkpoints")
    done = run_subprocess("export", "--run", base / "checkpoints" / "base", "--out", base / "export",
                          env={"MNIST_KIT_DATA": str(base / "data")})
    assert done.returncode == 0, done.stdout + done.stderr
    return base / "export"


# ---------------------------------------------------------------- a hostile file: EPS (Pillow runs Ghostscript)


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


# ---------------------------------------------------------------- a trained run to damage

@pytest.fixture(scope="session")
def trained_template(tmp_path_factory):
    """A small trained run (2 epochs on synthetic data) and its prepared data, made once per session."""
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


@pytest.fixture
def small_disk(tmp_path):
    """A real 64 MiB file system (tmpfs), to fill up."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)
