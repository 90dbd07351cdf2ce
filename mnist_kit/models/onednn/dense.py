"""The CNN's output layer (a stock ``Linear``) on oneDNN's inner product, inside Paddle's autograd (``Dense``).

Why: Paddle's CPU matmul runs on one thread; the 980 -> 10 layer of the default CNN, forward and both
gradients, took 0.27 ms of a batch-64 step and 0.92 ms at batch 256, against 0.03 and 0.09 ms for
oneDNN's inner product on 2 threads (Zen 5, AVX-512).

``hwc``: the layer reads the last conv block's output channels last (``(channels, rows, columns)`` of it),
so that no reorder to NCHW is needed in between. The stock weight's rows are in (channel, row, column)
order; a permuted copy (39 KB for the default CNN, against 250 KB of activations a reorder would move at
batch 64) is made at each forward and read again by its backward, and the weight gradient is permuted
back.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import numpy as np

from mnist_kit.backend.openmp import openmp
from mnist_kit.backend.runtime import paddle
from mnist_kit.models.onednn.binding import (
    A_BIAS,
    A_DIFF_BIAS,
    A_DIFF_DST,
    A_DIFF_SRC,
    A_DIFF_WEIGHTS,
    A_DST,
    A_SRC,
    A_WEIGHTS,
    F32,
    FORWARD_INFERENCE,
    FORWARD_TRAINING,
    TAG_AB,
    TAG_X,
    Unavailable,
    _dims,
    _Library,
    _vp,
    library,
)
from mnist_kit.models.onednn.block import _contiguous, _pointer
from mnist_kit.models.onednn.plan import _reorder, _Step


def _strided(lib: _Library, dims, strides) -> _vp:
    md = _vp()
    lib.call("dnnl_memory_desc_create_with_strides", ctypes.byref(md), len(dims), _dims(dims), F32, _dims(strides))
    return md


@dataclass(frozen=True)
class DenseShape:
    """``y = x @ weight + bias`` for ``n`` rows of ``k`` inputs to ``o`` outputs; ``hwc``: ``x``'s rows are a
    (rows, columns, channels) flattening of ``(channels, rows, columns)`` while the weight's are the stock
    (channels, rows, columns) one. ``training``: the gradient primitives too."""

    n: int
    k: int
    o: int
    training: bool
    hwc: tuple[int, int, int] | None = None


class DensePlan:
    """The inner-product primitives of one shape, on Paddle's own buffers: the weight stored ``[k, o]`` is
    oneDNN's ``[o, k]`` with strides ``(1, o)``, so no reorder is needed unless ``hwc`` permutes its rows."""

    def __init__(self, lib: _Library, s: DenseShape):
        self.lib, self.s = lib, s
        src, dst, bias = lib.md([s.n, s.k], TAG_AB), lib.md([s.n, s.o], TAG_AB), lib.md([s.o], TAG_X)
        weights = _strided(lib, [s.o, s.k], [1, s.o])
        self.permute = self.unpermute = None
        if s.hwc is not None:
            c, h, w = s.hwc
            stock = _strided(lib, [s.o, c, h, w], [1, h * w * s.o, w * s.o, s.o])
            permuted = _strided(lib, [s.o, c, h, w], [1, s.o, w * c * s.o, c * s.o])
            self.permute, self.unpermute = _reorder(lib, stock, permuted), _reorder(lib, permuted, stock)
        fwd = _vp()
        lib.call("dnnl_inner_product_forward_primitive_desc_create", ctypes.byref(fwd), lib.engine,
                 FORWARD_TRAINING if s.training else FORWARD_INFERENCE, src, weights, bias, dst, None)
        self.fwd = _Step(lib, fwd, {A_SRC: src, A_WEIGHTS: weights, A_BIAS: bias, A_DST: dst})
        if not s.training:
            return
        bwd_d, bwd_w = _vp(), _vp()
        lib.call("dnnl_inner_product_backward_data_primitive_desc_create", ctypes.byref(bwd_d), lib.engine,
                 src, weights, dst, fwd, None)
        lib.call("dnnl_inner_product_backward_weights_primitive_desc_create", ctypes.byref(bwd_w), lib.engine,
                 src, weights, bias, dst, fwd, None)
        self.bwd_d = _Step(lib, bwd_d, {A_DIFF_SRC: src, A_WEIGHTS: weights, A_DIFF_DST: dst})
        self.bwd_w = _Step(lib, bwd_w, {A_SRC: src, A_DIFF_WEIGHTS: weights, A_DIFF_BIAS: bias, A_DIFF_DST: dst})

    def weights(self, w: int) -> np.ndarray | None:
        """The permuted copy of the weight at ``w`` that the primitives read with ``hwc``, else None (they read
        ``w`` itself); made once per forward, kept for the backward."""
        if self.permute is None:
            return None
        buf = np.empty(self.s.k * self.s.o, np.float32)
        self.permute(src=w, dst=buf.ctypes.data)
        return buf

    def forward(self, x: int, w: int, b: int, out: int) -> None:
        """``w``: the weight as the primitives read it (``weights``)."""
        self.fwd(src=x, weights=w, bias=b, dst=out)

    def backward(self, x: int, w: int, dout: int, dx: int | None, dw: int, db: int) -> None:
        """``w`` as in ``forward``; ``dw`` receives the gradient of the stock weight."""
        if dx is not None:
            self.bwd_d(diff_dst=dout, weights=w, diff_src=dx)
        if self.unpermute is None:
            self.bwd_w(src=x, diff_dst=dout, diff_weights=dw, diff_bias=db)
            return
        buf = np.empty(self.s.k * self.s.o, np.float32)
        self.bwd_w(src=x, diff_dst=dout, diff_weights=buf.ctypes.data, diff_bias=db)
        self.unpermute(src=buf.ctypes.data, dst=dw)


