#!/usr/bin/env python
"""Benchmark (not a test): training and evaluation speed and peak memory of each shipped config.

Runs every config through mnist-kit's own engine on the full Fashion-MNIST (prepared from Debian's
dataset-fashion-mnist or any other source), each in a fresh process so that peak memory is its own,
and the tutorial-style Paddle loop (``paddle.io.Dataset`` + ``DataLoader``, same CNN, Adam, batch 64) as
the reference in the same run. Prints one table.

    .venv/bin/python scripts/bench_train.py [--epochs 1] [--configs cnn,mlp,linear] [--reference-steps 300]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def eval_speed(model, x, norm, batch_size=1000, repeats=3):
    from mnist_kit import data, engine

    batches = data.Batches(x, x[:, 0, 0].astype("int64"), batch_size, norm)
    engine.predict(model, batches)  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        engine.predict(model, batches)
    return repeats * len(x) / (time.perf_counter() - t0)


def worker_config(spec: str, epochs: int, out: Path) -> dict:
    """``spec``: a config name, with ``:novdl`` to switch VisualDL logging off."""
    from mnist_kit import config, engine

    name, _, variant = spec.partition(":")
    cfg = config.load(REPO / "configs" / f"{name}.yaml",
                      ["data.name=fashion-mnist", f"train.epochs={epochs}", f"output.root={out}", "output.name=bench",
                       f"output.visualdl={'false' if variant == 'novdl' else 'true'}"])
    t0 = time.perf_counter()
    run = engine.train(cfg, config_name=name)
    wall = time.perf_counter() - t0
    peak = peak_rss_mib()  # training's own high-water mark, before the extra evaluation below
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    trained = engine.load_trained(run)
    result = engine.evaluate_run(run)
    label = f"mnist-kit {name}.yaml" + (", VisualDL off" if variant == "novdl" else "")
    return {"setup": label, "wall_s": wall, "train_ips": sum(r["images_per_sec"] for r in rows) / len(rows),
            "epoch_s": sum(r["epoch_seconds"] for r in rows) / len(rows),
            "eval_ips": eval_speed(trained.model, trained.splits.prepared.x_test, trained.splits.norm),
            "test_acc": result["accuracy"], "epochs": epochs, "peak_mib": peak}


def worker_reference(steps: int) -> dict:
    """The tutorial loop: a Dataset returning one normalised sample at a time, a DataLoader, the same CNN."""
    import numpy as np

    from mnist_kit import data
    from mnist_kit.models import build_model
    from mnist_kit.runtime import paddle

    prepared = data.load("fashion-mnist", data.data_root())

    class Tutorial(paddle.io.Dataset):
        def __init__(self, x, y):
            super().__init__()
            self.x, self.y = x, y

        def __getitem__(self, i):
            return (self.x[i].astype("float32")[None] / 255.0 - 0.5) / 0.5, np.int64(self.y[i])

        def __len__(self):
            return len(self.y)

    paddle.seed(0)
    loader = paddle.io.DataLoader(Tutorial(prepared.x_train, prepared.y_train), batch_size=64, shuffle=True,
                                  drop_last=True)
    model = build_model({"name": "cnn", "channels": [20, 20], "kernel_size": 5, "batch_norm": False,
                         "dropout": 0.0})
    opt = paddle.optimizer.Adam(learning_rate=0.001, parameters=model.parameters())
    model.train()
    done, t0 = 0, None
    for i, (x, y) in enumerate(loader):
        if i == 20:  # warm-up steps are not timed
            t0, done = time.perf_counter(), 0
        loss = paddle.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.clear_grad()
        done += len(y)
        if i >= steps + 20:
            break
    ips = done / (time.perf_counter() - t0)
    return {"setup": "reference: tutorial loop (Dataset+DataLoader), CNN", "wall_s": None, "train_ips": ips,
            "epoch_s": 50000 / ips,
            "eval_ips": None, "test_acc": None, "epochs": None, "peak_mib": peak_rss_mib()}


def run_worker(args: list[str]) -> dict:
    env = {**os.environ}
    proc = subprocess.run([sys.executable, __file__, "--worker", *args], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"benchmark worker {args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--configs", default="cnn,mlp,linear")
    ap.add_argument("--reference-steps", type=int, default=300)
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        kind, *rest = args.worker
        with tempfile.TemporaryDirectory() as out:
            result = worker_reference(int(rest[0])) if kind == "reference" else worker_config(kind, int(rest[0]),
                                                                                               Path(out))
        print(json.dumps(result))
        return
    from mnist_kit.runtime import versions

    rows = [run_worker(["reference", str(args.reference_steps)])]
    names = args.configs.split(",")
    rows += [run_worker([name, str(args.epochs)]) for name in names + [f"{names[0]}:novdl"]]
    v = versions()
    print(f"\nmnist-kit training benchmark, Fashion-MNIST (50,000 train / 10,000 validation / 10,000 test), "
          f"{os.cpu_count()} CPU cores, paddle {v['paddle']}, numpy {v['numpy']}, python {v['python']}")
    ref = rows[0]["train_ips"]
    header = (f"| {'setup':<52} | train img/s | vs reference | s/epoch | whole run s | eval img/s | test acc (epochs) "
              f"| train peak RSS MiB |")
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for r in rows:
        acc = f"{100 * r['test_acc']:.2f}% ({r['epochs']} ep)" if r["test_acc"] is not None else "-"
        ev = f"{r['eval_ips']:,.0f}" if r["eval_ips"] else "-"
        same_net = "cnn" in r["setup"].lower()  # the reference is the CNN; other networks are not comparable
        ratio = f"{r['train_ips'] / ref:.2f}x" if same_net else "-"
        wall = f"{r['wall_s']:.1f}" if r["wall_s"] else "-"
        print(f"| {r['setup']:<52} | {r['train_ips']:>11,.0f} | {ratio:>12} | {r['epoch_s']:>7.1f} | {wall:>11} "
              f"| {ev:>10} | {acc:>17} | {r['peak_mib']:>18,.0f} |")
    on = next(r for r in rows if r["setup"] == f"mnist-kit {names[0]}.yaml")
    off = next(r for r in rows if r["setup"].endswith("VisualDL off"))
    print(f"\nVisualDL logging overhead ({names[0]}.yaml, every component on by default): "
          f"{100 * (on['wall_s'] - off['wall_s']) / off['wall_s']:+.1f}% of the whole run's wall time "
          f"({on['wall_s']:.1f} s with, {off['wall_s']:.1f} s without)")


if __name__ == "__main__":
    main()
