"""A conv block on oneDNN inside Paddle's autograd: a ``PyLayer`` over the block's ``Plan``, with the
stock layers' parameters (``Block``)."""

from __future__ import annotations

import numpy as np

from mnist_kit.backend.runtime import paddle
from mnist_kit.models.onednn.binding import EVAL_CHUNK, Unavailable, library, openmp
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
        plan = block.plan(n, h, w, training)
        out = paddle.empty(plan.out_shape, "float32")
        p = {"x": _pointer(x), "w": _pointer(weight), "out": _pointer(out), **block.pointers(params, training)}
        with openmp().threads(block.threads):
            saved = plan.forward(p)
        if block.kind == "bn" and training:
            block.update_statistics(saved["batch_mean"], saved["batch_variance"])
        if not backward:  # (PyLayer.forward itself always runs without gradients: the caller says)
            plan.give(*saved.values())
            return out
        ctx.plan, ctx.saved, ctx.block, ctx.x_grad = plan, saved, block, not x.stop_gradient
        ctx.save_for_backward(x, weight, *params)  # x: read in place when no reorder was needed
        return out

    @staticmethod
    def backward(ctx, dout):
        x, weight, *params = ctx.saved_tensor()
        dout = _contiguous(dout)
        grads = [paddle.empty(x.shape, "float32") if ctx.x_grad else None, paddle.empty(weight.shape, "float32")]
        grads += [paddle.empty(q.shape, "float32") for q in params]
        names = ("db",) if ctx.block.kind != "bn" else ("dscale", "dshift")
        p = {"x": _pointer(x), "w": _pointer(weight), "dout": _pointer(dout), "dw": _pointer(grads[1]),
             "dx": _pointer(grads[0]) if grads[0] is not None else None,
             **{k: _pointer(g) for k, g in zip(names, grads[2:])}}
        if ctx.block.kind == "bn":
            p["scale"] = _pointer(params[0])
        with openmp().threads(ctx.block.threads):
            ctx.plan.backward(ctx.saved, p)
        ctx.saved = None
        return tuple(grads)


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
                from mnist_kit import UserError

                raise UserError(f"the oneDNN conv block {self.cin}->{self.cout} ({self.kernel}x{self.kernel}) "
                                f"failed on a batch of {n}x{h}x{w}: {e}; continue with: "
                                "-o train.fast_conv=off") from None
            plan.out_shape = [n, h // 2, w // 2, self.cout] if self.nhwc_out else [n, self.cout, h // 2, w // 2]
            self.plans[key] = plan
        return self.plans[key]

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
        elif x.shape[0] > self.chunk:  # evaluation: in training-sized pieces, which reuse training's buffers
            return paddle.concat([self(x[i:i + self.chunk], conv) for i in range(0, x.shape[0], self.chunk)])
        return _BlockFunction.apply(x, conv.weight, *self.params(conv), block=self, training=batch_statistics,
                                    backward=grad)

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
