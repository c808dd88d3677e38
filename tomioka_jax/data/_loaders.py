"""Dataset loading through TensorFlow Datasets, with honest offline fallbacks.

``load(name, split)`` reads a dataset through ``tfds.data_source`` (random access, no
TensorFlow needed) when it is already prepared in the TFDS data directory or can be
downloaded. Machines without network access (CI, the build machines of this project) get, for
the *digit* datasets only, a one-line warning and scikit-learn's 8x8 handwritten digits, which
ship inside scikit-learn; the returned :class:`Dataset` says which source it came from, so a
result is never reported as MNIST when it was computed on the 8x8 digits. Other datasets with
no source raise :class:`DatasetUnavailableError` saying how to provide them. Fashion-MNIST
has a second real source: Debian's ``dataset-fashion-mnist`` package (``apt-get install
dataset-fashion-mnist``) ships the full 60k/10k idx files, which :func:`read_idx` reads.
Nothing downloads at import time.
"""

from __future__ import annotations

import dataclasses
import gzip
import logging
import os
import pathlib
import socket
from typing import Any, NamedTuple

import numpy as np

logger = logging.getLogger(__name__)


class DatasetUnavailableError(RuntimeError):
  """Raised when a dataset is neither prepared locally, nor downloadable, nor has a fallback."""


@dataclasses.dataclass(frozen=True)
class _Spec:
  tfds_name: str
  num_classes: int
  digits: bool  # may fall back to scikit-learn's 8x8 digits
  image_key: str = "image"
  label_key: str = "label"
  debian_package: str | None = None  # ships the idx files under DEBIAN_DATASETS/<dir>
  debian_dir: str | None = None


_SPECS: dict[str, _Spec] = {
    "mnist": _Spec("mnist", 10, digits=True),
    "emnist_digits": _Spec("emnist/digits", 10, digits=True),
    "svhn_cropped": _Spec("svhn_cropped", 10, digits=True),
    "fashion_mnist": _Spec("fashion_mnist", 10, digits=False,
                           debian_package="dataset-fashion-mnist", debian_dir="fashion-mnist"),
    "cifar10": _Spec("cifar10", 10, digits=False),
    "cifar100": _Spec("cifar100", 100, digits=False),
}
DIGITS = "digits"  # scikit-learn's 8x8 digits, always available
KNOWN_DATASETS = tuple(sorted([*_SPECS, DIGITS]))
_SPLITS = ("train", "test")
# Where Debian's dataset-* packages install their files; the environment variable moves it.
DEBIAN_DATASETS_ENV = "TOMIOKA_DEBIAN_DATASETS"
_DEBIAN_DATASETS = "/usr/share/datasets"
_IDX_PREFIX = {"train": "train", "test": "t10k"}
# The idx format's type codes (third byte of the magic number) and their big-endian dtypes.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class Dataset(NamedTuple):
  """A labelled image dataset held in host memory.

  Attributes:
    x: images, float32 in [0, 1], shape (n, height, width, channels).
    y: integer labels, shape (n,).
    num_classes: the number of classes.
    name: the dataset asked for.
    source: where the arrays came from: ``"tfds:<name>"``, ``"debian:<package>"`` or
      ``"sklearn:digits"``.
  """

  x: np.ndarray
  y: np.ndarray
  num_classes: int
  name: str
  source: str

  def as_dict(self) -> dict[str, np.ndarray]:
    """``{"x": x, "y": y}``, the batch layout the core's classifier expects."""
    return {"x": self.x, "y": self.y}


def _network_available(timeout: float = 2.0) -> bool:
  """Whether TFDS's download host answers (so ``download=True`` can work)."""
  try:
    with socket.create_connection(("storage.googleapis.com", 443), timeout=timeout):
      return True
  except OSError:
    return False


