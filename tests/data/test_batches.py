"""Tests of the step-indexed batch iterator."""

import jax
import numpy as np
import pytest

from tomioka_jax import data


def _data(n=50):
  return {"x": np.arange(n * 2, dtype=np.float32).reshape(n, 2), "y": np.arange(n)}


def test_each_epoch_is_a_permutation_and_steps_are_pure():
  batches = data.Batches(_data(), 10, key=jax.random.key(0))
  assert batches.steps_per_epoch == len(batches) == 5
  for epoch in range(3):
    seen = np.concatenate([b["y"] for b in batches.epoch(epoch)])
    np.testing.assert_array_equal(np.sort(seen), np.arange(50))
    # batches(step) is the same batch as the epoch iterator's, and x follows y.
    for i, b in enumerate(batches.epoch(epoch)):
      np.testing.assert_array_equal(batches(epoch * 5 + i)["y"], b["y"])
      np.testing.assert_array_equal(b["x"][:, 0], 2 * b["y"])
  orders = [np.concatenate([b["y"] for b in batches.epoch(e)]) for e in range(2)]
  assert not np.array_equal(orders[0], orders[1])  # reshuffled every epoch


def test_no_key_keeps_order_and_drop_remainder():
  batches = data.Batches(_data(23), 10)
  assert batches.steps_per_epoch == 2
  np.testing.assert_array_equal(batches(1)["y"], np.arange(10, 20))
  np.testing.assert_array_equal(batches(2)["y"], np.arange(10))  # next epoch
  keep = data.Batches(_data(23), 10, drop_remainder=False)
  assert keep.steps_per_epoch == 3 and keep(2)["y"].tolist() == [20, 21, 22]


def test_pad_remainder_masks_padding():
  batches = data.Batches(_data(23), 10, drop_remainder=False, pad_remainder=True)
  last = batches(2)
  assert last["y"].shape == (10,)
  np.testing.assert_array_equal(last["mask"], np.r_[np.ones(3), np.zeros(7)])
  np.testing.assert_array_equal(last["y"][:3], [20, 21, 22])
  assert batches(0)["mask"].sum() == 10


def test_process_slices_concatenate_to_the_global_batch():
  key = jax.random.key(3)
  full = data.Batches(_data(), 12, key=key)
  parts = [data.Batches(_data(), 12, key=key, process_index=p, process_count=3) for p in range(3)]
  for step in (0, 4, 9):
    np.testing.assert_array_equal(np.concatenate([p(step)["y"] for p in parts]),
                                  full(step)["y"])


@pytest.mark.parametrize("kwargs, message", [
    ({"batch_size": 0}, "batch_size must be a positive integer, got 0"),
    ({"batch_size": -3}, "batch_size must be a positive integer, got -3"),
    ({"batch_size": 100}, "batch_size=100 exceeds the 50 examples"),
    ({"batch_size": 10, "process_count": 3}, "batch_size=10 must be a multiple of process_count=3"),
    ({"batch_size": 10, "process_index": 2, "process_count": 2},
     r"process_index must be in \[0, process_count=2\), got 2"),
])
def test_bad_arguments(kwargs, message):
  with pytest.raises(ValueError, match=message):
    data.Batches(_data(), **kwargs)


def test_mismatched_lengths_rejected():
  with pytest.raises(ValueError, match="one common leading size"):
    data.Batches({"x": np.zeros((5, 2)), "y": np.zeros(4)}, 2)
