"""mnist-kit in a real Jupyter kernel (nbclient): progress that updates in place, and pictures shown inline."""

from __future__ import annotations

import pytest

from helpers import FAST

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
