"""The IDX file format of MNIST and Fashion-MNIST, read and written with numpy.

Header: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions, then one
big-endian uint32 per dimension; the data follow. Images are idx3 (N, 28, 28), labels idx1 (N,).
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from mnist_kit.errors import UserError


class IdxError(UserError):
    pass


MAX_BYTES = 1 << 30  # the largest IDX file read, uncompressed (MNIST's training images are 47 MB)


def _header(head: bytes, name: str, ndim: int | None, limit: int) -> tuple[tuple, int]:
    """(shape, header length) from the first bytes of an IDX file, checked: magic number, number of
    dimensions, and a declared size within ``limit`` bytes."""
    if len(head) < 4:
        raise IdxError(f"{name}: too short to be an IDX file ({len(head)} bytes)")
    zero, code, dims = struct.unpack(">HBB", head[:4])
    if zero != 0 or code != 0x08:
        raise IdxError(f"{name}: not an IDX file of unsigned bytes (magic number {head[:4].hex()})")
    if ndim is not None and dims != ndim:
        kind = {1: "labels (idx1)", 3: "images (idx3)"}.get(ndim, f"idx{ndim}")
        raise IdxError(f"{name}: expected {kind} but the file has {dims} dimension(s); are the files swapped?")
    size = 4 + 4 * dims
    if len(head) < size:
        raise IdxError(f"{name}: truncated header")
    shape = struct.unpack(f">{dims}I", head[4:size])
    declared = size + int(np.prod(shape, dtype=object))
    if declared > limit:
        raise IdxError(f"{name}: the header declares shape {shape}, {declared:,} bytes: more than the "
                       f"{limit:,} bytes an IDX file may have here")
    return shape, size


def decompress(data: bytes, name: str = "file", ndim: int | None = None, limit: int = MAX_BYTES) -> bytes:
    """``data`` uncompressed when it is gzip: never more bytes than its IDX header declares (and at most
    ``limit``), so a small archive that expands enormously is refused after reading its header."""
    if data[:2] != b"\x1f\x8b":
        return data
    inflater = zlib.decompressobj(wbits=31)
    try:
        head = inflater.decompress(data, 4)
        if len(head) == 4:
            head += inflater.decompress(inflater.unconsumed_tail, 4 * head[3])
        shape, size = _header(head, name, ndim, limit)
        declared = size + int(np.prod(shape, dtype=np.int64))
        out = head + inflater.decompress(inflater.unconsumed_tail, declared - len(head) + 1)
    except zlib.error as e:
        raise IdxError(f"{name}: damaged gzip data ({e}); delete it and prepare again") from None
    if len(out) > declared:
        raise IdxError(f"{name}: has trailing bytes: the header says shape {shape} ({declared - size} bytes) but "
                       "more follow")
    if not inflater.eof:
        raise IdxError(f"{name}: damaged gzip data (it ends early); delete it and prepare again")
    return out


def parse_idx(data: bytes, name: str = "file", ndim: int | None = None, limit: int = MAX_BYTES) -> np.ndarray:
    """Parse IDX bytes (raw or gzip) into a uint8 array, checking magic number, shape and length."""
    data = decompress(data, name, ndim, limit)
    shape, header = _header(data[:4 + 4 * data[3]] if len(data) >= 4 else data, name, ndim, limit)
    expected = int(np.prod(shape, dtype=np.int64))
    actual = len(data) - header
    if actual != expected:
        what = "truncated" if actual < expected else "has trailing bytes"
        raise IdxError(f"{name}: {what}: header says shape {shape} ({expected} bytes) but {actual} bytes follow")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def read_idx(path: Path, ndim: int | None = None) -> np.ndarray:
    return parse_idx(Path(path).read_bytes(), str(path), ndim)


def to_idx_bytes(array: np.ndarray) -> bytes:
    array = np.ascontiguousarray(array, dtype=np.uint8)
    return struct.pack(f">HBB{array.ndim}I", 0, 0x08, array.ndim, *array.shape) + array.tobytes()


def write_idx(path: Path, array: np.ndarray, compress: bool | None = None) -> None:
    """Write ``array`` as IDX; gzip when the name ends in .gz (or ``compress`` says so)."""
    path = Path(path)
    data = to_idx_bytes(array)
    if compress if compress is not None else path.suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)
