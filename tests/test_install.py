"""mnist-kit installed as a user installs it: the sdist and wheel built from this clone, the wheel installed
(not editable) into fresh virtual environments, used from a folder outside the clone.

- with the CPU build of PaddlePaddle (the ``cpu`` extra): the shipped configs by name, one epoch of training,
  export, predict;
- without PaddlePaddle (the core install: what predict and serve need): predict and serve run the ONNX export
  made by the other install, and train ends in the one-line error that names both builds.

Both install from PyPI or pip's cache, with the tested versions (constraints.txt), as scripts/setup.sh does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from helpers import REPO, Server, synthetic_arrays, write_idx_folder

pytestmark = pytest.mark.slow  # builds the package and installs it into fresh environments


def _run(args, cwd=None, env=None, timeout=900, check=True):
    done = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    if check:
        assert done.returncode == 0, f"{args}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> dict:
    """The sdist and the wheel (built from the sdist, as pip builds a source release)."""
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--outdir", out, REPO])
    (sdist,), (wheel,) = out.glob("*.tar.gz"), out.glob("*.whl")
    return {"sdist": sdist, "wheel": wheel}


def _venv(where: Path, requirement: str) -> Path:
    """A fresh virtual environment with ``requirement`` installed; its bin folder."""
    _run([sys.executable, "-m", "venv", where])
    _run([where / "bin" / "python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
          "-c", REPO / "constraints.txt", requirement])
    return where / "bin"


@pytest.fixture(scope="module")
def outside(tmp_path_factory) -> Path:
    """A folder away from the clone, with small IDX files to train on and a digit image to read."""
    base = tmp_path_factory.mktemp("user")
    arrays = synthetic_arrays()
    write_idx_folder(base / "idx", arrays)
    Image.fromarray(arrays["test_images"][0]).save(base / "digit.png")
    return base


@pytest.mark.install
def test_the_sdist_and_wheel_hold_the_licence_configs_and_pad(dist):
    names = zipfile.ZipFile(dist["wheel"]).namelist()
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert {f"mnist_kit/configs/{c}.yaml" for c in ("cnn", "cnn_fast", "cnn_best", "cnn_best_fashion")} <= set(names)
    assert "mnist_kit/deploy/static/index.html" in names
    meta = next(zipfile.ZipFile(dist["wheel"]).read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
    assert "License-Expression: Apache-2.0" in meta and "Provides-Extra: cpu" in meta
    assert "Requires-Dist: paddlepaddle>=2.6; extra == \"cpu\"" in meta
    assert not [line for line in meta.splitlines()
                if line.startswith("Requires-Dist: paddlepaddle") and "extra" not in line]
    from mnist_kit import __version__
    assert f"Version: {__version__}\n" in meta
    with tarfile.open(dist["sdist"]) as tar:
        members = tar.getnames()
    assert any(m.endswith("/LICENSE") for m in members)
    assert any(m.endswith("/mnist_kit/configs/cnn.yaml") for m in members)


@pytest.mark.install
def test_installed_with_the_cpu_build_it_trains_a_shipped_config_by_name_exports_and_predicts(dist, outside):
    bin_ = _venv(outside / "venv-cpu", f"mnist-kit[cpu] @ {dist['wheel'].as_uri()}")
    mk, env = bin_ / "mnist-kit", {"MNIST_KIT_DATA": str(outside / "data")}
    version = _run([mk, "--version"], cwd=outside).stdout
    from mnist_kit import __version__
    assert version.strip() == f"mnist-kit, version {__version__}"
    where = _run([bin_ / "python", "-c", "import mnist_kit; print(mnist_kit.__file__)"], cwd=outside).stdout
    assert str(outside / "venv-cpu") in where  # the installed copy, not this clone
    listed = _run([mk, "configs"], cwd=outside).stdout
    assert listed.startswith("cnn ") and "cnn_best_fashion" in listed
    _run([mk, "prepare", "--from-dir", outside / "idx", "--no-verify"], cwd=outside, env=env)
    trained = _run([mk, "train", "--config", "cnn", "-o", "train.epochs=1", "-o", "data.val_size=100",
                    "-o", "log.graph=false", "--name", "installed"], cwd=outside, env=env)
    assert "config: the shipped cnn (" in trained.stderr and str(outside / "venv-cpu") in trained.stderr
    assert (outside / "checkpoints" / "installed" / "ckpt" / "best.pdckpt").is_file()
    _run([mk, "export", "--run", outside / "checkpoints" / "installed", "--out", outside / "export"], cwd=outside,
         env=env)
    assert (outside / "export" / "model.onnx").is_file()
    read = json.loads(_run([mk, "predict", "--model", outside / "export", "--json", outside / "digit.png"],
                           cwd=outside).stdout)
    assert "error" not in read and read["class"] in range(10) and read["file"].endswith("digit.png")


@pytest.mark.install
def test_installed_without_paddle_predict_and_serve_run_onnx_and_train_says_how_to_install(dist, outside):
    if not (outside / "export" / "model.onnx").is_file():
        pytest.skip("needs the export of the install with the CPU build (the test before)")
    bin_ = _venv(outside / "venv-core", dist["wheel"].as_uri())
    mk = bin_ / "mnist-kit"
    assert _run([bin_ / "python", "-c", "import paddle"], cwd=outside, check=False).returncode == 1
    read = json.loads(_run([mk, "predict", "--model", outside / "export", "--json", outside / "digit.png"],
                           cwd=outside).stdout)
    with_paddle = json.loads(_run([outside / "venv-cpu" / "bin" / "mnist-kit", "predict", "--model",
                                   outside / "export", "--json", outside / "digit.png"], cwd=outside).stdout)
    assert read == with_paddle

    server = Server("--model", outside / "export", command=[mk], cwd=outside)
    try:
        status, _, answer = server.post_image((outside / "digit.png").read_bytes())
        assert status == 200, answer
        assert server.request("GET", "/healthz")[2]["runtime"] == "onnxruntime"
    finally:
        server.stop()
    assert answer["class"] == read["class"] and answer["probability"] == pytest.approx(read["probability"], abs=1e-6)

    train = _run([mk, "train", "-o", "train.epochs=1"], cwd=outside, check=False)
    assert train.returncode == 1 and train.stdout == ""
    assert train.stderr.strip().splitlines() == [
        'Error: this command needs PaddlePaddle, which is not installed here; install one build of PaddlePaddle: '
        'pip install "mnist-kit[cpu]" (the CPU build, paddlepaddle), or the GPU build, paddlepaddle-gpu, as the '
        'README says under "Install". (predict and serve run an ONNX export without it)']


# ---------------------------------------------------------------- which PaddlePaddle, in this environment

def _mnist_kit(args, env=None, prelude=""):
    """``mnist-kit ARGS`` in a new interpreter, after ``prelude`` (Python run first)."""
    code = f"{prelude}\nfrom mnist_kit.cli import main\nmain({[str(a) for a in args]!r}, prog_name='mnist-kit')"
    return _run([sys.executable, "-c", code], env=env, check=False, timeout=300)


@pytest.mark.parametrize("command", [["train"], ["eval"], ["export"], ["resume"], ["sweep", "-o", "train.seed=1,2"]])
def test_without_paddle_each_command_that_needs_it_says_how_to_install_it_in_one_line(command, tmp_path):
    # paddle made unimportable in this interpreter as if it were not installed (test_installed_without_paddle...
    # checks the same in a real environment without it)
    done = _mnist_kit(command, prelude="import sys; sys.modules['paddle'] = None")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert "this command needs PaddlePaddle, which is not installed here" in done.stderr
    assert 'pip install "mnist-kit[cpu]"' in done.stderr and "paddlepaddle-gpu" in done.stderr
    assert not (tmp_path / "checkpoints").exists()


def test_both_builds_installed_at_once_is_said_in_one_line(tmp_path):
    site = tmp_path / "site"
    info = site / "paddlepaddle_gpu-3.3.1.dist-info"  # what pip leaves for an installed paddlepaddle-gpu
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: paddlepaddle-gpu\nVersion: 3.3.1\n")
    done = _mnist_kit(["eval"], env={"PYTHONPATH": os.pathsep.join([str(site), *sys.path[1:]])})
    warnings = [line for line in done.stderr.splitlines() if "both PaddlePaddle builds" in line]
    cpu = metadata.version("paddlepaddle")
    assert warnings == [f"warning: both PaddlePaddle builds are installed (paddlepaddle {cpu} and paddlepaddle-gpu "
                        "3.3.1) and share the module paddle, so one overwrote the other's files: pip uninstall "
                        "both, then install one"]
    assert "both PaddlePaddle" not in _mnist_kit(["eval"]).stderr


# ---------------------------------------------------------------- other platforms

WITHOUT_POSIX = ("import signal, sys\n"
                 "for name in ('SIGHUP', 'SIGKILL'):\n"
                 "    delattr(signal, name)\n"
                 "sys.modules['fcntl'] = None")  # as on Windows: neither those signals nor fcntl


def test_where_fcntl_and_sighup_are_missing_predict_runs_and_train_says_why_not(digit_export, tmp_path):
    png = tmp_path / "seven.png"
    img = Image.new("L", (120, 120), 255)
    ImageDraw.Draw(img).text((30, 10), "7", fill=0, font=ImageFont.load_default(size=90))
    img.save(png)
    listed = _mnist_kit(["configs"], prelude=WITHOUT_POSIX)
    assert listed.returncode == 0 and listed.stdout.startswith("cnn "), listed.stderr
    read = _mnist_kit(["predict", "--model", digit_export, "--json", png], prelude=WITHOUT_POSIX)
    assert read.returncode == 0, read.stderr
    assert json.loads(read.stdout) == json.loads(_mnist_kit(["predict", "--model", digit_export, "--json", png]).stdout)
    idx = write_idx_folder(tmp_path / "idx", synthetic_arrays())
    env = {"MNIST_KIT_DATA": str(tmp_path / "data")}
    assert _mnist_kit(["prepare", "--from-dir", idx, "--no-verify"], env=env, prelude=WITHOUT_POSIX).returncode == 0
    train = _mnist_kit(["train", "-o", "train.epochs=1", "-o", "data.val_size=100"], env=env, prelude=WITHOUT_POSIX)
    assert train.returncode == 1 and "Traceback" not in train.stderr
    assert train.stderr.strip().splitlines()[-1].startswith(
        "Error: training and sweeps lock their run folders with fcntl, which this platform")
