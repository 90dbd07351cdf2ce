#!/usr/bin/env python
"""PyTorch reference for scripts/bench.py (needs only numpy and torch; run in its own environment).

The same network as mnist-kit's default CNN (two 5x5/20-channel conv + ReLU + 2x2 max-pool blocks, linear
980->10), the same training split and test set (an .npz written by bench.py), the tutorial recipe
(Adam 1e-3, batch 64, shuffled), on --threads threads (default: PyTorch's own choice). Prints one JSON line:
throughput after warm-up, and per-epoch wall time and test accuracy for the time-to-accuracy column.

    python scripts/bench_torch.py DATA.npz --epochs 8 --target 0.90 --steps 300 [--threads N]

With --recipe RECIPE.json (written by scripts/bench_recipes.py from a resolved mnist-kit config) it trains
that recipe instead, for its epochs: the conv blocks (kernel, 'same' padding, batch norm, ReLU, 2x2 max-pool),
hidden linear layers (model.head), dropout, test-time augmentation (model.tta), Adam with the recipe's rate and
betas, a linear warm-up then cosine decay stepped per batch as
mnist-kit's (Paddle's LinearWarmup over CosineAnnealingDecay), label smoothing, the moving average of the
weights (the same decay rule, evaluated with the average) and the same augmentation code
(mnist_kit/data/augment.py, numpy only). Weights start from PyTorch's own default initialisation.
"""

import argparse
import json
import math
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(1, 20, 5, padding=2), nn.Conv2d(20, 20, 5, padding=2)
        self.fc = nn.Linear(980, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.c1(x)), 2, 2)
        x = F.max_pool2d(F.relu(self.c2(x)), 2, 2)
        return self.fc(x.flatten(1))


