"""Photos made from a test set: how well a model reads pictures people take, not only the test set.

Each 28x28 test image becomes a picture as a phone or scanner would give it: scaled up to a digit 40-260
pixels tall (smooth strokes, as ink is), dark ink on tinted paper (one in seven light ink on dark, as a
drawing pad gives), placed off-centre on a larger page, uneven light, blur, sensor noise, then saved as
JPEG (quality 60-95), PNG, or PNG with the ink only in its alpha channel. ``predict`` must then undo all of
it (its preprocessing is the one used here), and the model must read what comes out.

Everything is drawn from ``default_rng([seed, i])`` for photo ``i``: the same seed gives the same photos.

    photos.write_photos(x_test, y_test, folder, count=300, seed=0) -> [(path, label), ...]
    photos.photo_set(x_test, y_test, "mnist", count=300) -> (inputs as predict reads them, labels, suffixes)
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from mnist_kit import datasets
from mnist_kit.deploy.preprocess import preprocess

FORMATS = (("jpg", 0.6), ("png", 0.25), ("alpha.png", 0.15))  # kind, share


def make_photo(image: np.ndarray, rng: np.random.Generator) -> tuple[bytes, str]:
    """One test image (uint8 28x28, white on black) -> (encoded picture, file suffix)."""
    height = int(rng.integers(40, 261))
    digit = Image.fromarray(np.asarray(image, np.uint8), "L").resize((height, height), Image.Resampling.BICUBIC)
    ink = np.asarray(digit, np.float64) / 255.0
    page_h, page_w = (int(height * rng.uniform(1.3, 3.0)) for _ in range(2))
    top, left = int(rng.integers(0, page_h - height + 1)), int(rng.integers(0, page_w - height + 1))
    a = np.zeros((page_h, page_w))
    a[top:top + height, left:left + height] = ink
    blur = rng.uniform(0.3, 1.5) * height / 100
    a = np.asarray(Image.fromarray(np.round(a * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(blur)),
                   np.float64) / 255.0
    kind = rng.choice([k for k, _ in FORMATS], p=[p for _, p in FORMATS])
    if kind == "alpha.png":  # a drawing exported with a transparent background: ink only in alpha
        rgb = np.broadcast_to(rng.integers(0, 80, 3).astype(np.uint8), (page_h, page_w, 3))
        rgba = np.dstack([rgb, np.round(a * 255).astype(np.uint8)])
        return _encode(Image.fromarray(rgba, "RGBA"), "PNG"), ".alpha.png"
    paper = rng.uniform(190, 250) - rng.uniform(0, 25, 3)  # tinted
    pen = rng.uniform(10, 90) + rng.uniform(0, 40, 3)
    if rng.random() < 1 / 7:  # light ink on a dark ground
        paper, pen = 255 - paper, 255 - pen
    ys, xs = np.linspace(0, 1, page_h)[:, None], np.linspace(0, 1, page_w)[None, :]
    light = 1.0 - rng.uniform(0, 0.2) * (xs if rng.random() < 0.5 else ys)  # a shadow across the page
    noise = rng.uniform(2, 10)
    rgb = np.stack([(paper[c] * (1 - a) + pen[c] * a) * light + rng.normal(0, noise, a.shape) for c in range(3)],
                   axis=-1)
    img = Image.fromarray(np.clip(np.round(rgb), 0, 255).astype(np.uint8), "RGB")
    if kind == "jpg":
        return _encode(img, "JPEG", quality=int(rng.integers(60, 96))), ".jpg"
    return _encode(img, "PNG"), ".png"


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def choose(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Which test images become photos: ``count`` of them (at most all), a seeded draw, in order."""
    count = min(count, len(labels))
    return np.sort(np.random.default_rng([seed, 1]).choice(len(labels), count, replace=False))


def write_photos(x: np.ndarray, y: np.ndarray, folder: Path, count: int, seed: int = 0) -> list[tuple[Path, int]]:
    """Photos of ``count`` test images into ``folder`` (which must exist), named ``NNNN-label-K.ext``;
    returns (path, label) pairs. Files are written whole (a temporary name, then renamed)."""
    out = []
    for n, i in enumerate(choose(y, count, seed)):
        blob, suffix = make_photo(x[i], np.random.default_rng([seed, int(i)]))
        path = Path(folder) / f"{n:04d}-label-{int(y[i])}{suffix}"
        tmp = path.with_name(f".{path.name}.partial")
        tmp.write_bytes(blob)
        tmp.replace(path)
        out.append((path, int(y[i])))
    return out


def photo_set(x: np.ndarray, y: np.ndarray, dataset: str, count: int, seed: int = 0,
              folder: Path | None = None) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    """Photos of ``count`` of the images ``x`` (an MNIST-style test set of ``dataset``), read back the way
    ``predict`` reads a file: (inputs uint8 (N, 28, 28), labels, file suffixes, the indices of the test
    images they were made from). The files go into
    ``folder`` when given (it is created; existing photos there are replaced only by name), else into a
    temporary folder that is removed."""
    style = datasets.get(dataset).photo_style
    if folder is not None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        return (*_read_back(write_photos(x, y, Path(folder), count, seed), style), choose(y, count, seed))
    with tempfile.TemporaryDirectory(prefix="mnist-kit-photos.") as tmp:
        return (*_read_back(write_photos(x, y, Path(tmp), count, seed), style), choose(y, count, seed))


def _read_back(files: list[tuple[Path, int]], style: str):
    inputs = np.stack([preprocess(path, style) for path, _ in files]) if files else np.zeros((0, 28, 28), np.uint8)
    return inputs, np.array([label for _, label in files], np.int64), ["".join(p.suffixes) for p, _ in files]
