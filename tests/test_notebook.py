"""mnist-kit in a real Jupyter kernel (nbclient): progress that updates in place, and pictures shown inline."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import FAST, run_cli, wait_for

pytestmark = pytest.mark.slow  # starts Jupyter kernels

OVERRIDES = FAST[1::2] + ["output.visualdl=false"]


def _execute(cells: list[str], folder) -> list:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(folder)}}).execute()
    return [cell.outputs for cell in nb.cells]


def _kinds(outputs) -> list[str]:
    return [k for o in outputs for k in (o.get("data") or {})]


def test_in_a_notebook_training_shows_a_bar_per_epoch_and_pictures_inline(prepared, tmp_path):
    train, curves, evaluation = _execute([
        f"import mnist_kit as mk\nrun = mk.train('linear', {OVERRIDES!r}, name='nb')",
        "run.plot()",
        "mk.evaluate(run).plot()",
    ], tmp_path)[0:3]
    widgets = [o for o in train if "application/vnd.jupyter.widget-view+json" in (o.get("data") or {})]
    assert len(widgets) == 2  # one bar per epoch, a widget (ipywidgets is installed with the test extra)
    text = "".join(o.get("text", "") for o in train if o.output_type == "stream")
    assert "epoch 0: train loss" in text and "epoch 1: train loss" in text
    assert "|#" not in text and "\r" not in text  # no terminal bar drawn into the notebook
    assert "image/png" in _kinds(curves) and "image/png" in _kinds(evaluation)
    assert _kinds(curves).count("image/png") == 1  # shown once


@pytest.mark.parametrize("hidden, expect", [("ipywidgets", "tqdm"), ("tqdm", "redrawn")])
def test_without_widgets_or_tqdm_the_bar_is_one_line_redrawn(prepared, tmp_path, hidden, expect):
    (train,) = _execute([f"import sys\nsys.modules[{hidden!r}] = None\nimport mnist_kit as mk\n"
                         f"run = mk.train('linear', {OVERRIDES!r}, name='nb')"], tmp_path)
    assert not [o for o in train if "application/vnd.jupyter.widget-view+json" in (o.get("data") or {})]
    if expect == "redrawn":  # IPython's display, updated in place: one output per epoch, its last state
        lines = [o["data"]["text/plain"] for o in train if "text/plain" in (o.get("data") or {})]
        assert len(lines) == 2 and all("100.0% 10/10" in line for line in lines), lines
    else:  # tqdm's text bar on stderr, redrawn with carriage returns
        text = "".join(o.get("text", "") for o in train if o.output_type == "stream")
        assert "epoch 1/2: 100%" in text and "10/10" in text, text


def _running(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, ended but not yet reaped, does not)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def test_the_board_shows_in_a_notebook_and_stops_when_asked_or_with_the_kernel(prepared, tmp_path):
    assert run_cli("train", "--config", "linear", *FAST, "--name", "seen").exit_code == 0
    shown, stopped = _execute([
        "import urllib.request\nimport mnist_kit as mk\nb = mk.board('checkpoints')\n"
        "print(b.pid, urllib.request.urlopen(b.url + '/alive').status)\nb",
        "one = mk.board(mk.Run('checkpoints/seen'))\nprint(one.pid)\none.stop()\nprint(one.running)\none",
    ], tmp_path)
    pid, status = shown[0]["text"].split()
    assert status == "204"  # VisualDL's /alive: no content
    page = shown[-1]["data"]["text/html"]
    assert re.search(r'<iframe src="http://127\.0\.0\.1:\d+/app/scalar" width="100%"', page), page
    assert stopped[0]["text"].split()[1] == "False" and "has stopped" in stopped[-1]["data"]["text/html"]
    assert not _running(int(stopped[0]["text"].split()[0]))
    wait_for(lambda: not _running(int(pid)), 60, "the board to end with its kernel")  # the kernel has shut down


def test_a_board_dies_with_the_process_that_started_it_even_by_kill_9(prepared, tmp_path):
    assert run_cli("train", "--config", "linear", *FAST, "--name", "seen").exit_code == 0
    code = ("import sys, mnist_kit as mk\nb = mk.board('checkpoints')\nprint(b.pid, flush=True)\n"
            "sys.stdin.read()\n")  # waits until killed
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        pid = int(proc.stdout.readline())  # printed once the board answers
        assert _running(pid)
        proc.kill()  # kill -9: no atexit, no finally
        proc.wait()
        wait_for(lambda: not _running(pid), 60, "the board to end with the process that started it")
    finally:
        proc.kill()


def test_the_board_answers_while_a_browser_holds_an_idle_connection(prepared):
    """Browsers open connections ahead of time and may send nothing on them; VisualDL's own server, one request
    at a time, then answered nobody (the notebook's iframe stayed blank)."""
    import socket
    import urllib.request

    import mnist_kit as mk

    assert run_cli("train", "--config", "linear", *FAST, "--name", "seen").exit_code == 0
    board = mk.board("checkpoints")
    try:
        port = int(board.url.rsplit(":", 1)[1])
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]  # as a preconnect: no request
        with urllib.request.urlopen(f"{board.url}/alive", timeout=20) as answer:
            assert answer.status == 204
        with urllib.request.urlopen(f"{board.url}/app/api/runs", timeout=20) as answer:
            assert b"seen" in answer.read()
        for s in idle:
            s.close()
    finally:
        board.stop()
    assert not board.running
