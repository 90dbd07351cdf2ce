#!/usr/bin/env python
"""Benchmark (not a test): what augmentation buys on handwriting-like digits, and what it costs.

There is no real MNIST on this machine, so digits are rendered from fonts the way MNIST was made
(``scripts/font_digits.py``: 30 fonts for training, 9 others for the test set). Each recipe trains
``configs/cnn.yaml`` on them (``mnist-kit train``, a fresh process) and is scored by ``mnist-kit eval
--photos``: the test accuracy, the accuracy on photos made from test images, and the same test images as
they are. Prints one table: recipe, train img/s, test accuracy, photo accuracy, the gap.

    .venv/bin/python scripts/bench_augment.py [--train 20000] [--test 5000] [--epochs 3] [--photos 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NO = ["augment.apply=never"]
RECIPES = {  # name -> overrides on configs/cnn.yaml (which sets rotate 10, scale 0.1, translate 0.1)
    "none": NO,
    "cnn.yaml (rotate 10, scale 0.1, translate 0.1)": [],
    "cnn.yaml + stroke 0.5": ["augment.stroke=0.5"],
    "cnn.yaml + shear 10": ["augment.shear=10"],
    "cnn.yaml + elastic 34": ["augment.elastic=34"],
    "stroke 0.5 only": ["augment.rotate=0", "augment.scale=0", "augment.translate=0", "augment.stroke=0.5"],
    "elastic 34 only": ["augment.rotate=0", "augment.scale=0", "augment.translate=0", "augment.elastic=34"],
}


def mk(*args, env) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "mnist_kit", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"mnist-kit {' '.join(map(str, args))} failed:\n{proc.stderr[-2000:]}")
    return proc


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=int, default=20000)
    ap.add_argument("--test", type=int, default=5000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--photos", type=int, default=1000)
    ap.add_argument("--seeds", type=int, default=1, help="train each recipe with seeds 0 .. N-1")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mnist-kit-bench-augment."))
    env = {**os.environ, "MNIST_KIT_DATA": str(tmp / "data")}
    try:
        print("rendering font digits ...", file=sys.stderr)
        subprocess.run([sys.executable, str(REPO / "scripts" / "font_digits.py"), tmp / "idx", "--train",
                        str(args.train), "--test", str(args.test)], check=True, stdout=subprocess.DEVNULL)
        mk("prepare", "--from-dir", tmp / "idx", "--no-verify", env=env)
        rows = []
        for name, overrides in RECIPES.items():
            for seed in range(args.seeds):
                run = tmp / "runs" / f"r{len(rows)}"
                mk("train", "--config", REPO / "configs" / "cnn.yaml", "-o", f"train.epochs={args.epochs}",
                   "-o", f"data.val_size={min(2000, args.train // 10)}", "-o", "output.visualdl=false",
                   "-o", f"output.root={run.parent}", "--name", run.name, "-o", f"train.seed={seed}",
                   *sum((["-o", o] for o in overrides), []), env=env)
                metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
                report = json.loads(mk("eval", "--run", run, "--photos", args.photos, "--json", env=env).stdout)
                ph = report["photos"]
                rows.append((name, seed, sum(m["images_per_sec"] for m in metrics) / len(metrics),
                             report["accuracy"], ph["accuracy"], ph["same_test_images_accuracy"]))
                print(f"  done: {name}, seed {seed}", file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nfont digits ({args.train:,} training / {args.test:,} test, test fonts unseen in training), cnn.yaml, "
          f"{args.epochs} epochs; {args.photos} photos made from test images\n")
    print("| recipe | seed | train img/s | test acc | photo acc | the same test images | photos - those images |")
    print("|---|---|---|---|---|---|---|")
    for name, seed, ips, test, photo, same in rows:
        print(f"| {name} | {seed} | {ips:,.0f} | {100 * test:.2f}% | {100 * photo:.2f}% | {100 * same:.2f}% | "
              f"{100 * (photo - same):+.2f} |")


if __name__ == "__main__":
    main()
