"""The CNN's conv blocks on oneDNN, the library inside Paddle's CPU wheel, for eager training.

Why: Paddle's eager CPU convolutions (im2col + gemm on one thread) are about three quarters of a training
step, and no Paddle flag moves eager training onto its oneDNN kernels (``docs/performance.md``). The same
oneDNN that Paddle ships (``paddle/libs/libdnnl.so.3``, already loaded by Paddle) runs a whole block --
conv, bias or batch norm, ReLU, 2x2 max-pool, forward and backward -- several times faster.

How: oneDNN's C API through ``ctypes`` (no compiler, no headers: the enum values below are those of the
oneDNN 3.x ABI, which ``libdnnl.so.3`` keeps) from a ``paddle.autograd.PyLayer``. The parameters stay
Paddle's (the stock ``Conv2D`` and ``BatchNorm2D``), so state dicts, checkpoints and exports are the stock
ones; only eager forward and backward run here. Primitives are built once per shape, mode and thread
count; the layouts inside a block are chosen per primitive (``Plan``). Results are bitwise reproducible at
a fixed thread count, and equal to the stock layers within float rounding (not bitwise).

A block is ``relu`` (conv with bias, then max-pool with the ReLU as its post-op) or ``bn`` (conv without
bias, batch norm, then the same pool): the two shapes ``networks.CNN`` builds. The CNN's output layer (a
``Linear``) runs on oneDNN's inner product (``Dense``), reading the last block's output channels last when
nothing comes between them.

Threads: oneDNN's OpenMP calls go to Intel's ``libiomp5``, which Paddle loads first (so ``libgomp``'s
``omp_set_num_threads`` does nothing); ``backend.openmp`` sets its thread count around this module's work and
restores Paddle's afterwards.

Choosing: ``enable`` (called by ``trainer.build_trainer``) runs ``self_check`` and checks each block at its
own shape against the stock layers (``compare``); ``Choice`` says what was chosen and why.

    binding.py  the C API through ctypes, the library, OpenMP threads
    plan.py     one block's primitives for one shape and mode (Plan)
    block.py    a block in Paddle's autograd (Block)
    dense.py    the output layer on oneDNN's inner product (Dense)
    check.py    the self-check and each shape's check against the stock layers
    choose.py   what trains the conv blocks (enable, Choice)
    protocol.py what a network offers to have its blocks run here (FastConvNet: conv_blocks, output_layer,
                use_fast_blocks; networks.CNN implements it; docs/extending.md)

May import: ``errors``, ``backend`` (the paddle import). Used by ``models.networks`` (it offers its
blocks: ``FastConvNet``) and ``training.trainer`` (which calls ``enable``).
"""

from mnist_kit.models.onednn.binding import EVAL_CHUNK, Unavailable, library
from mnist_kit.models.onednn.block import Block
from mnist_kit.models.onednn.check import compare, compare_dense, self_check
from mnist_kit.models.onednn.choose import Choice, chain, enable, threads_for
from mnist_kit.models.onednn.protocol import ConvBlock, FastConvNet, OutputLayer

__all__ = ["EVAL_CHUNK", "Block", "Choice", "ConvBlock", "FastConvNet", "OutputLayer", "Unavailable", "chain",
           "compare", "compare_dense", "enable", "library", "self_check", "threads_for"]
