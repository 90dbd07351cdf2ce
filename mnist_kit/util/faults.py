"""Fault injection for the crash-safety tests: ``MNIST_KIT_FAULT=ACTION@POINT:N[,...]``.

Points: ``step`` (after the update of global step N), ``epoch`` (after epoch N is checkpointed),
``checkpoint-write`` (a checkpoint at global step N is written to its temporary file but not yet renamed),
``export`` (N=0: an export is written and checked in its temporary folder, not yet in place),
``prepare-switch`` (N=0: a new cache's arrays file is written, its ``prepared.json`` not yet).
Actions: ``kill`` (SIGKILL, as ``kill -9``), ``interrupt`` (KeyboardInterrupt, as Ctrl-C),
``enospc`` (an OSError "No space left on device"), ``crash`` (a RuntimeError), ``fill`` (a real full disk
from then on: fills the file system of the file ``$MNIST_KIT_FILL`` with that file). A ``#R`` suffix limits an
item to the process of rank R under ``paddle.distributed.launch``. Unset in normal use: ``hit`` does nothing.
"""

from __future__ import annotations

import errno
import os
import signal


def hit(point: str, n: int) -> None:
    spec = os.environ.get("MNIST_KIT_FAULT")
    if not spec:
        return
    for item in spec.split(","):
        item, _, only_rank = item.strip().partition("#")  # "...#R": only in the process of rank R
        if only_rank and int(only_rank) != int(os.environ.get("PADDLE_TRAINER_ID", "0")):
            continue
        action, _, where = item.partition("@")
        name, _, arg = where.partition(":")
        if name != point or (arg and int(arg) != n):
            continue
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif action == "interrupt":
            raise KeyboardInterrupt
        elif action == "crash":
            raise RuntimeError(f"injected crash at {point} {n}")
        elif action == "enospc":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        elif action == "fill":
            _fill(os.environ["MNIST_KIT_FILL"])
        else:
            raise ValueError(f"MNIST_KIT_FAULT: unknown action {action!r}")


def _fill(path: str) -> None:
    """Write ``path`` until its file system has no byte left."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        size = 1 << 20
        while size:
            try:
                os.write(fd, b"\0" * size)
            except OSError:
                size //= 2
    finally:
        os.close(fd)