class _DenseFunction(paddle.autograd.PyLayer):
    @staticmethod
    def forward(ctx, x, weight, bias, dense, backward):
        x = _contiguous(x)
        plan = dense.plan(x.shape[0], backward)
        out = paddle.empty([x.shape[0], dense.o], "float32")
        with openmp().threads(dense.threads):
            permuted = plan.weights(_pointer(weight))
            read = permuted.ctypes.data if permuted is not None else _pointer(weight)
            plan.forward(_pointer(x), read, _pointer(bias), _pointer(out))
        if backward:
            ctx.plan, ctx.x_grad, ctx.threads, ctx.permuted = plan, not x.stop_gradient, dense.threads, permuted
            ctx.save_for_backward(x, weight)
        return out

    @staticmethod
    def backward(ctx, dout):
        x, weight = ctx.saved_tensor()
        dout = _contiguous(dout)
        dx = paddle.empty(x.shape, "float32") if ctx.x_grad else None
        dw, db = paddle.empty(weight.shape, "float32"), paddle.empty([weight.shape[1]], "float32")
        read = ctx.permuted.ctypes.data if ctx.permuted is not None else _pointer(weight)
        with openmp().threads(ctx.threads):
            ctx.plan.backward(_pointer(x), read, _pointer(dout), _pointer(dx) if dx is not None else None,
                              _pointer(dw), _pointer(db))
        ctx.permuted = None
        return dx, dw, db


class Dense:
    """A stock ``Linear`` layer (``k`` inputs, ``o`` outputs, with bias) run on oneDNN; ``hwc`` as in
    ``DenseShape``. Plans are built on first use per batch size and mode."""

    def __init__(self, k: int, o: int, threads: int, hwc: tuple[int, int, int] | None = None):
        self.k, self.o, self.threads, self.hwc = k, o, threads, hwc
        self.plans: dict = {}

    def plan(self, n: int, training: bool) -> DensePlan:
        key = (n, training, self.threads)
        if key not in self.plans:
            try:
                with openmp().threads(self.threads):
                    self.plans[key] = DensePlan(library(), DenseShape(n, self.k, self.o, training, self.hwc))
            except Unavailable as e:  # checked at this shape first: not expected
                from mnist_kit.errors import UserError

                raise UserError(f"the oneDNN output layer {self.k}->{self.o} failed on a batch of {n}: {e}; "
                                "continue with: -o train.fast_conv=off") from None
        return self.plans[key]

    def __call__(self, x, linear):
        """``linear(x)`` on oneDNN (``x`` flattened as ``hwc`` says)."""
        return _DenseFunction.apply(x, linear.weight, linear.bias, dense=self, backward=paddle.is_grad_enabled())

    def reference(self, x, linear):
        """The same with Paddle's stock layer (``x`` reordered to the stock order first when ``hwc``)."""
        if self.hwc is not None:
            c, h, w = self.hwc
            x = x.reshape([-1, h, w, c]).transpose([0, 3, 1, 2]).flatten(1)
        return linear(x)