def load_digits(split: str, *, test_fraction: float = 0.25, seed: int = 0) -> Dataset:
  """scikit-learn's 8x8 handwritten digits (1797 images), split by a fixed permutation.

  Args:
    split: ``"train"`` or ``"test"`` (or ``"all"``).
    test_fraction: the fraction of images held out as ``"test"``.
    seed: seeds the permutation that defines the split (fixed for reproducibility).
  """
  if split not in (*_SPLITS, "all"):
    raise ValueError(f"split must be one of {(*_SPLITS, 'all')}, got {split!r}")
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  bunch = datasets.load_digits()
  x = (bunch.images.astype(np.float32) / 16.0)[..., None]  # pixel values are 0..16
  y = bunch.target.astype(np.int32)
  order = np.random.default_rng(seed).permutation(len(y))
  n_test = int(round(test_fraction * len(y)))
  idx = {"test": order[:n_test], "train": order[n_test:], "all": np.arange(len(y))}[split]
  return Dataset(x=x[idx], y=y[idx], num_classes=10, name=DIGITS, source="sklearn:digits")


def read_idx(path: str | os.PathLike) -> np.ndarray:
  """Reads an idx file (the MNIST family's format), gzipped or not, into a NumPy array.

  The format: two zero bytes, a type code (0x08 ubyte, 0x09 byte, 0x0B int16, 0x0C int32,
  0x0D float32, 0x0E float64), the number of dimensions ``d``, then ``d`` big-endian int32
  sizes and the values in C order, big-endian.

  Raises:
    ValueError: the file is not an idx file or its length disagrees with its header.
  """
  path = pathlib.Path(path)
  opener = gzip.open if path.suffix == ".gz" else open
  with opener(path, "rb") as f:
    raw = f.read()
  if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
    raise ValueError(f"path={str(path)!r} is not an idx file (magic bytes {raw[:4]!r})")
  ndim = raw[3]
  header = 4 + 4 * ndim
  if len(raw) < header:
    raise ValueError(f"path={str(path)!r}: idx header for {ndim} dimensions is truncated")
  shape = tuple(int(n) for n in np.frombuffer(raw[4:header], ">i4"))
  dtype = np.dtype(_IDX_DTYPES[raw[2]])
  expected = header + int(np.prod(shape)) * dtype.itemsize
  if len(raw) != expected:
    raise ValueError(f"path={str(path)!r}: idx header says shape {shape} ({expected} bytes) "
                     f"but the file has {len(raw)} bytes")
  return np.frombuffer(raw[header:], dtype).reshape(shape).astype(dtype.newbyteorder("="))


def _debian_files(spec: _Spec, split: str) -> tuple[pathlib.Path, pathlib.Path] | None:
  """The (images, labels) idx files of ``spec``'s Debian package, if installed."""
  if spec.debian_dir is None or split not in _IDX_PREFIX:
    return None
  root = pathlib.Path(os.environ.get(DEBIAN_DATASETS_ENV, _DEBIAN_DATASETS)) / spec.debian_dir
  prefix = _IDX_PREFIX[split]
  images = root / f"{prefix}-images-idx3-ubyte.gz"
  labels = root / f"{prefix}-labels-idx1-ubyte.gz"
  return (images, labels) if images.exists() and labels.exists() else None


def _load_debian(name: str, spec: _Spec, split: str,
                 files: tuple[pathlib.Path, pathlib.Path]) -> Dataset:
  images, labels = (read_idx(f) for f in files)
  if images.ndim != 3 or labels.shape != images.shape[:1]:
    raise ValueError(f"{files[0]} and {files[1]} do not hold one label per image: shapes "
                     f"{images.shape} and {labels.shape}")
  x = (images.astype(np.float32) / 255.0)[..., None]
  return Dataset(x=x, y=labels.astype(np.int32), num_classes=spec.num_classes, name=name,
                 source=f"debian:{spec.debian_package}")


