#!/usr/bin/env python
"""Benchmark (not a test): mnist-kit's speed against plain Paddle and PyTorch, in one run, on one data set.

Everything trains on the same 50,000-image training split of Fashion-MNIST (mnist-kit's split, from the
cache `mnist-kit prepare --dataset fashion-mnist` made) and is scored on its 10,000 test images, each
setup in a fresh process (so peak memory is its own):

- reference: the Paddle tutorial loop (Dataset + DataLoader, stock nn.Conv2D, Adam 1e-3, batch 64);
- PyTorch: the identical network and recipe (scripts/bench_torch.py) on 2 threads and on 1, and at batch 256 on
  2 threads, when a Python with torch is found: --torch-python, else this Python if it imports torch, else
  .venv-bench/bin/python (scripts/bench_env.sh makes it; torch is never a dependency of mnist-kit);
- mnist-kit: cnn.yaml's network with the reference's recipe (CLASSIC: its own recipe is compared by
  scripts/bench_recipes.py) on the oneDNN conv blocks with the default threads, at batch 256, with
  1 thread, on Paddle's stock layers (train.fast_conv=off), with --nproc 2 and without VisualDL;
  cnn_fast.yaml on oneDNN, on the stock layers and with --nproc 2; folder.yaml on a synthetic image folder
  (scripts/bench_folder.py's cards) on oneDNN and on the stock layers; mlp.yaml and linear.yaml.

Columns: training images/s (and the ratio to the reference), time-to-accuracy (wall seconds and epochs
until the test accuracy first reaches --target, evaluation included), evaluation images/s, peak RSS;
then prediction latency and cold start from an export of the cnn_fast run.

Last, the headline against PyTorch: cnn.yaml (classic recipe, one epoch as a user trains it) and PyTorch
at batch 64 and 256, --repeats alternating runs each (one run varies by up to +-12% here), the ratio of the
medians, the achieved GFLOP/s against this machine's oneDNN matmul peak, the CPU's instruction set and the
oneDNN kernels that ran (ONEDNN_VERBOSE).

    .venv/bin/python scripts/bench.py [--quick] [--target 0.90] [--max-epochs 8] [--torch-python PATH]
                                      [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
USER_OMP = os.environ.get("OMP_NUM_THREADS")  # importing paddle sets it to 1; PyTorch must not inherit that
DATASET = "fashion-mnist"
# cnn.yaml's network trained with the reference's recipe (Adam 1e-3, batch 64, constant rate, no label
# smoothing), so that images/s and time-to-accuracy compare the same network, data, recipe and batch
CLASSIC = ("optimizer.lr=0.001", "optimizer.beta1=0.9", "optimizer.beta2=0.999", "train.batch_size=64",
           "schedule.name=constant", "schedule.end_lr=null", "schedule.warmup_epochs=0", "loss.label_smoothing=0")
PHOTOS = 500  # photos made from test images per run (the photo accuracy column; mnist-kit eval --photos)


def peak_mib(who=resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # Linux reports KiB


def shared_data(path: Path, overrides: tuple[str, ...] = (f"data.name={DATASET}",),
                recipe: Path = REPO / "configs" / "cnn.yaml") -> None:
    """mnist-kit's training split and the test set, as the other setups receive them (of the data set that
    ``overrides`` name, split as ``recipe``'s data section says)."""
    import numpy as np

    from mnist_kit import config, data

    cfg = config.load(recipe, list(overrides))
    prepared = data.load(cfg.data.name, data.data_root(cfg.data.root))
    x, y, _, _ = data.split_train_val(prepared.x_train, prepared.y_train, cfg.data)
    norm = data.Normalization.from_config(cfg.data, x)
    np.savez(path, x_train=x, y_train=y, x_test=prepared.x_test, y_test=prepared.y_test, mean=norm.mean, std=norm.std)


# ---------------------------------------------------------------- workers (each in its own process)

