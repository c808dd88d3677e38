"""Tests of dataset loading: the TFDS path (mock data), the offline fallback, and errors."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from tomioka_jax import data


def test_digits_split_is_a_fixed_partition():
  train, test, everything = (data.load("digits", s) for s in ("train", "test", "all"))
  assert train.x.shape[1:] == (8, 8, 1) and len(train.y) + len(test.y) == len(everything.y) == 1797
  assert train.x.dtype == np.float32 and 0.0 <= train.x.min() and train.x.max() <= 1.0
  assert set(np.unique(train.y)) == set(range(10))
  # Deterministic, and train/test disjoint: compare images as bytes.
  again = data.load("digits", "train")
  np.testing.assert_array_equal(again.x, train.x)
  train_rows = {r.tobytes() for r in train.x}
  overlap = sum(r.tobytes() in train_rows for r in test.x)
  assert overlap <= 5  # the digits contain a handful of exact duplicate images
  assert train.source == "sklearn:digits"


@pytest.mark.parametrize("name, shape", [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))])
def test_tfds_path_with_mock_data(name, shape):
  with tfds.testing.mock_data(num_examples=12, policy=tfds.testing.MockPolicy.USE_CODE):
    ds = data.load(name, "train", download=False)
  assert ds.source.startswith("tfds:")
  assert ds.x.shape == (12, *shape) and ds.x.dtype == np.float32
  assert 0.0 <= ds.x.min() and ds.x.max() <= 1.0
  assert ds.y.shape == (12,) and ds.y.dtype == np.int32
  assert ds.y.max() < ds.num_classes


def test_digit_dataset_falls_back_offline(tmp_path, caplog):
  with caplog.at_level("WARNING"):
    ds = data.load("mnist", "test", data_dir=str(tmp_path), download=False)
  assert ds.source == "sklearn:digits" and ds.x.shape[1:] == (8, 8, 1)
  messages = [r.getMessage() for r in caplog.records if r.name == "tomioka_jax.data._loaders"]
  assert len(messages) == 1 and "\n" not in messages[0]
  assert "falling back to scikit-learn's 8x8 digits" in messages[0]


def test_non_digit_dataset_without_source_says_what_to_do(tmp_path):
  with pytest.raises(data.DatasetUnavailableError, match="tfds build cifar10"):
    data.load("cifar10", "train", data_dir=str(tmp_path), download=False)
  with pytest.raises(data.DatasetUnavailableError, match="tfds build mnist"):
    data.load("mnist", "train", data_dir=str(tmp_path), download=False, fallback=False)


def test_unknown_name_and_split():
  with pytest.raises(ValueError, match="unknown dataset name='imagenet21k'; allowed: .*mnist"):
    data.load("imagenet21k")
  with pytest.raises(ValueError, match="split must be one of"):
    data.load("digits", "validation")
  with pytest.raises(ValueError, match="unknown dataset name"):
    data.dataset_info("nope")
  assert data.dataset_info("mnist")["falls_back_to_digits"]
