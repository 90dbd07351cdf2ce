#!/usr/bin/env python
"""Benchmark (not a test): an image-folder data set the size of a real one, through mnist-kit, against the
tutorial way of reading it (a paddle.io.Dataset that opens and resizes each file every epoch).

It writes a synthetic stand-in for pump dynamometer cards: 12 classes, unbalanced (300 down to 15 images),
190x400 grayscale PNGs of a closed load-position loop whose shape depends on the class, with noise. Then:
`mnist-kit prepare` (decoding once into the cache), `mnist-kit train --config configs/folder.yaml`,
`mnist-kit eval`; and, for the reference, one epoch of the same network fed by a file-reading Dataset +
DataLoader. Prints one table: images/s of decoding and of training, accuracy, peak RSS.

    .venv/bin/python scripts/bench_folder.py [--epochs 8] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
COUNTS = [300, 200, 150, 120, 100, 80, 60, 50, 40, 30, 20, 15]


def card(k: int, rng) -> np.ndarray:
    """A 190x400 dark loop on light paper; class k sets the loop's harmonics and a notch."""
    from PIL import Image, ImageDraw

    t = np.linspace(0, 2 * np.pi, 400)
    x = 0.5 - 0.42 * np.cos(t)
    y = 0.5 + 0.35 * np.sin(t) + 0.08 * np.sin((2 + k % 4) * t + k) * (1 + (k // 4) * 0.6)
    y += (0.15 if k % 3 == 0 else -0.1 if k % 3 == 1 else 0.0) * np.exp(-((t - 1.5 - (k // 3) * 0.6) ** 2) * 8)
    x += rng.normal(0, 0.004, t.size)
    y += rng.normal(0, 0.004, t.size)
    img = Image.fromarray(rng.integers(225, 256, size=(190, 400)).astype(np.uint8), "L")
    ImageDraw.Draw(img).line(list(zip(x * 399, (1 - y) * 189)), fill=int(rng.integers(0, 40)), width=2)
    return img


def write_cards(folder: Path, seed: int = 0) -> int:
    rng = np.random.default_rng(seed)
    for k, n in enumerate(COUNTS):
        d = folder / f"class_{k:02d}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            card(k, rng).save(d / f"{i:04d}.png")
    return sum(COUNTS)


def mnist_kit(*args, env=None) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mnist_kit", *map(str, args)], capture_output=True, text=True,
                          env=env)
    if proc.returncode != 0:
        raise SystemExit(f"mnist-kit {' '.join(map(str, args))} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0, proc.stdout


def reference_epoch(folder: Path, cfg: dict) -> dict:
    """The tutorial way: a Dataset that opens, converts and resizes each file in __getitem__, one epoch."""
    from PIL import Image

    from mnist_kit.backend.runtime import paddle
    from mnist_kit.models.networks import build_model

    h, w = cfg.data.image_size
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    files = [(p, k) for k, c in enumerate(classes) for p in sorted((folder / c).iterdir())]

    class Files(paddle.io.Dataset):
        def __len__(self):
            return len(files)

        def __getitem__(self, i):
            path, label = files[i]
            img = Image.open(path).convert("L").resize((w, h), Image.Resampling.LANCZOS)
            return (np.asarray(img, np.float32)[None] / 255.0 - 0.5) / 0.5, np.int64(label)

    paddle.seed(0)
    model = build_model(cfg.model, (1, h, w), len(classes))
    opt = paddle.optimizer.Adam(learning_rate=cfg.optimizer.lr, parameters=model.parameters())
    loader = paddle.io.DataLoader(Files(), batch_size=cfg.train.batch_size, shuffle=True, num_workers=0)
    model.train()
    t0 = time.perf_counter()
    for x, y in loader:
        loss = paddle.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.clear_grad()
    return {"train_ips": len(files) / (time.perf_counter() - t0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="mnist-kit-bench-folder."))
    work.mkdir(parents=True, exist_ok=True)
    try:
        folder = work / "cards"
        t0 = time.perf_counter()
        n = write_cards(folder) if not folder.is_dir() else sum(COUNTS)
        print(f"{n} synthetic cards (190x400 PNG, 12 classes, {COUNTS[0]} down to {COUNTS[-1]} per class) "
              f"in {folder} ({time.perf_counter() - t0:.1f} s to write)", file=sys.stderr)
        import os

        from mnist_kit import config

        env = {**os.environ, "MNIST_KIT_DATA": str(work / "data")}
        common = ["--config", REPO / "configs" / "folder.yaml", "-o", f"data.folder={folder}"]
        cfg = config.load(REPO / "configs" / "folder.yaml", [f"data.folder={folder}"])
        prep_s, _ = mnist_kit("prepare", *common, "--force", env=env)
        cache = next((work / "data" / "image_folder").glob("cards-*/arrays*.npz"))
        train_s, _ = mnist_kit("train", *common, "-o", f"train.epochs={args.epochs}", "-o",
                               f"output.root={work / 'runs'}", "--name", "cards", env=env)
        run = work / "runs" / "cards"
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        _, out = mnist_kit("eval", "--run", run, "--json", env=env)
        result = json.loads(out)
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        ref = reference_epoch(folder, cfg)
        ips = float(np.mean([r["images_per_sec"] for r in rows[1:] or rows]))
        print(f"\nimage-folder benchmark: {n} images decoded to {cfg.data.image_size[0]}x"
              f"{cfg.data.image_size[1]} ({cfg.data.resize}), configs/folder.yaml, 2 CPU cores\n")
        print("| measure | mnist-kit | reference: Dataset reading files each epoch |")
        print("|---|---|---|")
        print(f"| decoding, images/s | {n / prep_s:,.0f} (prepare, once: {prep_s:.1f} s, cache "
              f"{cache.stat().st_size / 2**20:.1f} MiB) | decoded in every epoch |")
        print(f"| training, images/s (oversampled epoch) | {ips:,.0f} | {ref['train_ips']:,.0f} "
              f"({ips / ref['train_ips']:.2f}x) |")
        print(f"| {args.epochs} epochs, wall (validation, logging, checkpoints included) | {train_s:.0f} s | |")
        print(f"| best validation accuracy | {100 * max(r['val_acc'] for r in rows):.2f}% | |")
        print(f"| test accuracy / macro F1 ({result['samples']} images) | {100 * result['accuracy']:.2f}% / "
              f"{result['macro_f1']:.3f} | |")
        print(f"| peak RSS of a mnist-kit process | {peak:,.0f} MiB | |")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
