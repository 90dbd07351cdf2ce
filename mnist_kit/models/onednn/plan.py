"""One block's oneDNN primitives for one shape and mode: the layouts chosen per primitive, the buffers, and
forward and backward as calls of those primitives (``Plan``)."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import numpy as np

from mnist_kit.models.onednn.binding import (
    A_BIAS,
    A_DIFF_BIAS,
    A_DIFF_DST,
    A_DIFF_SCALE,
    A_DIFF_SHIFT,
    A_DIFF_SRC,
    A_DIFF_WEIGHTS,
    A_DST,
    A_MEAN,
    A_SCALE,
    A_SHIFT,
    A_SRC,
    A_VARIANCE,
    A_WEIGHTS,
    A_WORKSPACE,
    BACKWARD,
    BN_GLOBAL_STATS,
    BN_LAYOUTS,
    BN_SCALE,
    BN_SHIFT,
    CONV_DIRECT,
    FORWARD_INFERENCE,
    FORWARD_TRAINING,
    POOL_MAX,
    Q_DIFF_DST,
    Q_DIFF_SRC,
    Q_DIFF_WEIGHTS,
    Q_DST,
    Q_SRC,
    Q_WEIGHTS,
    Q_WORKSPACE,
    RELU,
    RELU_USE_DST,
    TAG_ANY,
    TAG_NCHW,
    TAG_NHWC,
    TAG_OIHW,
    TAG_X,
    _dims,
    _ExecArg,
    _Library,
    _vp,
)


@dataclass(frozen=True)
class Shape:
    """What a block computes on an ``n x cin x h x w`` input: a ``kernel`` x ``kernel`` convolution to
    ``cout`` channels with 'same' padding, then by ``kind``: ``relu`` (conv bias, ReLU, 2x2 max-pool) or
    ``bn`` (no conv bias; batch norm, ReLU, 2x2 max-pool). ``training``: forward with what backward
    needs, and the backward primitives; else forward only (batch norm then uses its running
    statistics)."""

    n: int
    cin: int
    h: int
    w: int
    cout: int
    kernel: int
    kind: str
    training: bool = True
    epsilon: float = 1e-5
    nhwc_in: bool = False  # the input tensor is channels last (the output of a block before it)
    nhwc_out: bool = False  # the output tensor is channels last (a block after it reads it)


def _relu_attr(lib: _Library) -> _vp:
    """Primitive attributes with a ReLU post-op."""
    attr, post = _vp(), _vp()
    lib.call("dnnl_primitive_attr_create", ctypes.byref(attr))
    lib.call("dnnl_post_ops_create", ctypes.byref(post))
    lib.call("dnnl_post_ops_append_eltwise", post, RELU, ctypes.c_float(0.0), ctypes.c_float(0.0))
    lib.call("dnnl_primitive_attr_set_post_ops", attr, post)
    return attr


class _Step:
    """One primitive and its memory objects, executed on raw pointers passed by argument name."""

    def __init__(self, lib: _Library, pd, args: dict):
        self.lib, self.pd, self.prim = lib, pd, lib.primitive(pd)
        self.mems = {arg: lib.memory(md) for arg, md in args.items()}
        self.args = (_ExecArg * len(args))(*[_ExecArg(a, m) for a, m in self.mems.items()])

    def __call__(self, **pointers) -> None:
        for arg, mem in self.mems.items():
            self.lib.call("dnnl_memory_set_data_handle", mem, _vp(pointers[_ARG_NAMES[arg]]))
        self.lib.call("dnnl_primitive_execute", self.prim, self.lib.stream, len(self.mems), self.args)


_ARG_NAMES = {A_SRC: "src", A_DST: "dst", A_WEIGHTS: "weights", A_BIAS: "bias", A_WORKSPACE: "workspace",
              A_MEAN: "mean", A_VARIANCE: "variance", A_SCALE: "scale", A_SHIFT: "shift",
              A_DIFF_SRC: "diff_src", A_DIFF_DST: "diff_dst", A_DIFF_WEIGHTS: "diff_weights",
              A_DIFF_BIAS: "diff_bias", A_DIFF_SCALE: "diff_scale", A_DIFF_SHIFT: "diff_shift"}


def _reorder(lib: _Library, src_md, dst_md) -> _Step | None:
    """A reorder between two layouts, or None when they are the same."""
    if lib.same(src_md, dst_md):
        return None
    pd = _vp()
    lib.call("dnnl_reorder_primitive_desc_create", ctypes.byref(pd), src_md, lib.engine, dst_md, lib.engine, None)
    return _Step(lib, pd, {A_SRC: src_md, A_DST: dst_md})


class Plan:
    """The primitives of one block shape, built at one thread count (oneDNN fixes it at creation).

    Layouts, measured on the default CNN (AVX-512): the convolutions run on NHWC (channels last), since
    oneDNN's blocked layouts pad 20 channels to 32 (the 20->20 conv: 3.0 vs 4.8 ms); batch norm and the
    pool after it on the blocked layout the conv would choose, since oneDNN's NHWC batch norm is a generic
    kernel for 20 channels (14 ms vs 0.4). A conv of one input channel (the first) runs on the layouts
    oneDNN itself prefers when its kernels are AVX-512 ones (channels in blocks of 16): at batch 64 its
    forward took 0.21-0.24 ms instead of 0.29-0.32 on NHWC, its weight gradient 0.22-0.26 instead of 0.39-0.42,
    for 0.06 ms more of pool and reorders. On AVX2 (the same CPU with ONEDNN_MAX_CPU_ISA=AVX2) that choice's
    weight gradient took 2.5 ms against 0.55 on NHWC, so there it stays NHWC. Paddle's tensors are NCHW,
    reordered at the block's edges."""

    out_shape: list[int]  # the block's output as Paddle sees it (set by Block.plan)

    def __init__(self, lib: _Library, s: Shape, free: dict | None = None):
        self.lib, self.s = lib, s
        self.free = {} if free is None else free  # size -> spare buffers; shared by the plans of a block
        # a 1-channel NCHW input is described as NHWC (the same bytes): old oneDNN picks a reference kernel
        # for 1-channel NCHW
        self.x_md = lib.md([s.n, s.cin, s.h, s.w], TAG_NHWC if s.cin == 1 or s.nhwc_in else TAG_NCHW)
        self.w_md = lib.md([s.cout, s.cin, s.kernel, s.kernel], TAG_OIHW)
        self.c_md = lib.md([s.cout], TAG_X)  # bias, batch norm's scale, shift, mean and variance
        self.b_md = self.c_md if s.kind == "relu" else None
        self._conv()
        self._pool(self._batch_norm() if s.kind == "bn" else self.dst_md)
        # batch norm's gradient overwrites the pool's gradient it reads (oneDNN's batch norm runs in place):
        # one activation-sized buffer less (cnn_fast.yaml at batch 128: 9 MB), the same values
        self.bn_in_place = (s.kind == "bn" and s.training and lib.same(self.bn_ddst_md, self.bn_dsrc_md)
                            and lib.same(self.bn_ddst_md, self.pb_dsrc_md))

    def _conv(self) -> None:
        lib, s = self.lib, self.s
        pad = s.kernel // 2
        geometry = (_dims([1, 1]), _dims([0, 0]), _dims([pad, pad]), _dims([pad, pad]))
        weights = lib.md([s.cout, s.cin, s.kernel, s.kernel], TAG_ANY)
        for tag in (TAG_ANY, TAG_NHWC) if s.cin == 1 else (TAG_NHWC,):
            src, dst = lib.md([s.n, s.cin, s.h, s.w], tag), lib.md([s.n, s.cout, s.h, s.w], tag)
            fwd = _vp()
            lib.call("dnnl_convolution_forward_primitive_desc_create", ctypes.byref(fwd), lib.engine,
                     FORWARD_TRAINING if s.training else FORWARD_INFERENCE, CONV_DIRECT, src, weights, self.b_md,
                     dst, *geometry, None)
            if tag == TAG_NHWC or "avx512" in lib.implementation(fwd):
                break
        self.src_md, self.cw_md, self.dst_md = lib.query(fwd, Q_SRC), lib.query(fwd, Q_WEIGHTS), lib.query(fwd, Q_DST)
        args = {A_SRC: self.src_md, A_WEIGHTS: self.cw_md, A_DST: self.dst_md}
        if self.b_md is not None:
            args[A_BIAS] = self.b_md
        self.conv = _Step(lib, fwd, args)
        self.x_in = _reorder(lib, self.x_md, self.src_md)
        self.w_in = _reorder(lib, self.w_md, self.cw_md)
        if not s.training:
            return
        bwd_w = _vp()
        lib.call("dnnl_convolution_backward_weights_primitive_desc_create", ctypes.byref(bwd_w), lib.engine,
                 CONV_DIRECT, src, weights, self.b_md, dst, *geometry, fwd, None)
        self.bw_src_md, self.dw_md = lib.query(bwd_w, Q_SRC), lib.query(bwd_w, Q_DIFF_WEIGHTS)
        self.bw_ddst_md = lib.query(bwd_w, Q_DIFF_DST)
        args = {A_SRC: self.bw_src_md, A_DIFF_DST: self.bw_ddst_md, A_DIFF_WEIGHTS: self.dw_md}
        if self.b_md is not None:
            args[A_DIFF_BIAS] = self.b_md
        self.conv_bw = _Step(lib, bwd_w, args)
        self.src_to_bw = _reorder(lib, self.src_md, self.bw_src_md)
        self.d_to_bw = _reorder(lib, self.dst_md, self.bw_ddst_md)
        self.dw_out = _reorder(lib, self.dw_md, self.w_md)
        bwd_d = _vp()
        lib.call("dnnl_convolution_backward_data_primitive_desc_create", ctypes.byref(bwd_d), lib.engine,
                 CONV_DIRECT, src, weights, dst, *geometry, fwd, None)
        self.bd_w_md, self.bd_ddst_md = lib.query(bwd_d, Q_WEIGHTS), lib.query(bwd_d, Q_DIFF_DST)
        self.dx_md = lib.query(bwd_d, Q_DIFF_SRC)
        self.conv_bd = _Step(lib, bwd_d, {A_WEIGHTS: self.bd_w_md, A_DIFF_DST: self.bd_ddst_md,
                                         A_DIFF_SRC: self.dx_md})
        self.w_to_bd = _reorder(lib, self.w_md, self.bd_w_md)
        self.dx_out = _reorder(lib, self.dx_md, self.x_md)
        self.ddst_to_bd = _reorder(lib, self.bw_ddst_md, self.bd_ddst_md)

    def _batch_norm(self):
        """Batch norm on the conv's output; returns its output's layout."""
        lib, s = self.lib, self.s
        flags = BN_SCALE | BN_SHIFT | (0 if s.training else BN_GLOBAL_STATS)
        fwd = None
        for tag in BN_LAYOUTS:  # the first with a fast (jit) kernel on this CPU, else channels last
            self.bn_src_md = lib.md([s.n, s.cout, s.h, s.w], tag)
            fwd = _vp()
            lib.call("dnnl_batch_normalization_forward_primitive_desc_create", ctypes.byref(fwd), lib.engine,
                     FORWARD_TRAINING if s.training else FORWARD_INFERENCE, self.bn_src_md, self.bn_src_md,
                     ctypes.c_float(s.epsilon), flags, None)
            if "jit" in lib.implementation(fwd):
                break
        self.to_bn = _reorder(lib, self.dst_md, self.bn_src_md)
        if s.training:
            self.d_to_bw = _reorder(lib, self.bn_src_md, self.bw_ddst_md)
        self.bn_dst_md = lib.query(fwd, Q_DST)
        self.bn = _Step(lib, fwd, {A_SRC: self.bn_src_md, A_DST: self.bn_dst_md, A_MEAN: self.c_md,
                                   A_VARIANCE: self.c_md, A_SCALE: self.c_md, A_SHIFT: self.c_md})
        if s.training:
            bwd = _vp()
            lib.call("dnnl_batch_normalization_backward_primitive_desc_create", ctypes.byref(bwd), lib.engine,
                     BACKWARD, self.bn_src_md, self.bn_dst_md, self.bn_src_md, ctypes.c_float(s.epsilon), flags,
                     fwd, None)
            self.bn_ddst_md, self.bn_dsrc_md = lib.query(bwd, Q_DIFF_DST), lib.query(bwd, Q_DIFF_SRC)
            self.bn_bw = _Step(lib, bwd, {
                A_SRC: self.bn_src_md, A_MEAN: self.c_md, A_VARIANCE: self.c_md, A_SCALE: self.c_md,
                A_DIFF_DST: self.bn_ddst_md, A_DIFF_SRC: self.bn_dsrc_md, A_DIFF_SCALE: self.c_md,
                A_DIFF_SHIFT: self.c_md})
        return self.bn_dst_md

    def _pool(self, src_md) -> None:
        """2x2 max-pool with the ReLU as its post-op: the ReLU then runs on a quarter of the values, and so
        does its gradient (measured: 0.44 ms per step for the ReLU gradient of the first block's conv output
        on 2 threads, before). ``relu(maxpool(x)) == maxpool(relu(x))``, gradients included."""
        lib, s = self.lib, self.s
        two, zero = _dims([2, 2]), _dims([0, 0])
        pooled = [s.n, s.cout, s.h // 2, s.w // 2]
        self.out_md = lib.md(pooled, TAG_NHWC if s.nhwc_out else TAG_NCHW)
        fwd = _vp()
        lib.call("dnnl_pooling_forward_primitive_desc_create", ctypes.byref(fwd), lib.engine,
                 FORWARD_TRAINING if s.training else FORWARD_INFERENCE, POOL_MAX, src_md, lib.md(pooled, TAG_ANY),
                 two, two, zero, zero, zero, _relu_attr(lib))
        self.p_dst_md = lib.query(fwd, Q_DST)
        args = {A_SRC: src_md, A_DST: self.p_dst_md}
        if s.training:
            self.ws_md = lib.query(fwd, Q_WORKSPACE)
            args[A_WORKSPACE] = self.ws_md
        self.pool = _Step(lib, fwd, args)
        self.out = _reorder(lib, self.p_dst_md, self.out_md)
        if not s.training:
            return
        relu_bwd = _vp()
        lib.call("dnnl_eltwise_backward_primitive_desc_create", ctypes.byref(relu_bwd), lib.engine, RELU_USE_DST,
                 self.p_dst_md, self.p_dst_md, self.p_dst_md, ctypes.c_float(0.0), ctypes.c_float(0.0), None, None)
        self.r_dsrc_md = lib.query(relu_bwd, Q_DIFF_SRC)
        self.relu_bw = _Step(lib, relu_bwd, {A_DST: self.p_dst_md, A_DIFF_DST: self.p_dst_md,
                                             A_DIFF_SRC: self.r_dsrc_md})
        self.dout_in = _reorder(lib, self.out_md, self.p_dst_md)
        bwd = _vp()
        lib.call("dnnl_pooling_backward_primitive_desc_create", ctypes.byref(bwd), lib.engine, POOL_MAX, src_md,
                 self.p_dst_md, two, two, zero, zero, zero, fwd, None)
        self.pb_ddst_md, self.pb_dsrc_md = lib.query(bwd, Q_DIFF_DST), lib.query(bwd, Q_DIFF_SRC)
        self.pool_bw = _Step(lib, bwd, {A_DIFF_DST: self.pb_ddst_md, A_WORKSPACE: self.ws_md,
                                        A_DIFF_SRC: self.pb_dsrc_md})
        self.r_to_pool = _reorder(lib, self.r_dsrc_md, self.pb_ddst_md)

    # -- running it. Buffers come from the plan's pool and go back to it when done: fresh ones would cost
    # a page fault per 4 KiB on every step (measured: a 4 MB ReLU gradient took 2.6 ms instead of 0.7).

    def take(self, md) -> np.ndarray:
        size = self.lib.size(md)
        free = self.free.setdefault(size, [])
        if free:
            return free.pop()
        raw = np.empty(size + 64, np.uint8)
        start = -raw.ctypes.data % 64  # 64-byte aligned, as oneDNN's own allocations
        return raw[start:start + size]

    def give(self, *buffers) -> None:
        for b in buffers:
            if isinstance(b, np.ndarray):
                self.free.setdefault(b.nbytes, []).append(b)

    def _to(self, reorder: _Step | None, md, pointer: int, scratch: list) -> int:
        """``pointer``'s data in layout ``md``: itself, or a buffer appended to ``scratch``."""
        if reorder is None:
            return pointer
        buf = self.take(md)
        reorder(src=pointer, dst=buf.ctypes.data)
        scratch.append(buf)
        return buf.ctypes.data

    def forward(self, p: dict) -> dict:
        """Run the block on the pointers in ``p`` (``x``, ``w``, ``b``, ``scale``, ``shift``, and ``mean``,
        ``variance`` for batch norm when not training); ``p["out"]`` receives the NCHW result. Returns the
        buffers backward needs (``batch_mean``, ``batch_variance`` of batch norm among them); give them
        back with ``give(*saved.values())`` when no backward follows."""
        s, saved = self.s, {}
        scratch: list[np.ndarray] = []
        src = self._to(self.x_in, self.src_md, p["x"], scratch)
        if self.x_in is not None:
            saved["src"] = scratch.pop()  # the reordered input, for the weights' gradient
        cw = self._to(self.w_in, self.cw_md, p["w"], scratch)
        pool_src = self.take(self.dst_md)
        scratch.append(pool_src)
        self.conv(src=src, weights=cw, bias=p.get("b"), dst=pool_src.ctypes.data)
        if s.kind == "bn":
            bn_src = self._to(self.to_bn, self.bn_src_md, pool_src.ctypes.data, scratch)
            saved["bn_src"] = scratch.pop()  # batch norm's input (the conv output, reordered or not): for backward
            if self.to_bn is not None:  # the conv output, reordered: its buffer can hold batch norm's output
                self.give(scratch.pop())
            pool_src = self.take(self.bn_dst_md)
            scratch.append(pool_src)
            if s.training:
                saved["batch_mean"], saved["batch_variance"] = self.take(self.c_md), self.take(self.c_md)
                stats = dict(mean=saved["batch_mean"].ctypes.data, variance=saved["batch_variance"].ctypes.data)
            else:
                stats = dict(mean=p["mean"], variance=p["variance"])
            self.bn(src=bn_src, dst=pool_src.ctypes.data, scale=p["scale"], shift=p["shift"], **stats)
        saved["pooled"] = self.take(self.p_dst_md)  # after the ReLU: its gradient reads it
        ws = {}
        if s.training:
            saved["ws"] = self.take(self.ws_md)
            ws = dict(workspace=saved["ws"].ctypes.data)
        self.pool(src=pool_src.ctypes.data, dst=saved["pooled"].ctypes.data, **ws)
        self._to_out(self.out, saved["pooled"], p["out"])
        self.give(*scratch)
        return saved

    @staticmethod
    def _to_out(reorder: _Step | None, buf: np.ndarray, out: int) -> None:
        if reorder is None:
            ctypes.memmove(out, buf.ctypes.data, buf.nbytes)
        else:
            reorder(src=buf.ctypes.data, dst=out)

    def backward(self, saved: dict, p: dict) -> None:
        """Write the gradients (pointers ``dw``, and ``db``, ``dscale``, ``dshift``, ``dx`` where present)
        from ``p["dout"]``, the NCHW gradient of the output; gives ``saved``'s buffers back."""
        s = self.s
        scratch: list[np.ndarray] = []
        d = self._to(self.dout_in, self.p_dst_md, p["dout"], scratch)
        drelu = self.take(self.r_dsrc_md)
        self.relu_bw(dst=saved["pooled"].ctypes.data, diff_dst=d, diff_src=drelu.ctypes.data)
        d = self._to(self.r_to_pool, self.pb_ddst_md, drelu.ctypes.data, scratch)
        dpool = self.take(self.pb_dsrc_md)
        self.pool_bw(diff_dst=d, workspace=saved["ws"].ctypes.data, diff_src=dpool.ctypes.data)
        scratch += [drelu, dpool]
        if s.kind == "bn":
            dbn = dpool if self.bn_in_place else self.take(self.bn_dsrc_md)
            if not self.bn_in_place:
                scratch.append(dbn)
            self.bn_bw(src=saved["bn_src"].ctypes.data, mean=saved["batch_mean"].ctypes.data,
                       variance=saved["batch_variance"].ctypes.data, scale=p["scale"], diff_dst=dpool.ctypes.data,
                       diff_src=dbn.ctypes.data, diff_scale=p["dscale"], diff_shift=p["dshift"])
            dpool = dbn
        d = self._to(self.d_to_bw, self.bw_ddst_md, dpool.ctypes.data, scratch)
        src = saved["src"].ctypes.data if "src" in saved else p["x"]
        bw_src = self._to(self.src_to_bw, self.bw_src_md, src, scratch)
        dw = p["dw"]
        if self.dw_out:
            dw_buf = self.take(self.dw_md)
            scratch.append(dw_buf)
            dw = dw_buf.ctypes.data
        self.conv_bw(src=bw_src, diff_dst=d, diff_weights=dw, diff_bias=p.get("db"))
        if self.dw_out:
            self.dw_out(src=dw, dst=p["dw"])
        if p.get("dx") is not None:
            bd_w = self._to(self.w_to_bd, self.bd_w_md, p["w"], scratch)
            bd_d = self._to(self.ddst_to_bd, self.bd_ddst_md, d, scratch)
            dx = p["dx"]
            if self.dx_out:
                dx_buf = self.take(self.dx_md)
                scratch.append(dx_buf)
                dx = dx_buf.ctypes.data
            self.conv_bd(weights=bd_w, diff_dst=bd_d, diff_src=dx)
            if self.dx_out:
                self.dx_out(src=dx, dst=p["dx"])
        self.give(*scratch, *saved.values())
