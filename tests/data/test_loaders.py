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


def _write_idx(path, array, code):
  import gzip
  header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">i4").tobytes()
  big_endian = {0x08: ">u1", 0x0B: ">i2", 0x0D: ">f4"}[code]
  body = header + array.astype(big_endian).tobytes()
  (gzip.open if str(path).endswith(".gz") else open)(path, "wb").write(body)


@pytest.mark.parametrize("code, dtype", [(0x08, np.uint8), (0x0B, np.int16), (0x0D, np.float32)])
@pytest.mark.parametrize("suffix", [".gz", ""])
def test_read_idx_round_trips(tmp_path, code, dtype, suffix):
  array = (np.arange(2 * 3 * 4) * 7 % 200).reshape(2, 3, 4).astype(dtype)
  path = tmp_path / f"a-idx3{suffix}"
  _write_idx(path, array, code)
  out = data.read_idx(path)
  assert out.dtype == dtype and out.dtype.isnative
  np.testing.assert_array_equal(out, array)


def test_read_idx_rejects_bad_files(tmp_path):
  bad = tmp_path / "bad"
  bad.write_bytes(b"\x01\x02\x08\x01" + b"\x00" * 8)
  with pytest.raises(ValueError, match="is not an idx file"):
    data.read_idx(bad)
  short = tmp_path / "short"
  _write_idx(short, np.zeros((4, 2), np.uint8), 0x08)
  short.write_bytes(short.read_bytes()[:-1])
  with pytest.raises(ValueError, match=r"header says shape \(4, 2\)"):
    data.read_idx(short)


def _fake_debian_fashion_mnist(root, n_train=6, n_test=4):
  d = root / "fashion-mnist"
  d.mkdir(parents=True)
  rng = np.random.default_rng(0)
  for prefix, n in (("train", n_train), ("t10k", n_test)):
    _write_idx(d / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)), 0x08)
    _write_idx(d / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10, 0x08)


def test_fashion_mnist_reads_debian_idx_files_when_tfds_has_none(tmp_path, monkeypatch):
  _fake_debian_fashion_mnist(tmp_path / "datasets")
  monkeypatch.setenv(data.DEBIAN_DATASETS_ENV, str(tmp_path / "datasets"))
  train = data.load("fashion_mnist", "train", data_dir=str(tmp_path / "tfds"), download=False)
  test = data.load("fashion_mnist", "test", data_dir=str(tmp_path / "tfds"), download=False)
  assert train.source == test.source == "debian:dataset-fashion-mnist"
  assert train.x.shape == (6, 28, 28, 1) and test.x.shape == (4, 28, 28, 1)
  assert train.x.dtype == np.float32 and 0.0 <= train.x.min() and train.x.max() <= 1.0
  np.testing.assert_array_equal(train.y, np.arange(6) % 10)
  assert train.y.dtype == np.int32 and train.num_classes == 10


def test_fashion_mnist_without_any_source_names_the_debian_package(tmp_path, monkeypatch):
  monkeypatch.setenv(data.DEBIAN_DATASETS_ENV, str(tmp_path / "nothing"))
  with pytest.raises(data.DatasetUnavailableError,
                     match="apt-get install dataset-fashion-mnist"):
    data.load("fashion_mnist", "train", data_dir=str(tmp_path), download=False)


def test_fashion_mnist_debian_package_when_installed():
  """The real package, where this machine has it (CI installs it; see .ci/run)."""
  import pathlib
  if not pathlib.Path("/usr/share/datasets/fashion-mnist").exists():
    pytest.skip("Debian's dataset-fashion-mnist is not installed")
  ds = data.load("fashion_mnist", "test", data_dir="/nonexistent-tfds", download=False)
  assert ds.source == "debian:dataset-fashion-mnist"
  assert ds.x.shape == (10000, 28, 28, 1) and np.bincount(ds.y).tolist() == [1000] * 10
