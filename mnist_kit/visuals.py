"""Pictures for the log: labelled image grids and the confusion matrix, as RGB uint8 arrays (H, W, 3)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

_FONT = ImageFont.load_default()
MAX_TILES = 400  # the most images one grid draws (a picture's memory grows with them)
MAX_CLASSES = 40  # the most classes a confusion-matrix picture draws: those with the most errors


def _text_width(draw: ImageDraw.ImageDraw, text: str) -> int:
    left, _, right, _ = draw.textbbox((0, 0), text, font=_FONT)
    return right - left


def grid(images: np.ndarray, captions: list[str], columns: int = 8, tile: int = 84,
         colors: list[tuple] | None = None) -> np.ndarray:
    """uint8 images (N, H, W) or (N, H, W, 3) in a grid, each scaled to fit ``tile`` pixels (28x28 -> 3x)
    with its caption underneath (optionally coloured)."""
    n = min(len(images), MAX_TILES)
    if n == 0:
        return np.zeros((16, 16, 3), np.uint8)
    images, captions = images[:n], captions[:n]
    scale = tile / max(images.shape[1], images.shape[2])
    h, w = max(1, round(images.shape[1] * scale)), max(1, round(images.shape[2] * scale))
    cap, pad = 14, 2
    rows = -(-n // columns)
    cols = min(n, columns)
    canvas = Image.new("RGB", (cols * (w + pad) + pad, rows * (h + cap + pad) + pad), (40, 40, 40))
    draw = ImageDraw.Draw(canvas)
    resample = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.LANCZOS
    for i, (img, text) in enumerate(zip(images, captions)):
        r, c = divmod(i, columns)
        x, y = pad + c * (w + pad), pad + r * (h + cap + pad)
        img = np.asarray(img, np.uint8)
        picture = Image.fromarray(img, "L" if img.ndim == 2 else "RGB")
        canvas.paste(picture.resize((w, h), resample).convert("RGB"), (x, y))
        text = text if _text_width(draw, text) <= w else text[: max(1, w // 6)]
        draw.text((x + 1, y + h + 1), text, fill=(colors[i] if colors else (230, 230, 230)), font=_FONT)
    return np.asarray(canvas)


def confusion_image(cm: np.ndarray, classes: list[str], cell: int = 44) -> np.ndarray:
    """The confusion matrix as a heat map with counts; rows are true classes, columns predictions. Of more
    than MAX_CLASSES classes, the MAX_CLASSES with the most errors are drawn (labelled by their index)."""
    cm, total = np.asarray(cm), len(classes)
    index = np.arange(total)
    if total > MAX_CLASSES:
        errors = cm.sum(axis=0) + cm.sum(axis=1) - 2 * np.diag(cm)
        index = np.sort(np.argsort(-errors, kind="stable")[:MAX_CLASSES])
        cm = cm[np.ix_(index, index)]
    classes = [f"{i} {classes[i]}" for i in index]
    k = len(classes)
    margin_left, margin_top = 110, 40
    size = (margin_left + k * cell + 10, margin_top + k * cell + 30)
    canvas = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    row_totals = np.maximum(cm.sum(axis=1, keepdims=True), 1)
    share = cm / row_totals
    for i in range(k):
        draw.text((4, margin_top + i * cell + cell // 2 - 5), classes[i][:17], fill=(0, 0, 0), font=_FONT)
        draw.text((margin_left + i * cell + cell // 2 - 3, margin_top - 14), str(index[i]), fill=(0, 0, 0),
                  font=_FONT)
        for j in range(k):
            v = share[i, j]
            color = (int(255 - 200 * v), int(255 - 120 * v), 255) if i == j else (255, int(255 - 200 * v),
                                                                                    int(255 - 200 * v))
            x, y = margin_left + j * cell, margin_top + i * cell
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=color, outline=(200, 200, 200))
            text = str(int(cm[i, j]))
            draw.text((x + (cell - _text_width(draw, text)) // 2, y + cell // 2 - 5), text, fill=(0, 0, 0),
                      font=_FONT)
    draw.text((margin_left, margin_top + k * cell + 8), "columns: predicted class; rows: true class",
              fill=(80, 80, 80), font=_FONT)
    title = "confusion matrix" + (f": the {k} of {total} classes with the most errors" if k < total else "")
    draw.text((4, 4), title, fill=(0, 0, 0), font=_FONT)
    return np.asarray(canvas)
