"""``mnist-kit board``: the VisualDL server on a folder of runs, started, checked and stopped; ``Board``: the
same in a notebook (``mnist_kit.board``), shown as the board in an iframe and stopped when asked, when the
kernel exits, or when it dies (``kill -9`` included: the server gets SIGTERM from the kernel's death)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from mnist_kit.errors import UserError
from mnist_kit.experiments import listing
from mnist_kit.util import addresses
from mnist_kit.util.interrupts import die_with_parent, stop_child


def newest_graph(logdir: Path) -> Path | None:
    """The graph of the newest run under ``logdir`` (for the board's static graph page)."""
    models = [run.graph_model for run in listing.find(logdir) if run.graph_model.is_file()]
    return max(models, key=lambda p: p.stat().st_mtime) if models else None


# VisualDL 2.5.3 runs Flask with threaded=False: one connection that a browser opens ahead of time and sends
# nothing on (Chromium's preconnect) holds the whole server, and the board, its iframe in a notebook included,
# never loads (seen: 8 connections queued behind one). Its server is started with threaded=True instead.
THREADED = ("import flask\n"
            "run = flask.Flask.run\n"
            "flask.Flask.run = lambda self, *a, **k: run(self, *a, **{**k, 'threaded': True})\n"
            "from visualdl.server.app import main\n"
            "main()")


def board_command(logdir: Path, host: str, port: int, model: Path | None) -> tuple[list[str], Path]:
    """The VisualDL server's command line and the folder to run it in.

    The log root is passed relative to that folder (absolute run names confuse the server's cache);
    telemetry is off and the language fixed (without -L, pages answer 500 to clients without Accept-Language).
    """
    import sys

    logdir = Path(logdir).resolve()
    argv = [sys.executable, "-c", THREADED, "--logdir", logdir.name,
            "--host", host, "--port", str(port), "--disable-telemetry", "-L", "en", "--cache-timeout", "5"]
    if model is not None:
        argv += ["--model", str(Path(model).resolve())]
    return argv, logdir.parent


def _drain(stream, lines) -> None:
    """Read the server's stderr as long as it runs, keeping its last lines: an unread pipe fills up and
    blocks the server (after about 60 logged errors)."""
    for line in stream:
        lines.append(line.rstrip())


def serve(logdir: Path, host: str = "127.0.0.1", port: int = 8040, model: Path | None = None,
          wait: bool = True, say=print):
    """Start the board on ``logdir``; print its address; with ``wait``, run until interrupted (Ctrl-C,
    SIGTERM)."""
    import collections
    import subprocess
    import threading


    logdir = Path(logdir)
    if not logdir.is_dir() or not any(logdir.rglob("vdlrecords*")):
        raise UserError(f"no VisualDL logs under {logdir}; train a run first (mnist-kit train), or pass --logdir")
    addresses.check_address(host, port)
    if host not in addresses.LOOPBACK:
        say(f"warning: binding {host}: VisualDL has no authentication, so anyone who can reach this address can "
            "read every log here and upload files to the server")
    model = model or newest_graph(logdir)
    if model is not None and not Path(model).is_file():
        raise UserError(f"model file not found: {model}")
    argv, cwd = board_command(logdir, host, port, model)
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            errors="replace", preexec_fn=die_with_parent(signal.SIGTERM))
    errors: collections.deque[str] = collections.deque(maxlen=20)
    threading.Thread(target=_drain, args=(proc.stderr, errors), daemon=True).start()
    url = addresses.url(host, port)
    try:
        _wait_until_up(proc, url, port, errors)
    except BaseException:  # it did not come up, or Ctrl-C: never leave it running
        stop_child(proc)
        raise
    say(f"VisualDL is serving {logdir} at {url}/app/scalar" + (f" (graph: {model})" if model else "")
        + ("; press Ctrl-C to stop" if wait else ""))
    if not wait:
        return proc
    try:
        proc.wait()
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: stop the server and end normally
        pass
    finally:
        stop_child(proc)
    return proc


class StoppedAtStart(UserError):
    """The server ended before it answered (its port taken between our check and its bind, say)."""


def _wait_until_up(proc, url: str, port: int, errors, timeout: float = 60) -> None:
    """Wait until the server answers; UserError (the server stopped) if it ends or does not answer."""
    import urllib.request


    deadline = time.time() + timeout
    while True:
        if proc.poll() is not None:
            time.sleep(0.2)  # the drain thread's last lines
            raise StoppedAtStart(f"the VisualDL server stopped at start: "
                                 f"{errors[-1] if errors else proc.returncode} (is port {port} in use? try --port)")
        try:
            with urllib.request.urlopen(f"{url}/alive", timeout=2):
                return
        except OSError:
            if time.time() > deadline:
                raise UserError(f"the VisualDL server did not answer at {url} within {timeout:.0f} s"
                                + (f"; its last message: {errors[-1]}" if errors else "")) from None
            time.sleep(0.3)


class Board:
    """A VisualDL server started for a notebook: Jupyter shows it as the board in an iframe (``_repr_html_``).
    ``stop()`` ends it; so does the end of the process that started it (atexit, and the kernel's death)."""

    def __init__(self, proc, url: str, logdir: Path, height: int = 800):
        import atexit

        self.proc, self.url, self.logdir, self.height = proc, url, Path(logdir), height
        atexit.register(self.stop)

    @property
    def pid(self) -> int:
        return int(self.proc.pid)

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        """Stop the server (nothing if it has stopped)."""
        if self.running:
            stop_child(self.proc)

    def __repr__(self) -> str:
        state = f"at {self.url}/app/scalar" if self.running else "stopped"
        return f"Board({str(self.logdir)!r}, {state})"

    def _repr_html_(self) -> str:
        import html

        if not self.running:
            return f"<p>The board of {html.escape(str(self.logdir))} has stopped.</p>"
        page = html.escape(f"{self.url}/app/scalar", quote=True)
        return (f'<iframe src="{page}" width="100%" height="{int(self.height)}" style="border: 1px solid #ddd" '
                f'title="VisualDL"></iframe><p><a href="{page}" target="_blank">open the board in a tab</a> '
                f"(VisualDL on {html.escape(str(self.logdir))}; <code>.stop()</code> ends it)</p>")


def start(logdir: Path, host: str = "127.0.0.1", port: int = 0, height: int = 800) -> Board:
    """Start the board on ``logdir`` (on a free port with ``port`` 0) and return it once it answers."""
    for attempt in range(3):  # a free port may be taken between choosing it and the server's bind: another
        chosen = port or addresses.free_port(host)
        try:
            proc = serve(logdir, host=host, port=chosen, wait=False, say=lambda message: None)
        except (addresses.PortInUse, StoppedAtStart):
            if port or attempt == 2:
                raise
            continue
        return Board(proc, addresses.url(host, chosen), logdir, height)
    raise AssertionError("unreachable")
