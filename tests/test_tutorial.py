"""The tutorial notebooks (docs/tutorial.ipynb, docs/tutorial_cn.ipynb): written by scripts/make_tutorials.py
with the same code, and the English one run top to bottom in a real Jupyter kernel, its outputs checked."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from PIL import Image

from helpers import REPO, run_subprocess, synthetic_arrays, write_idx_folder


def test_the_tutorials_are_what_the_script_writes_and_share_their_code():
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "make_tutorials.py"), "--check"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    english, chinese = (json.loads((REPO / "docs" / n).read_text()) for n in ("tutorial.ipynb", "tutorial_cn.ipynb"))
    code = [[c["source"] for c in nb["cells"] if c["cell_type"] == "code"] for nb in (english, chinese)]
    assert code[0] == code[1] and len(code[0]) >= 10
    assert all(not c.get("outputs") for nb in (english, chinese) for c in nb["cells"])  # committed without outputs


@pytest.mark.slow
def test_the_tutorial_runs_in_a_jupyter_kernel_and_shows_what_it_says(tmp_path):
    """On 12,000 synthetic digits prepared as MNIST (data.val_size's 10,000 and 2,000 to train on)."""
    import os

    import nbformat
    from nbclient import NotebookClient

    arrays = synthetic_arrays(n_train=12000, n_test=500)
    write_idx_folder(tmp_path / "idx", arrays)
    env = {"MNIST_KIT_DATA": str(tmp_path / "data")}
    assert run_subprocess("prepare", "--from-dir", tmp_path / "idx", "--no-verify", env=env).returncode == 0
    nb = nbformat.read(REPO / "docs" / "tutorial.ipynb", as_version=4)
    os.environ["MNIST_KIT_DATA"] = env["MNIST_KIT_DATA"]  # the kernel's (the _isolated fixture restores it)
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    text = ["".join(o.get("text", "") for o in c.outputs if o.output_type == "stream") for c in code]
    data = [[k for o in c.outputs for k in (o.get("data") or {})] for c in code]
    assert "mnist" in text[0]
    for i, names in ((2, ("linear", "mlp", "cnn")), (3, ("cross_entropy", "mse")), (4, ("sgd", "momentum", "adam"))):
        for name in names:
            assert any(line.startswith(f"{name} ") and "best validation accuracy" in line
                       for line in text[i].splitlines()), (name, text[i][-2000:])
        assert "image/png" in data[i]
    assert "the same as before: True" in text[5] and "image/png" in data[5]
    assert "test accuracy" in text[6] and "image/png" in data[6]
    board = "".join(o["data"]["text/html"] for o in code[7].outputs if "text/html" in o.get("data", {}))
    assert '<iframe src="http://127.0.0.1:' in board
    assert text[9].startswith("photo-7.jpg: ") and "image/png" in data[9]
    assert "image/png" in data[1]  # the images and the class counts
    widgets = sum(k == "application/vnd.jupyter.widget-view+json" for k in data[2])
    assert widgets == 6  # a progress bar per epoch: 3 runs of 2 epochs
    from nbconvert import HTMLExporter

    html, _ = HTMLExporter().from_notebook_node(nb)  # as a reader sees it (scripts/notebook_check.py looks)
    assert html.count("<img") >= 7 and "<iframe" in html  # 6 figures and the photo
    assert Image.open(REPO / "mnist_kit" / "samples" / "photo-7.jpg").size == (360, 300)