def worker_tutorial(npz: str, steps: int, max_epochs: int, target: float) -> dict:
    """The Paddle tutorial way: a Dataset yielding one normalised sample at a time, a DataLoader, stock layers."""
    import numpy as np
    import paddle
    from paddle import nn

    d = np.load(npz)
    mean, std = float(d["mean"]), float(d["std"])

    class Samples(paddle.io.Dataset):
        def __init__(self, x, y):
            super().__init__()
            self.x, self.y = x, y

        def __getitem__(self, i):
            return (self.x[i].astype("float32")[None] / 255.0 - mean) / std, np.int64(self.y[i])

        def __len__(self):
            return len(self.y)

    def network():
        return nn.Sequential(nn.Conv2D(1, 20, 5, padding=2), nn.ReLU(), nn.MaxPool2D(2, 2),
                             nn.Conv2D(20, 20, 5, padding=2), nn.ReLU(), nn.MaxPool2D(2, 2),
                             nn.Flatten(), nn.Linear(980, 10))

    def test_accuracy(model):
        model.eval()
        correct = 0
        with paddle.no_grad():
            for i in range(0, len(d["y_test"]), 1000):
                x = paddle.to_tensor((d["x_test"][i:i + 1000].astype("float32")[:, None] / 255.0 - mean) / std)
                correct += int((model(x).numpy().argmax(1) == d["y_test"][i:i + 1000]).sum())
        model.train()
        return correct / len(d["y_test"])

    paddle.seed(0)
    loader = paddle.io.DataLoader(Samples(d["x_train"], d["y_train"]), batch_size=64, shuffle=True, drop_last=True)

    def train(model, opt, limit=None):
        done = 0
        for i, (x, y) in enumerate(loader):
            if limit is not None and i == 20:  # warm-up steps are not timed
                t0, done = time.perf_counter(), 0
            loss = paddle.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            opt.clear_grad()
            done += len(y)
            if limit is not None and i >= limit + 20:
                return done / (time.perf_counter() - t0)

    model = network()
    ips = train(model, paddle.optimizer.Adam(learning_rate=0.001, parameters=model.parameters()), steps)
    epochs = []
    if max_epochs:
        paddle.seed(0)
        model = network()
        opt = paddle.optimizer.Adam(learning_rate=0.001, parameters=model.parameters())
        start = time.perf_counter()
        for epoch in range(max_epochs):
            train(model, opt)
            acc = test_accuracy(model)
            epochs.append({"epoch": epoch, "test_acc": acc, "elapsed_s": time.perf_counter() - start})
            if acc >= target:
                break
    t0 = time.perf_counter()
    test_accuracy(model)
    return {"train_ips": ips, "epochs": epochs, "eval_ips": len(d["y_test"]) / (time.perf_counter() - t0),
            "peak_mib": peak_mib()}


def _test_accuracies(run: Path, epochs: int) -> list[float]:
    from mnist_kit.evaluation import scoring

    return [scoring.evaluate_run(run, epoch=e)["accuracy"] for e in range(epochs)]


def train_argv(name: str, out, overrides) -> list[str]:
    """`mnist-kit train` of configs/NAME.yaml into OUT/run, as a user types it, with ``overrides``."""
    argv = [sys.executable, "-m", "mnist_kit", "train", "--config", str(REPO / "configs" / f"{name}.yaml"),
            "-o", f"output.root={out}", "--name", "run", "-o", "checkpoint.keep_last=0"]
    for o in overrides:
        argv += ["-o", o]
    return argv


