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

from mnist_kit import UserError


class IdxError(UserError):
    pass


def decompress_if_gzip(data: bytes, name: str = "file") -> bytes:
    if data[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise IdxError(f"{name}: damaged gzip data ({e}); delete it and prepare again") from None
    return data


def parse_idx(data: bytes, name: str = "file", ndim: int | None = None) -> np.ndarray:
    """Parse IDX bytes (raw or gzip) into a uint8 array, checking magic number, shape and length."""
    data = decompress_if_gzip(data, name)
    if len(data) < 4:
        raise IdxError(f"{name}: too short to be an IDX file ({len(data)} bytes)")
    zero, code, dims = struct.unpack(">HBB", data[:4])
    if zero != 0 or code != 0x08:
        raise IdxError(f"{name}: not an IDX file of unsigned bytes (magic number {data[:4].hex()})")
    if ndim is not None and dims != ndim:
        kind = {1: "labels (idx1)", 3: "images (idx3)"}.get(ndim, f"idx{ndim}")
        raise IdxError(f"{name}: expected {kind} but the file has {dims} dimension(s); are the files swapped?")
    header = 4 + 4 * dims
    if len(data) < header:
        raise IdxError(f"{name}: truncated header")
    shape = struct.unpack(f">{dims}I", data[4:header])
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
