"""The threefry compile-time work-around draws bit-identical random numbers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tomioka_jax import core
from tomioka_jax.core import compat


@pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 3, 4), (2, 1, 3, 2), (0, 3)])
@pytest.mark.parametrize("bit_width", [8, 16, 32, 64])
def test_same_bits_as_jax(shape, bit_width):
  assert core.fast_threefry_compilation() and core.fast_threefry_compilation()  # idempotent
  original = compat._STATE["original"]  # pylint: disable=protected-access
  with jax.enable_x64(bit_width == 64):  # uint64 draws need x64
    key = jax.random.key(42)
    ours = jax.random.bits(key, shape, jnp.dtype(f"uint{bit_width}"))
    reference = original(jax.random.key_data(key), bit_width, shape)
    assert ours.dtype == reference.dtype == jnp.dtype(f"uint{bit_width}")
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(reference))


def test_same_samples_under_jit_and_vmap():
  core.fast_threefry_compilation()
  original = compat._STATE["original"]  # pylint: disable=protected-access
  keys = jax.random.split(jax.random.key(0), 3)
  ours = jax.jit(jax.vmap(lambda k: jax.random.bits(k, (4, 6))))(keys)
  reference = jnp.stack([original(jax.random.key_data(k), 32, (4, 6)) for k in keys])
  np.testing.assert_array_equal(np.asarray(ours), np.asarray(reference))
  # Distributions built on the bits: a normal of rank 3 equals the flat draw reshaped.
  key = jax.random.key(1)
  np.testing.assert_array_equal(np.asarray(jax.random.normal(key, (2, 3, 4))),
                                np.asarray(jax.random.normal(key, (24,)).reshape(2, 3, 4)))
