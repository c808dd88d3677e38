"""Tests of tomioka_jax/robust/_nonuniform.py: certified boxes are certified and hold under
sampling, non-uniform volume >= uniform volume, the augmented-Lagrangian schedule against a
hand-rolled loop, bisection optimality, batching and bad input."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from tomioka_jax import core
from tomioka_jax.robust import _bounds as bounds
from tomioka_jax.robust import _nonuniform as nonuniform

# A short schedule that still exercises every rule (dual update, beta growth after a delay,
# the final shrink) and a larger per-point step, so that the tests run in seconds.
D = 8
FAST = nonuniform.CertifyOptions(bisection_steps=30)  # the reference's schedule


@pytest.fixture(scope="module")
def trained():
  """A small MLP trained with the core trainer on three Gaussian blobs in 8-D that differ in
  their first three features only (as images differ in some pixels, not all)."""
  rng = np.random.default_rng(0)
  centres = np.zeros((3, D))
  centres[:, :3] = 3.0 * np.eye(3)
  y = rng.integers(0, 3, size=600).astype(np.int32)
  x = (0.1 * (centres[y] + rng.normal(size=(600, D)))).astype(np.float32)
  model = core.MLP(D, (16,), 3, rngs=nnx.Rngs(0))
  run = core.make_classifier_trainer(model, optax.adam(3e-2), {"x": x[:500], "y": y[:500]},
                                     {"x": x[500:], "y": y[500:]}, batch_size=50, epochs=10)
  params, metrics = run(nnx.state(model, nnx.Param), jax.random.key(1))
  nnx.update(model, params)
  assert float(metrics["test_err"][-1]) < 0.2
  layers = bounds.layers_from_nnx(model)
  # The same function on inputs scaled by 0.3, so that the certified radii (~0.025) lie well
  # inside what the reference's 400 steps can reach (eps grows by at most ~4e-4 per step).
  first = layers[0]
  layers[0] = bounds.DenseLayer(first.weight / 0.3, first.bias, first.activation)
  x = 0.3 * x
  pred = np.asarray(jnp.argmax(bounds.apply_layers(layers, x[500:]), -1))
  keep = np.flatnonzero(pred == y[500:])[:6]
  return layers, x[500:][keep], y[500:][keep]


@pytest.fixture(scope="module")
def certificates(trained):
  layers, x, y = trained
  return nonuniform.certify_nonuniform(layers, x, y, FAST), nonuniform.certify_uniform(
      layers, x, y, FAST)


def test_returned_boxes_are_certified_and_no_sampled_point_changes_the_label(trained,
                                                                           certificates):
  layers, x, y = trained
  for cert in certificates:
    assert np.all(np.asarray(cert.certified)) and np.all(np.asarray(cert.correct))
    margin = nonuniform.certified_margin(layers, x, y, cert.eps)
    assert np.all(np.asarray(margin) >= FAST.delta)
    np.testing.assert_allclose(margin, cert.margin, rtol=1e-5, atol=1e-6)
    rng = np.random.default_rng(3)
    corners = np.array(list(itertools.product((-1.0, 1.0), repeat=D)))
    for i in range(len(y)):
      eps = np.asarray(cert.eps[i])
      pts = np.concatenate([x[i] + eps * rng.uniform(-1, 1, size=(2000, D)), x[i] + eps * corners])
      logits = np.asarray(bounds.apply_layers(layers, pts))
      assert np.all(np.argmax(logits, -1) == y[i])
      # The logits stay inside the computed bounds.
      lo, hi = bounds.linear_bounds(layers, x[i] - eps, x[i] + eps)
      assert np.all(logits >= np.asarray(lo) - 1e-5) and np.all(logits <= np.asarray(hi) + 1e-5)


def test_nonuniform_volume_at_least_uniform_and_bisection_is_tight(trained, certificates):
  """With the tighter margin bound (at the reference's schedule) every non-uniform box has a
  larger volume than the uniform one; with the reference's separate-logit bound the schedule
  overshoots into the interior on some of these points, so only the certificates are checked
  there (above)."""
  layers, x, y = trained
  _, u = certificates
  nu = nonuniform.certify_nonuniform(layers, x, y, dataclass_replace(FAST, method="margin"))
  assert np.all(np.asarray(nu.certified))
  ratio = np.asarray(nonuniform.log_volume_ratio(nu, u))
  np.testing.assert_allclose(u.log_volume, D * np.log(u.eps[:, 0]), rtol=1e-5)
  assert np.all(ratio >= 0), ratio
  assert np.mean(ratio) > 1.0
  # The bisection's radius is (nearly) the largest certified one.
  bigger = nonuniform.certified_margin(layers, x, y, u.eps * 1.001)
  assert np.all(np.asarray(bigger) < FAST.delta)


def test_augmented_lagrangian_schedule_matches_a_hand_rolled_loop():
  """The reference's loop written out step by step (Python loop, float64) on one point; the
  certifier without the final shrink must return the same eps."""
  rng = np.random.default_rng(4)
  with jax.enable_x64(True):
    layers = bounds.as_layers([(rng.normal(size=(5, 8)) / 2, rng.normal(size=8) * 0.1, "tanh"),
                               (rng.normal(size=(8, 3)) / 2, rng.normal(size=3) * 0.1,
                                "identity")])
    x0 = rng.normal(size=5)
    y = int(np.argmax(np.asarray(bounds.apply_layers(layers, x0))))
    opts = nonuniform.CertifyOptions(iterations=23, learning_rate=3e-3, batch_size=2,
                                     beta=0.5, beta_growth=3.0, beta_every=7, beta_start=2,
                                     dual_every=3, max_shrink=0, delta=0.05)
    cert = nonuniform.certify_nonuniform(layers, x0, y, opts)

    def loss(v, lam, beta):
      lower, _ = bounds.margin_bounds(layers, x0 - v * v, x0 + v * v, y, method="logits")
      err = lower - opts.delta
      mask = np.arange(3) != y
      e = jnp.where(mask, jnp.minimum(err, -lam / beta), 0.0)
      return -jnp.sum(jnp.log(v * v)) + jnp.sum(lam * e) + beta / 2 * jnp.sum(e ** 2), e

    grad = jax.jit(jax.grad(loss, has_aux=True))
    v, lam, beta = np.full(5, np.sqrt(opts.eps_init)), np.zeros(3), opts.beta
    lams, betas = [], []
    for it in range(opts.iterations):
      g, e = grad(v, lam, beta)
      v = v - opts.learning_rate / opts.batch_size * np.asarray(g)
      if (it + 1) % opts.dual_every == 0:
        lam = lam + beta * np.asarray(e)
      if it + 1 > opts.beta_start and (it + 1 - opts.beta_start) % opts.beta_every == 0:
        beta *= opts.beta_growth
      lams.append(lam.copy())
      betas.append(beta)
    np.testing.assert_allclose(cert.eps, v * v, rtol=1e-10)
    assert betas[-1] == 0.5 * 3 ** 3  # grown at steps 9, 16, 23
    assert np.any(lams[-1] != 0)  # the dual update was active
    assert int(cert.shrink_steps) == 0


def test_shrink_search_reaches_feasibility_from_an_infeasible_start():
  rng = np.random.default_rng(5)
  layers = [(rng.normal(size=(4, 6)), rng.normal(size=6) * 0.1, "relu"),
            (rng.normal(size=(6, 3)), rng.normal(size=3) * 0.1, "identity")]
  x0 = rng.normal(size=4).astype(np.float32)
  y = int(np.argmax(np.asarray(bounds.apply_layers(layers, x0))))
  # One tiny step from a huge box: the loop ends infeasible, the shrink must fix it.
  opts = nonuniform.CertifyOptions(iterations=1, eps_init=4.0, shrink=0.9)
  cert = nonuniform.certify_nonuniform(layers, x0, y, opts)
  assert bool(cert.certified) and int(cert.shrink_steps) > 0
  assert float(cert.margin) >= opts.delta
  # One shrink fewer is not certified: the search stops at the first feasible box.
  before = cert.eps / opts.shrink
  assert float(nonuniform.certified_margin(layers, x0, y, before)) < opts.delta


def test_misclassified_points_are_not_certified_and_batching_matches_single_points(trained):
  layers, x, y = trained
  wrong = (y + 1) % 3
  cert = nonuniform.certify_uniform(layers, x[:2], wrong[:2], FAST)
  assert not np.any(np.asarray(cert.certified)) and not np.any(np.asarray(cert.correct))
  assert np.all(np.asarray(cert.eps) == 0) and np.all(np.isneginf(np.asarray(cert.log_volume)))
  single = nonuniform.certify_uniform(layers, x[1], y[1], FAST)
  batch = nonuniform.certify_uniform(layers, x[:2], y[:2], FAST)
  np.testing.assert_allclose(single.eps, batch.eps[1], rtol=1e-6)


def test_margin_method_certifies_at_least_the_logits_method_radius(trained):
  layers, x, y = trained
  opts = dataclass_replace(FAST, method="margin")
  tight = nonuniform.certify_uniform(layers, x, y, opts)
  loose = nonuniform.certify_uniform(layers, x, y, FAST)
  assert np.all(np.asarray(tight.eps[:, 0]) >= np.asarray(loose.eps[:, 0]) * (1 - 1e-6))


def dataclass_replace(options, **changes):
  import dataclasses  # pylint: disable=g-import-not-at-top
  return dataclasses.replace(options, **changes)


def test_bad_input_raises_clear_errors(trained):
  layers, x, y = trained
  with pytest.raises(ValueError, match="eps_init must be a positive"):
    nonuniform.CertifyOptions(eps_init=0.0)
  with pytest.raises(ValueError, match="eps_init must be a positive"):
    nonuniform.CertifyOptions(eps_init=-1e-3)
  with pytest.raises(ValueError, match="iterations"):
    nonuniform.CertifyOptions(iterations=0)
  with pytest.raises(ValueError, match="shrink"):
    nonuniform.CertifyOptions(shrink=1.0)
  with pytest.raises(ValueError, match="method"):
    nonuniform.CertifyOptions(method="crown")
  with pytest.raises(ValueError, match="label must lie"):
    nonuniform.certify_nonuniform(layers, x[0], 3, FAST)
  with pytest.raises(ValueError, match="label must have shape"):
    nonuniform.certify_uniform(layers, x[:2], y[:3], FAST)
  with pytest.raises(ValueError, match="x must have shape"):
    nonuniform.certify_nonuniform(layers, x[:, :4], y, FAST)
  with pytest.raises(ValueError, match="eps must be >= 0"):
    nonuniform.certified_margin(layers, x[0], y[0], -0.1)
  with pytest.raises(ValueError, match="options must be a CertifyOptions"):
    nonuniform.certify_uniform(layers, x, y, {"iterations": 3})
