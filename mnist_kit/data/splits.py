"""Splits: the deterministic train/validation(/test) split of a prepared data set, balancing, and the split
into the batches that training and evaluation take.

MNIST-style sets split ``data.val_size`` random training images off for validation (their test set is
their own). Image folders are split per class (stratified: the same share of every class), test first
(``data.test_ratio``), then validation (``data.val_ratio``); ``data.balance: oversample`` repeats the
smaller classes' training images. Everything is seeded by ``data.split_seed`` alone.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from mnist_kit import datasets
from mnist_kit.data.batches import Batches, Normalization
from mnist_kit.data.cache import DataError, Prepared

if TYPE_CHECKING:
    from mnist_kit.config import Config, Data


def stratified_split(y: np.ndarray, ratio: float, seed: int, salt: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held-out) indices: ``ratio`` of each class held out, at least one image of any class that has
    three or more and never a whole class; deterministic in ``seed`` (and ``salt``, one per split)."""
    kept, held = [], []
    for k in np.unique(y):
        idx = np.flatnonzero(y == k)
        idx = idx[np.random.default_rng([seed, salt, int(k)]).permutation(len(idx))]
        n = int(round(len(idx) * ratio))
        if ratio > 0 and len(idx) >= 3:
            n = max(n, 1)
        n = min(n, len(idx) - 1)
        held.append(idx[:n])
        kept.append(idx[n:])
    cat = lambda parts: np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)  # noqa: E731
    return cat(kept), cat(held)


def oversample(y: np.ndarray, seed: int) -> np.ndarray:
    """Indices that repeat the images of smaller classes until every class has as many as the largest: whole
    copies first, then a seeded draw without replacement for the remainder."""
    counts = np.bincount(y)
    top = counts.max()
    out = []
    for k in np.flatnonzero(counts):
        idx = np.flatnonzero(y == k)
        reps, rem = divmod(top, len(idx))
        out += [np.tile(idx, reps), np.random.default_rng([seed, 3, int(k)]).choice(idx, rem, replace=False)]
    return np.sort(np.concatenate(out))


def val_ratio_of_rest(dcfg: Data) -> float:
    """``data.val_ratio`` is a share of the whole folder; this is its share of what the test split leaves."""
    return dcfg.val_ratio / (1.0 - dcfg.test_ratio)


def split_train_val(x: np.ndarray, y: np.ndarray, dcfg: Data):
    """The deterministic split of the training images (x_train, y_train, x_val, y_val): ``data.val_size``
    random images for MNIST-style sets, ``data.val_ratio`` of every class for image folders."""
    if datasets.get(dcfg.name).kind == "folder":
        train, val = stratified_split(y, val_ratio_of_rest(dcfg), dcfg.split_seed, salt=2)
    else:
        if dcfg.val_size >= len(y):
            raise DataError(f"data.val_size is {dcfg.val_size} but the training set has only {len(y)} images")
        order = np.random.default_rng(dcfg.split_seed).permutation(len(y))
        val, train = np.sort(order[:dcfg.val_size]), np.sort(order[dcfg.val_size:])
    return x[train], y[train], x[val], y[val]


def split_counts(dcfg: Data, prepared: Prepared) -> dict:
    """Images per class in each split, and in the training split after balancing: {split: [count per class]}."""
    k = len(prepared.classes)
    y_rest, y_test = prepared.y_train, prepared.y_test
    train, val = stratified_split(y_rest, val_ratio_of_rest(dcfg), dcfg.split_seed, salt=2)
    out = {"all": np.bincount(np.concatenate([y_rest, y_test]), minlength=k).tolist(),
           "train": np.bincount(y_rest[train], minlength=k).tolist(),
           "val": np.bincount(y_rest[val], minlength=k).tolist(),
           "test": np.bincount(y_test, minlength=k).tolist()}
    if dcfg.balance == "oversample":
        out["train_balanced"] = np.bincount(y_rest[train][oversample(y_rest[train], dcfg.split_seed)],
                                            minlength=k).tolist()
    return out


@dataclass
class Splits:
    """A prepared data set as training and evaluation take it: the normalisation (from the training split
    unless given), the training batches (shuffled per epoch, this process's share) and the validation ones.
    ``prepared`` keeps the test split and the facts of the data set; its training arrays live in the splits."""

    prepared: Prepared
    norm: Normalization
    train: Batches
    val: Batches


def make_splits(prepared: Prepared, cfg: Config, norm: Normalization | None = None, rank: int = 0,
                world: int = 1) -> Splits:
    """Split ``prepared`` as ``cfg`` says into batches for process ``rank`` of ``world``."""
    dcfg, tcfg = cfg.data, cfg.train
    x_tr, y_tr, x_val, y_val = split_train_val(prepared.x_train, prepared.y_train, dcfg)
    norm = norm or Normalization.from_config(dcfg, x_tr)
    if dcfg.balance == "oversample":
        keep = oversample(y_tr, dcfg.split_seed)
        x_tr, y_tr = x_tr[keep], y_tr[keep]
    # the splits hold them: not kept twice (the arrays left None from here on)
    prepared = dataclasses.replace(prepared, x_train=None, y_train=None)  # type: ignore[arg-type]
    splits = Splits(prepared, norm,
                    Batches(x_tr, y_tr, tcfg.batch_size, norm, shuffle=True, seed=tcfg.seed, rank=rank,
                            world=world),
                    Batches(x_val, y_val, tcfg.eval_batch_size, norm))
    _check_sizes(splits, cfg, world)
    return splits


def _check_sizes(splits: Splits, cfg: Config, world: int) -> None:
    """DataError for splits that cannot train: no training step per epoch, or nothing to validate on."""
    n, batch = splits.train.num_samples, cfg.train.batch_size
    if len(splits.train) == 0:
        per = f"{world} processes x {batch}" if world > 1 else f"{batch}"
        raise DataError(f"no training step: the training split has {n} images and a step takes {per}; lower "
                        "train.batch_size" + (" or use fewer processes" if world > 1 else ""))
    asked = cfg.has_validation
    if splits.val.num_samples == 0 and asked:  # none asked for (0): training on every image
        raise DataError(f"the validation split is empty ({n} training images): validation picks the best "
                        "checkpoint; raise data.val_ratio, or add images to the smallest classes")
