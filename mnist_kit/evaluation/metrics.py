"""Classification metrics from labels and predictions (numpy only)."""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of logits (N, classes), numerically stable."""
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """``cm[i, j]`` = images of true class i predicted as j."""
    return np.bincount(y_true * num_classes + y_pred, minlength=num_classes**2).reshape(num_classes, num_classes)


def per_class(cm: np.ndarray) -> dict:
    tp = np.diag(cm).astype(np.float64)
    predicted, actual = cm.sum(axis=0), cm.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(actual > 0, tp / actual, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return {"precision": precision.tolist(), "recall": recall.tolist(), "f1": f1.tolist(),
            "support": actual.astype(int).tolist()}


def report(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> dict:
    cm = confusion_matrix(y_true, y_pred, num_classes)
    pc = per_class(cm)
    return {"accuracy": float(np.trace(cm) / max(cm.sum(), 1)), "per_class": pc,
            "macro_f1": float(np.mean(pc["f1"])), "confusion_matrix": cm.tolist()}


MISTAKES = 16  # the most confidently wrong images an evaluation names (and its picture shows)


def confident_mistakes(y_true: np.ndarray, probs: np.ndarray, classes: list[str], k: int = MISTAKES) -> list[dict]:
    """The ``k`` wrong predictions made with the highest probability: index in the split, true and predicted
    label, probability (ties: the earlier image first)."""
    predicted = probs.argmax(axis=1)
    wrong = np.flatnonzero(predicted != y_true)
    order = wrong[np.argsort(-probs[wrong, predicted[wrong]], kind="stable")][:k]
    return [{"index": int(i), "label": classes[int(y_true[i])], "predicted": classes[int(predicted[i])],
             "probability": float(probs[i, predicted[i]])} for i in order]


def format_report(result: dict, classes) -> str:
    """A human-readable table of an evaluation result."""
    pc = result["per_class"]
    width = max(len(c) for c in classes) + 3
    lines = [f"{result['split']} split of {result['dataset']}: {result['samples']} images, "
             f"checkpoint {result['checkpoint']}",
             f"loss {result['loss']:.4f}   accuracy {100 * result['accuracy']:.2f}%   "
             f"macro F1 {result['macro_f1']:.4f}"]
    if "photos" in result:
        ph = result["photos"]
        formats = ", ".join(f"{k} {100 * v:.1f}%" for k, v in ph["by_format"].items())
        lines.append(f"photos: accuracy {100 * ph['accuracy']:.2f}% on {ph['count']} photos made from test images "
                     f"({formats}); those test images as they are: {100 * ph['same_test_images_accuracy']:.2f}%")
    if "engine" in result:
        lines.append(f"computed by {result['engine']} in {result['seconds']:.2f} s")
    lines += ["", f"{'class':<{width}}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>9}"]
    for i, cls in enumerate(classes):
        lines.append(f"{f'{i} {cls}':<{width}}{pc['precision'][i]:>10.4f}{pc['recall'][i]:>10.4f}"
                     f"{pc['f1'][i]:>10.4f}{pc['support'][i]:>9}")
    return "\n".join(lines + [""] + _confusion_lines(result["confusion_matrix"], list(classes)))


def _confusion_lines(cm, classes: list[str], limit: int = 40) -> list[str]:
    """The confusion matrix as text: rows named by class, columns by the names cut to fit."""
    if len(classes) > limit:
        return [f"confusion matrix: {len(classes)} classes, too many to print; it is in --json"]
    names = [c if c == str(i) else f"{i} {c}" for i, c in enumerate(classes)]
    cell = max(7, max(len(str(v)) for row in cm for v in row) + 1)
    width = max(len(n) for n in names) + 1
    lines = ["confusion matrix (rows: true class, columns: predicted)",
             (" " * width + "".join(f"{c[:cell - 1]:>{cell}}" for c in classes)).rstrip()]
    for name, row in zip(names, cm):
        lines.append(f"{name:<{width}}" + "".join(f"{v:>{cell}}" for v in row))
    return lines


def binary_curve(positive: np.ndarray, scores: np.ndarray, num_thresholds: int = 127) -> dict:
    """Counts at thresholds ``t_i = i / (num_thresholds - 1)`` (predicted positive when ``score >= t_i``).

    ``positive``: the TRUE labels, as booleans for one class; ``scores``: that class's probability.
    Returns tp, fp, tn, fn, precision = tp/(tp+fp), recall = tpr = tp/(tp+fn), fpr = fp/(fp+tn)
    (recall and fpr 0 where a denominator is 0; precision 1 where nothing is predicted positive, the usual
    convention, so that a PR curve does not start with a diagonal from (0, 0)). At the lowest threshold
    every image is predicted positive, so the precision there is the class's frequency.
    """
    positive = np.asarray(positive, bool)
    scores = np.asarray(scores, np.float64)
    thresholds = np.linspace(0.0, 1.0, num_thresholds)
    pos_sorted, neg_sorted = np.sort(scores[positive]), np.sort(scores[~positive])
    tp = (len(pos_sorted) - np.searchsorted(pos_sorted, thresholds, side="left")).astype(np.int64)
    fp = (len(neg_sorted) - np.searchsorted(neg_sorted, thresholds, side="left")).astype(np.int64)
    fn, tn = len(pos_sorted) - tp, len(neg_sorted) - fp

    def ratio(a, b, empty=0.0):
        return np.divide(a, b, out=np.full(len(a), empty), where=b > 0)

    return {"thresholds": thresholds, "tp": tp, "fp": fp, "tn": tn, "fn": fn,
            "precision": ratio(tp, tp + fp, empty=1.0), "recall": ratio(tp, tp + fn), "fpr": ratio(fp, fp + tn)}


def pca(x: np.ndarray, dims: int) -> np.ndarray:
    """``x`` (N, D) projected on its first ``dims`` principal components (centred; N x min(dims, D, N)).
    From the eigenvectors of the smaller of ``x x^T`` and ``x^T x``: for the board's 500 x 1568 embeddings
    the process peaked 13 MB higher, against 41 MB for an SVD of ``x`` (its LAPACK workspace)."""
    centred = np.array(x, np.float64)  # a copy, centred in place
    centred -= centred.mean(axis=0)
    k = min(dims, *centred.shape)
    if len(centred) <= centred.shape[1]:  # the scores are the Gram matrix's eigenvectors scaled by the singular values
        values, vectors = np.linalg.eigh(centred @ centred.T)
        return (vectors[:, ::-1][:, :k] * np.sqrt(np.clip(values[::-1][:k], 0, None))).astype(np.float32)
    _, vectors = np.linalg.eigh(centred.T @ centred)
    return (centred @ vectors[:, ::-1][:, :k]).astype(np.float32)
