"""The one place that imports paddle, decides the device, seeds the RNGs and records versions.

Everything that differs between Paddle 2.6 (the last paddlepaddle-gpu on PyPI) and 3.x belongs here.
"""

from __future__ import annotations

import os
import platform
import random
import sys
import warnings

import click
import numpy as np

from mnist_kit.errors import UserError
from mnist_kit.util.interrupts import keep_handlers
from mnist_kit.version import __version__

BUILDS = ("paddlepaddle", "paddlepaddle-gpu")  # PaddlePaddle's two builds; both install the module `paddle`
INSTALL = ('install one build of PaddlePaddle: pip install "mnist-kit[cpu]" (the CPU build, paddlepaddle), or '
           'the GPU build, paddlepaddle-gpu, as the README says under "Install"')


def installed_builds() -> list[str]:
    """The PaddlePaddle distributions installed, as ``name version``."""
    from importlib import metadata

    found = []
    for name in BUILDS:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    return found


# paddle warns about a missing ccache at import (irrelevant here), and replaces the Python handlers of
# SIGTERM and SIGHUP with C++ ones that abort with a C++ traceback
with warnings.catch_warnings(), keep_handlers():
    warnings.simplefilter("ignore")
    try:
        import paddle
    except ModuleNotFoundError as e:
        if e.name != "paddle":
            raise
        raise UserError(f"this command needs PaddlePaddle, which is not installed here; {INSTALL}. (predict and "
                        "serve run an ONNX export without it)") from None
    except ImportError as e:  # installed, but a library it needs is missing or broken
        raise UserError(f"PaddlePaddle is installed but cannot be imported ({e}); reinstall it, or {INSTALL}") from None
if len(builds := installed_builds()) > 1:  # the second install overwrote the first's files in paddle/
    click.echo(f"warning: both PaddlePaddle builds are installed ({' and '.join(builds)}) and share the module "
               "paddle, so one overwrote the other's files: pip uninstall both, then install one", err=True)

# printed by BatchNorm on every training forward pass; it describes Paddle's normal behaviour
warnings.filterwarnings("ignore", message="When training, we now always track global mean and variance")


def select_device(spec: str, local_rank: int = 0) -> str:
    """Set paddle's device from ``cpu``, ``gpu``, ``gpu:N`` or ``auto``; return the device used.

    Under ``paddle.distributed.launch``, ``gpu`` and ``auto`` mean the GPU of this process's local rank.
    """
    cuda = paddle.device.is_compiled_with_cuda()
    count = paddle.device.cuda.device_count() if cuda else 0
    if spec in ("gpu", "auto") and count and local_rank:
        spec = f"gpu:{local_rank}"
    if spec == "auto":
        device = "gpu:0" if count else "cpu"
    elif spec == "cpu":
        device = "cpu"
    else:
        if not cuda:
            raise UserError(f"device '{spec}' asked for, but the installed PaddlePaddle is the CPU build. "
                            "Install paddlepaddle-gpu for GPU training, or use --device cpu (or auto)")
        index = int(spec.partition(":")[2] or 0)
        if index >= count:
            raise UserError(f"device '{spec}' asked for, but {count} GPU(s) are visible "
                            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})")
        device = f"gpu:{index}"
    paddle.set_device(device)
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    paddle.seed(seed)


def rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "paddle": paddle.get_rng_state()}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    paddle.set_rng_state(state["paddle"])


def versions() -> dict:
    out = {"mnist_kit": __version__, "python": sys.version.split()[0], "paddle": paddle.__version__,
           "numpy": np.__version__, "platform": platform.platform()}
    try:
        from importlib.metadata import version

        out["visualdl"] = version("visualdl")
    except Exception:  # noqa: BLE001 - optional information
        pass
    return out
