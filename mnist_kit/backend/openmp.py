"""The OpenMP thread count of the process: that of the ``libiomp5`` Paddle loads (oneDNN's OpenMP calls go
to it, so ``libgomp``'s ``omp_set_num_threads`` does nothing), read and set around work that wants its own
count, and restored after (``OpenMP.threads``, ``OpenMP.kept``).

Why restore: the oneDNN blocks run on their own count (``models/onednn``); a Paddle Inference predictor sets
the process to its ``cpu_math_library_num_threads`` when it is made (measured: 1 -> 2), and Paddle's own
eager kernels in the same process then ran on 2 threads, changing their float rounding.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class OpenMP:
    """The OpenMP runtime loaded in this process (Intel's first), or none (then counts are 1 and setting them
    does nothing). Look it up after paddle is imported."""

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
    def threads(self, n: int) -> Iterator[None]:
        """``n`` threads inside, the count before after."""
        if self.lib is None or n == self.get():
            yield
            return
        with self.kept():
            self.lib.omp_set_num_threads(n)
            yield

    @contextmanager
    def kept(self) -> Iterator[None]:
        """Whatever runs inside, the count before it after."""
        before = self.get()
        try:
            yield
        finally:
            if self.lib is not None and self.get() != before:
                self.lib.omp_set_num_threads(before)


_found: list[OpenMP] = []


def openmp() -> OpenMP:
    """The process's OpenMP runtime, looked up once (after paddle is imported)."""
    if not _found:
        _found.append(OpenMP())
    return _found[0]
