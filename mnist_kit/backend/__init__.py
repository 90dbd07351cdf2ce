"""Paddle itself: the one place that imports paddle for training, and what runs on it below the models.

    runtime.py           the paddle import (a one-line error when neither build is installed), the device,
                         seeds and RNG state, versions
    distributed.py       rank, world size, sharding and reductions under paddle.distributed.launch
    paddle_inference.py  running a saved static program with Paddle Inference (evaluation, prediction)
    openmp.py            the process's OpenMP thread count, set around work that wants its own and restored

May import: ``errors``, ``util``. Importing ``paddle_inference`` does not import paddle: it is loaded when
a program is run, so prediction from an ONNX export never loads it.
"""
