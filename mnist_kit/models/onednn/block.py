"""A conv block on oneDNN inside Paddle's autograd: a ``PyLayer`` over the block's ``Plan``, with the
stock layers' parameters (``Block``)."""

from __future__ import annotations

import ctypes
import math

import numpy as np

from mnist_kit.backend.openmp import openmp
from mnist_kit.backend.runtime import paddle
from mnist_kit.models.onednn.binding import EVAL_CHUNK, TRAIN_CHUNK, Unavailable, library
from mnist_kit.models.onednn.plan import Plan, Shape


def _pointer(t) -> int:
    return t.data_ptr() if hasattr(t, "data_ptr") else t._ptr()  # Paddle 3 / Paddle 2.6


def _contiguous(t):
    return t.contiguous() if hasattr(t, "is_contiguous") and not t.is_contiguous() else t


class _BlockFunction(paddle.autograd.PyLayer):
    """``block`` on oneDNN in Paddle's autograd: inputs ``x``, the conv ``weight`` and the block's
    ``params`` (the conv bias; or batch norm's scale and shift), gradients for each."""

    @staticmethod
    def forward(ctx, x, weight, *params, block, training, backward):
        x, weight = _contiguous(x), _contiguous(weight)
        n, h, w = (x.shape[0], *x.shape[1:3]) if block.nhwc_in else (x.shape[0], *x.shape[2:])
        pieces = block.pieces(n, training)
        plans = [block.plan(m, h, w, training) for _, m in pieces]
        out = paddle.empty([n, *plans[0].out_shape[1:]], "float32")
        x_at, out_at = _at(x), _at(out)
        p = {"w": _pointer(weight), **block.pointers(params, training)}
        with openmp().threads(block.threads):
            saved = [plan.forward({**p, "x": x_at(i), "out": out_at(i)}) for (i, _), plan in zip(pieces, plans)]
        if block.kind == "bn" and training:  # (one piece)
            block.update_statistics(saved[0]["batch_mean"], saved[0]["batch_variance"])
        if not backward:  # (PyLayer.forward itself always runs without gradients: the caller says)
            for plan, piece in zip(plans, saved):
                plan.give(*piece.values())
            return out
        ctx.plans, ctx.pieces, ctx.saved, ctx.block, ctx.x_grad = plans, pieces, saved, block, not x.stop_gradient
        ctx.save_for_backward(x, weight, *params)  # x: read in place when no reorder was needed
        return out

    @staticmethod
    def backward(ctx, dout):
        x, weight, *params = ctx.saved_tensor()
        dout = _contiguous(dout)
        grads = [paddle.empty(x.shape, "float32") if ctx.x_grad else None, paddle.empty(weight.shape, "float32")]
        grads += [paddle.empty(q.shape, "float32") for q in params]
        names = ("dw", "db") if ctx.block.kind != "bn" else ("dw", "dscale", "dshift")
        p = {"w": _pointer(weight), **{k: _pointer(g) for k, g in zip(names, grads[1:])}}
        if ctx.block.kind == "bn":
            p["scale"] = _pointer(params[0])
        x_at, dout_at = _at(x), _at(dout)
        dx_at = _at(grads[0]) if grads[0] is not None else lambda i: None
        # the pieces after the first write their parameter gradients aside, then add them (in piece order)
        aside = [np.empty(math.prod(g.shape), np.float32) for g in grads[1:]] if len(ctx.pieces) > 1 else []
        with openmp().threads(ctx.block.threads):
            for k, ((i, _), plan, saved) in enumerate(zip(ctx.pieces, ctx.plans, ctx.saved)):
                q = {**p, "x": x_at(i), "dout": dout_at(i), "dx": dx_at(i)}
                if k:
                    q.update({name: a.ctypes.data for name, a in zip(names, aside)})
                plan.backward(saved, q)
                if k:
                    for g, a in zip(grads[1:], aside):
                        _view(g)[:] += a
        ctx.saved = None
        return tuple(grads)


def _at(t):
    """The address of image ``i`` of the batch ``t`` (images are its outermost axis in every layout here)."""
    start, size = _pointer(t), 4 * math.prod(t.shape[1:])
    return lambda i: start + i * size


def _view(t) -> np.ndarray:
    """A float32 tensor's memory as a flat numpy array (no copy)."""
    return np.ctypeslib.as_array((ctypes.c_float * math.prod(t.shape)).from_address(_pointer(t)))


