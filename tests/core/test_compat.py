"""The threefry compile-time work-around draws bit-identical random numbers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tomioka_jax import core
from tomioka_jax.core import _compat as compat


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


@pytest.mark.parametrize("size", [compat.UNROLL_MIN_SIZE - 1, compat.UNROLL_MIN_SIZE, 5000])
def test_unrolled_cpu_lowering_same_bits_as_rolled(size):
  """Large hashes are lowered unrolled on CPU, small ones rolled; both give JAX's bits."""
  core.fast_threefry_compilation()
  lowering = compat._STATE["lowering"]  # pylint: disable=protected-access
  if lowering is None:
    pytest.skip("this JAX version's threefry internals differ; nothing was changed")

  def draws(key):
    k1, k2 = jax.random.split(key)
    return jax.random.bits(k1, (size,)), jax.random.uniform(jax.random.fold_in(k2, 3), (size,))

  key = jax.random.key(11)
  ours = jax.jit(draws)(key)
  lowered = jax.jit(draws).lower(key).as_text()
  try:
    lowering["register"](lowering["rolled"])  # JAX's own CPU lowering, for the reference
    jax.clear_caches()
    reference = jax.jit(draws)(key)
    lowered_rolled = jax.jit(draws).lower(key).as_text()
  finally:
    lowering["register"](lowering["size_dependent"])
    jax.clear_caches()
  for a, b in zip(ours, reference):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # The draws of `size` elements are lowered as loops exactly when they are small; the key
  # derivation always is.
  loops, loops_rolled = lowered.count("stablehlo.while"), lowered_rolled.count("stablehlo.while")
  assert loops >= 1
  assert (loops == loops_rolled) == (size < compat.UNROLL_MIN_SIZE), (loops, loops_rolled)


def test_patient_cpu_collectives_sets_the_flag_once(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
  if not compat.patient_cpu_collectives(123):
    pytest.skip("jaxlib older than 0.10: left alone")
  assert compat.patient_cpu_collectives(456)  # idempotent: the first setting stays
  flags = __import__("os").environ["XLA_FLAGS"].split()
  assert flags == ["--xla_force_host_platform_device_count=2",
                   "--xla_cpu_collective_call_terminate_timeout_seconds=123"]
