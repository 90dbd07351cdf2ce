"""oneDNN's C API through ctypes: the enum values of the 3.x ABI, the library (``libdnnl.so.3`` in
Paddle's wheel) loaded once, and its calls (the OpenMP thread count around them: ``backend.openmp``)."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

from mnist_kit.backend.runtime import paddle

# oneDNN 3.x C API values (oneapi/dnnl/dnnl_types.h, dnnl_common_types.h)
F32, CPU, IN_ORDER = 3, 1, 1
TAG_ANY, TAG_X, TAG_AB, TAG_NCHW, TAG_NHWC, TAG_OIHW = 1, 2, 3, 5, 22, 5
FORWARD_TRAINING, FORWARD_INFERENCE, BACKWARD = 64, 96, 128
CONV_DIRECT, RELU, RELU_USE_DST, POOL_MAX = 0x1, 0x20, 0x100, 0x1FF
Q_SRC, Q_DIFF_SRC, Q_WEIGHTS, Q_DIFF_WEIGHTS, Q_DST, Q_DIFF_DST, Q_WORKSPACE = 129, 130, 131, 132, 133, 134, 135
A_SRC, A_DST, A_WEIGHTS, A_BIAS, A_WORKSPACE, A_DIFF_SRC, A_DIFF_DST, A_DIFF_WEIGHTS, A_DIFF_BIAS = (
    1, 17, 33, 41, 64, 129, 145, 161, 169)
A_MEAN, A_VARIANCE, A_SCALE, A_SHIFT, A_DIFF_SCALE, A_DIFF_SHIFT = 49, 50, 51, 52, 255, 256
BN_GLOBAL_STATS, BN_SCALE, BN_SHIFT = 0x1, 0x2, 0x4
Q_IMPL = 8
EVAL_CHUNK = 64  # the largest batch a block runs at once without gradients before it has trained (memory)
TRAIN_CHUNK = 64  # the largest piece of a batch a block without batch norm trains on at once (the cache)
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


def _dims(values) -> ctypes.Array:
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