def run_or_exit(argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{proc.stderr[-3000:]}")


def worker_mnist_kit(name: str, epochs: int, nproc: int, out: str, *overrides: str) -> dict:
    """`mnist-kit train` as a user runs it (a subprocess, so --nproc works the same way)."""
    import numpy as np

    from mnist_kit.evaluation import scoring

    run = Path(out) / "run"
    argv = train_argv(name, out, overrides)
    if epochs:
        argv += ["-o", f"train.epochs={epochs}"]
    if nproc > 1:  # the same global batch: the config's batch split over the processes
        from mnist_kit import config

        batch = config.load(REPO / "configs" / f"{name}.yaml", list(overrides))["train"]["batch_size"]
        argv += ["--nproc", str(nproc), "-o", f"train.batch_size={batch // nproc}"]
    t0 = time.perf_counter()
    run_or_exit(argv)
    wall = time.perf_counter() - t0
    peak = peak_mib(resource.RUSAGE_CHILDREN)  # the largest process of the job (one rank, or the trainer)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    fast = json.loads((run / "run.json").read_text())["fast_conv"]
    accs = _test_accuracies(run, len(rows))
    trained = scoring.load_trained(run)
    x = trained.splits.prepared.x_test
    # evaluation throughput: the program eval and predict run
    with scoring.traced(trained.model, trained.splits.prepared.input_shape) as logits_of:
        logits_of(trained.splits.norm.apply(x[:1000]))  # warm-up: oneDNN builds its kernels
        passes = []
        for _ in range(3):  # the median of 3 passes over the test set
            t0 = time.perf_counter()
            for i in range(0, len(x), 1000):
                logits_of(trained.splits.norm.apply(x[i:i + 1000]))
            passes.append(len(x) / (time.perf_counter() - t0))
        eval_ips = float(np.median(passes))
        photo_acc = None
        if trained.cfg.data.name in ("mnist", "fashion-mnist"):  # photos of test images, as predict reads them
            import functools

            from mnist_kit.deploy.photos import photo_set

            photos = functools.partial(photo_set, count=PHOTOS)
            photo_acc = scoring.photo_accuracy(trained, logits_of, photos)["accuracy"]
    return {"train_ips": float(np.mean([r["images_per_sec"] for r in rows])), "wall_s": wall, "fast_conv": fast,
            "photo_acc": photo_acc,
            "epochs": [{"epoch": r["epoch"], "test_acc": a, "elapsed_s": r["elapsed_seconds"]}
                       for r, a in zip(rows, accs)],
            "eval_ips": eval_ips, "peak_mib": peak, "run": str(run)}


def worker_predict(run: str, runs: int) -> dict:
    """Export the run, then: one image in process, and `mnist-kit predict IMAGE` from a cold start."""
    import numpy as np
    from PIL import Image

    from mnist_kit import data
    from mnist_kit.deploy import inference
    from mnist_kit.deploy.export import export_run

    meta = export_run(Path(run))
    p = inference.Predictor(meta["path"])
    x = data.load(DATASET, data.data_root()).x_test
    one = p.normalize(x[:1])
    for _ in range(20):
        p.logits(one)
    times = []
    for i in range(300):
        t0 = time.perf_counter()
        p.logits(p.normalize(x[i:i + 1]))
        times.append((time.perf_counter() - t0) * 1000)
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "test0.png"
        Image.fromarray(np.asarray(x[0])).save(image)
        cold = []
        for _ in range(runs):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "mnist_kit", "predict", str(image), "--model", meta["path"]],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            cold.append(time.perf_counter() - t0)
    return {"latency_ms": statistics.median(times), "latency_p90_ms": sorted(times)[int(0.9 * len(times))],
            "cold_s": statistics.median(cold), "peak_mib": peak_mib(resource.RUSAGE_CHILDREN)}


def worker_machine() -> dict:
    """The oneDNN matmul peak on this machine (the threads the conv blocks use), and a few training steps of
    cnn.yaml at batch 64 and 256 (run with ONEDNN_VERBOSE=1 by the driver, which reads the kernels' names)."""
    import ctypes

    import numpy as np

    from mnist_kit import config
    from mnist_kit.backend.openmp import openmp
    from mnist_kit.models.onednn import binding, threads_for
    from mnist_kit.models.onednn.plan import _Step
    from mnist_kit.training import engine, trainer

    lib, threads = binding.library(), threads_for(0, 1)[0]
    n, best = 2048, float("inf")
    with openmp().threads(threads):
        a = lib.md([n, n], binding.TAG_AB)
        pd = binding._vp()
        lib.call("dnnl_matmul_primitive_desc_create", ctypes.byref(pd), lib.engine, a, a, None, a, None)
        step = _Step(lib, pd, {binding.A_SRC: a, binding.A_WEIGHTS: a, binding.A_DST: a})
        m = [np.random.default_rng(i).random((n, n), np.float32) for i in range(3)]
        for _ in range(7):
            t0 = time.perf_counter()
            step(src=m[0].ctypes.data, weights=m[1].ctypes.data, dst=m[2].ctypes.data)
            best = min(best, time.perf_counter() - t0)
    for batch in (64, 256):
        cfg = config.load(REPO / "configs" / "cnn.yaml", [f"data.name={DATASET}", *CLASSIC,
                                                           f"train.batch_size={batch}", "output.visualdl=false"])
        t = trainer.build_trainer(cfg)
        batches = t.batches()
        for _ in range(3):
            engine.train_step(t, *next(batches))
    return {"peak_gflops": 2 * n ** 3 / best / 1e9, "threads": threads,
            "flops_per_image": train_flops_per_image(cfg.model, t.splits.prepared.input_shape)}


