"""mnist-kit board: the VisualDL server keeps answering, and refuses ports and hosts it cannot use with one
clear error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import assert_user_error, child_pids, free_port, run_cli

pytestmark = pytest.mark.slow  # starts VisualDL servers

# ---------------------------------------------------------------- the board


def _visualdl_servers() -> set[int]:
    done = subprocess.run(["pgrep", "-f", "visualdl.server.app"], capture_output=True, text=True)
    return {int(p) for p in done.stdout.split()}


def _shrink_pipe(pid: int, fd: int, size: int = 4096) -> None:
    """Make the pipe on file descriptor ``fd`` of process ``pid`` hold only ``size`` bytes (Linux)."""
    import fcntl

    f_setpipe_sz = 1031
    handle = os.open(f"/proc/{pid}/fd/{fd}", os.O_WRONLY | os.O_NONBLOCK)
    try:
        fcntl.fcntl(handle, f_setpipe_sz, size)
    finally:
        os.close(handle)


def test_the_board_keeps_answering_after_many_logged_errors(trained, tmp_path):
    """VisualDL logs each failed request with its traceback to stderr (~1.2 KB, after 4 s of retrying):
    a pipe that nobody reads fills up and blocks it. The pipe is shrunk to one page so that a few errors
    fill it, instead of ~60 (4 minutes)."""
    import urllib.error
    import urllib.request

    logs = _logdir_with_a_run(trained, tmp_path)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mnist_kit", "board", "--logdir", logs, "--port",
                             str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "HOME": str(tmp_path)})
    try:
        assert "VisualDL is serving" in proc.stderr.readline()
        (server,) = child_pids(proc.pid)
        _shrink_pipe(server, 2)
        for _ in range(6):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/app/api/scalar/list?run=gone&tag=x", timeout=30)
            except urllib.error.HTTPError:
                pass
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/alive", timeout=10) as answer:
            assert answer.status in (200, 204)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _logdir_with_a_run(trained, tmp_path) -> Path:
    from mnist_kit.logbook.writer import Logbook

    book = Logbook(tmp_path / "logs" / "r" / "vdl", display_name="r")
    book.scalar("x", 1.0, 0)
    book.close()
    return tmp_path / "logs"


def test_the_board_refuses_a_port_that_is_taken(trained, tmp_path):
    import socket

    logs = _logdir_with_a_run(trained, tmp_path)
    with socket.socket() as silent:  # listens and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        before = _visualdl_servers()
        assert_user_error(run_cli("board", "--logdir", logs, "--port", port), f"port {port} is in use", "--port")
        assert _visualdl_servers() == before


@pytest.mark.parametrize("host", ["a b", "192.0.2.1", "no-such-host.invalid"])
def test_the_board_refuses_a_host_it_cannot_listen_on(trained, tmp_path, host):
    logs = _logdir_with_a_run(trained, tmp_path)
    before = _visualdl_servers()
    assert_user_error(run_cli("board", "--logdir", logs, "--host", host, "--port", free_port()), "--host" if
                      host != "192.0.2.1" else "cannot listen on 192.0.2.1")
    assert _visualdl_servers() == before
