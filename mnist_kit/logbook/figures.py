"""Pictures for people who would rather look than read, as matplotlib figures: a run's curves per epoch
(``run_figure``), several runs side by side (``runs_figure``), an evaluation's confusion matrix and its most
confidently wrong images (``evaluation_figure``). ``Run.plot()`` and ``Evaluation.plot()`` return them (Jupyter
shows a figure inline); ``mnist-kit runs --plot`` and ``eval --plot`` save them as PNG files.

Figures are made with ``matplotlib.figure.Figure``, not pyplot: nothing is kept in a global list of figures,
and nothing is shown twice. matplotlib comes with VisualDL; it is also the ``notebook`` extra.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from mnist_kit.errors import UserError
from mnist_kit.util.console import in_notebook

INSTALL = "pip install 'mnist-kit[notebook]'"


def _figure(width: float, height: float) -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise UserError(f"pictures need matplotlib, which is not installed: {INSTALL}") from None
    if in_notebook():
        _show_inline(Figure)
    return Figure(figsize=(width, height), layout="constrained")


def _show_inline(figure_class: type) -> None:
    """Let Jupyter draw a figure that is a cell's value, as PNG. Not left to pyplot's inline backend: VisualDL
    switches matplotlib to Agg when training imports it, and then no figure would be drawn."""
    import IPython

    png = IPython.get_ipython().display_formatter.formatters["image/png"]
    png.for_type(figure_class, _png)


def _png(fig: Any) -> bytes:
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _curve(ax, rows: list[dict], key: str, label: str, **style) -> bool:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs, counted from 0 as everywhere in mnist-kit
    points = [(r["epoch"], r[key]) for r in rows if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
    if points:
        ax.plot(*zip(*points), marker="o", markersize=3, label=label, **style)
    return bool(points)


def samples_figure(images: np.ndarray, labels: np.ndarray, classes: list[str], counts: dict[str, np.ndarray],
                   title: str = "") -> Any:
    """A few images with their labels (up to 2 rows of 10), and the images per class of each split."""
    shown = min(len(images), 20)
    cols = min(shown, 10) or 1
    rows = max(-(-shown // cols), 1)
    fig = _figure(13, 1.45 * rows + 3.2)
    grid = fig.add_gridspec(rows + 2, cols)
    for n in range(shown):
        ax = fig.add_subplot(grid[n // cols, n % cols])
        ax.imshow(images[n], cmap="gray" if images[n].ndim == 2 else None, vmin=0, vmax=255)
        ax.set_title(classes[int(labels[n])][:12], fontsize=8)
        ax.axis("off")
    bars = fig.add_subplot(grid[rows:, :])
    k, width = len(classes), 0.8 / max(len(counts), 1)
    for i, (split, y) in enumerate(counts.items()):
        bars.bar(np.arange(k) + i * width, np.bincount(y, minlength=k), width, label=f"{split} ({len(y):,})")
    bars.set_xticks(np.arange(k) + width * (len(counts) - 1) / 2, [c[:12] for c in classes],
                    fontsize=8 if k > 10 else 9)
    bars.set(ylabel="images", title="images per class")
    bars.set_ylim(0, bars.get_ylim()[1] * 1.3)  # room for the legend above the bars
    bars.legend(loc="upper right", ncols=len(counts))
    if title:
        fig.suptitle(title)
    return fig


def run_figure(rows: list[dict], title: str = "") -> Any:
    """Loss and accuracy of training and validation per epoch, and the learning rate at each epoch's end."""
    fig = _figure(12, 3.6)
    loss, acc, lr = fig.subplots(1, 3)
    for ax, key, name in ((loss, "loss", "loss"), (acc, "acc", "accuracy")):
        _curve(ax, rows, f"train_{key}", "training")
        _curve(ax, rows, f"val_{key}", "validation")
        ax.set(title=name, xlabel="epoch")
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend()
    _curve(lr, rows, "lr", "learning rate", color="tab:green")
    lr.set(title="learning rate", xlabel="epoch")
    lr.grid(alpha=0.3)
    if not rows:
        loss.text(0.5, 0.5, "no epoch finished yet", ha="center", va="center", transform=loss.transAxes)
    if title:
        fig.suptitle(title)
    return fig


def runs_figure(runs: list[tuple[str, list[dict]]], title: str = "") -> Any:
    """Several runs side by side: validation accuracy and training loss per epoch, a line each."""
    fig = _figure(12, 4.2)
    acc, loss = fig.subplots(1, 2)
    for name, rows in runs:
        drawn = _curve(acc, rows, "val_acc", name)
        _curve(loss, rows, "train_loss", name, color=acc.lines[-1].get_color() if drawn else None)
    acc.set(title="validation accuracy", xlabel="epoch")
    loss.set(title="training loss", xlabel="epoch")
    for ax in (acc, loss):
        ax.grid(alpha=0.3)
    if acc.has_data():
        acc.legend(fontsize="small")
    fig.suptitle(title or f"{len(runs)} run(s)")
    return fig


def evaluation_figure(confusion: np.ndarray, classes: list[str], mistakes: list[dict],
                      images: np.ndarray | None, title: str = "") -> Any:
    """The confusion matrix (rows: the true class, counts in the cells) beside the most confidently wrong
    images, each captioned with its true and predicted label and the probability given."""
    shown = len(mistakes) if images is not None else 0
    cols = 4 if shown else 0
    rows = max(math.ceil(shown / cols), 1) if cols else 1
    fig = _figure(6.5 + 2 * cols, max(6.0, 1.9 * rows))
    grid = fig.add_gridspec(rows, 1 + cols, width_ratios=[3.2, *[1] * cols])
    ax = fig.add_subplot(grid[:, 0])
    k = len(classes)
    ax.imshow(confusion, cmap="Blues")
    if k <= 20:
        top = confusion.max() or 1
        for i in range(k):
            for j in range(k):
                ax.text(j, i, int(confusion[i, j]), ha="center", va="center", fontsize=7 if k > 10 else 8,
                        color="white" if confusion[i, j] > top / 2 else "black")
        ax.set_xticks(range(k), [c[:10] for c in classes], rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(k), [c[:14] for c in classes], fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title="confusion matrix")
    for n, m in enumerate(mistakes[:shown]):
        cell = fig.add_subplot(grid[n // cols, 1 + n % cols])
        image = images[n] if images is not None else None
        cell.imshow(image, cmap="gray" if image is not None and image.ndim == 2 else None, vmin=0, vmax=255)
        cell.set_title(f"{m['label'][:12]} → {m['predicted'][:12]}\np = {m['probability']:.2f}", fontsize=8)
        cell.axis("off")
    if shown:
        title = f"{title}; right: the most confidently wrong, true → predicted" if title else ""
    if title:
        fig.suptitle(title)
    return fig


def save(fig: Any, path: Path) -> Path:
    """Write ``fig`` as a new PNG file (never over an existing file)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    with open(path, "xb") as f:  # O_EXCL: mnist-kit never writes over a file it did not make
        try:
            fig.savefig(f, format="png", dpi=100)
        except BaseException:
            Path(path).unlink(missing_ok=True)  # ours: made by this open
            raise
    return path