class RecipeCNN(nn.Module):
    def __init__(self, m):
        super().__init__()
        layers, ch, side = [], 1, 28
        for out in m["channels"]:
            k, bn = m["kernel_size"], m["batch_norm"]
            layers += [nn.Conv2d(ch, out, k, padding=k // 2, bias=not bn), *([nn.BatchNorm2d(out)] if bn else []),
                       nn.ReLU(), nn.MaxPool2d(2, 2)]
            ch, side = out, side // 2
        width, head = ch * side * side, []
        for h in m.get("head") or ():
            head += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.body = nn.Sequential(*layers, nn.Flatten(), *head, nn.Dropout(m["dropout"]))
        self.fc = nn.Linear(width, 10)
        self.tta = m.get("tta", "none")

    def forward(self, x):
        if self.training or self.tta == "none":
            return self.fc(self.body(x))
        views = [x]  # model.tta as mnist-kit's: log of the mean probabilities of the copies
        if "flip" in self.tta:
            views.append(torch.flip(x, dims=[3]))
        if "shift" in self.tta:
            wide = F.pad(x, (1, 1, 0, 0), mode="replicate")
            views += [wide[..., :x.shape[3]], wide[..., 2:]]
        logp = F.log_softmax(self.fc(self.body(torch.cat(views))), dim=-1).reshape(len(views), len(x), -1)
        return torch.logsumexp(logp, dim=0) - math.log(len(views))


def warmup_cosine(lr, warmup, total, end_lr):
    """mnist-kit's cosine schedule at step s (Paddle's LinearWarmup over CosineAnnealingDecay)."""
    rest = max(total - warmup, 1)

    def at(s):
        if s < warmup:
            return lr * s / warmup
        return end_lr + (lr - end_lr) * (1 + math.cos(math.pi * (s - warmup) / rest)) / 2

    return at


class WeightAverage:
    """mnist_kit/training/ema.py's average, over the state dict (parameters and batch-norm statistics)."""

    def __init__(self, model, decay):
        self.decay, self.n = decay, 0
        self.avg = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def update(self, model):
        d = min(self.decay, (1.0 + self.n) / (10.0 + self.n))
        with torch.no_grad():
            for k, v in model.state_dict().items():
                if v.dtype.is_floating_point:
                    self.avg[k].mul_(d).add_(v, alpha=1 - d)
                else:
                    self.avg[k].copy_(v)
        self.n += 1


def train_recipe(r, x, y, xt, yt, mean, std, seed):
    """The recipe for its epochs: per epoch the test accuracy (of the average when it has one)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from mnist_kit.data.augment import Augment  # numpy only: the very transforms mnist-kit draws

    aug = Augment(**r["augment"])
    torch.manual_seed(seed)
    model = RecipeCNN(r["model"])
    b, o = r["batch_size"], r["optimizer"]
    steps = -(-len(y) // b)  # the last, smaller batch too, as mnist-kit
    at = warmup_cosine(o["lr"], int(round(r["warmup_epochs"] * steps)), steps * r["epochs"], r["end_lr"])
    opt = torch.optim.Adam(model.parameters(), lr=at(0), betas=(o["beta1"], o["beta2"]), eps=o["epsilon"])
    ema = WeightAverage(model, r["ema"]) if r["ema"] else None
    shadow = RecipeCNN(r["model"]) if ema else None
    rng = np.random.default_rng(seed)
    epochs, training, step = [], 0.0, 0
    for epoch in range(r["epochs"]):
        t0 = time.perf_counter()
        order = rng.permutation(len(y))
        for s in range(steps):
            idx = order[s * b:(s + 1) * b]
            xb = x[idx]
            if aug.active:
                xb = aug.apply(xb, seed, epoch, s)
            for group in opt.param_groups:
                group["lr"] = at(step)
            opt.zero_grad()
            F.cross_entropy(model(normalise(xb, mean, std)), torch.from_numpy(y[idx].astype(np.int64)),
                            label_smoothing=r["label_smoothing"]).backward()
            opt.step()
            step += 1
            if ema:
                ema.update(model)
        training += time.perf_counter() - t0
        if ema:
            shadow.load_state_dict(ema.avg)
        acc = test_accuracy(shadow if ema else model, xt, yt, mean, std)
        epochs.append({"epoch": epoch, "test_acc": acc, "train_s": training})
    return epochs, len(y) * r["epochs"] / training


def normalise(x, mean, std):
    return torch.from_numpy(((x.astype(np.float32) / 255.0 - mean) / std)[:, None])


def test_accuracy(model, x, y, mean, std):
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(y), 1000):
            correct += int((model(normalise(x[i:i + 1000], mean, std)).argmax(1).numpy() == y[i:i + 1000]).sum())
    model.train()
    return correct / len(y)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--epochs", type=int, default=8, help="most epochs for time-to-accuracy; 0 = throughput only")
    ap.add_argument("--target", type=float, default=0.90)
    ap.add_argument("--steps", type=int, default=300, help="timed steps for throughput")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads; 0 = PyTorch's default")
    ap.add_argument("--seed", type=int, default=0, help="of the weights and the batch order")
    ap.add_argument("--recipe", help="a recipe's JSON (from bench_recipes.py): train it for its epochs instead")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    d = np.load(args.data)
    x, y, xt, yt, mean, std = d["x_train"], d["y_train"], d["x_test"], d["y_test"], float(d["mean"]), float(d["std"])
    if args.recipe:
        epochs, ips = train_recipe(json.loads(Path(args.recipe).read_text()), x, y, xt, yt, mean, std, args.seed)
        print(json.dumps({"train_ips": ips, "epochs": epochs, "threads": torch.get_num_threads(),
                          "torch": torch.__version__,
                          "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
        return
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    b = args.batch_size

    # throughput: timed steps after 20 warm-up steps, on a fresh model
    model = CNN()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    # as many epochs' orders as the timed steps need (a small training set ran out, and empty batches were timed)
    order = np.concatenate([rng.permutation(len(y)) for _ in range(-(-(args.steps + 20) * b // len(y)))])
    for i in range(args.steps + 20):
        if i == 20:
            t0 = time.perf_counter()
        idx = order[i * b:(i + 1) * b]
        opt.zero_grad()
        F.cross_entropy(model(normalise(x[idx], mean, std)), torch.from_numpy(y[idx].astype(np.int64))).backward()
        opt.step()
    ips = args.steps * b / (time.perf_counter() - t0)

    # time to accuracy: whole epochs from a fresh model, test accuracy after each (its time included)
    torch.manual_seed(args.seed)
    model = CNN()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    epochs, start, training = [], time.perf_counter(), 0.0
    for epoch in range(args.epochs):
        t0 = time.perf_counter()
        order = rng.permutation(len(y))
        for s in range(0, len(y) - b + 1, b):
            idx = order[s:s + b]
            opt.zero_grad()
            F.cross_entropy(model(normalise(x[idx], mean, std)), torch.from_numpy(y[idx].astype(np.int64))).backward()
            opt.step()
        training += time.perf_counter() - t0
        acc = test_accuracy(model, xt, yt, mean, std)
        epochs.append({"epoch": epoch, "test_acc": acc, "elapsed_s": time.perf_counter() - start,
                       "train_s": training})  # elapsed_s with the tests after each epoch, train_s without
        if acc >= args.target:
            break
    # eval throughput of the trained model
    t0 = time.perf_counter()
    test_accuracy(model, xt, yt, mean, std)
    eval_ips = len(yt) / (time.perf_counter() - t0)
    print(json.dumps({"train_ips": ips, "epochs": epochs, "eval_ips": eval_ips, "threads": torch.get_num_threads(),
                      "torch": torch.__version__,
                      "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


if __name__ == "__main__":
    main()
