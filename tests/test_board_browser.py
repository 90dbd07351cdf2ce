"""The VisualDL board as a user sees it: a small sweep trained, `mnist-kit board` started, and every page
loaded in headless Chromium, waiting in real time, with its rendered content checked
(``scripts/board_check.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import run_cli, run_subprocess, script, synthetic_arrays, write_idx_folder

board_check, browser = script("board_check"), script("browser")

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(bool(browser.missing()), reason=f"no browser here: {browser.missing()}")]


@pytest.fixture
def sweep(tmp_path, monkeypatch):
    """A 2 x 2 sweep of the CNN (980 features per image: wider than VisualDL's 200) with 500 embeddings and a
    moving average of the weights."""
    monkeypatch.setenv("HOME", str(tmp_path))  # importing visualdl writes under ~/.visualdl
    idx = write_idx_folder(tmp_path / "idx", synthetic_arrays(n_train=1500, n_test=100))
    assert run_cli("prepare", "--dataset", "mnist", "--from-dir", idx, "--no-verify").exit_code == 0
    r = run_subprocess("sweep", "-o", "optimizer.lr=0.003,0.001", "-o", "train.batch_size=50,100",
                       "-o", "data.val_size=500", "-o", "train.epochs=2", "-o", "log.embeddings=500",
                       "-o", "train.ema=0.9",  # val/acc and val/acc_raw charted
                       "--name", "grid")
    assert r.returncode == 0, r.stderr
    return Path("checkpoints/grid")


def test_every_board_page_shows_the_sweep(sweep, tmp_path):
    results = board_check.check_board(sweep, out=tmp_path / "shots")
    failed = [f"{r.page}: {r.detail}" for r in results if not r.ok]
    assert not failed, "\n".join(failed)
    assert [r.page for r in results] == list(board_check.PAGES)
    assert all(r.screenshot.stat().st_size > 10_000 for r in results)  # a picture of each page
