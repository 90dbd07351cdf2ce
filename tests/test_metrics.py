"""The numbers of an evaluation (evaluation/metrics.py, numpy only), against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from mnist_kit.evaluation import metrics

Y_TRUE = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 2])
Y_PRED = np.array([0, 0, 1, 1, 2, 2, 2, 2, 0, 2])


def test_the_confusion_matrix_counts_true_rows_against_predicted_columns():
    assert metrics.confusion_matrix(Y_TRUE, Y_PRED, 3).tolist() == [[2, 1, 0], [0, 1, 1], [1, 0, 4]]
    assert metrics.confusion_matrix(np.array([3]), np.array([3]), 4)[3, 3] == 1  # classes with no images stay


def test_precision_recall_f1_and_support_per_class():
    pc = metrics.per_class(metrics.confusion_matrix(Y_TRUE, Y_PRED, 3))
    assert pc["precision"] == pytest.approx([2 / 3, 1 / 2, 4 / 5])
    assert pc["recall"] == pytest.approx([2 / 3, 1 / 2, 4 / 5])
    assert pc["f1"] == pytest.approx([2 / 3, 1 / 2, 4 / 5])
    assert pc["support"] == [3, 2, 5]
    never = metrics.per_class(np.array([[1, 0], [1, 0]]))  # class 1 never predicted: 0, not a NaN
    assert never["precision"] == [0.5, 0.0] and never["f1"][1] == 0.0


def test_the_report_gives_accuracy_and_macro_f1():
    result = metrics.report(Y_TRUE, Y_PRED, 3)
    assert result["accuracy"] == pytest.approx(0.7)
    assert result["macro_f1"] == pytest.approx(np.mean([2 / 3, 1 / 2, 4 / 5]))
    assert result["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [1, 0, 4]]


def test_softmax_is_a_distribution_even_for_huge_logits():
    p = metrics.softmax(np.array([[1000.0, 1000.0, -1000.0], [0.0, np.log(3.0), 0.0]]))
    assert np.isfinite(p).all() and p.sum(axis=1) == pytest.approx([1.0, 1.0])
    assert p[0] == pytest.approx([0.5, 0.5, 0.0]) and p[1] == pytest.approx([0.2, 0.6, 0.2])


def test_a_binary_curve_counts_at_each_threshold():
    positive = np.array([True, True, False, False])
    scores = np.array([0.9, 0.4, 0.6, 0.1])
    curve = metrics.binary_curve(positive, scores, num_thresholds=11)
    at = {round(t, 1): i for i, t in enumerate(curve["thresholds"])}
    i = at[0.5]  # predicted positive: 0.9 and 0.6
    assert (curve["tp"][i], curve["fp"][i], curve["tn"][i], curve["fn"][i]) == (1, 1, 1, 1)
    assert curve["precision"][i] == 0.5 and curve["recall"][i] == 0.5 and curve["fpr"][i] == 0.5
    assert curve["precision"][at[0.0]] == 0.5 and curve["recall"][at[0.0]] == 1.0  # everything positive
    assert curve["precision"][at[1.0]] == 1.0 and curve["recall"][at[1.0]] == 0.0  # nothing positive
    assert (np.diff(curve["tp"]) <= 0).all() and (np.diff(curve["fp"]) <= 0).all()


def test_pca_keeps_the_direction_of_most_variance():
    rng = np.random.default_rng(0)
    along = rng.normal(size=(200, 1)) * np.array([[3.0, 4.0, 0.0]]) + rng.normal(scale=0.01, size=(200, 3))
    out = metrics.pca(along, 2)
    assert out.shape == (200, 2) and out.dtype == np.float32
    assert out[:, 0].var() > 100 * out[:, 1].var()
    assert metrics.pca(along[:5], 64).shape == (5, 3)  # never more components than the data has


@pytest.mark.parametrize("n,d", [(40, 120), (120, 40)])
def test_pca_equals_the_projection_on_the_singular_vectors(n, d):
    # from the smaller of x x^T and x^T x (less memory than an SVD): the same scores, up to each one's sign
    x = np.random.default_rng(1).normal(size=(n, d)) * np.linspace(3, 0.1, d)
    centred = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    expected, got = centred @ vt[:10].T, metrics.pca(x, 10)
    assert got.shape == (n, 10)
    assert np.allclose(np.abs(got), np.abs(expected), rtol=1e-4, atol=1e-4)


def test_eval_names_the_classes_in_its_confusion_matrix():
    classes = ["T-shirt/top", "Trouser", "Pullover"]
    y = np.array([0, 1, 2, 2])
    result = metrics.report(y, np.array([0, 1, 2, 1]), 3)
    result.update(split="test", dataset="fashion-mnist", samples=4, checkpoint="best.pdckpt", loss=0.1)
    text = metrics.format_report(result, classes).split("confusion matrix")[1]
    assert "0 T-shirt/top" in text and "Trouse" in text and "2 Pullover" in text
