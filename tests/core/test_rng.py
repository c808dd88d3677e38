"""Tests for tomioka_jax.core._rng: the fused threefry draws are jax.random's, bit for bit."""

import jax
import jax.numpy as jnp
import numpy as np

from tomioka_jax.core import _rng as rng


def test_draws_equal_jax_random_bit_for_bit():
  """The in-fusion threefry draws are jax.random.normal / uniform exactly, or fall back to them."""
  normal = jax.jit(rng.normal, static_argnums=(1, 2))
  uniform = jax.jit(rng.uniform, static_argnums=(1, 2))
  keys = [jax.random.split(jax.random.key(2**31 + 5))[1], jax.random.PRNGKey(7),
          jax.random.key(0, impl="rbg")]  # typed, raw, and a key that falls back
  for dtype in [jnp.float32, jnp.float64]:
    with jax.enable_x64(dtype == jnp.float64):
      for key in keys:
        for shape in [(5, 4, 2), (4097, 3)]:  # the last one is drawn in blocks
          np.testing.assert_array_equal(normal(key, shape, dtype),
                                        jax.random.normal(key, shape, dtype))
          np.testing.assert_array_equal(uniform(key, shape, dtype),
                                        jax.random.uniform(key, shape, dtype))
      batch = jax.random.split(jax.random.key(1), 3)
      np.testing.assert_array_equal(
          jax.vmap(lambda k: rng.normal(k, (6,), dtype))(batch),
          jax.vmap(lambda k: jax.random.normal(k, (6,), dtype))(batch))
