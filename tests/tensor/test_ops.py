"""Tests for tomioka_jax.tensor._ops: unfoldings, mode products, Tucker, HOSVD."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tomioka_jax.tensor import _ops as ops


def _tensor(shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


@pytest.mark.parametrize("shape", [(3, 4, 5), (2, 3, 4, 5)])
def test_fold_inverts_unfold_and_column_order(shape):
  x = _tensor(shape)
  for k in range(len(shape)):
    m = ops.unfold(x, k)
    assert m.shape == (shape[k], np.prod(shape) // shape[k])
    np.testing.assert_array_equal(ops.fold(m, k, shape), x)
    # Documented order: remaining modes increasing, C order (last fastest).
    rest = [j for j in range(len(shape)) if j != k]
    idx = tuple(min(1, shape[j] - 1) for j in range(len(shape)))
    col = np.ravel_multi_index(tuple(idx[j] for j in rest), tuple(shape[j] for j in rest))
    assert m[idx[k], col] == x[idx]


def test_mode_product_matches_unfolding_identity_and_einsum():
  x = _tensor((3, 4, 5))
  m = _tensor((6, 4), seed=1)
  y = ops.mode_product(x, m, 1)
  np.testing.assert_allclose(ops.unfold(y, 1), m @ ops.unfold(x, 1), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(y, jnp.einsum("ijk,aj->iak", x, m), rtol=1e-5, atol=1e-5)


def test_tucker_to_tensor_matches_einsum_four_way():
  core = _tensor((2, 3, 2, 2))
  factors = [_tensor((n, r), seed=i + 1) for i, (n, r) in enumerate(zip((4, 5, 3, 6), core.shape))]
  expect = jnp.einsum("abcd,ia,jb,kc,ld->ijkl", core, *factors)
  np.testing.assert_allclose(ops.tucker_to_tensor(core, factors), expect, rtol=1e-4, atol=1e-4)


def test_random_tucker_has_orthonormal_factors_and_exact_multilinear_rank():
  shape, ranks = (8, 7, 6), (3, 2, 4)
  t = ops.random_tucker(jax.random.key(0), shape, ranks)
  assert t.core.shape == ranks
  for u, n, r in zip(t.factors, shape, ranks):
    assert u.shape == (n, r)
    np.testing.assert_allclose(u.T @ u, np.eye(r), atol=1e-5)
  x = ops.tucker_to_tensor(*t)
  for k, r in enumerate(ranks):
    s = np.linalg.svd(np.asarray(ops.unfold(x, k)), compute_uv=False)
    assert s[r - 1] > 1e-3 * s[0]
    assert np.all(s[r:] < 1e-4 * s[0])


def test_hosvd_full_rank_is_exact_and_truncation_recovers_low_rank():
  x = _tensor((4, 5, 3))
  np.testing.assert_allclose(ops.tucker_to_tensor(*ops.hosvd(x)), x, atol=1e-4)
  t = ops.random_tucker(jax.random.key(1), (9, 8, 7), (2, 3, 2))
  low = ops.tucker_to_tensor(*t)
  np.testing.assert_allclose(ops.tucker_to_tensor(*ops.hosvd(low, (2, 3, 2))), low, atol=1e-4)


def test_random_tucker_float64():
  with jax.enable_x64(True):
    t = ops.random_tucker(jax.random.key(0), (5, 4, 3), (2, 2, 2), jnp.float64)
    assert t.core.dtype == jnp.float64 and t.factors[0].dtype == jnp.float64


@pytest.mark.parametrize("ranks, match", [((5, 2, 2), r"ranks\[0\] must be in \[1, 4\]"),
                                          ((0, 2, 2), r"ranks\[0\]"),
                                          ((2, 2), "one entry per mode")])
def test_bad_ranks(ranks, match):
  with pytest.raises(ValueError, match=match):
    ops.random_tucker(jax.random.key(0), (4, 4, 4), ranks)


def test_bad_mode_and_shapes():
  x = jnp.zeros((2, 3, 4))
  with pytest.raises(ValueError, match="mode must be in"):
    ops.unfold(x, 3)
  with pytest.raises(ValueError, match="not a mode-0 unfolding"):
    ops.fold(jnp.zeros((2, 5)), 0, (2, 3, 4))
  with pytest.raises(ValueError, match=r"matrix must have shape \(m, 3\)"):
    ops.mode_product(x, jnp.zeros((2, 2)), 1)
