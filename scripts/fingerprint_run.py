#!/usr/bin/env python
"""What a run computed, as a short fingerprint: its metrics rows without the timings, and every VisualDL record
without wall times (and without the random id VisualDL gives a hyper-parameter record), hashed per tag.

Two runs of the same config, seed, code path and thread count print the same JSON; a refactor that must not
change behaviour is checked by training the same runs before and after and comparing:

    .venv/bin/python scripts/fingerprint_run.py checkpoints/RUN > before.json
    ... change the code, train the same run again under the same name ...
    .venv/bin/python scripts/fingerprint_run.py checkpoints/RUN | diff before.json -

``--fixed DIR`` trains its three fixed runs in DIR and prints their fingerprints (about 4 minutes on 2 cores);
``--code SRC`` trains them with the mnist-kit source in SRC (a worktree of an earlier commit) instead:

    git worktree add /tmp/before <commit>
    .venv/bin/python scripts/fingerprint_run.py --fixed /tmp/fp-before --code /tmp/before > before.json
    .venv/bin/python scripts/fingerprint_run.py --fixed /tmp/fp-after > after.json && diff before.json after.json

The three runs (issue 30's): cnn.yaml on Fashion-MNIST, 2 epochs; cnn_best_fashion.yaml, 1 epoch (batch norm,
EMA, test-time augmentation, flips, erasing, label smoothing, warm-up and cosine); cnn_best.yaml on the real
digits of scripts/real_digits.py prepared as mnist, 2 epochs with a checkpoint every 50 steps. Both data sets
must be prepared in $MNIST_KIT_DATA.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from mnist_kit.experiments.rundir import TIMING_KEYS
from mnist_kit.logbook.writer import read_records


def fingerprint(run: Path) -> dict:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    tags: dict[str, list[str]] = {}
    for path in sorted((run / "vdl").rglob("*vdlrecords*")):
        for record in read_records(path):
            for value in record.values:
                value.timestamp = 0
                if value.HasField("hparam"):
                    value.hparam.name = ""
                if "per_sec" in value.tag or "seconds" in value.tag:
                    continue  # timings differ between identical runs
                digest = hashlib.sha256(value.SerializeToString()).hexdigest()[:16]
                tags.setdefault(f"{path.parent.name}/{value.tag}", []).append(digest)
    return {"metrics": [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in rows],
            "records": {tag: f"{hashlib.sha256(''.join(d).encode()).hexdigest()[:16]} x{len(d)}"
                        for tag, d in sorted(tags.items())}}


# name -> the options of `mnist-kit train` (each run trained in DIR with output.root runs: the config text the
# log records is then the same wherever DIR is)
FIXED = {
    "cnn-fashion": ["--config", "cnn", "-o", "data.name=fashion-mnist", "-o", "train.epochs=2"],
    "best-fashion": ["--config", "cnn_best_fashion", "-o", "train.epochs=1"],
    "best-digits": ["--config", "cnn_best", "-o", "data.val_size=1000", "-o", "train.epochs=2",
                    "-o", "checkpoint.every_steps=50"],
}


def train_fixed(folder: Path, code: Path | None) -> dict:
    """Train the fixed runs in ``folder`` (with the source in ``code``, else this one); their fingerprints."""
    env = dict(os.environ, **({"PYTHONPATH": str(code.resolve())} if code else {}))
    out = {}
    for name, options in FIXED.items():
        run = folder / "runs" / name
        if run.exists():
            raise SystemExit(f"{run} exists: give --fixed a new folder")
        done = subprocess.run([sys.executable, "-m", "mnist_kit", "train", *options, "-o", "output.root=runs",
                               "--name", name], cwd=folder, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{name} failed: {done.stderr.strip().splitlines()[-1:]}")
        out[name] = fingerprint(run)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="A run's fingerprint, or those of the three fixed runs.")
    parser.add_argument("run", nargs="?", type=Path, help="a run folder")
    parser.add_argument("--fixed", type=Path, metavar="DIR", help="train the three fixed runs in DIR")
    parser.add_argument("--code", type=Path, metavar="SRC", help="with --fixed: the mnist-kit source to train with")
    args = parser.parse_args()
    if (args.run is None) == (args.fixed is None):
        parser.error("give a run folder or --fixed DIR")
    if args.fixed is not None:
        args.fixed.mkdir(parents=True, exist_ok=True)
        print(json.dumps(train_fixed(args.fixed, args.code), indent=1))
    else:
        print(json.dumps(fingerprint(args.run), indent=1))
