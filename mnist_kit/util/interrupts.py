"""Ctrl-C, SIGTERM and SIGHUP during training: taken between steps, never inside one.

Paddle runs Python code (the conv bias's gradient, a PyLayer) inside its C++ autograd; a KeyboardInterrupt
raised there comes out as an OSError naming it ("(External) ... KeyboardInterrupt"), which looked like a
write error and marked the run failed (measured: 4 of 5 real SIGINTs before this existed).

SIGTERM (``kill``, ``timeout``, a batch system) and SIGHUP (a closed terminal) are ``Terminated``, a
KeyboardInterrupt: everything that handles Ctrl-C handles them, and the exit code is 128 + the signal.
Paddle installs C++ handlers for them at import, which print a C++ traceback and abort; ``keep_handlers``
puts the Python ones back.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import threading

STOPPING = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))  # no SIGHUP
# on Windows


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, handled as Ctrl-C is."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def exit_code(e: KeyboardInterrupt) -> int:
    return 128 + (e.signum if isinstance(e, Terminated) else signal.SIGINT)


def _raise_terminated(signum, frame):
    raise Terminated(signum)


def handle_termination() -> None:
    """From now on SIGTERM and SIGHUP raise ``Terminated`` in the main thread (as SIGINT raises
    KeyboardInterrupt). The CLI calls this first thing."""
    if threading.current_thread() is threading.main_thread():
        for signum in STOPPING:
            if signal.getsignal(signum) in (signal.SIG_DFL, _raise_terminated):
                signal.signal(signum, _raise_terminated)


@contextlib.contextmanager
def keep_handlers():
    """Put back the Python signal handlers that the code run inside (importing paddle) replaced."""
    main = threading.current_thread() is threading.main_thread()
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, *STOPPING)} if main else {}
    try:
        yield
    finally:
        for signum, handler in before.items():
            if handler is not None:
                signal.signal(signum, handler)


def wrapped_interrupt(e: BaseException) -> bool:
    """Whether ``e`` is Paddle's wrapping of a KeyboardInterrupt (Ctrl-C) that arrived while Paddle's C++
    autograd was running Python code (an OSError whose message names the KeyboardInterrupt)."""
    return isinstance(e, OSError) and ("KeyboardInterrupt" in str(e) or "Terminated" in str(e))


@contextlib.contextmanager
def between_steps():
    """Yields ``check()``, which raises KeyboardInterrupt (or ``Terminated``) once Ctrl-C (SIGTERM, SIGHUP)
    has arrived; call it between steps. A second signal interrupts at once. Where a signal is ignored or
    handled by someone else (a thread other than the main one, a caller's own handler), nothing changes."""
    received: list[int] = []

    def on_signal(signum, frame):
        if received:
            raise KeyboardInterrupt if signum == signal.SIGINT else Terminated(signum)
        received.append(signum)
        what = "interrupted" if signum == signal.SIGINT else f"{signal.Signals(signum).name} received"
        os.write(2, f"\n{what}: stopping after this step (again to stop at once)\n".encode())

    def check():
        if received:
            raise KeyboardInterrupt if received[0] == signal.SIGINT else Terminated(received[0])

    ours = {signal.SIGINT: signal.default_int_handler, **{s: _raise_terminated for s in STOPPING}}
    if threading.current_thread() is not threading.main_thread():
        yield check
        return
    taken = [s for s, expected in ours.items() if signal.getsignal(s) is expected]
    for signum in taken:
        signal.signal(signum, on_signal)
    try:
        yield check
    finally:
        for signum in taken:
            signal.signal(signum, ours[signum])


def die_with_parent(signum: int = getattr(signal, "SIGKILL", signal.SIGTERM)):
    """A ``preexec_fn`` for a child process that must not outlive this one (Linux: it gets ``signum`` when
    the parent dies, ``kill -9`` included; elsewhere nothing)."""
    pr_set_pdeathsig = 1

    def setup():
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signum))

    return setup


def stop_child(proc, grace: float = 10) -> None:
    """Stop a child process: SIGTERM, then SIGKILL if it has not ended after ``grace`` seconds; reaped."""
    import subprocess

    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
