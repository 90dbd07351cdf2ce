"""Run a saved static program (``networks.save_program``) with Paddle Inference: normalised float32 batches
in, logits out. Evaluation uses it on a program traced from a checkpoint, prediction on an export.
Imports no training code and unpickles nothing; paddle is imported only when a program is loaded."""

from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path

import numpy as np

from mnist_kit.backend.openmp import openmp
from mnist_kit.errors import UserError
from mnist_kit.util.interrupts import keep_handlers


class ProgramError(UserError):
    """A saved program that Paddle Inference cannot load."""


def program_files(prefix: Path) -> tuple[Path, Path] | None:
    """(program, parameters) saved under ``prefix``: ``prefix.json`` (Paddle 3) or ``prefix.pdmodel``
    (Paddle 2.6), and ``prefix.pdiparams``; None if they are not there."""
    prefix = Path(prefix)
    params = prefix.with_name(prefix.name + ".pdiparams")
    for suffix in (".json", ".pdmodel"):
        program = prefix.with_name(prefix.name + suffix)
        if program.is_file() and params.is_file():
            return program, params
    return None


def create_predictor(model: Path, params: Path, device: str = "cpu", threads: int | None = None):
    """A Paddle Inference predictor for a saved program. On the CPU it runs with oneDNN (measured here
    about 5x the plain CPU kernels on the CNN, same logits within 1e-5) on up to 2 threads."""
    with warnings.catch_warnings(), keep_handlers():  # paddle replaces the SIGTERM handler at import
        warnings.simplefilter("ignore")
        try:
            from paddle import inference
        except ImportError as e:
            raise ProgramError(f"Paddle Inference is needed to run {Path(model).name} but paddle cannot be "
                               f"imported ({e}); "
                               "install paddlepaddle, or export with --format onnx and install onnxruntime") from None
    config = inference.Config(str(model), str(params))
    if device.startswith("gpu"):
        import paddle

        if not paddle.device.is_compiled_with_cuda():  # else Paddle logs an error and runs on the CPU anyway
            raise ProgramError(f"--device {device} needs paddle's GPU build (paddlepaddle-gpu); this paddle is "
                               "the CPU build: use --device cpu")
        config.enable_use_gpu(256, int(device.partition(":")[2] or 0))
    else:
        config.disable_gpu()
        config.set_cpu_math_library_num_threads(threads or min(2, os.cpu_count() or 1))
        if os.environ.get("MNIST_KIT_ONEDNN", "1") != "0":  # 0: the plain CPU kernels (for comparisons)
            (config.enable_onednn if hasattr(config, "enable_onednn") else config.enable_mkldnn)()
    config.disable_glog_info()
    # not config.enable_memory_optim(): it breaks Paddle 3's .json programs
    try:
        with openmp().kept():  # making it sets the process's OpenMP threads to the count above (measured)
            return inference.create_predictor(config)
    except Exception as e:  # noqa: BLE001 - Paddle raises assorted types for unreadable programs
        raise ProgramError(f"Paddle Inference cannot load {model}: {str(e).strip().splitlines()[-1]}") from None


class Program:
    """A saved program run by Paddle Inference: normalised float32 batches in, logits out. Calls from several
    threads take turns (a predictor's input and output buffers are its own)."""

    def __init__(self, model: Path, params: Path, device: str = "cpu", threads: int | None = None):
        self.lock = threading.Lock()
        self.predictor = create_predictor(model, params, device, threads)
        self.input = self.predictor.get_input_handle(self.predictor.get_input_names()[0])
        self.output = self.predictor.get_output_handle(self.predictor.get_output_names()[0])

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Normalised float32 (N, C, H, W) -> logits (N, classes)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        with self.lock:
            self.input.reshape(list(x.shape))
            self.input.copy_from_cpu(x)
            self.predictor.run()
            return self.output.copy_to_cpu()
