"""Data: IDX files, their sources and verification, the prepared cache, splits and batches."""

from mnist_kit.data.cache import DataError, Prepared, data_root, describe, load, prepare, split_train_val
from mnist_kit.data.loader import Batches, Normalization
from mnist_kit.data.sources import DATASETS, dataset_info

__all__ = ["DATASETS", "Batches", "DataError", "Normalization", "Prepared", "data_root", "dataset_info",
           "describe", "load", "prepare", "split_train_val"]