def _tfds_source(spec: _Spec, split: str, data_dir: str | None, download: bool) -> Any:
  """The TFDS random-access source; raises if the data is neither prepared nor downloadable."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  source = tfds.data_source(spec.tfds_name, split=split, data_dir=data_dir, download=download)
  len(source)  # Touch it: a missing split only shows on first access.
  return source


def _read_all(source: Any, spec: _Spec) -> tuple[np.ndarray, np.ndarray]:
  records = [source[i] for i in range(len(source))]
  images = np.stack([np.asarray(r[spec.image_key]) for r in records])
  labels = np.asarray([r[spec.label_key] for r in records], dtype=np.int32)
  if images.ndim == 3:
    images = images[..., None]
  scale = 255.0 if images.dtype == np.uint8 else 1.0
  return images.astype(np.float32) / scale, labels


def load(name: str, split: str = "train", *, data_dir: str | None = None,
         download: bool | None = None, fallback: bool = True) -> Dataset:
  """Loads ``split`` of dataset ``name`` into memory.

  Args:
    name: one of :data:`KNOWN_DATASETS`. ``"digits"`` is scikit-learn's 8x8 digits.
    split: ``"train"`` or ``"test"`` (any TFDS split string for TFDS datasets).
    data_dir: the TFDS data directory (default: TFDS's, ``~/tensorflow_datasets`` or
      ``$TFDS_DATA_DIR``).
    download: let TFDS download and prepare the data if it is missing. ``None`` (default)
      downloads only when the download host answers within two seconds.
    fallback: for digit datasets (mnist, emnist_digits, svhn_cropped), fall back to
      scikit-learn's digits when TFDS has no source; the returned ``source`` says so.

  Returns:
    A :class:`Dataset`.

  Raises:
    ValueError: ``name`` is not a known dataset.
    DatasetUnavailableError: no source is available and there is no fallback.
  """
  if name == DIGITS:
    return load_digits(split)
  if name not in _SPECS:
    raise ValueError(
        f"unknown dataset name={name!r}; allowed: {', '.join(KNOWN_DATASETS)}")
  spec = _SPECS[name]
  if download is None:
    download = _network_available()
  try:
    source = _tfds_source(spec, split, data_dir, download)
  except Exception as e:  # TFDS raises several types for "not prepared / cannot download".
    reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    files = _debian_files(spec, split)
    if files is not None:
      logger.info("%s (%s): TFDS has no source (%s); reading %s's idx files in %s.", name,
                  split, reason, spec.debian_package, files[0].parent)
      return _load_debian(name, spec, split, files)
    if fallback and spec.digits:
      logger.warning(
          "%s (%s) is not available through TFDS (%s); falling back to scikit-learn's 8x8 "
          "digits (1797 images) -- results are on the digits, not on %s.", name, split, reason,
          name)
      return load_digits(split if split in _SPLITS else "train")
    data_dir_shown = data_dir or os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")
    debian = (f" Or install Debian's package: `apt-get install {spec.debian_package}` (it "
              f"ships the full dataset offline)." if spec.debian_package else "")
    raise DatasetUnavailableError(
        f"dataset {name!r} is not prepared in the TFDS data_dir {data_dir_shown} and could not "
        f"be downloaded ({reason}). To use it: on a machine with network access run "
        f"`tfds build {spec.tfds_name}` (or call load(..., download=True)), then copy the data "
        f"directory here and pass data_dir=... or set TFDS_DATA_DIR.{debian}") from e
  x, y = _read_all(source, spec)
  return Dataset(x=x, y=y, num_classes=spec.num_classes, name=name,
                 source=f"tfds:{spec.tfds_name}")


def dataset_info(name: str) -> dict[str, Any]:
  """The static facts about ``name``: TFDS name, number of classes, whether it falls back."""
  if name == DIGITS:
    return {"tfds_name": None, "num_classes": 10, "falls_back_to_digits": True}
  if name not in _SPECS:
    raise ValueError(f"unknown dataset name={name!r}; allowed: {', '.join(KNOWN_DATASETS)}")
  spec = _SPECS[name]
  return {"tfds_name": spec.tfds_name, "num_classes": spec.num_classes,
          "falls_back_to_digits": spec.digits}


__all__ = ["load", "load_digits", "read_idx", "dataset_info", "Dataset",
           "DatasetUnavailableError", "KNOWN_DATASETS", "DIGITS", "DEBIAN_DATASETS_ENV"]