def train_flops_per_image(model_cfg, input_shape) -> float:
    """Multiply-adds x 2 of one training image through the CNN: every conv and linear layer forward, its
    weight gradient, and its input gradient (none for the first layer)."""
    from mnist_kit.models.blocks import block_output, cnn_blocks

    c, h, w = input_shape
    layers = []  # forward FLOPs per layer
    for b in cnn_blocks(model_cfg):
        layers.append(2 * h * w * b["channels"] * c * b["kernel"] ** 2)  # 'same' conv, stride 1
        c, (h, w) = b["channels"], block_output(h, w, b)
    layers.append(2 * c * h * w * 10)
    return float(sum(layers) * 3 - layers[0])


def kernels(verbose: str) -> tuple[str, list[str]]:
    """The CPU's instruction set as oneDNN reports it, and each primitive kind's kernels (ONEDNN_VERBOSE)."""
    isa, seen = "", {}
    for line in verbose.splitlines():
        f = line.split(",")
        if line.startswith("onednn_verbose") and ",info,cpu,isa:" in line:
            isa = line.split("isa:", 1)[1].strip()
        elif line.startswith("onednn_verbose") and "exec" in f and f[f.index("exec") + 1] == "cpu":
            i, problem = f.index("exec"), f[-2]
            # not the peak's matmul, nor the checks against the stock layers (a batch of 2)
            if f[i + 2] != "matmul" and not problem.startswith(("mb2_", "mb2ic", "2x")):
                seen.setdefault(f"{f[i + 2]} {f[i + 4]}", set()).add(f[i + 3])
    return isa, [f"{k}: {', '.join(sorted(v))}" for k, v in sorted(seen.items())]


# ---------------------------------------------------------------- driver

