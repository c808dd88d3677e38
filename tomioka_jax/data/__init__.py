"""Datasets and batch iterators: TFDS loaders with offline fallbacks, step-indexed batches."""

from tomioka_jax.data._batches import Batches
from tomioka_jax.data._loaders import DEBIAN_DATASETS_ENV
from tomioka_jax.data._loaders import DIGITS
from tomioka_jax.data._loaders import KNOWN_DATASETS
from tomioka_jax.data._loaders import Dataset
from tomioka_jax.data._loaders import DatasetUnavailableError
from tomioka_jax.data._loaders import dataset_info
from tomioka_jax.data._loaders import load
from tomioka_jax.data._loaders import load_digits
from tomioka_jax.data._loaders import read_idx

__all__ = [
    "Batches",
    "DEBIAN_DATASETS_ENV",
    "DIGITS",
    "KNOWN_DATASETS",
    "Dataset",
    "DatasetUnavailableError",
    "dataset_info",
    "load",
    "load_digits",
    "read_idx",
]
