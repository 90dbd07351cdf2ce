"""VisualDL logging for a run: one writer per run directory, written by one process.

This first version logs scalars; every VisualDL component is added here, behind the same small API.
"""

from __future__ import annotations

from pathlib import Path


class Logbook:
    def __init__(self, logdir: Path | None):
        self.writer = None
        if logdir is not None:
            from visualdl import LogWriter  # imported only when logging is on

            self.writer = LogWriter(logdir=str(logdir))

    def scalar(self, tag: str, value: float, step: int) -> None:
        if self.writer is not None:
            self.writer.add_scalar(tag=tag, value=float(value), step=int(step))

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
