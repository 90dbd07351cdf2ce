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
bias, batch norm, then the same pool): the two shapes ``models.CNN`` builds.

Threads: oneDNN's OpenMP calls go to Intel's ``libiomp5``, which Paddle loads first (so ``libgomp``'s
``omp_set_num_threads`` does nothing); ``_OpenMP`` sets its thread count around this module's work and
restores Paddle's afterwards.

Choosing: ``enable`` (called by ``engine.build_trainer``) runs ``self_check`` and checks each block at its
own shape against the stock layers (``compare``); ``Choice`` says what was chosen and why.
"""

from __future__ import annotations

import ctypes
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnist_kit.runtime import paddle

# oneDNN 3.x C API values (oneapi/dnnl/dnnl_types.h, dnnl_common_types.h)
F32, CPU, IN_ORDER = 3, 1, 1
TAG_ANY, TAG_X, TAG_NCHW, TAG_NHWC, TAG_OIHW = 1, 2, 5, 22, 5
FORWARD_TRAINING, FORWARD_INFERENCE, BACKWARD = 64, 96, 128
CONV_DIRECT, RELU, RELU_USE_DST, POOL_MAX = 0x1, 0x20, 0x100, 0x1FF
Q_SRC, Q_DIFF_SRC, Q_WEIGHTS, Q_DIFF_WEIGHTS, Q_DST, Q_DIFF_DST, Q_WORKSPACE = 129, 130, 131, 132, 133, 134, 135
A_SRC, A_DST, A_WEIGHTS, A_BIAS, A_WORKSPACE, A_DIFF_SRC, A_DIFF_DST, A_DIFF_WEIGHTS, A_DIFF_BIAS = (
    1, 17, 33, 41, 64, 129, 145, 161, 169)
A_MEAN, A_VARIANCE, A_SCALE, A_SHIFT, A_DIFF_SCALE, A_DIFF_SHIFT = 49, 50, 51, 52, 255, 256
BN_GLOBAL_STATS, BN_SCALE, BN_SHIFT = 0x1, 0x2, 0x4
Q_IMPL = 8
EVAL_CHUNK = 64  # the largest batch a block runs at once without gradients before it has trained (memory)
BN_LAYOUTS = (78, 102, TAG_NHWC)  # aBcd16b, aBcd8b (channels in blocks of 16 or 8), channels last
MAJOR = 3  # the ABI these values belong to

_Dims = ctypes.c_int64 * 12
_vp = ctypes.c_void_p


class Unavailable(Exception):
    """oneDNN cannot run the blocks here; the message says why."""


class _ExecArg(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_int), ("memory", _vp)]


class _Version(ctypes.Structure):
    _fields_ = [("major", ctypes.c_int), ("minor", ctypes.c_int), ("patch", ctypes.c_int),
                ("hash", ctypes.c_char_p), ("cpu_runtime", ctypes.c_uint), ("gpu_runtime", ctypes.c_uint)]


def _dims(values) -> _Dims:
    return _Dims(*values)


# ---------------------------------------------------------------- the library

def library_path() -> Path:
    return Path(paddle.__file__).parent / "libs" / "libdnnl.so.3"


class _Library:
    """The loaded ``libdnnl.so.3``, its CPU engine and stream."""

    def __init__(self, path: Path):
        if not path.is_file():
            raise Unavailable(f"this PaddlePaddle wheel has no oneDNN library ({path.name} not in {path.parent})")
        try:  # the copy Paddle loaded, never a second one (same soname)
            self.lib = ctypes.CDLL(str(path), mode=os.RTLD_NOLOAD | os.RTLD_GLOBAL)
        except OSError:
            try:
                self.lib = ctypes.CDLL(str(path), mode=os.RTLD_GLOBAL)
            except OSError as e:
                raise Unavailable(f"cannot load {path}: {e}") from None
        try:
            self.lib.dnnl_version.restype = ctypes.POINTER(_Version)
            v = self.lib.dnnl_version().contents
        except AttributeError:
            raise Unavailable(f"{path} is not a oneDNN library (no dnnl_version)") from None
        self.version = (v.major, v.minor, v.patch)
        if v.major != MAJOR:
            raise Unavailable(f"{path.name} is oneDNN {v.major}.{v.minor}.{v.patch}; this fast path speaks the "
                              f"oneDNN {MAJOR}.x interface")
        if v.cpu_runtime != 2:  # DNNL_RUNTIME_OMP: the threads are set through OpenMP
            raise Unavailable(f"oneDNN {self.name} was built without OpenMP (CPU runtime {v.cpu_runtime})")
        self.lib.dnnl_primitive_desc_query_md.restype = _vp
        self.lib.dnnl_memory_desc_get_size.restype = ctypes.c_size_t
        self.lib.dnnl_memory_desc_equal.restype = ctypes.c_int
        self.engine, self.stream = _vp(), _vp()
        self.call("dnnl_engine_create", ctypes.byref(self.engine), CPU, 0)
        self.call("dnnl_stream_create", ctypes.byref(self.stream), self.engine, IN_ORDER)

    @property
    def name(self) -> str:
        return "oneDNN " + ".".join(map(str, self.version))

    def call(self, name: str, *args) -> None:
        status = getattr(self.lib, name)(*args)
        if status != 0:
            raise Unavailable(f"oneDNN {name} failed (status {status})")

    def md(self, dims, tag: int) -> _vp:
        md = _vp()
        self.call("dnnl_memory_desc_create_with_tag", ctypes.byref(md), len(dims), _dims(dims), F32, tag)
        return md

    def query(self, pd, what: int) -> _vp:
        return _vp(self.lib.dnnl_primitive_desc_query_md(pd, what, 0))

    def implementation(self, pd) -> str:
        """The name of the kernel oneDNN chose for a primitive descriptor (``jit:...``, ``ref:any``...)."""
        name = ctypes.c_char_p()
        self.call("dnnl_primitive_desc_query", pd, Q_IMPL, 0, ctypes.byref(name))
        return (name.value or b"").decode()

    def size(self, md) -> int:
        return int(self.lib.dnnl_memory_desc_get_size(md))

    def same(self, a, b) -> bool:
        return bool(self.lib.dnnl_memory_desc_equal(a, b))

    def primitive(self, pd) -> _vp:
        prim = _vp()
        self.call("dnnl_primitive_create", ctypes.byref(prim), pd)
        return prim

    def memory(self, md) -> _vp:
        mem = _vp()
        self.call("dnnl_memory_create", ctypes.byref(mem), md, self.engine, None)
        return mem


class _OpenMP:
    """The thread count of the ``libiomp5`` that Paddle loaded (and oneDNN uses)."""

    def __init__(self):
        self.lib = None
        try:
            loaded = [line.split()[-1] for line in Path("/proc/self/maps").read_text().splitlines()]
        except OSError:
            loaded = []
        for name in ("/libiomp5.so", "/libgomp.so.1"):  # Intel's first: it is the one oneDNN calls here
            path = next((p for p in loaded if p.endswith(name)), None)
            if path:
                try:
                    self.lib = ctypes.CDLL(path, mode=os.RTLD_NOLOAD)
                    return
                except OSError:
                    continue

    def get(self) -> int:
        return int(self.lib.omp_get_max_threads()) if self.lib else 1

    @contextmanager
    def threads(self, n: int):
        if self.lib is None or n == self.get():
            yield
            return
        before = self.get()
        self.lib.omp_set_num_threads(n)
        try:
            yield
        finally:
            self.lib.omp_set_num_threads(before)


_state: dict = {}


def library() -> _Library:
    """The oneDNN library, loaded once; Unavailable says why it cannot be used."""
    if "lib" not in _state:
        try:
            _state["lib"] = _Library(library_path())
        except Unavailable as e:
            _state["lib"] = e
    if isinstance(_state["lib"], Unavailable):
        raise _state["lib"]
    return _state["lib"]


def openmp() -> _OpenMP:
    if "omp" not in _state:
        _state["omp"] = _OpenMP()
    return _state["omp"]


# ---------------------------------------------------------------- one block's primitives

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
    kernel for 20 channels (14 ms vs 0.4). Paddle's tensors are NCHW, reordered at the block's edges."""

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

    def _conv(self) -> None:
        lib, s = self.lib, self.s
        pad = s.kernel // 2
        geometry = (_dims([1, 1]), _dims([0, 0]), _dims([pad, pad]), _dims([pad, pad]))
        src, dst = lib.md([s.n, s.cin, s.h, s.w], TAG_NHWC), lib.md([s.n, s.cout, s.h, s.w], TAG_NHWC)
        weights = lib.md([s.cout, s.cin, s.kernel, s.kernel], TAG_ANY)
        fwd = _vp()
        lib.call("dnnl_convolution_forward_primitive_desc_create", ctypes.byref(fwd), lib.engine,
                 FORWARD_TRAINING if s.training else FORWARD_INFERENCE, CONV_DIRECT, src, weights, self.b_md, dst,
                 *geometry, None)
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
        s, scratch, saved = self.s, [], {}
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
        s, scratch = self.s, []
        d = self._to(self.dout_in, self.p_dst_md, p["dout"], scratch)
        drelu = self.take(self.r_dsrc_md)
        self.relu_bw(dst=saved["pooled"].ctypes.data, diff_dst=d, diff_src=drelu.ctypes.data)
        d = self._to(self.r_to_pool, self.pb_ddst_md, drelu.ctypes.data, scratch)
        dpool = self.take(self.pb_dsrc_md)
        self.pool_bw(diff_dst=d, workspace=saved["ws"].ctypes.data, diff_src=dpool.ctypes.data)
        scratch += [drelu, dpool]
        if s.kind == "bn":
            dbn = self.take(self.bn_dsrc_md)
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


