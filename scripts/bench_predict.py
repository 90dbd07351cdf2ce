#!/usr/bin/env python
"""Benchmark (not a test): prediction latency, throughput and the cold start of `mnist-kit predict`.

On an exported model (default: the newest export under checkpoints/) and its prepared data set:
single-image latency in process, batch throughput on the test set, the cost of preprocessing one photo,
and the wall time of one `mnist-kit predict` command from a cold start, split into what dominates it.
The reference in the same run is the same exported model run the plain way, in dygraph through
`paddle.jit.load` (no pickle either).

    .venv/bin/python scripts/bench_predict.py [--model DIR] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from mnist_kit import data
from mnist_kit.deploy import inference, predict
from mnist_kit.deploy.preprocess import preprocess


def per_call_ms(fn, repeats: int) -> tuple[float, float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return statistics.median(times), times[int(0.9 * (len(times) - 1))]


def wall(argv: list[str], runs: int) -> float:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path)
    ap.add_argument("--root", type=Path, default=Path("checkpoints"))
    ap.add_argument("--runs", type=int, default=5, help="cold starts to time")
    args = ap.parse_args()
    model_dir = args.model or predict.newest_export(args.root)
    meta = inference.read_meta(model_dir)
    prepared = data.load(meta["dataset"], data.data_root())
    x = prepared.x_test

    p = inference.Predictor(model_dir)
    one = p.normalize(x[:1])
    p.logits(one)
    lat_med, lat_p90 = per_call_ms(lambda: p.logits(one), 1000)
    batch = p.normalize(x)
    t0 = time.perf_counter()
    pred = np.concatenate([p.logits(batch[i:i + 1000]).argmax(1) for i in range(0, len(batch), 1000)])
    thr = len(batch) / (time.perf_counter() - t0)
    acc = float((pred == prepared.y_test).mean())

    import paddle  # the reference: the same export in dygraph

    layer = paddle.jit.load(str(next(model_dir.glob("model.*")).with_suffix("")))
    layer.eval()
    with paddle.no_grad():
        layer(paddle.to_tensor(one))
        ref_med, ref_p90 = per_call_ms(lambda: layer(paddle.to_tensor(one)).numpy(), 300)
        t0 = time.perf_counter()
        for i in range(0, len(batch), 1000):
            layer(paddle.to_tensor(batch[i:i + 1000])).numpy()
        ref_thr = len(batch) / (time.perf_counter() - t0)

    with tempfile.TemporaryDirectory() as tmp:
        big = Image.fromarray(255 - x[0]).resize((168, 168), Image.Resampling.BICUBIC)
        paper = Image.new("L", (640, 480), 225)
        paper.paste(big, (300, 150))
        photo = Path(tmp) / "photo.jpg"
        paper.convert("RGB").save(photo, quality=85)
        pre_med, _ = per_call_ms(lambda: preprocess(photo, meta.get("preprocess", "digit")), 50)
        py = sys.executable
        t_python = wall([py, "-c", "pass"], args.runs)
        t_cli = wall([py, "-c", "import mnist_kit.cli"], args.runs)
        t_paddle = wall([py, "-c", "import warnings; warnings.simplefilter('ignore'); import paddle.inference"],
                        args.runs)
        t_predict = wall([py, "-m", "mnist_kit", "predict", "--model", str(model_dir), str(photo)], args.runs)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024

    print(f"\nmnist-kit predict benchmark: {model_dir} ({meta['dataset']}, {meta['model']['name']}), "
          f"{os.cpu_count()} CPU cores, paddle {meta['versions']['paddle']}")
    print("| measure | Paddle Inference (mnist-kit) | reference: paddle.jit.load, dygraph | ratio |")
    print("|---|---|---|---|")
    print(f"| single image, in process (median / p90) | {lat_med:.3f} / {lat_p90:.3f} ms | "
          f"{ref_med:.3f} / {ref_p90:.3f} ms | {ref_med / lat_med:.1f}x faster |")
    print(f"| test set in batches of 1000 | {thr:,.0f} images/s | {ref_thr:,.0f} images/s | "
          f"{thr / ref_thr:.1f}x |")
    print(f"| accuracy on the test set (no preprocessing) | {acc:.2%} | | |")
    print(f"| preprocessing one 640x480 JPEG photo | {pre_med:.1f} ms | | |")
    print(f"| `mnist-kit predict` on one photo, cold start (median of {args.runs}) | {t_predict:.2f} s | | |")
    print(f"|   of which: python start-up | {t_python:.2f} s | | |")
    print(f"|   importing mnist_kit.cli (click, yaml, numpy) | {t_cli - t_python:.2f} s | | |")
    print(f"|   importing paddle | {t_paddle - t_python:.2f} s | | |")
    rest = t_predict - t_cli - (t_paddle - t_python)
    print(f"|   the rest: predictor creation, reading, preprocessing, inference | {rest:.2f} s | | |")
    print(f"| peak RSS of a predict process | {peak:,.0f} MiB | | |")


if __name__ == "__main__":
    main()
