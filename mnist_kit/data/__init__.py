"""Data: IDX files, their sources and verification, image folders, the prepared caches, splits and batches.

    idx.py      the IDX format            sources.py  mirrors, Debian, folders; checksums
    cache.py    prepared IDX data sets    folder.py   image folders, decoded once
    splits.py   train/val(/test) splits   batches.py  batches and the normalisation
    augment.py  the transforms of training batches and their seeding

This package uses numpy, Pillow and the standard library only: no Paddle, nothing of training.
May import: ``errors``, ``util``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mnist_kit import datasets
from mnist_kit.data.batches import Batches, Normalization
from mnist_kit.data.cache import DataError, Prepared, data_root, describe, load, prepare
from mnist_kit.data.folder import cache_dir, describe_folder, load_folder, prepare_folder
from mnist_kit.data.sources import dataset_info
from mnist_kit.data.splits import Splits, make_splits, oversample, split_counts, split_train_val

if TYPE_CHECKING:
    from mnist_kit.config import Config, Data


def load_dataset(dcfg: Data) -> Prepared:
    """The prepared data set a config's ``data`` section names (MNIST-style or an image folder)."""
    root = data_root(dcfg.root)
    return load_folder(dcfg, root) if datasets.get(dcfg.name).kind == "folder" else load(dcfg.name, root)


def prepared_dir(dcfg: Data, name: str | None = None) -> Path:
    """Where the prepared data of ``dcfg`` (or of the IDX data set ``name``) lives."""
    root = data_root(dcfg.root)
    name = name or dcfg.name
    return cache_dir(dcfg, root) if datasets.get(name).kind == "folder" else root / name


def load_splits(cfg: Config, norm: Normalization | None = None, rank: int = 0, world: int = 1) -> Splits:
    """The prepared data of ``cfg`` split into batches (see ``splits.make_splits``)."""
    return make_splits(load_dataset(cfg.data), cfg, norm, rank, world)


__all__ = ["Batches", "DataError", "Normalization", "Prepared", "Splits", "cache_dir", "data_root",
           "dataset_info", "describe", "describe_folder", "load", "load_dataset", "load_folder", "load_splits",
           "make_splits", "oversample", "prepare", "prepare_folder", "prepared_dir", "split_counts",
           "split_train_val"]
