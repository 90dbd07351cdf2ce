"""Pictures for the log: labelled image grids and the confusion matrix, as RGB uint8 arrays (H, W, 3)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

MAX_TILES = 400  # the most images one grid draws (a picture's memory grows with them)
MAX_CLASSES = 40  # the most classes a confusion-matrix picture draws: those with the most errors
# Pictures are drawn for the board's thumbnail, 388 x 219 pixels in a window 1400 pixels wide, at twice
# that size (sharp on a high-density screen, and under "Show Actual Image Size"): text FONT_PX high shows
# FONT_PX / 2 pixels high in the thumbnail, readable without opening the picture.
THUMB_W, THUMB_H = 776, 438
FONT_PX, SMALLEST_FONT_PX = 20, 16
MIN_TILE, PAD = 28, 2
SHOWN = 32  # the images a grid of samples or of mistakes shows: 8 x 4 at most, captions readable


def font(px: int = FONT_PX):
    return ImageFont.load_default(size=px)


def _text_width(draw: ImageDraw.ImageDraw, text: str, face) -> int:
    left, _, right, _ = draw.textbbox((0, 0), text, font=face)
    return int(right - left)


def fit_text(draw: ImageDraw.ImageDraw, text: str, width: int, px: int = FONT_PX):
    """(text, font) that fit ``width`` pixels: the font made smaller down to SMALLEST_FONT_PX, then the
    text cut with an ellipsis."""
    for size in range(px, SMALLEST_FONT_PX - 1, -2):
        face = font(size)
        if _text_width(draw, text, face) <= width:
            return text, face
    while len(text) > 1 and _text_width(draw, text + "…", face) > width:
        text = text[:-1]
    return text + "…", face


def _layout(n: int, columns: int | None, label_w: int, cap: int) -> tuple[int, int, int]:
    """(tile, columns, rows) with the largest tile that keeps the grid within the thumbnail's box."""
    best: tuple[int, int, int] | None = None
    for c in [columns] if columns else range(1, n + 1):
        r = -(-n // c)
        tile = min((THUMB_W - label_w - PAD) // c - PAD, (THUMB_H - PAD) // r - PAD - cap)
        if best is None or tile > best[0]:
            best = (tile, c, r)
    assert best is not None  # n >= 1: one layout at least
    tile, c, r = best
    return max(tile, MIN_TILE), c, r  # too many images for the box: the picture grows past it


def grid(images: np.ndarray, captions: list[str], columns: int | None = None, colors: list[tuple] | None = None,
         row_labels: list[str] | None = None) -> np.ndarray:
    """uint8 images (N, H, W) or (N, H, W, 3) in a grid sized for the board's thumbnail, each under its
    caption (optionally coloured); with ``row_labels``, one label at the start of each row instead."""
    n = min(len(images), MAX_TILES)
    if n == 0:
        return np.zeros((16, 16, 3), np.uint8)
    images, captions = images[:n], captions[:n]
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = max((_text_width(probe, t, font()) for t in row_labels), default=0) + 8 if row_labels else 0
    label_w = min(label_w, THUMB_W // 4)
    cap = 0 if row_labels else FONT_PX + 6
    tile, cols, rows = _layout(n, columns, label_w, cap)
    cols = min(n, cols)
    scale = tile / max(images.shape[1], images.shape[2])
    h, w = max(1, round(images.shape[1] * scale)), max(1, round(images.shape[2] * scale))
    canvas = Image.new("RGB", (label_w + cols * (w + PAD) + PAD, rows * (h + cap + PAD) + PAD), (40, 40, 40))
    draw = ImageDraw.Draw(canvas)
    resample = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.LANCZOS
    for r, label in enumerate(row_labels or []):
        text, face = fit_text(draw, label, label_w - 6)
        draw.text((4, PAD + r * (h + PAD) + (h - FONT_PX) // 2), text, fill=(230, 230, 230), font=face)
    for i, (img, text) in enumerate(zip(images, captions)):
        r, c = divmod(i, cols)
        x, y = label_w + PAD + c * (w + PAD), PAD + r * (h + cap + PAD)
        img = np.asarray(img, np.uint8)
        picture = Image.fromarray(img, "L" if img.ndim == 2 else "RGB")
        canvas.paste(picture.resize((w, h), resample).convert("RGB"), (x, y))
        if cap and text:
            text, face = fit_text(draw, text, w)
            draw.text((x + 1, y + h + 2), text, fill=(colors[i] if colors else (230, 230, 230)), font=face)
    return np.asarray(canvas)


def confusion_image(cm: np.ndarray, classes: list[str]) -> np.ndarray:
    """The confusion matrix as a heat map with counts, sized for the board's thumbnail; rows are true
    classes, columns predictions. Of more than MAX_CLASSES classes, the MAX_CLASSES with the most errors
    are drawn (labelled by their index)."""
    cm, total = np.asarray(cm), len(classes)
    index = np.arange(total)
    if total > MAX_CLASSES:
        errors = cm.sum(axis=0) + cm.sum(axis=1) - 2 * np.diag(cm)
        index = np.sort(np.argsort(-errors, kind="stable")[:MAX_CLASSES])
        cm = cm[np.ix_(index, index)]
    names = [f"{i} {classes[i]}" if str(classes[i]) != str(i) else str(i) for i in index]
    k = len(names)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    margin_left = min(max(_text_width(probe, t, font()) for t in names) + 12, THUMB_W // 3)
    margin_top = 2 * (FONT_PX + 8)
    cell = max((THUMB_H - margin_top - PAD) // k, MIN_TILE)
    canvas = Image.new("RGB", (margin_left + k * cell + PAD, margin_top + k * cell + PAD), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    title = "confusion: rows true, columns predicted" + (f" ({k} of {total} classes)" if k < total else "")
    text, face = fit_text(draw, title, canvas.width - 8)
    draw.text((4, 2), text, fill=(0, 0, 0), font=face)
    share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    for i in range(k):
        text, face = fit_text(draw, names[i], margin_left - 8)
        draw.text((4, margin_top + i * cell + (cell - FONT_PX) // 2), text, fill=(0, 0, 0), font=face)
        text, face = fit_text(draw, str(index[i]), cell - 2)
        draw.text((margin_left + i * cell + (cell - _text_width(draw, text, face)) // 2, FONT_PX + 8), text,
                  fill=(0, 0, 0), font=face)
        for j in range(k):
            v = share[i, j]
            color = (int(255 - 200 * v), int(255 - 120 * v), 255) if i == j else (255, int(255 - 200 * v),
                                                                                    int(255 - 200 * v))
            x, y = margin_left + j * cell, margin_top + i * cell
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=color, outline=(200, 200, 200))
            count = int(cm[i, j])
            text, face = fit_text(draw, str(count), cell - 2)
            if text.endswith("…"):  # too wide for the cell: in thousands
                text, face = fit_text(draw, f"{count / 1000:.0f}k", cell - 2)
            draw.text((x + (cell - _text_width(draw, text, face)) // 2, y + (cell - FONT_PX) // 2), text,
                      fill=(0, 0, 0), font=face)
    return np.asarray(canvas)
