"""Fault injection for the crash-safety tests: ``MNIST_KIT_FAULT=ACTION@POINT:N[,...]``.

Points: ``step`` (after the update of global step N), ``epoch`` (after epoch N is checkpointed),
``checkpoint-write`` (a checkpoint at global step N is written to its temporary file but not yet renamed).
Actions: ``kill`` (SIGKILL, as ``kill -9``), ``interrupt`` (KeyboardInterrupt, as Ctrl-C),
``enospc`` (an OSError "No space left on device"). Unset in normal use, where ``hit`` does nothing.
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
        action, _, where = item.strip().partition("@")
        name, _, arg = where.partition(":")
        if name != point or (arg and int(arg) != n):
            continue
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif action == "interrupt":
            raise KeyboardInterrupt
        elif action == "enospc":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        else:
            raise ValueError(f"MNIST_KIT_FAULT: unknown action {action!r}")
