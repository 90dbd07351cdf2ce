#!/usr/bin/env python
"""Digits rendered from fonts, framed as MNIST was made: a stand-in for handwriting where real MNIST cannot
be downloaded (used to measure augmentation and photo robustness; see docs/performance.md).

Every font file found (DejaVu, Liberation, ... under /usr/share/fonts) and Pillow's own font, each digit at a
random size, weight (Pillow's stroke), slant (shear), rotation and position, then brought to 28x28 the way
MNIST was made (``nist_style``: binary, fitted to 20x20 with anti-aliasing, centred by mass). The test set is
drawn in fonts the training set never saw (HELD_OUT), as MNIST's test writers were not its training writers.
Writes the four MNIST IDX files:

    .venv/bin/python scripts/font_digits.py OUT [--train 20000] [--test 5000] [--seed 0]
    mnist-kit prepare --from-dir OUT --no-verify -o data.root=...     # then train on it as "mnist"

Pure Pillow and numpy; independent of mnist_kit.data.augment (its transforms are what is measured).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mnist_kit.data.idx import write_idx  # noqa: E402

HELD_OUT = ("LiberationSerif", "SansMono", None)  # fonts only the test set uses, as MNIST's test writers were
# not its training writers (None: Pillow's own font)


def fonts() -> tuple[list, list]:
    """(training fonts, test fonts): every TrueType font under /usr/share/fonts and Pillow's own, the
    HELD_OUT families for the test set alone (all fonts for both when fewer than two are found)."""
    found = sorted(str(p) for p in Path("/usr/share/fonts").rglob("*.ttf")) if Path("/usr/share/fonts").is_dir() else []
    everything = [*found, None]
    test = [f for f in everything if f is None or any(h and h in Path(f).name for h in HELD_OUT)]
    train = [f for f in everything if f not in test]
    return (train, test) if train and len(test) > 1 else (everything, everything)


def render(digit: int, font_path: str | None, rng: np.random.Generator) -> np.ndarray:
    size = int(rng.integers(40, 120))
    font = ImageFont.truetype(font_path, size) if font_path else ImageFont.load_default(size=size)
    side = size * 2
    img = Image.new("L", (side, side), 0)
    stroke = int(rng.integers(0, max(1, size // 18) + 1))
    ImageDraw.Draw(img).text((side * 0.3 + rng.integers(-5, 6), side * 0.1 + rng.integers(-5, 6)), str(digit),
                             fill=255, font=font, stroke_width=stroke, stroke_fill=255)
    slant = rng.uniform(-0.3, 0.3)  # like handwriting's lean
    img = img.transform(img.size, Image.Transform.AFFINE, (1, slant, -slant * side / 2, 0, 1, 0),
                        resample=Image.Resampling.BILINEAR)
    img = img.rotate(rng.uniform(-10, 10), resample=Image.Resampling.BILINEAR)
    return nist_style(np.asarray(img) > 127)


def nist_style(ink: np.ndarray) -> np.ndarray:
    """MNIST's own recipe (LeCun et al.): a binary digit, cropped, scaled with anti-aliasing (area
    averaging) to fit 20x20 keeping its aspect, placed in 28x28 with its centre of mass at the centre.
    Deliberately not ``predict``'s preprocessing, which photos go through: as with real MNIST, the model
    then meets photos made by another pipeline than its training images."""
    ys, xs = np.nonzero(ink)
    crop = ink[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    h, w = crop.shape
    scale = 20.0 / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    small = np.asarray(Image.fromarray(crop.astype(np.uint8) * 255).resize((nw, nh), Image.Resampling.BOX),
                       np.float64)
    total = small.sum()
    cy, cx = (small.sum(1) * np.arange(nh)).sum() / total, (small.sum(0) * np.arange(nw)).sum() / total
    oy, ox = min(max(int(round(13.5 - cy)), 0), 28 - nh), min(max(int(round(13.5 - cx)), 0), 28 - nw)
    out = np.zeros((28, 28), np.uint8)
    out[oy:oy + nh, ox:ox + nw] = np.round(small).astype(np.uint8)
    return out


def make(n: int, seed: int, pool: list) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n).astype(np.uint8)
    x = np.stack([render(int(d), pool[int(rng.integers(len(pool)))], rng) for d in y])
    return x, y


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--train", type=int, default=20000)
    ap.add_argument("--test", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    train_fonts, test_fonts = fonts()
    args.out.mkdir(parents=True, exist_ok=True)
    (xtr, ytr), (xte, yte) = make(args.train, args.seed, train_fonts), make(args.test, args.seed + 1, test_fonts)
    for name, arr in (("train-images-idx3-ubyte", xtr), ("train-labels-idx1-ubyte", ytr),
                      ("t10k-images-idx3-ubyte", xte), ("t10k-labels-idx1-ubyte", yte)):
        write_idx(args.out / name, arr)
    print(f"{args.train} training digits from {len(train_fonts)} fonts and {args.test} test digits from "
          f"{len(test_fonts)} other fonts in {args.out}")


if __name__ == "__main__":
    main()
