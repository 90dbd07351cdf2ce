"""Image-folder data sets: a user's own images, one sub-folder per class, decoded once into a cache.

    FOLDER/<class name>/**/<image files>     class names = sub-folder names in sorted order; label = position

The cache, under the data root (``data.root``, ``$MNIST_KIT_DATA`` or ``~/.cache/mnist-kit``)::

    image_folder/<folder name>-<key>/arrays-ID.npz   x (N, H, W) or (N, H, W, 3) uint8, y (N,) int64
    image_folder/<folder name>-<key>/prepared.json   settings, classes, files, skipped files; written last

``key`` digests the folder's absolute path and the decoding settings (``DECODE_KEYS``), so other settings
prepare another cache beside this one. The test and validation splits (stratified: the same share of every
class, see splits.py) and the balancing of the training split are drawn from the cache per config, seeded
by ``data.split_seed``, so changing a ratio needs no new prepare.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mnist_kit.data.cache import (
    FORMAT_VERSION,
    META_SHAPE,
    DataError,
    NotPrepared,
    Prepared,
    check_arrays,
    read_cache,
    write_cache,
)
from mnist_kit.data.splits import stratified_split
from mnist_kit.datasets import IMAGE_FOLDER
from mnist_kit.util import provenance
from mnist_kit.util.console import Progress, info
from mnist_kit.util.images import COLORS, IMAGE_SUFFIXES, ImageError, load_image

if TYPE_CHECKING:
    from mnist_kit.config import Data

DECODE_KEYS = ("image_size", "color", "resize", "bad_files")
LIST_LIMIT = 20  # bad files listed by name in an error message
# what an image folder's prepared.json holds (beyond every cache's META_SHAPE)
FOLDER_SHAPE = {**META_SHAPE, "folder": str, "input_shape": [int], "listing_sha256": str, "files": [str],
                "ignored": [str], "skipped": [{"file": str, "reason": str}], "counts": {"all": int},
                "class_counts": {"all": [int]},
                "settings": {"image_size": [int], "color": str, "resize": str, "bad_files": str}}


def _settings(dcfg: Data) -> dict:
    """The keys that decide how images are decoded, as YAML and prepared.json write them."""
    values = dcfg.to_dict()
    return {k: values[k] for k in DECODE_KEYS}


def _folder(dcfg: Data) -> Path:
    if dcfg.folder is None:  # validation requires data.folder with image_folder
        raise DataError("data.folder is required with data.name: image_folder")
    return Path(dcfg.folder).expanduser().resolve()


def cache_dir(dcfg: Data, root: Path) -> Path:
    folder = _folder(dcfg)
    key = json.dumps({"folder": str(folder), **_settings(dcfg)}, sort_keys=True)
    return Path(root) / IMAGE_FOLDER / f"{folder.name}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def scan(folder: Path) -> tuple[list[str], list[tuple[str, int]], list[str]]:
    """(classes, [(relative path, label)], ignored files) of an image folder; DataError if it is not one."""
    if not folder.is_dir():
        raise DataError(f"data.folder {folder} is not a folder; it must hold one sub-folder of images per class")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    unnamed = [c for c in classes if printable(c) != c]
    if unnamed:
        raise DataError(f"class folder {printable(unnamed[0])!r} of {folder} has a name that is not valid UTF-8 "
                        "text; class names are labels: rename it")
    if len(classes) < 2:
        raise DataError(f"{folder} has {len(classes)} class sub-folder(s); it needs at least 2, laid out as "
                        f"{folder}/<class name>/<image files>")
    files, ignored, empty = [], [], []
    for label, name in enumerate(classes):
        found = 0
        for p in sorted((folder / name).rglob("*")):
            if not p.is_file() or any(part.startswith(".") for part in p.relative_to(folder).parts):
                continue
            if p.suffix.lower() in IMAGE_SUFFIXES:
                files.append((p.relative_to(folder).as_posix(), label))
                found += 1
            else:
                ignored.append(printable(p.relative_to(folder).as_posix()))
        if not found:
            empty.append(name)
    if empty:
        named = ", ".join(empty[:LIST_LIMIT]) + (f" and {len(empty) - LIST_LIMIT} more" if len(empty) > LIST_LIMIT
                                                 else "")
        raise DataError(f"{len(empty)} class folder(s) without image files in {folder}: {named}; add images or "
                        f"remove the folder(s) (image files end in {', '.join(sorted(IMAGE_SUFFIXES))})")
    return classes, files, ignored


def printable(name: str) -> str:
    """A file name as text: bytes that are not UTF-8 (kept by Python as surrogates) shown as U+FFFD."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _listing_digest(folder: Path, rel_paths) -> str:
    """Names, sizes and modification times of the files: what tells that the folder changed."""
    h = hashlib.sha256()
    for rel in rel_paths:
        st = (folder / rel).stat()
        h.update(os.fsencode(rel) + f"\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _decode(folder: Path, files, size, color: str, resize: str):
    """(images, labels, kept files, [(bad file, why)]) of ``files`` decoded at ``size`` and ``color``."""
    info(f"decoding {len(files)} images of {len(set(label for _, label in files))} classes from {folder} to "
         f"{size[0]}x{size[1]} {color} ({resize})")
    images, labels, kept, bad = [], [], [], []
    progress = Progress(len(files), "decoding", unit="image")
    for rel, label in files:
        try:
            images.append(load_image(folder / rel, size, color, resize))
            labels.append(label)
            kept.append(printable(rel))
        except ImageError as e:
            bad.append((printable(rel), printable(str(e))))
        except OSError as e:
            bad.append((printable(rel), f"cannot read: {e.strerror or e}"))
        progress.update(1)
    progress.close()
    return images, labels, kept, bad


def prepare_folder(dcfg: Data, root: Path, force: bool = False) -> dict:
    """Decode every image of ``data.folder`` once, at the configured size and colour; return the metadata."""
    folder = _folder(dcfg)
    classes, files, ignored = scan(folder)
    target = cache_dir(dcfg, root)
    listing = _listing_digest(folder, sorted(rel for rel, _ in files))
    if not force and os.path.lexists(target / "prepared.json"):
        try:
            meta, _ = read_cache(target, (), FOLDER_SHAPE)
            if meta["listing_sha256"] == listing and meta["classes"] == classes:
                info(f"{folder} is already prepared in {target} and has not changed; --force decodes it again")
                return meta
            info(f"{folder} changed since it was prepared; decoding it again")
        except DataError as e:
            info(f"the existing cache is unusable ({e}); decoding again")
    size, color, resize = tuple(dcfg.image_size), dcfg.color, dcfg.resize
    images, labels, kept, bad = _decode(folder, files, size, color, resize)
    if bad and dcfg.bad_files == "error":
        listed = "\n".join(f"  - {rel}: {why}" for rel, why in bad[:LIST_LIMIT])
        more = f"\n  ... and {len(bad) - LIST_LIMIT} more" if len(bad) > LIST_LIMIT else ""
        raise DataError(f"{len(bad)} of {len(files)} files in {folder} cannot be read as images:\n{listed}{more}\n"
                        "Fix or remove them, or leave them out with -o data.bad_files=skip (data.bad_files: skip)")
    y = np.asarray(labels, np.int64)
    counts = np.bincount(y, minlength=len(classes)) if len(y) else np.zeros(len(classes), np.int64)
    if (counts == 0).any():
        gone = [c for c, n in zip(classes, counts) if n == 0]
        raise DataError(f"no readable image left in class folder(s) {', '.join(gone)} of {folder}")
    meta = {
        "format": FORMAT_VERSION,  # the cache format of the IDX data sets
        "dataset": IMAGE_FOLDER,
        "source": f"folder {folder}",
        "folder": str(folder),
        "settings": _settings(dcfg),
        "input_shape": [COLORS[color], *size],
        "classes": classes,
        "counts": {"all": int(len(y))},
        "class_counts": {"all": counts.tolist()},
        "files": kept,
        "skipped": [{"file": rel, "reason": why} for rel, why in bad],
        "ignored": ignored,
        "listing_sha256": listing,
        "prepared_at": provenance.now(),
    }
    return write_cache(target, {"x": np.stack(images), "y": y}, meta)


def load_folder(dcfg: Data, root: Path, warn_if_changed: bool = True) -> Prepared:
    """The prepared image folder of ``dcfg``, its test split (``data.test_ratio``) held out."""
    folder = _folder(dcfg)
    target = cache_dir(dcfg, root)
    how = "run `mnist-kit prepare` with the same config and -o options"
    try:
        meta, arrays = read_cache(target, ("x", "y"), FOLDER_SHAPE)
    except NotPrepared:
        if not folder.is_dir():
            raise DataError(f"data.folder {folder} is not a folder (and nothing was prepared from it); set "
                            "data.folder to the folder that holds one sub-folder of images per class") from None
        settings = ", ".join(f"{k} {v}" for k, v in _settings(dcfg).items())
        raise DataError(f"{folder} is not prepared at these settings ({settings}); {how}") from None
    except DataError as e:
        raise DataError(f"{e}; {how} and --force") from None
    if warn_if_changed:
        try:
            changed = _listing_digest(folder, sorted(rel for rel, _ in scan(folder)[1])) != meta["listing_sha256"]
        except (DataError, OSError):  # the folder is gone or no longer an image folder
            changed = True
        if changed:
            info(f"warning: {folder} changed since it was prepared ({meta['prepared_at']}); using the prepared copy. "
                 f"To include the changes, {how} and --force")
    shape = meta["input_shape"]
    try:
        if len(shape) != 3 or shape[0] != (3 if arrays["x"].ndim == 4 else 1):
            raise DataError(f"{target / 'prepared.json'} is damaged (input_shape {shape} does not match its arrays)")
        check_arrays(target, meta, arrays["x"], arrays["y"], tuple(shape[1:]))
    except DataError as e:
        raise DataError(f"{e}; {how} and --force") from None
    x, y = arrays["x"], arrays["y"].astype(np.int64)
    rest, test = stratified_split(y, dcfg.test_ratio, dcfg.split_seed, salt=1)
    return Prepared(IMAGE_FOLDER, tuple(meta["classes"]), x[rest], y[rest], x[test], y[test], meta,
                    tuple(meta["input_shape"]))


def describe_folder(meta: dict, counts: dict) -> str:
    """Per-class counts of every split (and after balancing), and what was skipped or ignored."""
    s = meta["settings"]
    lines = [f"image folder {meta['folder']}: {meta['counts']['all']} images, {len(meta['classes'])} classes, "
             f"decoded to {s['image_size'][0]}x{s['image_size'][1]} {s['color']} ({s['resize']})"]
    cols = [c for c in ("all", "train", "val", "test", "train_balanced") if c in counts]
    width = max(8, *(len(c) for c in meta["classes"])) + 2
    lines.append(f"  {'class':<{width}}" + "".join(f"{c.replace('train_balanced', 'balanced'):>9}" for c in cols))
    for i, cls in enumerate(meta["classes"]):
        lines.append(f"  {cls:<{width}}" + "".join(f"{counts[c][i]:>9}" for c in cols))
    lines.append(f"  {'total':<{width}}" + "".join(f"{sum(counts[c]):>9}" for c in cols))
    if "train_balanced" in counts:
        lines.append("  balanced: the training split after oversampling (data.balance: oversample)")
    if meta["skipped"]:
        lines.append(f"  skipped {len(meta['skipped'])} unreadable file(s) (data.bad_files: skip), e.g. "
                     f"{meta['skipped'][0]['file']}: {meta['skipped'][0]['reason']}")
    if meta["ignored"]:
        lines.append(f"  ignored {len(meta['ignored'])} file(s) that are not images by name, e.g. {meta['ignored'][0]}")
    if sum(counts["val"]) == 0:
        lines.append("  warning: the validation split is empty, so training cannot start: raise data.val_ratio or "
                     "add images to the smallest classes")
    return "\n".join(lines)
