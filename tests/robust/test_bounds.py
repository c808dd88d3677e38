"""Tests of tomioka_jax/robust/_bounds.py: soundness, tightness, exactness, the reference's
forward-mode computation, gradients, batching and bad input."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tomioka_jax import core
from tomioka_jax.robust import _bounds as bounds

ACTS = ("relu", "sigmoid", "tanh", "arctan", "identity")
NONLINEAR = ("relu", "sigmoid", "tanh", "arctan")


def _net(act, sizes=(5, 8, 8, 3), seed=0, scale=0.6):
  rng = np.random.default_rng(seed)
  layers = []
  for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
    last = i == len(sizes) - 2
    layers.append((rng.normal(size=(a, b)) * scale, rng.normal(size=b) * 0.3,
                   "identity" if last else act))
  return layers


def _forward_np(layers, x):
  fns = {"relu": lambda z: np.maximum(z, 0), "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
         "tanh": np.tanh, "arctan": np.arctan, "identity": lambda z: z}
  for w, b, act in layers:
    x = fns[act](x @ w + b)
  return x


def _samples(x0, eps, n, seed):
  """Uniform points of the box and all its corners."""
  rng = np.random.default_rng(seed)
  d = x0.shape[0]
  inside = x0 + eps * rng.uniform(-1, 1, size=(n, d))
  corners = x0 + eps * np.array(list(itertools.product((-1.0, 1.0), repeat=d)))
  return np.concatenate([inside, corners])


@pytest.mark.parametrize("act", ACTS)
def test_sampled_outputs_inside_interval_linear_and_margin_bounds(act):
  layers = _net(act)
  x0 = np.random.default_rng(1).normal(size=5)
  eps = np.array([0.3, 0.1, 0.5, 0.2, 0.05])
  xs = _samples(x0, eps, 4000, seed=2)
  out = _forward_np(layers, xs)
  il, iu = map(np.asarray, bounds.interval_bounds(layers, x0 - eps, x0 + eps))
  ll, lu = map(np.asarray, bounds.linear_bounds(layers, x0 - eps, x0 + eps))
  tol = 1e-5
  assert np.all(out >= il - tol) and np.all(out <= iu + tol)
  assert np.all(out >= ll - tol) and np.all(out <= lu + tol)
  # Linear bounds never looser than the interval ones.
  assert np.all(ll >= il - tol) and np.all(lu <= iu + tol)
  for method in ("margin", "logits"):
    for y in range(3):
      ml, mu = map(np.asarray, bounds.margin_bounds(layers, x0 - eps, x0 + eps, y,
                                                    method=method))
      margin = out[:, y:y + 1] - out
      assert np.all(margin >= ml - tol) and np.all(margin <= mu + tol), (method, y)
      assert ml[y] == 0 and mu[y] == 0


@pytest.mark.parametrize("act", NONLINEAR)
def test_linear_strictly_tighter_than_interval_and_margin_than_logits(act):
  """On a deeper net the back-substitution must beat interval arithmetic on the outputs, and
  the margin spec must beat the separate-logit bound somewhere (both can fail if the
  relaxations or the signs in the back-substitution are wrong)."""
  layers = _net(act, sizes=(6, 10, 10, 4), seed=3)
  x0 = np.random.default_rng(4).normal(size=6)
  lo, hi = x0 - 0.2, x0 + 0.2
  il, iu = bounds.interval_bounds(layers, lo, hi)
  ll, lu = bounds.linear_bounds(layers, lo, hi)
  assert float(jnp.mean(lu - ll)) < 0.9 * float(jnp.mean(iu - il))
  ml, _ = bounds.margin_bounds(layers, lo, hi, 1, method="margin")
  sl, _ = bounds.margin_bounds(layers, lo, hi, 1, method="logits")
  assert np.all(np.asarray(ml) >= np.asarray(sl) - 1e-6)
  assert np.any(np.asarray(ml) > np.asarray(sl) + 1e-4)


@pytest.mark.parametrize("act", ACTS)
def test_zero_width_box_gives_the_network_output(act):
  layers = _net(act)
  x0 = np.random.default_rng(5).normal(size=5).astype(np.float32)
  y = _forward_np(layers, x0[None])[0]
  for fn in (bounds.interval_bounds, bounds.linear_bounds):
    lo, up = fn(layers, x0, x0)
    np.testing.assert_allclose(lo, y, atol=2e-5)
    np.testing.assert_allclose(up, y, atol=2e-5)


def test_linear_networks_bounds_are_exact():
  """One dense layer, and a stack of identity layers (collapsed to one), are bounded exactly
  by c^T W + b -/+ r^T |W|; so are the margins (rows e_y - e_j of the collapsed map)."""
  rng = np.random.default_rng(6)
  w, b = rng.normal(size=(4, 3)), rng.normal(size=3)
  lo = rng.normal(size=4)
  hi = lo + rng.uniform(0, 1, size=4)
  c, r = (lo + hi) / 2, (hi - lo) / 2
  for fn in (bounds.interval_bounds, bounds.linear_bounds):
    l, u = fn([(w, b, "identity")], lo, hi)
    np.testing.assert_allclose(l, c @ w + b - r @ np.abs(w), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(u, c @ w + b + r @ np.abs(w), rtol=1e-5, atol=1e-5)
  layers = _net("identity", sizes=(4, 6, 5, 3), seed=7)
  w_all = layers[0][0] @ layers[1][0] @ layers[2][0]
  b_all = (layers[0][1] @ layers[1][0] + layers[1][1]) @ layers[2][0] + layers[2][1]
  l, u = bounds.linear_bounds(layers, lo, hi)
  np.testing.assert_allclose(l, c @ w_all + b_all - r @ np.abs(w_all), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(u, c @ w_all + b_all + r @ np.abs(w_all), rtol=1e-4, atol=1e-4)
  y = 2
  w_m = w_all[:, y:y + 1] - w_all
  b_m = b_all[y] - b_all
  ml, mu = bounds.margin_bounds(layers, lo, hi, y)
  np.testing.assert_allclose(ml, c @ w_m + b_m - r @ np.abs(w_m), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(mu, c @ w_m + b_m + r @ np.abs(w_m), rtol=1e-4, atol=1e-4)
  # The interval bound of the stack is looser (it is not exact beyond one layer).
  il, iu = bounds.interval_bounds(layers, lo, hi)
  assert float(np.sum(iu - il)) > float(np.sum(u - l)) + 1e-3


@pytest.mark.parametrize("act", NONLINEAR)
def test_relaxation_lines_enclose_the_activation_on_a_grid(act):
  """D z + m_lower <= act(z) <= D z + m_upper for z on a grid of [l, u], for intervals that
  are negative, positive, straddle 0, narrow, wide and saturated."""
  rng = np.random.default_rng(8)
  centres = np.concatenate([rng.normal(size=60) * 3, [0.0, 8.0, -8.0, 0.5]])
  widths = np.concatenate([rng.uniform(1e-3, 6, size=60), [1e-4, 0.5, 20.0, 3.0]])
  lo, up = centres - widths / 2, centres + widths / 2
  with jax.enable_x64(True):
    d, m_low, m_up = map(np.asarray, bounds.linear_relaxation(act, lo, up))
  assert np.all(np.isfinite(d)) and np.all(d >= 0)
  fn = {"relu": lambda z: np.maximum(z, 0), "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
        "tanh": np.tanh, "arctan": np.arctan}[act]
  grid = lo[:, None] + (up - lo)[:, None] * np.linspace(0, 1, 401)[None]
  f = fn(grid)
  assert np.all(d[:, None] * grid + m_low[:, None] <= f + 1e-9)
  assert np.all(d[:, None] * grid + m_up[:, None] >= f - 1e-9)
  # Not trivially loose: on narrow intervals the lines pinch the function.
  narrow = widths < 1e-2
  gap = (m_up - m_low)[narrow]
  assert np.all(gap < 1e-4)


def test_relu_relaxation_closed_form():
  l = jnp.array([-2.0, 1.0, -3.0])
  u = jnp.array([1.0, 2.0, -1.0])
  d, m_low, m_up = bounds.linear_relaxation("relu", l, u)
  np.testing.assert_allclose(d, [1 / 3, 1.0, 0.0], atol=1e-5)
  np.testing.assert_allclose(m_low, 0.0)
  np.testing.assert_allclose(m_up, [2 / 3, 0.0, 0.0], atol=1e-5)


def _reference_forward_mode(layers, x0, eps):
  """The reference's computation, written independently in NumPy: forward-mode products of
  the weights and slopes per stage with both intercepts, bounds from their signs, and every
  layer (dense and activation) intersected with the interval step."""
  fns = {"relu": lambda z: np.maximum(z, 0), "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
         "tanh": np.tanh, "arctan": np.arctan}
  # stage 0: the input, x = x0 + e with |e| <= eps; stages: (matrix out x stage, m1, m2)
  mats, m1s, m2s = [np.eye(len(x0))], [x0], [x0]
  l, u = x0 - eps, x0 + eps
  for k, (w, b, act) in enumerate(layers):
    mats = [w.T @ m for m in mats]
    mats.append(np.eye(w.shape[1]))
    m1s.append(b)
    m2s.append(b)

    def quad(mats, m1s, m2s):
      rad = np.abs(mats[0]) @ eps
      lo, up = -rad, rad
      for m, a1, a2 in zip(mats, m1s, m2s):
        pos, neg = np.maximum(m, 0), np.minimum(m, 0)
        lo = lo + pos @ a1 + neg @ a2
        up = up + pos @ a2 + neg @ a1
      return lo, up

    ql, qu = quad(mats, m1s, m2s)
    mid, rad = w.T @ ((l + u) / 2) + b, np.abs(w).T @ ((u - l) / 2)
    l, u = np.maximum(ql, mid - rad), np.minimum(qu, mid + rad)
    if act == "identity":
      continue
    d, a1, a2 = map(np.asarray, bounds.linear_relaxation(act, l, u))
    mats = [d[:, None] * m for m in mats]
    mats.append(np.eye(len(d)))
    m1s.append(a1)
    m2s.append(a2)
    ql, qu = quad(mats, m1s, m2s)
    l, u = np.maximum(ql, fns[act](l)), np.minimum(qu, fns[act](u))
  return l, u


@pytest.mark.parametrize("act", NONLINEAR)
def test_linear_bounds_equal_the_reference_forward_mode(act):
  layers = _net(act, sizes=(5, 7, 6, 3), seed=9)
  x0 = np.random.default_rng(10).normal(size=5)
  eps = np.random.default_rng(11).uniform(0.05, 0.4, size=5)
  with jax.enable_x64(True):
    l, u = bounds.linear_bounds(layers, x0 - eps, x0 + eps)
    rl, ru = _reference_forward_mode(layers, x0, eps)
  np.testing.assert_allclose(l, rl, rtol=1e-9, atol=1e-9)
  np.testing.assert_allclose(u, ru, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("act", ("relu", "tanh"))
def test_gradients_wrt_eps_match_finite_differences(act):
  layers = _net(act, sizes=(5, 7, 6, 3), seed=12)
  x0 = np.random.default_rng(13).normal(size=5)
  with jax.enable_x64(True):
    layers64 = [(jnp.asarray(w), jnp.asarray(b), a) for w, b, a in layers]

    def objective(eps):
      total = 0.0
      for method in ("margin", "logits"):
        lower, upper = bounds.margin_bounds(layers64, x0 - eps, x0 + eps, 0, method=method)
        total = total + jnp.sum(lower[1:]) - 0.3 * jnp.sum(upper)
      ll, lu = bounds.linear_bounds(layers64, x0 - eps, x0 + eps)
      return total + jnp.sum(lu - ll)

    eps = jnp.asarray(np.random.default_rng(14).uniform(0.05, 0.3, size=5))
    grad = jax.jit(jax.grad(objective))(eps)
    assert np.all(np.isfinite(grad))
    h = 1e-6
    steps = h * jnp.eye(5)
    values = jax.jit(jax.vmap(objective))(jnp.concatenate([eps[None] + steps, eps[None] - steps]))
    fd = (values[:5] - values[5:]) / (2 * h)
    np.testing.assert_allclose(grad, fd, rtol=1e-4, atol=1e-6)
    assert np.max(np.abs(grad)) > 1e-2  # not a vacuous match


def test_saturated_smooth_activations_have_finite_gradients():
  layers = _net("sigmoid", sizes=(3, 4, 2), seed=15, scale=8.0)
  x0 = np.ones(3)
  grad = jax.jit(jax.grad(lambda e: jnp.sum(bounds.linear_bounds(layers, x0 - e, x0 + e)[0])))(
      jnp.full(3, 2.0))
  assert np.all(np.isfinite(grad))


def test_jit_and_vmap_over_points_and_layer_pytrees():
  layers = bounds.as_layers(_net("relu", sizes=(5, 8, 3), seed=16))
  rng = np.random.default_rng(17)
  x = rng.normal(size=(4, 5)).astype(np.float32)
  eps = rng.uniform(0.01, 0.2, size=(4, 5)).astype(np.float32)
  labels = np.array([0, 1, 2, 1])
  batched = jax.jit(bounds.margin_bounds)(layers, x - eps, x + eps, labels)
  for i in range(4):
    single = bounds.margin_bounds(layers, x[i] - eps[i], x[i] + eps[i], labels[i])
    np.testing.assert_allclose(batched[0][i], single[0], rtol=1e-5, atol=1e-5)
  vm = jax.vmap(lambda l, u: bounds.linear_bounds(layers, l, u))(x - eps, x + eps)
  np.testing.assert_allclose(vm[1], bounds.linear_bounds(layers, x - eps, x + eps)[1], atol=1e-6)


def test_layers_from_nnx_reproduces_core_mlp():
  model = core.MLP(6, (9, 7), 4, rngs=nnx.Rngs(0))
  layers = bounds.layers_from_nnx(model)
  assert [layer.activation for layer in layers] == ["relu", "relu", "identity"]
  x = np.random.default_rng(18).normal(size=(3, 6)).astype(np.float32)
  np.testing.assert_allclose(bounds.apply_layers(layers, x), model(x), rtol=1e-5, atol=1e-5)
  tanh_layers = bounds.layers_from_nnx(list(model.layers), activation=("tanh", "arctan"))
  assert [layer.activation for layer in tanh_layers] == ["tanh", "arctan", "identity"]
  with pytest.raises(ValueError, match="activation"):
    bounds.layers_from_nnx(model, activation=("tanh",))


def test_bad_input_raises_clear_errors():
  layers = _net("relu", sizes=(3, 4, 2))
  lo, hi = np.zeros(3), np.ones(3)
  with pytest.raises(ValueError, match="lo must be <= hi"):
    bounds.linear_bounds(layers, hi, lo)
  with pytest.raises(ValueError, match="same shape"):
    bounds.interval_bounds(layers, lo, np.ones(4))
  with pytest.raises(ValueError, match="fan_in"):
    bounds.linear_bounds(layers, np.zeros(4), np.ones(4))
  with pytest.raises(ValueError, match="activation='softplus'"):
    bounds.linear_bounds([(np.ones((3, 2)), np.zeros(2), "softplus")], lo, hi)
  with pytest.raises(ValueError, match="fan_in 5"):
    bounds.interval_bounds([layers[0], (np.ones((5, 2)), np.zeros(2), "identity")], lo, hi)
  with pytest.raises(ValueError, match="bias must have shape"):
    bounds.interval_bounds([(np.ones((3, 2)), np.zeros(3), "identity")], lo, hi)
  with pytest.raises(ValueError, match="non-empty"):
    bounds.interval_bounds([], lo, hi)
  with pytest.raises(ValueError, match="label must lie"):
    bounds.margin_bounds(layers, lo, hi, 2)
  with pytest.raises(ValueError, match="method"):
    bounds.margin_bounds(layers, lo, hi, 0, method="crown")
  with pytest.raises(ValueError, match="activation must be one of"):
    bounds.linear_relaxation("gelu", lo, hi)
