"""Datasets and batch iterators: TFDS loaders with offline fallbacks, step-indexed batches."""

from tomioka_jax.data.batches import Batches
from tomioka_jax.data.loaders import DIGITS
from tomioka_jax.data.loaders import KNOWN_DATASETS
from tomioka_jax.data.loaders import Dataset
from tomioka_jax.data.loaders import DatasetUnavailableError
from tomioka_jax.data.loaders import dataset_info
from tomioka_jax.data.loaders import load
from tomioka_jax.data.loaders import load_digits

__all__ = [
    "Batches",
    "DIGITS",
    "KNOWN_DATASETS",
    "Dataset",
    "DatasetUnavailableError",
    "dataset_info",
    "load",
    "load_digits",
]
