#!/usr/bin/env python
"""Profile (not a test): where the time of one training step goes, part by part, with the engine's own
objects (``trainer.build_trainer``) on a prepared data set, for the oneDNN conv blocks and the stock layers.

Each part is timed with the clock around it; Paddle's CPU kernels run synchronously, so a part's time is
its own. Prints one table per path: milliseconds per step and share, over --steps steps after warm-up.

    .venv/bin/python scripts/profile_step.py [--config configs/cnn.yaml] [-o data.name=fashion-mnist] [--steps 200]
"""

from __future__ import annotations

import argparse
import math
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def profile(cfg, steps: int) -> tuple[dict, float]:
    from mnist_kit.backend import distributed
    from mnist_kit.backend.runtime import paddle
    from mnist_kit.training import trainer

    t = trainer.build_trainer(cfg)
    t.model.train()
    parts = _PARTS
    parts.clear()
    batches = t.batches()

    def timed(name, fn):
        t0 = time.perf_counter()
        out = fn()
        parts[name] += time.perf_counter() - t0
        return out

    for i in range(steps + 20):
        if i == 20:  # warm-up steps (primitive creation, allocator growth) are not counted
            parts.clear()
            start = time.perf_counter()
        x, y = timed("batch: index, normalise, to_tensor", lambda: next(batches))
        timed("clear_grad", t.optimizer.clear_grad)
        logits = timed("forward: conv blocks, output layer", lambda: t.model(x))
        loss = timed("loss", lambda: t.loss_fn(logits, y))
        value = timed("loss to host (+ all-reduce)", lambda: float(distributed.sum_([float(loss)])[0]))
        assert math.isfinite(value)
        timed("backward", loss.backward)
        timed("optimizer step", t.optimizer.step)
        timed("accuracy count", lambda: int((logits.numpy().argmax(axis=-1) == y.numpy()).sum()))
        timed("schedule", t.schedule.step)
    total = time.perf_counter() - start
    del paddle
    return {k: v / steps * 1000 for k, v in parts.items()}, total / steps * 1000


_PARTS: dict = defaultdict(float)  # seconds per part of the profile running now


def _inside_the_oneDNN_plans(parts: dict) -> None:
    """Count the time inside the oneDNN plans (their primitives, reorders and buffers) too: the rows
    starting with '(of which' are parts of the forward and backward rows above them."""
    from mnist_kit.models.onednn.dense import DensePlan
    from mnist_kit.models.onednn.plan import Plan

    for cls, method, name in ((Plan, "forward", "(of which) conv block primitives, forward"),
                              (Plan, "backward", "(of which) conv block primitives, backward"),
                              (DensePlan, "forward", "(of which) output layer primitive, forward"),
                              (DensePlan, "backward", "(of which) output layer primitives, backward")):
        def clocked(*args, _run=getattr(cls, method), _name=name, **kwargs):
            t0 = time.perf_counter()
            try:
                return _run(*args, **kwargs)
            finally:
                parts[_name] += time.perf_counter() - t0
        setattr(cls, method, clocked)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "configs" / "cnn.yaml"))
    ap.add_argument("-o", dest="overrides", action="append", default=["data.name=fashion-mnist"])
    ap.add_argument("--steps", type=int, default=200)
    args = ap.parse_args()
    from mnist_kit import config

    _inside_the_oneDNN_plans(_PARTS)  # once: both profiles count into _PARTS
    for path in ("auto", "off"):
        cfg = config.load(Path(args.config), [*args.overrides, f"train.fast_conv={path}", "output.visualdl=false"])
        parts, total = profile(cfg, args.steps)
        batch = cfg.train.batch_size
        print(f"\n{Path(args.config).name}, train.fast_conv={path}: {total:.2f} ms per step of {batch} "
              f"({batch / total * 1000:,.0f} images/s)")
        print("| part | ms/step | share |\n|---|---:|---:|")
        for name, ms in sorted(parts.items(), key=lambda kv: -kv[1]):
            print(f"| {name} | {ms:.2f} | {100 * ms / total:.0f}% |")
        rest = total - sum(ms for name, ms in parts.items() if not name.startswith("(of which"))
        print(f"| (the loop itself) | {rest:.2f} | {100 * rest / total:.0f}% |")


if __name__ == "__main__":
    main()
