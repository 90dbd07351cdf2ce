"""Output: messages on stderr and a progress display that fits where it runs.

On a terminal the progress is a bar redrawn in place; when output is redirected it is one line every
``every`` units, so logs stay readable; in a Jupyter notebook it is tqdm's bar, a widget that updates in place
where ipywidgets is installed (the ``notebook`` extra; else tqdm's one redrawn line), and without tqdm one
line of text redrawn in place by IPython's display. tqdm is used for the notebook only: it draws widgets, and
on a terminal the bar here is what the logs and tests were written for.
"""

from __future__ import annotations

import contextlib
import sys
import time

import click

_streams: list = []  # where ``to_stream`` sends everything for now (the innermost last)


@contextlib.contextmanager
def to_stream(stream):
    """Inside the block, every line and progress display goes to ``stream`` as to a log file (tune writes each
    trial's training output to the trial's log this way, and shows one line per trial)."""
    _streams.append(stream)
    try:
        yield stream
    finally:
        _streams.remove(stream)


def info(message: str) -> None:
    """A line for the user: on stderr (stdout holds a command's results), but in a notebook on stdout, which
    Jupyter shows as plain text (stderr comes out in red, as for an error)."""
    if _streams:
        click.echo(message, file=_streams[-1])
        _streams[-1].flush()
        return
    click.echo(message, err=not in_notebook())


def _fmt_time(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds < 3600 else f"{seconds // 3600}h{seconds // 60 % 60:02d}"


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel: its output goes to a notebook, not to a terminal or a log."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    return type(shell).__name__ == "ZMQInteractiveShell"


class _Redrawn:
    """One line of text redrawn in place in a notebook (IPython's display with an id), at most 10 times a
    second: the progress when tqdm is not installed."""

    def __init__(self, line):
        from IPython.display import display

        self._line, self._last = line, 0.0
        self._handle = display(line(), display_id=True)

    def update(self, n: int = 1) -> None:
        now = time.perf_counter()
        if now - self._last >= 0.1:
            self._handle.update(self._line())
            self._last = now

    def set_postfix_str(self, postfix: str) -> None:
        pass  # Progress keeps it; the next update shows it

    def close(self) -> None:
        self._handle.update(self._line())


def _notebook_bar(total: int, desc: str, unit: str, bytes_unit: bool, line):
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _Redrawn(line)
    return tqdm(total=total or None, desc=desc, unit="B" if bytes_unit else unit, unit_scale=bytes_unit,
                leave=True, mininterval=0.1)


class Progress:
    def __init__(self, total: int, desc: str, unit: str = "it", every: int | None = None,
                 stream=None, bytes_unit: bool = False):
        self.total, self.desc, self.unit = max(int(total), 0), desc, unit
        given = stream or (_streams[-1] if _streams else None)
        self.stream = given or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.every = every or max(self.total // 10, 1)
        self.bytes_unit = bytes_unit
        self.n = 0
        self.start = time.perf_counter()
        self._last_draw = 0.0
        self._next_line = self.every
        self.postfix = ""
        # in a notebook: a bar that updates in place (the default stream only: a caller's own stream is kept)
        self._bar = _notebook_bar(self.total, desc, unit, bytes_unit, self._line) \
            if given is None and in_notebook() else None

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
        if self._bar is not None:
            if postfix is not None:
                self._bar.set_postfix_str(postfix)
            self._bar.update(n)
            return
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
        if self._bar is not None:
            self._bar.set_postfix_str(postfix)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            return
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
