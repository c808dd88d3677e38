"""Tests of the capacity measures: definitions, invariances and the rescaling theorem."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

from tomioka_jax.optim import _capacity as capacity


def random_layers(sizes, seed=0, bias=True, dtype=jnp.float64):
  keys = jax.random.split(jax.random.key(seed), 2 * len(sizes))
  out = []
  for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
    w = jax.random.normal(keys[2 * i], (a, b), dtype)
    bb = 0.3 * jax.random.normal(keys[2 * i + 1], (b,), dtype) if bias else None
    out.append((w, bb))
  return out


def test_group_norms_definitions():
  with jax.enable_x64(True):
    layers = random_layers((4, 5, 3))
    w1, w2 = np.asarray(layers[0][0]), np.asarray(layers[1][0])
    fro = np.linalg.norm(w1) * np.linalg.norm(w2)
    np.testing.assert_allclose(capacity.group_norm(layers, 2, 2), fro, rtol=1e-12)
    per_unit = np.max(np.linalg.norm(w1, axis=0)) * np.max(np.linalg.norm(w2, axis=0))
    np.testing.assert_allclose(capacity.per_unit_max_norm(layers, 2), per_unit, rtol=1e-12)
    l1_inf = np.max(np.abs(w1).sum(0)) * np.max(np.abs(w2).sum(0))
    np.testing.assert_allclose(capacity.group_norm(layers, 1, np.inf), l1_inf, rtol=1e-12)
    spec = np.linalg.norm(w1, 2) * np.linalg.norm(w2, 2)
    np.testing.assert_allclose(capacity.spectral_norm_product(layers), spec, rtol=1e-10)


def test_rescaling_keeps_function_and_path_norms():
  with jax.enable_x64(True):
    layers = random_layers((4, 6, 5, 2))
    scales = capacity.random_rescaling(jax.random.key(1), layers, spread=2.0)
    moved = capacity.rescale(layers, scales)
    x = jax.random.normal(jax.random.key(2), (7, 4), jnp.float64)
    np.testing.assert_allclose(capacity.mlp_forward(moved, x), capacity.mlp_forward(layers, x),
                               rtol=1e-10)
    for p in (1.0, 2.0, np.inf):
      np.testing.assert_allclose(capacity.path_norm(moved, p), capacity.path_norm(layers, p),
                                 rtol=1e-10)
    # Group norms are not rescaling invariant.
    assert abs(capacity.group_norm(moved) / capacity.group_norm(layers) - 1) > 1e-2


@pytest.mark.parametrize("p", [1.0, 2.0])
def test_path_norm_is_the_min_over_rescalings_of_per_unit_max_norms(p):
  """gamma_p(w) = min over node-wise rescalings of mu_{p,inf} (one output unit)."""
  with jax.enable_x64(True):
    layers = random_layers((3, 4, 3, 1), seed=3, bias=False)
    target = float(capacity.path_norm(layers, p))
    # Attained by the balancing rescaling ...
    np.testing.assert_allclose(capacity.per_unit_max_norm(capacity.balance(layers, p), p),
                               target, rtol=1e-10)
    # ... and no rescaling does better (numerical minimization over log-scales).
    widths = [w.shape[1] for w, _ in layers[:-1]]

    ws = [np.asarray(w) for w, _ in layers]

    def objective(log_s):  # mu_{p,inf} of the rescaled network, in NumPy for speed
      s = [np.zeros(ws[0].shape[0])] + np.split(log_s, np.cumsum(widths)[:-1]) + [
          np.zeros(ws[-1].shape[1])]
      return np.prod([np.max(np.linalg.norm(w * np.exp(b[None, :] - a[:, None]), p, axis=0))
                      for w, a, b in zip(ws, s[:-1], s[1:])])

    rng = np.random.default_rng(0)
    best = min(
        scipy.optimize.minimize(objective, rng.normal(size=sum(widths)), method="Nelder-Mead",
                                options={"maxiter": 4000, "xatol": 1e-8, "fatol": 1e-10}).fun
        for _ in range(3))
    assert best >= target * (1 - 1e-6)
    assert best <= target * 1.05  # the search does get close to the minimum


def test_margins_and_margin_normalized():
  logits = jnp.array([[3.0, 1.0, 0.0], [0.0, 2.0, 5.0], [1.0, 1.0, 0.0]])
  labels = jnp.array([0, 1, 2])
  np.testing.assert_allclose(capacity.margins(logits, labels), [2.0, -3.0, -1.0])
  np.testing.assert_allclose(
      capacity.margin_normalized(jnp.array(4.0), logits[:1], labels[:1], quantile=0.0), 2.0)


def test_bad_input():
  layers = [(jnp.ones((2, 3)), None), (jnp.ones((3, 1)), None)]
  with pytest.raises(ValueError, match="layers must hold at least one"):
    capacity.path_norm([])
  with pytest.raises(ValueError, match=r"layers\[1\] has fan_in 3 but layers\[0\] has fan_out 4"):
    capacity.path_norm([(jnp.ones((2, 4)), None), (jnp.ones((3, 1)), None)])
  with pytest.raises(ValueError, match="scales must hold one vector per hidden layer"):
    capacity.rescale(layers, [])
  with pytest.raises(ValueError, match="p must be >= 1 or inf, got 0.5"):
    capacity.path_norm(layers, 0.5)
