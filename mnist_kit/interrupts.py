"""Ctrl-C during training: taken between steps, never inside one.

Paddle runs Python code (the conv bias's gradient, a PyLayer) inside its C++ autograd; a KeyboardInterrupt
raised there comes out as an OSError naming it ("(External) ... KeyboardInterrupt"), which looked like a
write error and marked the run failed (measured: 4 of 5 real SIGINTs before this existed).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading


def wrapped_interrupt(e: BaseException) -> bool:
    """Whether ``e`` is Paddle's wrapping of a KeyboardInterrupt (Ctrl-C) that arrived while Paddle's C++
    autograd was running Python code (an OSError whose message names the KeyboardInterrupt)."""
    return isinstance(e, OSError) and "KeyboardInterrupt" in str(e)


@contextlib.contextmanager
def between_steps():
    """Yields ``check()``, which raises KeyboardInterrupt once Ctrl-C has been pressed; call it between
    steps. A second Ctrl-C interrupts at once. Where SIGINT is ignored or handled by someone else (a
    thread other than the main one, a caller's own handler), nothing changes."""
    pressed = []

    def on_sigint(signum, frame):
        if pressed:
            raise KeyboardInterrupt
        pressed.append(signum)
        os.write(2, b"\ninterrupted: stopping after this step (Ctrl-C again to stop at once)\n")

    def check():
        if pressed:
            raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread() or (
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield check
        return
    signal.signal(signal.SIGINT, on_sigint)
    try:
        yield check
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
