"""Data: IDX files, their sources and verification, image folders, the prepared caches, splits and batches."""

from pathlib import Path

from mnist_kit.data.cache import DataError, Prepared, data_root, describe, load, prepare, split_train_val
from mnist_kit.data.folder import cache_dir, describe_folder, load_folder, oversample, prepare_folder, split_counts
from mnist_kit.data.loader import Batches, Normalization
from mnist_kit.data.sources import DATASETS, dataset_info


def load_dataset(dcfg: dict) -> Prepared:
    """The prepared data set a config's ``data`` section names (MNIST-style or an image folder)."""
    root = data_root(dcfg["root"])
    return load_folder(dcfg, root) if dcfg["name"] == "image_folder" else load(dcfg["name"], root)


def prepared_dir(dcfg: dict, name: str | None = None) -> Path:
    """Where the prepared data of ``dcfg`` (or of the IDX data set ``name``) lives."""
    root = data_root(dcfg["root"])
    name = name or dcfg["name"]
    return cache_dir(dcfg, root) if name == "image_folder" else root / name


__all__ = ["DATASETS", "Batches", "DataError", "Normalization", "Prepared", "cache_dir", "data_root", "dataset_info",
           "describe", "describe_folder", "load", "load_dataset", "load_folder", "oversample", "prepare",
           "prepare_folder", "prepared_dir", "split_counts", "split_train_val"]
