"""Tests for tomioka_jax.tensor._spectral: the higher-order power method."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tomioka_jax.tensor import _ops as ops
from tomioka_jax.tensor import _spectral as spectral


def _orthonormal(n, r, seed):
  return np.linalg.qr(np.random.default_rng(seed).standard_normal((n, r)))[0]


def test_orthogonally_decomposable_tensor_norm_is_largest_weight():
  with jax.enable_x64(True):
    a, b, c = _orthonormal(6, 3, 0), _orthonormal(5, 3, 1), _orthonormal(4, 3, 2)
    weights = np.array([1.0, 3.0, 2.0])
    x = jnp.einsum("r,ir,jr,kr->ijk", weights, a, b, c)
    res = spectral.tensor_spectral_norm(jax.random.key(0), x, num_restarts=8, num_iters=50)
    np.testing.assert_allclose(res.value, 3.0, rtol=1e-8)
    for u, f in zip((a[:, 1], b[:, 1], c[:, 1]), res.factors):
      np.testing.assert_allclose(abs(np.dot(u, f)), 1.0, rtol=1e-8)
    assert res.restart_values.shape == (8,)
    np.testing.assert_allclose(res.value, res.restart_values.max())


def test_matrix_case_is_the_largest_singular_value():
  with jax.enable_x64(True):
    m = jnp.asarray(np.random.default_rng(3).standard_normal((7, 9)))
    res = spectral.tensor_spectral_norm(jax.random.key(1), m, num_iters=300)
    np.testing.assert_allclose(res.value, np.linalg.norm(np.asarray(m), 2), rtol=1e-8)


def test_random_tensor_stationarity_and_bounds():
  with jax.enable_x64(True):
    x = jnp.asarray(np.random.default_rng(4).standard_normal((5, 4, 3, 3)))
    res = spectral.tensor_spectral_norm(jax.random.key(2), x, num_restarts=8, num_iters=100)
    # Unit factors, the value is X(u_1, ..., u_K), and it is a fixed point of every update
    # (the first-order condition X(.., ., ..) = value * u_k).
    for k, u in enumerate(res.factors):
      np.testing.assert_allclose(jnp.linalg.norm(u), 1.0, rtol=1e-12)
      np.testing.assert_allclose(spectral.contract_except(x, res.factors, k), res.value * u,
                                 atol=1e-6)
    # ||X|| <= min_k ||X_(k)||_op (an upper bound), and the best restart is kept.
    assert float(res.value) <= min(np.linalg.norm(np.asarray(ops.unfold(x, k)), 2)
                                   for k in range(4)) + 1e-9
    assert float(res.value) >= float(res.restart_values.min())
    assert float(res.value) > 1.0


def test_jit_and_float32():
  x = jnp.asarray(np.random.default_rng(5).standard_normal((4, 4, 4)), jnp.float32)
  res = spectral.tensor_spectral_norm(jax.random.key(0), x)
  assert res.value.dtype == jnp.float32 and res.factors[0].dtype == jnp.float32
  again = jax.jit(spectral.tensor_spectral_norm)(jax.random.key(0), x)
  np.testing.assert_allclose(again.value, res.value, rtol=1e-6)


@pytest.mark.parametrize("kwargs, match", [(dict(num_restarts=0), "num_restarts must be"),
                                           (dict(num_iters=-1), "num_iters must be")])
def test_bad_input(kwargs, match):
  with pytest.raises(ValueError, match=match):
    spectral.tensor_spectral_norm(jax.random.key(0), jnp.ones((2, 2, 2)), **kwargs)
  with pytest.raises(ValueError, match="at least 2 modes"):
    spectral.tensor_spectral_norm(jax.random.key(0), jnp.ones((3,)))


def test_zero_padding_leaves_the_power_method_value_unchanged():
  # benchmarks/tensor_spectral.py pads every tensor of one order to one size: after the first
  # update each u_k is zero off the original block, so the value is the original's.
  with jax.enable_x64(True):
    x = np.random.default_rng(3).standard_normal((5, 6, 4))
    padded = np.zeros((9, 9, 9))
    padded[:5, :6, :4] = x
    res = spectral.tensor_spectral_norm(jax.random.key(0), padded, num_restarts=8,
                                        num_iters=200)
    ref = spectral.tensor_spectral_norm(jax.random.key(1), x, num_restarts=8, num_iters=200)
    np.testing.assert_allclose(res.value, ref.value, rtol=1e-8)
    for k, u in enumerate(res.factors):
      np.testing.assert_allclose(u[x.shape[k]:], 0, atol=1e-12)
