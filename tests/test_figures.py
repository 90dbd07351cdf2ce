"""Pictures: a run's curves, runs side by side, an evaluation's confusion matrix and its most confidently wrong
images, from Python (matplotlib figures) and from the command line (PNG files that never overwrite a file)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import mnist_kit as mk
from helpers import REPO, assert_user_error, run_cli
from mnist_kit.evaluation import metrics
from mnist_kit.logbook import figures

RELEASE_RUN = REPO / "tests" / "fixtures" / "run-0.1.0"


def test_the_most_confidently_wrong_are_wrong_and_in_order_of_confidence():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=200)
    y = rng.integers(0, 4, size=200)
    found = metrics.confident_mistakes(y, probs, ["a", "b", "c", "d"], k=10)
    assert len(found) == 10 and all(m["label"] != m["predicted"] for m in found)
    assert [m["probability"] for m in found] == sorted((m["probability"] for m in found), reverse=True)
    wrong = probs.argmax(1) != y
    assert found[0]["probability"] == pytest.approx(probs[wrong].max(1).max())
    assert metrics.confident_mistakes(probs.argmax(1), probs, list("abcd")) == []  # none wrong


def test_a_runs_figure_draws_its_epochs():
    rows = mk.Run(RELEASE_RUN).metrics
    fig = mk.Run(RELEASE_RUN).plot()
    loss, acc, lr = fig.axes
    assert [ax.get_title() for ax in fig.axes] == ["loss", "accuracy", "learning rate"]
    train_loss = loss.lines[0].get_ydata().tolist()
    assert train_loss == [r["train_loss"] for r in rows] and len(acc.lines) == 2
    assert lr.lines[0].get_ydata().tolist() == [r["lr"] for r in rows]
    several = mk.plot_runs([RELEASE_RUN, mk.Run(RELEASE_RUN)], "two")
    assert [line.get_label() for line in several.axes[0].lines] == ["run-0.1.0", "run-0.1.0"]


def test_an_evaluations_figure_shows_the_confusion_and_the_mistakes(tmp_path):
    confusion = np.array([[5, 1], [2, 7]])
    mistakes = [{"index": 3, "label": "cat", "predicted": "dog", "probability": 0.9},
                {"index": 8, "label": "dog", "predicted": "cat", "probability": 0.7}]
    images = np.zeros((2, 28, 28), np.uint8)
    fig = figures.evaluation_figure(confusion, ["cat", "dog"], mistakes, images, "test")
    assert len(fig.axes) == 3 and fig.axes[1].get_title() == "cat → dog\np = 0.90"
    assert [t.get_text() for t in fig.axes[0].texts] == ["5", "1", "2", "7"]
    path = figures.save(fig, tmp_path / "e.png")
    assert Image.open(path).format == "PNG" and Image.open(path).size[0] > 600
    with pytest.raises(FileExistsError):
        figures.save(fig, path)  # never over a file


def test_eval_and_runs_draw_their_pictures_into_new_files_only(trained, tmp_path):
    shown = run_cli("eval", "--run", trained, "--plot", "pics", "--json")
    assert shown.exit_code == 0, shown.output
    result = json.loads(shown.stdout)
    assert "mistake_images" not in result and isinstance(result["mistakes"], list)
    for name in ("evaluation.png", "training.png"):
        assert Image.open(Path("pics") / name).format == "PNG" and f"wrote pics/{name}" in shown.stderr
    before = (Path("pics") / "evaluation.png").read_bytes()
    assert_user_error(run_cli("eval", "--run", trained, "--plot", "pics"),
                      "--plot pics exists and is not an empty folder")
    assert (Path("pics") / "evaluation.png").read_bytes() == before
    listed = run_cli("runs", "--plot", "runs.png")
    assert listed.exit_code == 0 and Image.open("runs.png").format == "PNG", listed.output
    mine = tmp_path / "mine.png"
    mine.write_bytes(b"the user's")
    assert_user_error(run_cli("runs", "--plot", mine), f"--plot {mine} exists; name a new file")
    assert mine.read_bytes() == b"the user's"
    evaluation = mk.evaluate(trained)
    assert evaluation.images is not None and len(evaluation.images) == len(evaluation.mistakes)
    assert len(evaluation.plot().axes) == 1 + len(evaluation.mistakes)


def test_without_matplotlib_a_picture_is_one_clear_error():
    code = ("import sys\nsys.modules['matplotlib'] = None\nimport mnist_kit as mk\n"
            f"try:\n    mk.Run({str(RELEASE_RUN)!r}).plot()\nexcept mk.UserError as e:\n    print(e)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "pictures need matplotlib, which is not installed: pip install " \
                                  "'mnist-kit[notebook]'", done.stderr


def test_a_prepared_data_sets_figure_shows_images_and_class_counts(prepared):
    data = mk.prepare()  # the cache the fixture prepared
    assert data.x_train.shape[1:] == (28, 28) and len(data.y_test) == 200
    fig = data.plot(12)
    *images, bars = fig.axes
    assert len(images) == 12 and [ax.get_title() for ax in images] == [data.classes[y] for y in data.y_train[:12]]
    heights = [round(b.get_height()) for b in bars.containers[0]]
    assert heights == np.bincount(data.y_train, minlength=10).tolist() and sum(heights) == len(data.y_train)


@pytest.mark.slow
def test_the_shipped_sample_photo_is_a_seven_to_a_model_that_reads_drawn_digits(digit_export):
    found = mk.predict(digit_export, mk.sample_photo())[0]
    assert found.label == "7" and not found.low_confidence, found
