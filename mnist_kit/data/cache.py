"""The prepared cache: IDX files verified and parsed once, stored as numpy arrays for fast loading.

Layout under the data root (``data.root``, ``$MNIST_KIT_DATA`` or ``~/.cache/mnist-kit``)::

    <root>/<dataset>/raw/*.gz        downloaded archives (downloads only)
    <root>/<dataset>/arrays-ID.npz   x_train, y_train, x_test, y_test (uint8)
    <root>/<dataset>/prepared.json   source, checksums, counts, and the name of its arrays file

``prepared.json`` is written last, so its presence means complete; preparing again writes a new arrays
file, then the new ``prepared.json`` naming it (the switch, one rename), then deletes the old arrays: a
process killed at any moment leaves the old cache or the new one, usable.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnist_kit.data.idx import decompress, parse_idx
from mnist_kit.data.sources import SourceError, dataset_info, debian_available, download, read_local
from mnist_kit.datasets import DataSet
from mnist_kit.errors import UserError
from mnist_kit.util import faults, provenance, readback
from mnist_kit.util.console import info
from mnist_kit.util.files import atomic_path, digest, remove_stale_partials, write_text

FORMAT_VERSION = 1
ARRAYS = re.compile(r"^arrays-[0-9a-f]+\.npz$")  # the names of arrays files


class DataError(UserError):
    pass


def data_root(configured: str | None = None) -> Path:
    if configured:
        return Path(configured).expanduser()
    env = os.environ.get("MNIST_KIT_DATA")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "mnist-kit"


@dataclass
class Prepared:
    name: str
    classes: tuple
    x_train: np.ndarray  # (N, H, W) or (N, H, W, 3) uint8
    y_train: np.ndarray  # (N,) int64
    x_test: np.ndarray
    y_test: np.ndarray
    meta: dict
    input_shape: tuple = (1, 28, 28)  # (channels, height, width) of the network's input


def _parse_all(info_: DataSet, files: dict[str, bytes]) -> dict[str, np.ndarray]:
    arrays = {}
    for role, spec in info_.files.items():
        arrays[role] = parse_idx(files[role], spec.raw_name, spec.ndim)
    for split in ("train", "test"):
        x, y = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if x.shape[0] != y.shape[0]:
            raise DataError(f"{info_.title} {split} set: {x.shape[0]} images but {y.shape[0]} labels")
        if split == "train" and x.shape[0] == 0:
            raise DataError(f"the {info_.title} training set has no images")
        if x.shape[1:] != (28, 28):
            raise DataError(f"{info_.title} {split} images are {x.shape[1:]}, expected 28x28")
        if y.size and y.max() >= len(info_.classes):
            raise DataError(f"{info_.title} {split} labels go up to {y.max()}, expected 0..{len(info_.classes) - 1}")
    return arrays


def _fetch(info_: DataSet, target: Path, source: str, from_dir, mirrors, retries, timeout, verify,
           backoff) -> tuple[dict[str, bytes], str]:
    """The four files' bytes from ``source`` (auto: Debian's package where installed, else download), and a
    description of where they came from."""
    if source == "auto":
        source = "debian" if debian_available(info_) else "download"
    if source == "dir":
        if from_dir is None:
            raise SourceError("--source dir needs --from-dir FOLDER")
        info(f"reading {info_.title} from {from_dir}")
        return read_local(info_, from_dir, verify), f"folder {Path(from_dir).resolve()}"
    if source == "debian":
        if not debian_available(info_):
            if info_.debian_package is None:
                raise SourceError(f"Debian has no package with {info_.title}; use --source download or --from-dir")
            raise SourceError(f"Debian's {info_.debian_package} is not installed "
                              f"(install it with: apt-get install {info_.debian_package})")
        assert info_.debian_dir is not None  # debian_available says it is there
        info(f"reading {info_.title} from Debian's {info_.debian_package} in {info_.debian_dir}")
        return (read_local(info_, info_.debian_dir, verify),
                f"Debian package {info_.debian_package} ({info_.debian_dir})")
    if source == "download":
        info(f"downloading {info_.title} into {target / 'raw'}")
        return download(info_, target / "raw", mirrors, retries, timeout, verify, backoff), "download"
    raise SourceError(f"unknown source '{source}'; allowed: auto, download, debian, dir")


def prepare(name: str, root: Path, source: str = "auto", from_dir: Path | None = None, mirrors=None,
            retries: int = 3, timeout: float = 30.0, verify: bool = True, force: bool = False,
            backoff: float = 1.0) -> dict:
    """Get, verify, parse and cache a data set; return the metadata written to prepared.json."""
    info_ = dataset_info(name)
    target = Path(root) / name
    meta_path = target / "prepared.json"
    if from_dir is not None:
        source = "dir"
    if not force and source == "auto" and os.path.lexists(meta_path):
        try:
            meta = load(name, root).meta
            info(f"{info_.title} is already prepared in {target} (from {meta['source']}); --force prepares it again")
            return meta
        except DataError as e:
            info(f"the existing cache is unusable ({e}); preparing again")
    files, origin = _fetch(info_, target, source, from_dir, mirrors, retries, timeout, verify, backoff)
    files = {role: decompress(data, info_.files[role].filename, info_.files[role].ndim) for role, data in files.items()}
    arrays = _parse_all(info_, files)
    meta = {
        "format": FORMAT_VERSION,
        "dataset": name,
        "source": origin,
        "verified": verify,
        "files_md5": {info_.files[r].raw_name: hashlib.md5(data).hexdigest() for r, data in files.items()},
        "counts": {"train": int(arrays["train_labels"].size), "test": int(arrays["test_labels"].size)},
        "class_counts": {
            "train": np.bincount(arrays["train_labels"], minlength=len(info_.classes)).tolist(),
            "test": np.bincount(arrays["test_labels"], minlength=len(info_.classes)).tolist(),
        },
        "classes": list(info_.classes),
        "prepared_at": provenance.now(),
    }
    return write_cache(target, {"x_train": arrays["train_images"], "y_train": arrays["train_labels"],
                                "x_test": arrays["test_images"], "y_test": arrays["test_labels"]}, meta)


def write_cache(target: Path, arrays: dict, meta: dict) -> dict:
    """Switch the cache in ``target`` to ``arrays`` and ``meta`` (see the module's docstring); return the
    metadata written, which names its arrays file and their SHA-256."""
    target.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(target)  # left by a killed prepare
    name = f"arrays-{secrets.token_hex(8)}.npz"
    with atomic_path(target / name) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    meta = {**meta, "arrays": name, "arrays_sha256": digest(target / name)}
    faults.hit("prepare-switch", 0)
    write_text(target / "prepared.json", json.dumps(meta, indent=2) + "\n")
    for old in target.iterdir():  # the arrays of earlier caches, or of a prepare killed before its switch
        if ARRAYS.match(old.name) and old.name != name:
            old.unlink(missing_ok=True)
    return meta


class NotPrepared(DataError):
    pass


# what prepared.json holds (the shape every reader may rely on; data/folder.py adds its own keys)
META_SHAPE = {"format": int, "dataset": str, "source": str, "arrays": str, "arrays_sha256": str, "classes": [str],
              "counts": readback.Each(int), "class_counts": readback.Each([int]), "prepared_at": str}
IDX_SHAPE = {**META_SHAPE, "verified": bool, "counts": {"train": int, "test": int},
             "class_counts": {"train": [int], "test": [int]}}


def read_cache(target: Path, keys: tuple, shape=None) -> tuple[dict, dict]:
    """(meta, arrays) of the complete, undamaged cache in ``target`` (``prepared.json`` + ``arrays-ID.npz``);
    NotPrepared if there is none, DataError if it is damaged or of another format. ``shape``: what
    ``prepared.json`` must hold (``readback.shape_problem``; default ``META_SHAPE``)."""
    shape = shape if shape is not None else META_SHAPE
    meta_path = target / "prepared.json"
    if not os.path.lexists(meta_path):
        raise NotPrepared(f"nothing is prepared in {target}")
    meta, problem = readback.read_json(meta_path, lambda m: readback.shape_problem(m, {"format": int}))
    if problem:
        raise DataError(f"{meta_path} is damaged ({problem})")
    if meta["format"] != FORMAT_VERSION:
        raise DataError(f"{target} was prepared by another version of mnist-kit")
    problem = readback.shape_problem(meta, shape)
    if problem or not ARRAYS.match(meta["arrays"]) or not re.fullmatch(r"[0-9a-f]{64}", meta["arrays_sha256"]):
        problem = problem or "its arrays file or checksum is not one mnist-kit writes"
        raise DataError(f"{meta_path} is damaged ({problem})")
    expected, arrays_name = meta["arrays_sha256"], meta["arrays"]
    arrays_path = target / arrays_name
    if not arrays_path.is_file():
        raise DataError(f"{arrays_path}, which {meta_path} names, is missing")
    if digest(arrays_path) != expected:
        raise DataError(f"{arrays_path} is damaged (checksum mismatch)")
    try:
        with np.load(arrays_path) as z:
            arrays = {k: z[k] for k in keys}
    except (OSError, ValueError, KeyError) as e:
        raise DataError(f"{arrays_path} cannot be read ({e})") from None
    return meta, arrays


def load(name: str, root: Path) -> Prepared:
    """Load a prepared data set, checking it is complete and undamaged."""
    info_ = dataset_info(name)
    target = Path(root) / name
    how = f"run: mnist-kit prepare --dataset {name}" + (f" --root {root}" if root != data_root() else "")
    try:
        meta, arrays = read_cache(target, ("x_train", "y_train", "x_test", "y_test"), IDX_SHAPE)
    except NotPrepared:
        raise DataError(f"{info_.title} is not prepared in {target}; {how}") from None
    except DataError as e:
        raise DataError(f"{e}; {how} --force") from None
    try:
        check_arrays(target, meta, arrays["x_train"], arrays["y_train"], (28, 28))
        check_arrays(target, meta, arrays["x_test"], arrays["y_test"], (28, 28))
        if meta["classes"] != list(info_.classes) or any(len(c) != len(info_.classes)
                                                         for c in meta["class_counts"].values()):
            raise DataError(f"{target / 'prepared.json'} is damaged (its classes are not {info_.title}'s)")
    except DataError as e:
        raise DataError(f"{e}; {how} --force") from None
    return Prepared(name, info_.classes, arrays["x_train"], arrays["y_train"].astype(np.int64),
                    arrays["x_test"], arrays["y_test"].astype(np.int64), meta)


def check_arrays(target: Path, meta: dict, x: np.ndarray, y: np.ndarray, image_shape: tuple) -> None:
    """DataError unless ``x`` holds uint8 images of ``image_shape`` (and any channels) and ``y`` as many
    labels of ``meta``'s classes: what a cache mnist-kit wrote holds, whoever wrote this one."""
    if not (x.dtype == np.uint8 and x.ndim in (3, 4) and tuple(x.shape[1:3]) == tuple(image_shape)
            and (x.ndim == 3 or x.shape[3] == 3) and y.ndim == 1 and y.dtype.kind in "iu" and len(x) == len(y)
            and (y.size == 0 or 0 <= int(y.min()) and int(y.max()) < len(meta["classes"]))):
        raise DataError(f"the arrays in {target} are damaged (not {len(meta['classes'])}-class uint8 images of "
                        f"{'x'.join(map(str, image_shape))} with as many labels)")


def describe(meta: dict) -> str:
    """A short human report of a prepared data set: counts and class balance."""
    lines = [f"{meta['dataset']}: {meta['counts']['train']} training and {meta['counts']['test']} test images "
             f"(source: {meta['source']}; checksums {'verified' if meta['verified'] else 'NOT verified'})",
             f"  {'class':<14}{'train':>8}{'%':>7}{'test':>8}{'%':>7}"]
    tr, te = meta["class_counts"]["train"], meta["class_counts"]["test"]
    ntr, nte = max(sum(tr), 1), max(sum(te), 1)
    for i, cls in enumerate(meta["classes"]):
        lines.append(f"  {i} {cls:<12}{tr[i]:>8}{100 * tr[i] / ntr:>6.1f}%{te[i]:>8}{100 * te[i] / nte:>6.1f}%")
    return "\n".join(lines)
