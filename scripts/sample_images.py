#!/usr/bin/env python
"""Write a few test-set images of a prepared data set as image files, to try `mnist-kit predict` on.

Each is saved twice: as the 28x28 original, and as a "photo": dark on light grey paper, enlarged,
off-centre, JPEG-compressed, the way a person's picture would come in. The true class is in the name.

    .venv/bin/python scripts/sample_images.py OUTDIR [--dataset mnist] [--count 5]
"""

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from mnist_kit import data, datasets


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--dataset", default="mnist", choices=list(datasets.IDX))
    ap.add_argument("--count", type=int, default=5)
    args = ap.parse_args()
    prepared = data.load(args.dataset, data.data_root())
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(args.count):
        x, y = prepared.x_test[i], int(prepared.y_test[i])
        label = prepared.classes[y].replace("/", "-").replace(" ", "-")
        Image.fromarray(x).save(args.out / f"test{i}_true-{label}.png")
        big = Image.fromarray(255 - x).resize((168, 168), Image.Resampling.BICUBIC)
        paper = Image.new("L", (480, 360), 225)
        paper.paste(big, (int(rng.integers(20, 290)), int(rng.integers(20, 170))))
        paper.convert("RGB").save(args.out / f"photo{i}_true-{label}.jpg", quality=80)
    print(f"wrote {2 * args.count} images to {args.out}")


if __name__ == "__main__":
    main()
