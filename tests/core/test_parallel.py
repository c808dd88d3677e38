"""Tests of the mesh and sharding helpers."""

import jax
import numpy as np
import pytest

from tomioka_jax import core


def test_mesh_and_shardings():
  mesh = core.data_mesh()
  assert core.mesh_size(mesh) == 8 and mesh.axis_names == (core.DATA_AXIS,)
  batch = core.shard_batch({"x": np.arange(16.0).reshape(16, 1)}, mesh)
  x = batch["x"]
  assert x.shape == (16, 1)
  # Each device holds two consecutive rows: the batch is split along its leading axis.
  shards = sorted(x.addressable_shards, key=lambda s: s.index[0].start)
  assert [s.data.shape for s in shards] == [(2, 1)] * 8
  np.testing.assert_array_equal(np.concatenate([s.data for s in shards]), np.asarray(x))
  rep = core.replicate({"w": np.ones(3), "key": jax.random.key(3)}, mesh)
  assert rep["w"].sharding.is_fully_replicated
  np.testing.assert_array_equal(jax.random.key_data(rep["key"]),
                                jax.random.key_data(jax.random.key(3)))


def test_mesh_subset_and_empty():
  assert core.mesh_size(core.data_mesh(jax.devices()[:2])) == 2
  with pytest.raises(ValueError, match="devices must name at least one device"):
    core.data_mesh([])


def test_initialize_distributed_validates_arguments():
  with pytest.raises(ValueError, match="num_processes must be >= 1, got 0"):
    core.initialize_distributed("localhost:1", 0, 0)
  with pytest.raises(ValueError, match=r"process_id must be in \[0, num_processes=2\), got 5"):
    core.initialize_distributed("localhost:1", 2, 5)