def run_worker(python: str, args: list[str], script: Path = Path(__file__), extra_env: dict | None = None,
               keep_stdout: bool = False) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    if USER_OMP is not None:
        env["OMP_NUM_THREADS"] = USER_OMP
    env.update(extra_env or {})
    proc = subprocess.run([python, str(script), *args], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark worker {args[:3]} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if keep_stdout:
        result["stdout"] = proc.stdout
    return result


def versus_torch(torch_python: str, npz: Path, tmp: Path, threads: int, repeats: int, steps: int) -> dict:
    """Training images/s of cnn.yaml (the classic recipe, one epoch, trained as a user does, VisualDL on) and of
    PyTorch at batch 64 and 256 on ``threads`` threads each, ``repeats`` times, alternating: one run's
    throughput varies by up to +-12% on these shared machines, so the ratio is of the medians."""
    runs: dict = {(who, b): [] for who in ("PyTorch", "mnist-kit") for b in (64, 256)}
    for i in range(repeats):
        for b in (64, 256):
            r = run_worker(torch_python, [str(npz), "--epochs", "0", "--steps", str(steps), "--threads", str(threads),
                                          "--batch-size", str(b)], REPO / "scripts" / "bench_torch.py")
            runs["PyTorch", b].append(r["train_ips"])
            out = tmp / f"versus-{i}-{b}"
            run_or_exit(train_argv("cnn", out, [f"data.name={DATASET}", *CLASSIC, "train.epochs=1",
                                                f"train.batch_size={b}"]))
            row = json.loads((out / "run" / "metrics.jsonl").read_text().splitlines()[-1])
            runs["mnist-kit", b].append(row["images_per_sec"])
            shutil.rmtree(out, ignore_errors=True)
            print(f"  done: PyTorch and mnist-kit at batch {b}, round {i + 1} of {repeats}", file=sys.stderr,
                  flush=True)
    return runs


def print_versus(runs: dict, machine: dict) -> None:
    peak, flops, threads = machine["peak_gflops"], machine["flops_per_image"], machine["threads"]
    print(f"\nTraining throughput against PyTorch: cnn.yaml's network, the classic recipe, {threads} threads each; "
          f"median of {len(runs['PyTorch', 64])} alternating runs (each run in brackets)")
    print(f"| batch | PyTorch img/s | mnist-kit img/s | ratio | mnist-kit GFLOP/s (of the {peak:,.0f} GFLOP/s "
          "matmul peak) |\n|---:|---|---|---:|---|")
    for b in (64, 256):
        theirs, ours = statistics.median(runs["PyTorch", b]), statistics.median(runs["mnist-kit", b])

        def each(values):
            return " ".join(f"{v:,.0f}" for v in values)

        print(f"| {b} | {theirs:,.0f} ({each(runs['PyTorch', b])}) | {ours:,.0f} ({each(runs['mnist-kit', b])}) | "
              f"{ours / theirs:.2f}x | {ours * flops / 1e9:,.0f} ({100 * ours * flops / 1e9 / peak:.0f}%) |")
    isa, names = kernels(machine["stdout"])
    print(f"CPU: {_cpu_name()}; oneDNN: {isa or 'no ISA line'}; peak: oneDNN's f32 matmul, 2048^3, {threads} threads, "
          f"best of 7; {flops / 1e6:.1f} MFLOP per training image (forward, weight and input gradients)")
    print("oneDNN kernels (ONEDNN_VERBOSE) of cnn.yaml's training at batch 64 and 256: " + "; ".join(names))


def find_torch(explicit: str | None) -> str | None:
    candidates = [explicit] if explicit else [sys.executable, str(REPO / ".venv-bench" / "bin" / "python")]
    for python in candidates:
        if python and Path(python).exists() and subprocess.run(
                [python, "-c", "import torch, numpy"], capture_output=True).returncode == 0:
            return python
    if explicit:
        raise SystemExit(f"{explicit} cannot import torch and numpy")
    return None


def time_to(epochs: list[dict], target: float) -> str:
    for e in epochs:
        if e["test_acc"] >= target:
            return f"{e['elapsed_s']:.0f} s ({e['epoch'] + 1} ep)"
    return f"not in {len(epochs)} ep" if epochs else "-"


def _seconds_to(epochs: list[dict], target: float) -> float | None:
    return next((e["elapsed_s"] for e in epochs if e["test_acc"] >= target), None)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 epoch per config, no time-to-accuracy")
    ap.add_argument("--target", type=float, default=0.90, help="test accuracy for time-to-accuracy")
    ap.add_argument("--max-epochs", type=int, default=8, help="epochs the references may take to reach --target")
    ap.add_argument("--steps", type=int, default=300, help="timed steps of the references' throughput")
    ap.add_argument("--torch-python", help="a Python that imports torch (default: see above)")
    ap.add_argument("--cold-runs", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3,
                    help="alternating runs of PyTorch and cnn.yaml at batch 64 and 256 for the ratio (0 = none)")
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        kind, *a = args.worker
        if kind == "tutorial":
            result = worker_tutorial(a[0], int(a[1]), int(a[2]), float(a[3]))
        elif kind == "mnist-kit":
            result = worker_mnist_kit(a[0], int(a[1]), int(a[2]), *a[3:])
        elif kind == "machine":
            result = worker_machine()
        else:
            result = worker_predict(a[0], int(a[1]))
        print(json.dumps(result))
        return

    from mnist_kit.backend.runtime import versions

    tmp = Path(tempfile.mkdtemp(prefix="mnist-kit-bench."))
    try:
        npz = tmp / "data.npz"
        shared_data(npz)
        ref_epochs = 0 if args.quick else args.max_epochs
        rows = []

        def add(label, result, same_net=True):
            rows.append({"setup": label, "same_net": same_net, **result})
            print(f"  done: {label}", file=sys.stderr, flush=True)

        print("benchmarking (each setup in a fresh process) ...", file=sys.stderr)
        add("Paddle tutorial loop (reference)", run_worker(sys.executable, ["--worker", "tutorial", str(npz),
                                                                            str(args.steps), str(ref_epochs),
                                                                            str(args.target)]))
        torch_python = find_torch(args.torch_python)
        if torch_python:
            for threads, epochs, batch in ((2, ref_epochs, 64), (1, 0, 64), (2, 0, 256)):
                r = run_worker(torch_python, [str(npz), "--epochs", str(epochs), "--target", str(args.target),
                                              "--steps", str(args.steps), "--threads", str(threads),
                                              "--batch-size", str(batch)],
                               REPO / "scripts" / "bench_torch.py")
                r["batch"] = batch
                add(f"PyTorch {r['torch']}, {r['threads']} thread{'s' if r['threads'] > 1 else ''}"
                    + (f", batch {batch}" if batch != 64 else ""), r)
        else:
            print("  (no Python with torch found: bash scripts/bench_env.sh makes one)", file=sys.stderr)
        cards = tmp / "cards"
        sys.path.insert(0, str(REPO / "scripts"))
        from bench_folder import write_cards

        write_cards(cards)
        folder_data = [f"data.folder={cards}", f"data.root={tmp / 'data'}"]
        subprocess.run([sys.executable, "-m", "mnist_kit", "prepare", "--config", str(REPO / "configs" / "folder.yaml"),
                        *sum((["-o", o] for o in folder_data), [])], check=True, capture_output=True)
        fmnist, full = [f"data.name={DATASET}"], 0 if args.quick else None
        classic = [*fmnist, *CLASSIC]
        # (label, config, epochs (0: the config's own, None: --max-epochs), processes, overrides, same network)
        plan = [("cnn.yaml", "cnn", full, 1, classic, True),
                ("cnn.yaml, train.threads=1", "cnn", 1, 1, [*classic, "train.threads=1"], True),
                ("cnn.yaml, batch 256", "cnn", 1, 1, [*classic, "train.batch_size=256"], True),
                ("cnn.yaml, fast_conv=off", "cnn", 1, 1, [*classic, "train.fast_conv=off"], True),
                ("cnn.yaml, --nproc 2 x batch 32", "cnn", 1, 2, classic, True),
                ("cnn.yaml, VisualDL off", "cnn", 1, 1, [*classic, "output.visualdl=false"], True),
                ("cnn.yaml, augment.apply=always", "cnn", 1, 1, [*classic, "augment.apply=always"], True),
                ("cnn_fast.yaml", "cnn_fast", 0, 1, fmnist, False),
                ("cnn_fast.yaml, fast_conv=off", "cnn_fast", 0, 1, [*fmnist, "train.fast_conv=off"], False),
                ("cnn_fast.yaml, --nproc 2 x batch 64", "cnn_fast", 0, 2, fmnist, False),
                ("folder.yaml (cards)", "folder", 2, 1, folder_data, False),
                ("folder.yaml (cards), fast_conv=off", "folder", 2, 1, [*folder_data, "train.fast_conv=off"], False),
                ("mlp.yaml", "mlp", 1, 1, fmnist, False), ("linear.yaml", "linear", 1, 1, fmnist, False)]
        for label, name, epochs, nproc, overrides, same_net in plan:
            epochs = args.max_epochs if epochs is None else 1 if args.quick else epochs
            out = tmp / f"run-{len(rows)}"
            r = run_worker(sys.executable, ["--worker", "mnist-kit", name, str(epochs), str(nproc), str(out),
                                            *overrides])
            fast = r["fast_conv"]
            engine = (f"oneDNN, {fast['threads']} thread{'s' if fast['threads'] > 1 else ''}"
                      if fast["path"] == "onednn" else "stock layers")
            add(f"mnist-kit {label} [{engine}{' each' if nproc > 1 else ''}]", r, same_net=same_net)
        fast = next(r for r in rows if r["setup"].startswith("mnist-kit cnn_fast.yaml ["))
        pred = run_worker(sys.executable, ["--worker", "predict", fast["run"], str(args.cold_runs)])
        machine = run_worker(sys.executable, ["--worker", "machine"], extra_env={"ONEDNN_VERBOSE": "1"},
                             keep_stdout=True)
        versus = versus_torch(torch_python, npz, tmp, machine["threads"], args.repeats, args.steps) \
            if torch_python and args.repeats else None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    v = versions()
    print(f"\nmnist-kit benchmark: {DATASET}, 50,000 training / 10,000 test images; {os.cpu_count()} CPU cores "
          f"({_cpu_name()}); paddle {v['paddle']}, python {v['python']}\n")
    ref = rows[0]
    header = ["setup", "train img/s", "vs reference", f"time to {100 * args.target:.0f}% test acc",
              "best test acc (epochs)", f"photo acc ({PHOTOS})", "eval img/s", "peak RSS MiB"]
    table = []
    for r in rows:
        best = max(r["epochs"], key=lambda e: e["test_acc"]) if r["epochs"] else None
        table.append([r["setup"], f"{r['train_ips']:,.0f}",
                      f"{r['train_ips'] / ref['train_ips']:.2f}x" if r["same_net"] else "other net",
                      time_to(r["epochs"], args.target),
                      f"{100 * best['test_acc']:.2f}% ({len(r['epochs'])} ep)" if best else "-",
                      f"{100 * r['photo_acc']:.2f}%" if r.get("photo_acc") is not None else "-",
                      f"{r['eval_ips']:,.0f}", f"{r['peak_mib']:,.0f}"])
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(header)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in table:
        print("| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
              + " |")
    torch2 = next((r for r in rows if r["setup"].startswith("PyTorch") and r["threads"] > 1 and r["batch"] == 64), None)
    torch256 = next((r for r in rows if r["setup"].startswith("PyTorch") and r.get("batch") == 256), None)
    mk256 = next(r for r in rows if r["setup"].startswith("mnist-kit cnn.yaml, batch 256"))
    torch1 = next((r for r in rows if r["setup"].startswith("PyTorch") and r["threads"] == 1), None)
    mk = next(r for r in rows if r["setup"].startswith("mnist-kit cnn.yaml ["))
    mk1 = next(r for r in rows if r["setup"].startswith("mnist-kit cnn.yaml, train.threads=1"))
    mk_fast = next(r for r in rows if r["setup"].startswith("mnist-kit cnn_fast.yaml ["))
    if torch2:
        ratio = mk["train_ips"] / torch2["train_ips"]
        print(f"\nmnist-kit cnn.yaml vs PyTorch, same network, data and batch: {ratio:.2f}x "
              f"the training images/s on {torch2['threads']} threads each"
              + (f", {mk1['train_ips'] / torch1['train_ips']:.2f}x on 1 thread each" if torch1 else ""))
        if torch256:
            print(f"at batch 256: {mk256['train_ips'] / torch256['train_ips']:.2f}x ({mk256['train_ips']:,.0f} "
                  f"against {torch256['train_ips']:,.0f} images/s, 2 threads each)")
        for row in (mk, mk_fast):
            ours, theirs = _seconds_to(row["epochs"], args.target), _seconds_to(torch2["epochs"], args.target)
            if ours and theirs:
                print(f"time to {100 * args.target:.0f}% test accuracy: {row['setup']} {ours:.0f} s, "
                      f"{ours / theirs:.2f}x PyTorch's {theirs:.0f} s")
    on, off = mk, next(r for r in rows if "VisualDL off" in r["setup"])
    a, b = on["epochs"][0]["elapsed_s"], off["epochs"][0]["elapsed_s"]
    print(f"VisualDL logging (every component on, cnn.yaml): the first epoch, validation and logging included, "
          f"took {a:.1f} s with and {b:.1f} s without ({100 * (a - b) / b:+.1f}%); training throughput "
          f"{on['train_ips']:,.0f} vs {off['train_ips']:,.0f} img/s")
    aug = next(r for r in rows if "augment.apply=always" in r["setup"])
    print(f"augmentation (cnn.yaml's rotate 10, scale 0.1, translate 0.1, forced on Fashion-MNIST): "
          f"{aug['train_ips']:,.0f} img/s in one epoch vs {mk['train_ips']:,.0f} without (cnn.yaml's 8-epoch mean) "
          f"({100 * (aug['train_ips'] / mk['train_ips'] - 1):+.1f}%); "
          f"its accuracy: scripts/bench_augment.py")
    print("eval img/s: the reference and PyTorch evaluate eagerly; mnist-kit runs Paddle Inference with oneDNN "
          "(what `mnist-kit eval` and `predict` use)")
    print(f"predict (export of cnn_fast.yaml): one image {pred['latency_ms']:.2f} ms median "
          f"(p90 {pred['latency_p90_ms']:.2f} ms) in process; `mnist-kit predict IMAGE` from a cold start "
          f"{pred['cold_s']:.2f} s (median of {args.cold_runs}); its peak RSS {pred['peak_mib']:,.0f} MiB")
    if versus:
        print_versus(versus, machine)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


if __name__ == "__main__":
    main()
