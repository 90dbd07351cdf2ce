"""Terminal output: messages on stderr and a progress display.

On a terminal the progress is a bar redrawn in place; when output is redirected it is one line
every ``every`` units, so logs stay readable.
"""

from __future__ import annotations

import sys
import time

import click


def info(message: str) -> None:
    click.echo(message, err=True)


def _fmt_time(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds < 3600 else f"{seconds // 3600}h{seconds // 60 % 60:02d}"


class Progress:
    def __init__(self, total: int, desc: str, unit: str = "it", every: int | None = None,
                 stream=None, bytes_unit: bool = False):
        self.total, self.desc, self.unit = max(int(total), 0), desc, unit
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.every = every or max(self.total // 10, 1)
        self.bytes_unit = bytes_unit
        self.n = 0
        self.start = time.perf_counter()
        self._last_draw = 0.0
        self._next_line = self.every
        self.postfix = ""

    def _amount(self, n: float) -> str:
        return f"{n / 1e6:.1f} MB" if self.bytes_unit else f"{int(n)}"

    def _line(self) -> str:
        elapsed = time.perf_counter() - self.start
        rate = self.n / elapsed if elapsed > 0 else 0.0
        pct = 100.0 * self.n / self.total if self.total else 100.0
        eta = (self.total - self.n) / rate if rate > 0 else 0.0
        rate_s = f"{rate / 1e6:.1f} MB/s" if self.bytes_unit else f"{rate:.0f} {self.unit}/s"
        total = self._amount(self.total) if self.total else "?"
        return (f"{self.desc} {pct:5.1f}% {self._amount(self.n)}/{total} "
                f"[{_fmt_time(elapsed)}<{_fmt_time(eta)}, {rate_s}]{self.postfix}")

    def update(self, n: int = 1, postfix: str | None = None) -> None:
        self.n += n
        if postfix is not None:
            self.postfix = " " + postfix if postfix else ""
        if self.tty:
            now = time.perf_counter()
            if now - self._last_draw >= 0.1 or self.n >= self.total:
                width = 24
                filled = int(width * self.n / self.total) if self.total else width
                bar = "#" * filled + "." * (width - filled)
                line = self._line().replace(f"{self.desc} ", f"{self.desc} |{bar}| ", 1)
                self.stream.write("\r" + line + "\033[K")
                self.stream.flush()
                self._last_draw = now
        elif self.n >= self._next_line or (self.total and self.n >= self.total and self._next_line != -1):
            self.stream.write(self._line() + "\n")
            self.stream.flush()
            self._next_line = -1 if self.total and self.n >= self.total else (self.n // self.every + 1) * self.every

    def set_postfix(self, postfix: str) -> None:
        self.postfix = " " + postfix if postfix else ""

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
