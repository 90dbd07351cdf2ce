"""Data-parallel training under ``paddle.distributed.launch``: rank, world size, sharding, reductions.

With one process every function here is a no-op or an identity, so the engine calls them unconditionally.
On CPU the launcher uses the gloo backend (all_reduce SUM/MAX, all_gather, all_gather_object, barrier).
"""

from __future__ import annotations

import os

import numpy as np

from mnist_kit.backend.runtime import paddle

dist = paddle.distributed


def world_size() -> int:
    return dist.get_world_size()  # works before init: read from the launcher's environment


def rank() -> int:
    return dist.get_rank()


def local_rank() -> int:
    return int(os.environ.get("PADDLE_LOCAL_RANK", os.environ.get("PADDLE_RANK_IN_NODE", rank())))


def local_size() -> int:
    """Processes of this job on this machine."""
    return int(os.environ.get("PADDLE_LOCAL_SIZE", world_size()))


def is_main() -> bool:
    return rank() == 0


_initialised = False


def init() -> None:
    """Join the process group once, when launched with more than one process."""
    global _initialised
    if world_size() > 1 and not _initialised:
        dist.init_parallel_env()
        _initialised = True


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def sum_(values) -> np.ndarray:
    """Element-wise sum over all ranks of a float64 vector (as float64: counts stay exact below 2**53)."""
    arr = np.asarray(values, dtype=np.float64)
    if world_size() == 1:
        return arr
    t = paddle.to_tensor(arr)
    dist.all_reduce(t)
    return t.numpy()


def from_main(obj):
    """Rank 0's value of ``obj``, on every rank."""
    if world_size() == 1:
        return obj
    out: list = []
    dist.all_gather_object(out, obj)
    return out[0]


def gather_rows(rows: np.ndarray, index: np.ndarray, total: int) -> np.ndarray:
    """Each rank holds ``rows`` for sample indices ``index``; return all ``total`` rows in index order."""
    if world_size() == 1:
        return rows
    parts: list = []
    dist.all_gather_object(parts, (index, rows))
    out = np.empty((total, *rows.shape[1:]), dtype=rows.dtype)
    for idx, part in parts:
        out[idx] = part
    return out