# ---------------------------------------------------------------- a block in Paddle's autograd

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
                                f"failed on a batch of {n}x{h}x{w}: {e}; continue with: -o train.fast_conv=off") from None
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


# ---------------------------------------------------------------- checking and choosing

def compare(cin: int, cout: int, kernel: int, kind: str, threads: int, n: int, h: int, w: int,
            seed: int = 0) -> float:
    """The largest difference between a block on oneDNN and the same block of Paddle's stock layers, over
    the training output, every gradient, batch norm's running statistics and the evaluation output, each
    relative to its largest magnitude (random input, weights and output gradient of that shape).

    Where the function has a kink -- a pool window whose largest pre-activation is within float rounding
    of 0 (the ReLU) or of the second largest (the max) -- the two paths may rightly send that output's
    gradient different ways; the output gradient is set to 0 there, so that only real differences count."""
    rng_state = paddle.get_rng_state()  # the layers made here must not move training's random numbers
    try:
        return _compare(cin, cout, kernel, kind, threads, n, h, w, seed)
    finally:
        paddle.set_rng_state(rng_state)


def _compare(cin, cout, kernel, kind, threads, n, h, w, seed) -> float:
    rng = np.random.default_rng(seed)
    x0 = rng.standard_normal((n, cin, h, w)).astype("float32")
    w0 = (rng.standard_normal((cout, cin, kernel, kernel)) / kernel / np.sqrt(cin)).astype("float32")
    extra = rng.standard_normal((3, cout)).astype("float32")
    results, g = [], None
    for fast in (False, True):
        conv = paddle.nn.Conv2D(cin, cout, kernel, padding=kernel // 2, bias_attr=False if kind == "bn" else None)
        conv.weight.set_value(w0)
        norm = paddle.nn.BatchNorm2D(cout) if kind == "bn" else None
        params = [conv.weight]
        if conv.bias is not None:
            conv.bias.set_value(extra[0])
            params.append(conv.bias)
        if norm is not None:
            norm.weight.set_value(1 + 0.1 * extra[1])
            norm.bias.set_value(extra[2])
            params += [norm.weight, norm.bias]
        block = Block(cin, cout, kernel, kind, threads, norm)
        x = paddle.to_tensor(x0, stop_gradient=False)
        y = block(x, conv) if fast else block.reference(x, conv)
        if g is None:
            g = rng.standard_normal(y.shape).astype("float32") * _away_from_kinks(block, conv, x0)
        (y * paddle.to_tensor(g)).sum().backward()
        out = [y.numpy(), x.grad.numpy()] + [q.grad.numpy() for q in params]
        if norm is not None:
            out += [norm._mean.numpy(), norm._variance.numpy()]
            norm.eval()
        with paddle.no_grad():
            out.append((block(x, conv) if fast else block.reference(x, conv)).numpy())
        results.append(out)
    worst = 0.0
    for stock, fast in zip(*results):
        if fast.shape != stock.shape:
            return float("inf")
        worst = max(worst, float(np.abs(fast - stock).max()) / max(float(np.abs(stock).max()), 1e-12))
    return worst if np.isfinite(worst) else float("inf")


def _away_from_kinks(block: Block, conv, x0: np.ndarray, margin: float = 1e-4) -> np.ndarray:
    """1 for each pooled output whose window's largest pre-activation is clear of 0 and of the second
    largest by ``margin`` (relative to the largest magnitude), else 0."""
    with paddle.no_grad():
        z = paddle.nn.functional.conv2d(paddle.to_tensor(x0), conv.weight, conv.bias,
                                        padding=block.kernel // 2).numpy().astype("float64")
    if block.kind == "bn":
        z = (z - z.mean((0, 2, 3), keepdims=True)) / np.sqrt(z.var((0, 2, 3), keepdims=True) + block.norm._epsilon)
        z = z * block.norm.weight.numpy()[:, None, None] + block.norm.bias.numpy()[:, None, None]
    n, c, h, w = z.shape
    windows = z[:, :, :h // 2 * 2, :w // 2 * 2].reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5)
    top = np.sort(windows.reshape(n, c, h // 2, w // 2, 4), axis=-1)
    eps = margin * max(float(np.abs(z).max()), 1e-12)
    return ((np.abs(top[..., -1]) > eps) & (top[..., -1] - top[..., -2] > eps)).astype("float32")


TOLERANCE = 1e-4  # relative; measured differences are ~1e-6 (float rounding of another summation order)


def self_check(threads: int) -> None:
    """Once per process and thread count: a tiny forward and backward of both block kinds, compared with
    the stock layers. Raises Unavailable when the library is missing, of another version, or wrong."""
    key = ("checked", threads)
    if key not in _state:
        try:
            library()
            for kind, cin in (("relu", 1), ("bn", 3)):
                diff = compare(cin, 4, 3, kind, threads, 2, 7, 9)
                if not diff <= TOLERANCE:
                    raise Unavailable(f"its self-check differs from Paddle's layers by {diff:.2g} (relative)")
            _state[key] = None
        except Unavailable as e:
            _state[key] = e
    if _state[key] is not None:
        raise _state[key]


def threads_for(requested: int, processes: int) -> tuple[int, str | None]:
    """Threads per process for the blocks: ``requested`` (0 = the usable cores divided among this
    machine's ``processes``), never more than that share; and a note when a request was lowered."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    share = max(1, cores // max(1, processes))
    if requested and requested > share:
        return share, (f"train.threads={requested} lowered to {share}: {cores} usable cores shared by {processes} "
                       f"process(es) on this machine")
    return requested or share, None


@dataclass
class Choice:
    """Which layers train the conv blocks, and why."""

    path: str  # "onednn" (at least one block) or "stock"
    threads: int = 1
    reason: str = ""  # why a block or all of them run on the stock layers
    library: str = ""
    blocks: tuple = ()  # per block: "onednn" or "stock"

    def describe(self) -> str:
        if self.path == "stock":
            return f"Paddle's stock layers ({self.reason})"
        text = f"conv blocks on {self.library}, {self.threads} thread{'s' if self.threads > 1 else ''}"
        if "stock" in self.blocks:
            text += f"; block(s) {', '.join(str(i + 1) for i, b in enumerate(self.blocks) if b == 'stock')} on " \
                    f"the stock layers ({self.reason})"
        return text

    def record(self) -> dict:
        return {"path": self.path, "threads": self.threads, "library": self.library, "blocks": list(self.blocks),
                "reason": self.reason}


def enable(model, mode: str, device: str, threads: int, input_shape) -> Choice:
    """Put ``model``'s conv blocks on oneDNN as ``mode`` (``train.fast_conv``: auto, on, off) allows, each
    block checked against the stock layers at its own shape first; return what was chosen. ``on`` raises
    UserError with the reason when it cannot be done."""
    from mnist_kit import UserError

    def stock(reason: str) -> Choice:
        if mode == "on":
            raise UserError(f"train.fast_conv is on, but {reason}; set train.fast_conv=auto or off")
        return Choice("stock", reason=reason)

    if mode == "off":
        return Choice("stock", reason="train.fast_conv is off")
    if not hasattr(model, "conv_blocks"):
        return stock(f"the {type(model).__name__.lower()} model has no conv blocks")
    if device != "cpu":
        return stock(f"the oneDNN blocks are for the CPU, and training runs on {device}")
    try:
        self_check(threads)
    except Unavailable as e:
        return stock(f"oneDNN cannot be used: {e}")
    blocks, notes = [], []
    for i, (conv, norm, other, (h, w)) in enumerate(model.conv_blocks(input_shape)):
        kind = "bn" if norm is not None else "relu"
        cout, cin, kernel = conv.weight.shape[:3]
        if other:  # the oneDNN block is a 'same' conv, ReLU and a 2x2 max-pool
            problem = other
        elif kind == "relu" and conv.bias is None:
            problem = "a conv without bias or batch norm"
        else:
            problem = _check_shape(cin, cout, kernel, kind, threads, h, w)
        if problem:
            notes.append(f"block {i + 1}: {problem}")
        blocks.append(None if problem else Block(cin, cout, kernel, kind, threads, norm))
    if all(b is None for b in blocks):
        return stock("; ".join(notes))
    if notes and mode == "on":
        raise UserError(f"train.fast_conv is on, but {'; '.join(notes)}; set train.fast_conv=auto or off")
    chain(blocks)
    model.use_fast_blocks(blocks)
    return Choice("onednn", threads, "; ".join(notes), library().name,
                  tuple("stock" if b is None else "onednn" for b in blocks))


def chain(blocks: list) -> None:
    """Let each pair of consecutive oneDNN blocks pass their tensor channels last: only they read it, and
    it saves two reorders each way per pair (measured 0.4 ms of a 10 ms step of the default CNN)."""
    for a, b in zip(blocks, blocks[1:]):
        if a is not None and b is not None:
            a.nhwc_out = b.nhwc_in = True


def _check_shape(cin: int, cout: int, kernel: int, kind: str, threads: int, h: int, w: int) -> str | None:
    """Why this block shape cannot run on oneDNN (checked on a batch of 2 at its real size), or None."""
    key = ("shape", cin, cout, kernel, kind, threads, h, w)
    if key not in _state:
        try:
            diff = compare(cin, cout, kernel, kind, threads, 2, h, w)
            _state[key] = None if diff <= TOLERANCE else f"differs from the stock layers by {diff:.2g} (relative)"
        except Unavailable as e:
            _state[key] = str(e)
    return _state[key]
