"""Tests for tomioka_jax.core._rng: flat draws, reshaped, are jax.random's numbers exactly."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tomioka_jax import core


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_flat_draws_equal_jax_random(dtype):
  """Under the partitionable threefry (JAX's default) element i is the hash of its flat index,
  so the flat draw reshaped is jax.random's draw of the shape, bit for bit: typed and raw keys,
  ranks 1-3, an empty shape, under jit and vmap."""
  assert jax.config.jax_threefry_partitionable
  with jax.enable_x64(dtype == jnp.float64):
    keys = [jax.random.split(jax.random.key(2**31 + 5))[1], jax.random.PRNGKey(7)]
    for key in keys:
      for shape in [(7,), (6, 5), (2, 3, 4), (0, 3)]:
        np.testing.assert_array_equal(core.flat_normal(key, shape, dtype),
                                      jax.random.normal(key, shape, dtype))
        np.testing.assert_array_equal(core.flat_uniform(key, shape, dtype, -2.0, 3.0),
                                      jax.random.uniform(key, shape, dtype, -2.0, 3.0))
    batch = jax.random.split(jax.random.key(1), 3)
    np.testing.assert_array_equal(
        jax.jit(jax.vmap(lambda k: core.flat_normal(k, (4, 6), dtype)))(batch),
        jax.vmap(lambda k: jax.random.normal(k, (4, 6), dtype))(batch))


def test_flat_uniform_broadcasts_array_bounds_like_jax_random():
  key = jax.random.key(3)
  lo, hi = jnp.array([0.0, 1.0, -1.0]), jnp.array([[2.0], [4.0]])
  ours = core.flat_uniform(key, (2, 3), jnp.float32, lo, hi)
  np.testing.assert_array_equal(ours, jax.random.uniform(key, (2, 3), jnp.float32, lo, hi))
  lo, hi = jnp.broadcast_to(lo, (2, 3)), jnp.broadcast_to(hi, (2, 3))
  assert ours.shape == (2, 3) and bool(((ours >= lo) & (ours < hi)).all())
