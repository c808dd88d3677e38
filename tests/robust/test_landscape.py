"""Tests of robust/_landscape.py against explicit Hessians, finite differences and NumPy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from tomioka_jax.robust import _landscape as landscape


def _mlp_problem(dtype):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((20, 3)), dtype)
  y = jnp.asarray(rng.integers(0, 2, 20))
  params = {"w1": jnp.asarray(rng.standard_normal((3, 4)), dtype),
            "b1": jnp.asarray(0.1 * rng.standard_normal(4), dtype),
            "w2": jnp.asarray(rng.standard_normal((4, 2)), dtype)}

  def loss(p, batch=(x, y)):
    xb, yb = batch
    z = jnp.tanh(xb @ p["w1"] + p["b1"][None]) @ p["w2"]
    return jnp.mean(jax.nn.logsumexp(z, -1) - jnp.take_along_axis(z, yb[:, None], -1)[:, 0])

  return loss, params, x, y


def test_lanczos_top_eigenvalues_match_the_explicit_hessian():
  with jax.enable_x64(True):
    loss, params, _, _ = _mlp_problem(jnp.float64)
    flat, unravel = ravel_pytree(params)
    h = np.asarray(jax.hessian(lambda f: loss(unravel(f)))(flat))
    want = np.sort(np.linalg.eigvalsh(h))[::-1][:3]
    d = flat.shape[0]
    got, vecs = landscape.hessian_top_eigenvalues(loss, params, 3, key=jax.random.key(0),
                                                  steps=d, return_vectors=True)
    np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-10)
    v0 = ravel_pytree(jax.tree.map(lambda v: v[0], vecs))[0]
    np.testing.assert_allclose(h @ np.asarray(v0), want[0] * np.asarray(v0), atol=1e-7)
    # fewer steps than the dimension still find the largest one
    got = landscape.hessian_top_eigenvalues(loss, params, 1, key=jax.random.key(1), steps=15)
    np.testing.assert_allclose(got, want[:1], rtol=1e-6)
  # a quadratic with known spectrum
  with jax.enable_x64(True):
    q, _ = np.linalg.qr(np.random.default_rng(1).standard_normal((12, 12)))
    lam = np.linspace(-2.0, 5.0, 12)
    a = jnp.asarray(q @ np.diag(lam) @ q.T)
    got = landscape.hessian_top_eigenvalues(lambda p: 0.5 * p["v"] @ a @ p["v"],
                                            {"v": jnp.ones(12)}, 4, key=jax.random.key(2),
                                            steps=12)
    np.testing.assert_allclose(got, lam[::-1][:4], rtol=1e-9)


def test_hvp_equals_finite_differences_of_the_gradient():
  with jax.enable_x64(True):
    loss, params, _, _ = _mlp_problem(jnp.float64)
    v = jax.tree.map(lambda p: jnp.asarray(np.random.default_rng(3).standard_normal(p.shape)),
                     params)
    hv = landscape.hessian_vector_product(loss, params, v)
    h = 1e-5
    g = lambda t: jax.grad(loss)(jax.tree.map(lambda p, u: p + t * u, params, v))  # noqa
    fd = jax.tree.map(lambda a, b: (a - b) / (2 * h), g(h), g(-h))
    for a, b in zip(jax.tree.leaves(hv), jax.tree.leaves(fd)):
      np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)


def test_gradient_statistics_match_numpy():
  loss, params, x, y = _mlp_problem(jnp.float32)
  batches = (x.reshape(4, 5, 3), y.reshape(4, 5))
  stats = landscape.gradient_statistics(lambda p, b: loss(p, b), params, batches)
  g = np.stack([np.asarray(ravel_pytree(jax.grad(loss)(params, (x[5 * i:5 * i + 5],
                                                                  y[5 * i:5 * i + 5])))[0])
                for i in range(4)])
  norms = np.linalg.norm(g, axis=1)
  cos = [g[a] @ g[b] / norms[a] / norms[b] for a in range(4) for b in range(4) if a != b]
  np.testing.assert_allclose(stats["mean_norm"], norms.mean(), rtol=1e-5)
  np.testing.assert_allclose(stats["norm_of_mean"], np.linalg.norm(g.mean(0)), rtol=1e-5)
  np.testing.assert_allclose(stats["mean_cosine"], np.mean(cos), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(stats["variance"], np.mean(np.sum((g - g.mean(0)) ** 2, 1)),
                             rtol=1e-4)
  # the mean over B batches of a full-batch loss equals the full gradient's norm here
  np.testing.assert_allclose(stats["norm_of_mean"],
                             np.linalg.norm(ravel_pytree(jax.grad(loss)(params))[0]), rtol=1e-5)


def test_scans_and_filter_normalized_directions():
  loss, params, _, _ = _mlp_problem(jnp.float32)
  d1 = landscape.filter_normalized_direction(jax.random.key(0), params)
  d2 = landscape.filter_normalized_direction(jax.random.key(1), params)
  # each output unit's slice has the parameter's norm; biases keep |b_j|
  np.testing.assert_allclose(np.linalg.norm(d1["w1"], axis=0),
                             np.linalg.norm(params["w1"], axis=0), rtol=1e-5)
  np.testing.assert_allclose(np.abs(d1["b1"]), np.abs(params["b1"]), rtol=1e-6)
  alphas = jnp.array([-0.5, 0.0, 0.25])
  s1 = landscape.loss_scan_1d(loss, params, d1, alphas)
  np.testing.assert_allclose(s1[1], loss(params), rtol=1e-6)
  moved = jax.tree.map(lambda p, u: p + 0.25 * u, params, d1)
  np.testing.assert_allclose(s1[2], loss(moved), rtol=1e-5)
  s2 = landscape.loss_scan_2d(loss, params, d1, d2, alphas, jnp.array([0.0, 0.5]))
  assert s2.shape == (3, 2)
  np.testing.assert_allclose(s2[:, 0], s1, rtol=1e-5)
  moved = jax.tree.map(lambda p, u, v: p - 0.5 * u + 0.5 * v, params, d1, d2)
  np.testing.assert_allclose(s2[0, 1], loss(moved), rtol=1e-5)


def test_bad_input_raises():
  loss, params, x, y = _mlp_problem(jnp.float32)
  with pytest.raises(ValueError, match="steps must be an integer in"):
    landscape.hessian_top_eigenvalues(loss, params, 1, key=jax.random.key(0), steps=1000)
  with pytest.raises(ValueError, match="k must be an integer"):
    landscape.hessian_top_eigenvalues(loss, params, 0, key=jax.random.key(0))
  with pytest.raises(ValueError, match="at least 2 minibatches"):
    landscape.gradient_statistics(lambda p, b: loss(p, b), params, (x[None], y[None]))