class Block:
    """One conv block of the CNN on oneDNN. ``kind``: ``relu`` (conv + bias, ReLU, 2x2 max-pool) or ``bn``
    (conv without bias, the batch norm layer ``norm``, ReLU, 2x2 max-pool). Plans are built on first use
    per input shape, mode and thread count."""

    def __init__(self, cin: int, cout: int, kernel: int, kind: str, threads: int, norm=None):
        self.cin, self.cout, self.kernel, self.kind, self.threads, self.norm = cin, cout, kernel, kind, threads, norm
        self.plans: dict = {}
        self.free: dict = {}  # spare buffers by size, shared by the plans: evaluation reuses training's
        self.chunk = EVAL_CHUNK  # evaluation runs in pieces of the training batch (the same buffer sizes)
        # set by ``chain``: a tensor between two oneDNN blocks stays channels last (no reorders to NCHW and back)
        self.nhwc_in = self.nhwc_out = False

    def plan(self, n: int, h: int, w: int, training: bool) -> Plan:
        key = (n, h, w, training, self.threads)
        if key not in self.plans:
            eps = float(self.norm._epsilon) if self.norm is not None else 1e-5
            try:
                with openmp().threads(self.threads):  # oneDNN fixes a primitive's thread count when it is made
                    plan = Plan(library(), Shape(n, self.cin, h, w, self.cout, self.kernel, self.kind, training,
                                                 eps, self.nhwc_in, self.nhwc_out), self.free)
            except Unavailable as e:  # checked at this block's shape with a batch of 2: not expected
                from mnist_kit.errors import UserError

                raise UserError(f"the oneDNN conv block {self.cin}->{self.cout} ({self.kernel}x{self.kernel}) "
                                f"failed on a batch of {n}x{h}x{w}: {e}; continue with: "
                                "-o train.fast_conv=off") from None
            plan.out_shape = [n, h // 2, w // 2, self.cout] if self.nhwc_out else [n, self.cout, h // 2, w // 2]
            self.plans[key] = plan
        return self.plans[key]

    def pieces(self, n: int, training: bool) -> list[tuple[int, int]]:
        """(first image, images) of each piece a batch runs in: one piece, unless a ``relu`` block trains on
        more than ``TRAIN_CHUNK`` images. Then pieces of that many, whose activations stay in the cache from
        one primitive to the next (the default CNN at batch 256, Zen 5: 17.2 -> 16.0 ms per training step);
        batch norm needs its whole batch at once."""
        if not training or self.kind == "bn" or n <= TRAIN_CHUNK:
            return [(0, n)]
        return [(i, min(TRAIN_CHUNK, n - i)) for i in range(0, n, TRAIN_CHUNK)]

    def params(self, conv) -> list:
        """The Paddle parameters this block reads besides the conv weight."""
        if self.kind == "bn":
            return [self.norm.weight, self.norm.bias]
        return [conv.bias]

    def pointers(self, params, training: bool) -> dict:
        if self.kind == "relu":
            return {"b": _pointer(params[0])}
        p = {"scale": _pointer(params[0]), "shift": _pointer(params[1])}
        if not training:
            p.update(mean=_pointer(self.norm._mean), variance=_pointer(self.norm._variance))
        return p

    def update_statistics(self, mean: np.ndarray, variance: np.ndarray) -> None:
        """Batch norm's running statistics, as Paddle's layer updates them (the biased batch variance)."""
        m = np.float32(self.norm._momentum)
        for running, batch in ((self.norm._mean, mean), (self.norm._variance, variance)):
            running.set_value(running.numpy() * m + batch.view(np.float32) * (np.float32(1) - m))

    def __call__(self, x, conv):
        """The block's output for ``x``, with the conv layer ``conv`` (and ``norm``)'s parameters."""
        grad = paddle.is_grad_enabled()
        batch_statistics = self.norm.training if self.norm is not None else grad
        if grad and not batch_statistics:  # gradients through batch norm's running statistics: not built here
            return self._stock(x, conv)
        if grad:
            self.chunk = x.shape[0] if self.chunk == EVAL_CHUNK else max(self.chunk, x.shape[0])
        elif x.shape[0] > self.chunk and not batch_statistics:  # evaluation: in training-sized pieces, which
            return self._in_pieces(x, conv)  # reuse training's buffers (batch norm's batch statistics: at once)
        return _BlockFunction.apply(x, conv.weight, *self.params(conv), block=self, training=batch_statistics,
                                    backward=grad)

    def _in_pieces(self, x, conv):
        """Evaluation of more than ``chunk`` images: pieces of ``chunk``, the last one padded with zero images
        to that size and cut after. A plan of the last piece's own size would keep buffers of its own for the
        rest of the run (500 images of cnn_fast.yaml, the board's embeddings: 25 MB more at the peak)."""
        n, c = x.shape[0], self.chunk
        out = [self(x[i:i + c], conv) for i in range(0, n - n % c, c)]
        if n % c:
            rest = x[n - n % c:]
            padded = paddle.concat([rest, paddle.zeros([c - n % c, *rest.shape[1:]], rest.dtype)])
            out.append(self(padded, conv)[:n % c])
        return paddle.concat(out)

    def _stock(self, x, conv):
        """``reference`` in this block's input and output layouts."""
        y = self.reference(x.transpose([0, 3, 1, 2]) if self.nhwc_in else x, conv)
        return y.transpose([0, 2, 3, 1]) if self.nhwc_out else y

    def reference(self, x, conv):
        """The same block with Paddle's stock layers."""
        F = paddle.nn.functional
        y = F.conv2d(x, conv.weight, conv.bias, padding=self.kernel // 2)
        if self.kind == "bn":
            y = self.norm(y)
        return F.max_pool2d(F.relu(y), 2, 2)
