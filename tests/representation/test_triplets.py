"""Tests of the multi-view triplet embedding (Zhang, Maji, Tomioka 2015)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from tomioka_jax import representation as rep
from tomioka_jax.representation import _triplets


# --- bad input --------------------------------------------------------------------------------

@pytest.mark.parametrize("triplets, message", [
    ([[0, 1, 5, 0]], r"triplets\[0, 2\] = 5 is not an object index; allowed: 0 <= index < "
                     r"num_objects = 4"),
    ([[0, 1, 2, 0], [-1, 1, 2, 0]], r"triplets\[1, 0\] = -1 is not an object index"),
    ([[0, 1, 2, 0], [3, 3, 2, 0]], r"triplets\[1\] = \(3, 3, 2\) repeats an object; allowed: "
                                   r"i, j, k pairwise distinct"),
    ([[2, 1, 2, 0]], r"triplets\[0\] = \(2, 1, 2\) repeats an object"),
    ([[0, 1, 1, 0]], r"triplets\[0\] = \(0, 1, 1\) repeats an object"),
    ([[0, 1, 2, 2]], r"triplets\[0, 3\] = 2 is not a view index; allowed: 0 <= t < "
                     r"num_views = 2"),
    ([[0, 1, 2, -1]], r"triplets\[0, 3\] = -1 is not a view index"),
    (np.array([[0.0, 1.0, 2.0, 0.0]]), r"triplets must have an integer dtype, got "
                                       r"triplets.dtype=float64; allowed: int8"),
    (jnp.array([[0.0, 1.0, 2.0, 0.0]]), r"triplets.dtype=float32"),
    (np.array([True, False, True]), r"integer dtype, got triplets.dtype=bool"),
    (np.zeros((3, 5), np.int32), r"triplets must have shape \(n, 4\) .* got "
                                 r"triplets.shape=\(3, 5\)"),
])
def test_bad_triplets_name_the_value(triplets, message):
  with pytest.raises(ValueError, match=message):
    rep.check_triplets(triplets, num_objects=4, num_views=2)


def test_fit_triplets_checks_its_arguments():
  good = np.array([[0, 1, 2, 0]])
  key = jax.random.key(0)
  with pytest.raises(ValueError, match=r"triplets\[0, 3\] = 1 is not a view index"):
    rep.fit_triplets(key, [[0, 1, 2, 1]], num_objects=3, num_views=1)
  with pytest.raises(ValueError, match=r"model must be one of 'joint', 'independent', "
                                       r"'pooled', got model='shared'"):
    rep.fit_triplets(key, good, num_objects=3, model="shared")
  with pytest.raises(ValueError, match=r"loss must be one of .*got loss='square'"):
    rep.fit_triplets(key, good, num_objects=3, loss="square")
  with pytest.raises(ValueError, match=r"metric must be one of 'full', 'diagonal', got "
                                       r"metric='lowrank'"):
    rep.fit_triplets(key, good, num_objects=3, metric="lowrank")
  with pytest.raises(ValueError, match=r"reg must be finite and >= 0, got reg=-1.0"):
    rep.fit_triplets(key, good, num_objects=3, reg=-1.0)
  with pytest.raises(ValueError, match=r"steps must be a positive integer, got steps=0"):
    rep.fit_triplets(key, good, num_objects=3, steps=0)
  with pytest.raises(ValueError, match=r"weights must have shape \(1,\)"):
    rep.fit_triplets(key, good, num_objects=3, weights=np.ones(2))
  with pytest.raises(ValueError, match=r"alpha must be finite and > 0, got alpha=0.0"):
    rep.fit_triplets(key, good, num_objects=3, loss="tste", alpha=0.0)
  with pytest.raises(ValueError, match=r"num_objects must be >= 3 .* got num_objects=2"):
    rep.make_multiview_triplets(key, np.ones((1, 2)), num_objects=2, triplets_per_view=1,
                                test_triplets_per_view=1)


def test_three_columns_are_one_view():
  out = rep.check_triplets(np.array([[2, 0, 1]], np.int64), num_objects=3)
  assert out.dtype == jnp.int32 and out.tolist() == [[2, 0, 1, 0]]


# --- the mathematics --------------------------------------------------------------------------

def _random_params(key, n=7, d=3, t=2, metric="full"):
  kx, kl = jax.random.split(key)
  x = jax.random.normal(kx, (n, d))
  shape = (t, d, d) if metric == "full" else (t, d)
  return rep.TripletParams(x, jax.random.normal(kl, shape))


def _all_triplets(n, t):
  rows = [(i, j, k, v) for v in range(t) for i in range(n) for j in range(n) for k in range(n)
          if len({i, j, k}) == 3]
  return jnp.array(rows, jnp.int32)


@pytest.mark.parametrize("metric", ["full", "diagonal"])
def test_distances_are_the_metric_quadratic_forms(metric):
  """d_t(i, j) = (x_i - x_j)^T M_t (x_i - x_j), against an explicit loop over M_t."""
  params = _random_params(jax.random.key(0), metric=metric)
  trips = _all_triplets(5, 2)
  d_ij, d_ik = rep.triplet_distances(params.view_embeddings(), trips)
  x, m = np.asarray(params.embedding, np.float64), np.asarray(rep.view_metrics(params.factors))
  for row, (a, b) in zip(np.asarray(trips), zip(np.asarray(d_ij), np.asarray(d_ik))):
    i, j, k, t = row
    assert a == pytest.approx((x[i] - x[j]) @ m[t] @ (x[i] - x[j]), rel=1e-4, abs=1e-5)
    assert b == pytest.approx((x[i] - x[k]) @ m[t] @ (x[i] - x[k]), rel=1e-4, abs=1e-5)


def test_metrics_are_psd_and_their_trace_is_the_penalty():
  params = _random_params(jax.random.key(1), d=4, t=3)
  m = rep.view_metrics(params.factors)
  assert np.allclose(m, np.swapaxes(m, 1, 2), atol=1e-6)
  assert np.linalg.eigvalsh(np.asarray(m, np.float64)).min() >= -1e-5
  np.testing.assert_allclose(np.trace(m, axis1=1, axis2=2),
                             np.sum(np.asarray(params.factors) ** 2, axis=(1, 2)), rtol=1e-5)


@pytest.mark.parametrize("metric", ["full", "diagonal"])
def test_margins_invariant_to_rotation_and_scaling(metric):
  """X -> X R with M_t -> R^T M_t R (L_t -> R^T L_t), and X -> c X with M_t -> M_t / c^2."""
  params = _random_params(jax.random.key(2), d=3, metric=metric)
  trips = _all_triplets(5, 2)
  ref = rep.triplet_margins(params.view_embeddings(), trips)
  if metric == "full":
    r, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))
    r = jnp.asarray(r, jnp.float32)
    rotated = rep.TripletParams(params.embedding @ r, jnp.einsum("de,tdr->ter", r, params.factors))
    np.testing.assert_allclose(rep.triplet_margins(rotated.view_embeddings(), trips), ref,
                               rtol=1e-4, atol=1e-4)
    obj = lambda p: rep.triplet_objective(p, trips, loss="logistic", reg=0.3)
    assert float(obj(rotated)) == pytest.approx(float(obj(params)), rel=1e-5)
  scaled = rep.TripletParams(3.0 * params.embedding, params.factors / 3.0)
  np.testing.assert_allclose(rep.triplet_margins(scaled.view_embeddings(), trips), ref,
                             rtol=1e-4, atol=1e-4)
  # And the rotation is really one: a non-orthogonal map changes the margins.
  skew = rep.TripletParams(params.embedding * jnp.array([[1.0, 2.0, 1.0]]), params.factors)
  assert not np.allclose(rep.triplet_margins(skew.view_embeddings(), trips), ref, atol=1e-2)


@pytest.mark.parametrize("loss", ["logistic", "tste"])
@pytest.mark.parametrize("model", ["joint", "independent"])
def test_gradients_match_finite_differences(loss, model):
  key = jax.random.key(3)
  params = (_random_params(key, n=6, d=2) if model == "joint" else
            rep.TripletParams(jax.random.normal(key, (2, 6, 2))))
  trips = _all_triplets(6, 2)[::7]
  weights = jnp.linspace(0.5, 1.5, trips.shape[0])
  f = lambda p: rep.triplet_objective(p, trips, weights, loss=loss, reg=0.1, alpha=1.5) / 100.0
  check_grads(f, (params,), order=1, modes=["rev"], eps=1e-2, atol=2e-2, rtol=2e-2)


def test_ste_and_tste_probabilities_against_the_formulas():
  rng = np.random.default_rng(4)
  d_ij, d_ik = rng.uniform(0, 5, 20), rng.uniform(0, 5, 20)
  alpha = 2.5
  ste = [math.exp(-a) / (math.exp(-a) + math.exp(-b)) for a, b in zip(d_ij, d_ik)]
  kern = lambda d: (1 + d / alpha) ** (-(alpha + 1) / 2)
  tste = [kern(a) / (kern(a) + kern(b)) for a, b in zip(d_ij, d_ik)]
  np.testing.assert_allclose(rep.ste_probability(d_ij, d_ik), ste, rtol=1e-5)
  np.testing.assert_allclose(rep.tste_probability(d_ij, d_ik, alpha), tste, rtol=1e-5)
  # The losses are their negative logs; the hinge is max(0, 1 - margin).
  np.testing.assert_allclose(rep.triplet_loss(d_ij, d_ik, "logistic"), -np.log(ste), rtol=1e-4)
  np.testing.assert_allclose(rep.triplet_loss(d_ij, d_ik, "tste", alpha=alpha), -np.log(tste),
                             rtol=1e-4)
  np.testing.assert_allclose(rep.triplet_loss(d_ij, d_ik, "hinge"),
                             np.maximum(0, 1 - (d_ik - d_ij)), rtol=1e-5, atol=1e-6)
  # Far apart, the probability is stable (no 0/0).
  assert float(rep.ste_probability(1e4, 0.0)) == 0.0
  assert np.isfinite(float(rep.triplet_loss(1e4, 0.0, "logistic")))


def test_triplet_error_counts_violations_and_ties_and_weights():
  z = jnp.array([[[0.0], [1.0], [3.0], [-1.0]]])
  trips = jnp.array([[0, 1, 2, 0], [0, 2, 1, 0], [0, 1, 3, 0]])  # right, wrong, tie
  assert float(rep.triplet_error(z, trips)) == pytest.approx(1.5 / 3)
  assert float(rep.triplet_error(z, trips, jnp.array([1.0, 0.0, 0.0]))) == 0.0


def test_zero_weights_drop_rows():
  params = _random_params(jax.random.key(5))
  trips = _all_triplets(5, 2)
  obj = lambda t, w: rep.triplet_objective(params, t, w, loss="hinge", reg=0.2)
  w = (jnp.arange(trips.shape[0]) % 3 == 0).astype(jnp.float32)
  assert float(obj(trips, w)) == pytest.approx(float(obj(trips[::3], None)), rel=1e-5)


# --- the generator ----------------------------------------------------------------------------

def test_generator_answers_follow_the_view_distances():
  masks = rep.shared_coordinate_views(3, 2, 1)
  assert masks.shape == (3, 5) and masks.sum(axis=1).tolist() == [3.0, 3.0, 3.0]
  data = rep.make_multiview_triplets(jax.random.key(6), masks, num_objects=12,
                                     triplets_per_view=50, test_triplets_per_view=30)
  assert data.train.shape == (150, 4) and data.test.shape == (90, 4)
  rep.check_triplets(data.train, 12, 3)  # distinct, in range
  assert data.train[:, 3].tolist() == [t for t in range(3) for _ in range(50)]
  truth = rep.view_embeddings(data.points, jnp.asarray(masks))  # mask as a diagonal metric
  assert float(rep.triplet_error(truth, data.train)) == 0.0
  assert float(rep.triplet_error(truth, data.test)) == 0.0
  # The views differ: view 0's truth mislabels many of view 1's triplets.
  assert float(rep.triplet_error(truth[:1], data.train[50:100])) > 0.1
  noisy = rep.make_multiview_triplets(jax.random.key(6), masks, num_objects=12,
                                      triplets_per_view=50, test_triplets_per_view=30, noise=1.0)
  assert 0.05 < float(rep.triplet_error(truth, noisy.train)) < 0.45


# --- training ---------------------------------------------------------------------------------

def test_separable_instance_is_fit_and_metrics_stay_psd():
  """Noise-free triplets of a 2-view instance are fit to ~0 training error; M_t stay PSD."""
  masks = rep.shared_coordinate_views(2, 1, 1)
  data = rep.make_multiview_triplets(jax.random.key(7), masks, num_objects=15,
                                     triplets_per_view=150, test_triplets_per_view=10)
  for metric in ("full", "diagonal"):
    fit = rep.fit_triplets(jax.random.key(8), data.train, num_objects=15, num_views=2, dim=3,
                           metric=metric, reg=1e-4, steps=400, learning_rate=0.05)
    assert float(fit.train_error) <= 0.01, metric
    assert float(fit.objective[-1]) < 0.2 * float(fit.objective[0])
    m = np.asarray(rep.view_metrics(fit.params.factors), np.float64)
    assert np.linalg.eigvalsh((m + np.swapaxes(m, 1, 2)) / 2).min() >= -1e-6


def test_vmap_over_seeds_matches_single_runs_and_baselines_have_their_shapes():
  data = rep.make_multiview_triplets(jax.random.key(9), rep.shared_coordinate_views(2, 1, 1),
                                     num_objects=10, triplets_per_view=40,
                                     test_triplets_per_view=10)
  kwargs = dict(num_objects=10, num_views=2, dim=2, model="independent", loss="logistic",
                steps=50)
  keys = jax.random.split(jax.random.key(10), 2)
  many = jax.vmap(lambda k: rep.fit_triplets(k, data.train, **kwargs))(keys)
  one = rep.fit_triplets(keys[1], data.train, **kwargs)
  assert many.params.embedding.shape == (2, 2, 10, 2) and many.params.factors is None
  np.testing.assert_allclose(many.params.embedding[1], one.params.embedding, rtol=1e-4,
                             atol=1e-5)
  assert not np.allclose(many.params.embedding[0], many.params.embedding[1])
  pooled = rep.fit_triplets(keys[0], data.train, num_objects=10, num_views=2, dim=2,
                            model="pooled", loss="tste", steps=5)
  assert pooled.params.embedding.shape == (1, 10, 2) and pooled.objective.shape == (5,)


def test_joint_model_pools_what_views_share():
  """Views that share coordinates: the joint model's held-out error is below the independent
  embeddings' when each view has few triplets (the paper's claim, on a tiny instance)."""
  masks = rep.shared_coordinate_views(3, 2, 1)
  data = rep.make_multiview_triplets(jax.random.key(11), masks, num_objects=30,
                                     triplets_per_view=150, test_triplets_per_view=500)
  errors = {}
  for model, dim in (("joint", 5), ("independent", 3)):
    fit = rep.fit_triplets(jax.random.key(12), data.train, num_objects=30, num_views=3,
                           dim=dim, model=model, reg=0.1, steps=400)
    errors[model] = float(rep.triplet_error(fit.params.view_embeddings(), data.test))
  assert errors["joint"] < errors["independent"] - 0.02, errors


def test_private_helper_draws_distinct_triples():
  t = np.asarray(_triplets._random_triplets(jax.random.key(13), 4, 4000))
  assert ((t[:, 0] != t[:, 1]) & (t[:, 0] != t[:, 2]) & (t[:, 1] != t[:, 2])).all()
  # Uniform over the 24 ordered triples of distinct objects.
  counts = np.unique(t[:, 0] * 16 + t[:, 1] * 4 + t[:, 2], return_counts=True)[1]
  assert len(counts) == 24 and counts.min() > 4000 / 24 * 0.7
