"""Tests of representation/_dist_shift.py: information identities, the CMNIST joints, criteria."""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tomioka_jax import representation as rep
from tomioka_jax.representation import _dist_shift as ds


# ----------------------------------------------------------------------------- slow references


def _np_marginal(p: np.ndarray, keep: tuple[int, ...]) -> np.ndarray:
  drop = tuple(i for i in range(p.ndim) if i not in keep)
  return p.sum(axis=drop, keepdims=True)


def _np_entropy(p: np.ndarray, keep: tuple[int, ...]) -> float:
  """H of the variables ``keep`` by an explicit loop over the marginal's entries."""
  m = _np_marginal(p, keep).ravel()
  return float(-sum(v * math.log(v) for v in m if v > 0))


def _np_mi(p, a, b, c=()):
  """I(a;b|c) = H(a,c) + H(b,c) - H(a,b,c) - H(c), in float64 NumPy."""
  h = lambda axes: _np_entropy(p, tuple(sorted(axes)))
  return h(a + c) + h(b + c) - h(a + b + c) - (h(c) if c else 0.0)


def _random_table(seed: int, shape=(3, 2, 4, 2), sparsity: float = 0.0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  p = rng.gamma(0.5, size=shape)
  if sparsity:
    p[rng.random(shape) < sparsity] = 0.0
  return p / p.sum()


# ----------------------------------------------------------------------------- information


@pytest.mark.parametrize("seed", range(3))
def test_quantities_match_the_numpy_reference(seed):
  p = _random_table(seed, sparsity=0.3 * (seed > 0))
  with jax.enable_x64(True):
    pj = jnp.asarray(p)
    np.testing.assert_allclose(ds.entropy(pj), _np_entropy(p, (0, 1, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(ds.entropy(pj, (0, 2)), _np_entropy(p, (0, 2)), rtol=1e-12)
    np.testing.assert_allclose(ds.entropy(pj, 1, given=(0, 3)),
                               _np_entropy(p, (0, 1, 3)) - _np_entropy(p, (0, 3)), atol=1e-12)
    np.testing.assert_allclose(ds.mutual_information(pj, 0, (1, 3)), _np_mi(p, (0,), (1, 3)),
                               atol=1e-12)
    np.testing.assert_allclose(ds.mutual_information(pj, 0, 1, given=(2, 3)),
                               _np_mi(p, (0,), (1,), (2, 3)), atol=1e-12)
    # I(x;y) = H(x) + H(y) - H(x,y)
    np.testing.assert_allclose(ds.mutual_information(pj, 0, 2),
                               ds.entropy(pj, 0) + ds.entropy(pj, 2) - ds.entropy(pj, (0, 2)),
                               atol=1e-12)


def test_chain_rules():
  with jax.enable_x64(True):
    p = jnp.asarray(_random_table(5))
    names = ("a", "b", "c", "d")
    # H(a,b) = H(a) + H(b|a)
    np.testing.assert_allclose(ds.entropy(p, ("a", "b"), names=names),
                               ds.entropy(p, "a", names=names)
                               + ds.entropy(p, "b", "a", names=names), atol=1e-12)
    # I(a; b,c) = I(a;b) + I(a;c|b)
    np.testing.assert_allclose(ds.mutual_information(p, "a", ("b", "c"), names=names),
                               ds.mutual_information(p, "a", "b", names=names)
                               + ds.mutual_information(p, "a", "c", "b", names=names),
                               atol=1e-12)
    # cross-entropy of p under itself is the conditional entropy; KL >= 0 otherwise
    q = jnp.asarray(_random_table(6))
    h = ds.entropy(p, "c", ("a", "d"), names=names)
    np.testing.assert_allclose(ds.cross_entropy(p, p, "c", ("a", "d"), names=names), h,
                               atol=1e-12)
    assert ds.cross_entropy(p, q, "c", ("a", "d"), names=names) > h


def test_invariant_to_axis_permutation():
  p = _random_table(7)
  names = ("a", "b", "c", "d")
  perm = (2, 0, 3, 1)
  pt = np.transpose(p, perm)
  names_t = tuple(names[i] for i in perm)
  with jax.enable_x64(True):
    for fn in (lambda q, n: ds.mutual_information(q, "a", "c", "b", names=n),
               lambda q, n: ds.entropy(q, ("b", "d"), "a", names=n),
               lambda q, n: ds.cross_entropy(q, q, "d", "c", names=n)):
      np.testing.assert_allclose(fn(jnp.asarray(p), names), fn(jnp.asarray(pt), names_t),
                                 atol=1e-12)


def test_independence_gives_zero():
  rng = np.random.default_rng(0)
  pa, pb = rng.dirichlet(np.ones(3)), rng.dirichlet(np.ones(5))
  pc = rng.dirichlet(np.ones(2))
  # a and b independent given c: p(c) p(a|c) p(b|c)
  pa_c, pb_c = rng.dirichlet(np.ones(3), 2), rng.dirichlet(np.ones(5), 2)
  cond = pc[:, None, None] * pa_c[:, :, None] * pb_c[:, None, :]
  with jax.enable_x64(True):
    assert abs(float(ds.mutual_information(jnp.asarray(np.outer(pa, pb)), 0, 1))) < 1e-14
    assert abs(float(ds.mutual_information(jnp.asarray(cond), 1, 2, 0))) < 1e-14
    assert float(ds.mutual_information(jnp.asarray(cond), 1, 2)) > 1e-4  # not marginally


@pytest.mark.parametrize("seed", range(4))
def test_data_processing_inequality(seed):
  """x -> y -> z Markov chain: I(x;z) <= I(x;y), and I(x;z|y) = 0."""
  rng = np.random.default_rng(seed)
  px = rng.dirichlet(np.ones(4))
  py_x = rng.dirichlet(np.full(3, 0.5), 4)
  pz_y = rng.dirichlet(np.full(5, 0.5), 3)
  p = px[:, None, None] * py_x[:, :, None] * pz_y[None]
  with jax.enable_x64(True):
    pj = jnp.asarray(p)
    assert ds.mutual_information(pj, 0, 2) <= ds.mutual_information(pj, 0, 1) + 1e-12
    assert abs(float(ds.mutual_information(pj, 0, 2, 1))) < 1e-12


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_dtype_jit_and_grad(dtype):
  p = _random_table(3)
  with jax.enable_x64(True):
    pj = jnp.asarray(p, dtype)
    eager = ds.mutual_information(pj, 0, 1, 2)
    jitted = jax.jit(lambda q: ds.mutual_information(q, 0, 1, 2))(pj)
    assert eager.dtype == dtype and jitted.dtype == dtype
    tol = 1e-5 if dtype == jnp.float32 else 1e-12
    np.testing.assert_allclose(eager, _np_mi(p, (0,), (1,), (2,)), atol=tol)
    np.testing.assert_allclose(jitted, eager, atol=tol)
    # The gradient of I with respect to unnormalised logits, against central differences.
    if dtype == jnp.float64:
      logits = jnp.log(pj)
      f = lambda l: ds.mutual_information(jax.nn.softmax(l.ravel()).reshape(l.shape), 0, 1, 2)
      g = jax.grad(f)(logits)
      direction = jnp.asarray(np.random.default_rng(1).standard_normal(p.shape))
      eps = 1e-6
      fd = (f(logits + eps * direction) - f(logits - eps * direction)) / (2 * eps)
      np.testing.assert_allclose(jnp.sum(g * direction), fd, rtol=1e-6)


def test_zero_entries_give_finite_values_and_gradients():
  p = jnp.array([[0.5, 0.0], [0.25, 0.25]])
  g = jax.grad(lambda q: ds.mutual_information(q, 0, 1))(p)
  assert np.isfinite(np.asarray(g)).all()
  assert np.isfinite(float(ds.entropy(p, 1, 0)))
  # A predictor that calls a seen event impossible has infinite cross-entropy.
  q = jnp.array([[0.5, 0.0], [0.5, 0.0]])
  assert float(ds.cross_entropy(p, q, 1, 0)) == np.inf


def test_marginal_and_conditional():
  p = _random_table(2)
  names = ("a", "b", "c", "d")
  with jax.enable_x64(True):
    np.testing.assert_allclose(ds.marginal(jnp.asarray(p), ("d", "b"), names=names),
                               p.sum(axis=(0, 2)), atol=1e-15)
    cond = ds.conditional(jnp.asarray(p), "c", ("a", "d"), names=names)
    assert cond.shape == (3, 4, 2)
    np.testing.assert_allclose(cond.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(cond, p.sum(1) / p.sum((1, 2))[:, None], atol=1e-12)


@pytest.mark.parametrize("table, match", [
    (np.array([0.6, 0.5, -0.1]), r"p must be a probability table .* got -0.1 at index \(2,\)"),
    (np.array([0.5, 0.4]), r"p must be a probability table .* sum to 0.9"),
    (np.array([0.5, np.nan]), r"p must be a probability table .* got nan at index \(1,\)"),
])
def test_bad_tables_raise(table, match):
  with pytest.raises(ValueError, match=match):
    ds.entropy(table)


def test_bad_axes_raise():
  p = jnp.full((2, 2), 0.25)
  with pytest.raises(ValueError, match=r"of names an axis 'z' .* allowed: one of \('x', 'y'\)"):
    ds.entropy(p, "z", names=("x", "y"))
  with pytest.raises(ValueError, match=r"a has axis 2, out of range .*allowed: -2..1"):
    ds.mutual_information(p, 2, 0)
  with pytest.raises(ValueError, match="a and given share axis 0"):
    ds.mutual_information(p, 0, 1, given=0)
  with pytest.raises(ValueError, match=r"names must be 2 distinct strings.*\('x', 'x'\)"):
    ds.entropy(p, names=("x", "x"))
  with pytest.raises(ValueError, match=r"q must be a probability table .* sum to 2\b"):
    ds.cross_entropy(p, 2 * p)


def test_checks_are_skipped_under_jit():
  bad = jnp.array([0.5, 0.4])   # not normalised: checked eagerly, not under jit
  assert np.isfinite(float(jax.jit(ds.entropy)(bad)))


# ----------------------------------------------------------------------------- the CMNIST joints


@pytest.mark.parametrize("variant", rep.CMNIST_VARIANTS)
def test_cmnist_tables(variant):
  names = rep.CMNIST_AXES
  with jax.enable_x64(True):
    p = rep.cmnist_distribution(variant, jnp.float64)
    assert p.shape == (3, 2, 2, 10) and abs(float(p.sum()) - 1) < 1e-14
    # p(c = y | y, e) = 0.9, 0.8, 0.1
    p_cye = ds.conditional(p, "c", ("e", "y"), names=names)   # [e, y, c]
    np.testing.assert_allclose([p_cye[e, 1, 1] for e in range(3)], [0.9, 0.8, 0.1], atol=1e-14)
    np.testing.assert_allclose([p_cye[e, 0, 0] for e in range(3)], [0.9, 0.8, 0.1], atol=1e-14)
    # the colour depends on nothing but (y, e): I(c; d | y, e) = 0
    assert abs(float(ds.mutual_information(p, "c", "d", ("y", "e"), names=names))) < 1e-14
    p_e = ds.marginal(p, "e", names=names)
    d_low = ds.marginal(p, ("e", "d"), names=names)[:, :5].sum(1) / p_e
    y0 = ds.marginal(p, ("e", "y"), names=names)[:, 0] / p_e
    if variant == "CMNIST":
      np.testing.assert_allclose(p_e, [1 / 3] * 3, atol=1e-14)
      np.testing.assert_allclose(d_low, [0.5] * 3, atol=1e-14)
    else:
      np.testing.assert_allclose(p_e, [1 / 2, 1 / 6, 1 / 3], atol=1e-14)
    if variant == "d-CMNIST":
      np.testing.assert_allclose(d_low, [0.6, 0.2, 0.5], atol=1e-14)
    if variant == "y-CMNIST":
      np.testing.assert_allclose(y0, [0.6, 0.2, 0.5], atol=1e-14)
      p_d_y = ds.conditional(p, "d", "y", names=names)
      np.testing.assert_allclose(p_d_y[0, :5].sum(), 0.75, atol=1e-14)   # [y, d]
      # the label is the cause: d depends on e only through y
      assert abs(float(ds.mutual_information(p, "d", "e", "y", names=names))) < 1e-14
    else:
      # p(y = 0 | d < 5) = 0.75 and y depends on e only through d
      p_y_d = ds.conditional(p, "y", "d", names=names)
      np.testing.assert_allclose(p_y_d[0, :5], 0.75, atol=1e-14)
      assert abs(float(ds.mutual_information(p, "y", "e", "d", names=names))) < 1e-14


def test_split_environments():
  train, test = rep.split_environments(rep.cmnist_distribution("d-CMNIST"))
  np.testing.assert_allclose(ds.marginal(train, "e", names=rep.CMNIST_AXES), [0.75, 0.25],
                             atol=1e-6)
  assert test.shape == (1, 2, 2, 10)
  with pytest.raises(ValueError, match=r"test_environments must be .* 0..2; got \(3,\)"):
    rep.split_environments(rep.cmnist_distribution(), (3,))
  with pytest.raises(ValueError, match=r"variant must be one of .* got 'MNIST'"):
    rep.cmnist_distribution("MNIST")


# Reference predictors: dsit's results/points.csv (train, test), in nats.
_REFERENCE_PREDICTORS = {
    "CMNIST": [(0.35446, 1.38133), (0.42271, 1.72366), (0.56234, 0.56234), (0.69315, 0.69315)],
    "d-CMNIST": [(0.31712, 1.52689), (0.37663, 1.88636), (0.56234, 0.56234), (0.69315, 0.69315)],
    "y-CMNIST": [(0.31751, 1.52624), (0.37619, 1.89094), (0.56234, 0.56234), (0.69315, 0.69315)],
}


@pytest.mark.parametrize("variant", rep.CMNIST_VARIANTS)
def test_reference_predictors_match_dsit(variant):
  train, test = rep.split_environments(rep.cmnist_distribution(variant))
  ours = [rep.feature_cross_entropies(train, test, f) for f in (("c", "d"), "c", "d", ())]
  np.testing.assert_allclose(np.array(ours, float), _REFERENCE_PREDICTORS[variant], atol=2e-5)


# ----------------------------------------------------------------------------- criteria


def test_encoder_joint_and_regularizers():
  train, test = rep.split_environments(rep.cmnist_distribution("CMNIST"))
  with jax.enable_x64(True):
    train, test = train.astype(jnp.float64), test.astype(jnp.float64)
    # A deterministic encoder of the picture: z = x, so I(x;z) = H(x) and the predictor is
    # the picture's; I(e;y|z) is then I(e;y|x).
    ident = 50.0 * jnp.eye(20)
    joint = rep.encoded_joint(train, ident)
    np.testing.assert_allclose(rep.criterion_regularizer(joint, "information_bottleneck"),
                               ds.entropy(train, ("c", "d"), names=rep.CMNIST_AXES), atol=1e-9)
    np.testing.assert_allclose(rep.criterion_regularizer(joint, "sufficiency"),
                               ds.mutual_information(train, "e", "y", ("c", "d"),
                                                     names=rep.CMNIST_AXES), atol=1e-9)
    np.testing.assert_allclose(rep.predictor_cross_entropy(ident, train, test),
                               rep.feature_cross_entropies(train, test, ("c", "d")), atol=1e-9)
    # An encoder of the colour only: independence holds on CMNIST (p(c|e) = 1/2 for both).
    colour = 50.0 * jnp.repeat(jnp.eye(2), 10, axis=1)
    assert abs(float(rep.criterion_regularizer(rep.encoded_joint(train, colour),
                                               "independence"))) < 1e-12
    loss = rep.criterion_loss(ident, train, "separation", 3.0)
    np.testing.assert_allclose(
        loss, -ds.mutual_information(joint, "y", "z", names=rep.ENCODED_AXES)
        + 3.0 * ds.mutual_information(joint, "e", "z", "y", names=rep.ENCODED_AXES), atol=1e-12)
  with pytest.raises(ValueError, match=r"criterion must be one of .* got 'dann'"):
    rep.criterion_regularizer(joint, "dann")
  with pytest.raises(ValueError, match=r"lam must be a non-negative number, got -1.0"):
    rep.criterion_loss(jnp.zeros((4, 20)), train, "independence", -1.0)
  with pytest.raises(ValueError, match=r"logits must have shape \(num_codes, 20\) .* \(4, 7\)"):
    rep.encoded_joint(train, jnp.zeros((4, 7)))


def test_fit_finds_the_papers_failure_cases():
  """At a large lambda, independence on CMNIST keeps exactly the colour (the paper's failure),
  sufficiency at lambda = 1e6 keeps the digit; vmap over lambdas in one solve."""
  train, test = rep.split_environments(rep.cmnist_distribution("CMNIST"))
  fit = jax.vmap(lambda k, lam: rep.fit_discrete_encoder(
      k, train, test, "independence", lam, num_codes=8, initial_iterations=2000,
      check_every=500, max_iterations=20000))(jax.random.split(jax.random.key(1), 2),
                                              jnp.array([0.0, 1e3]))
  # lambda = 0 is the picture's predictor, lambda = 1e3 the colour's
  np.testing.assert_allclose(np.stack([fit.train_cross_entropy, fit.test_cross_entropy], 1),
                             [_REFERENCE_PREDICTORS["CMNIST"][0],
                              _REFERENCE_PREDICTORS["CMNIST"][1]], atol=2e-3)
  assert fit.converged.all() and (fit.iterations >= 2000).all()
  assert float(fit.regularizer[1]) < 1e-5
  suff = rep.fit_discrete_encoder(jax.random.key(2), train, test, "sufficiency", 1e6,
                                  num_codes=8, learning_rate=1e-2, initial_iterations=3000,
                                  check_every=500, max_iterations=20000)
  np.testing.assert_allclose([suff.train_cross_entropy, suff.test_cross_entropy],
                             _REFERENCE_PREDICTORS["CMNIST"][2], atol=2e-3)


def test_fit_argument_errors():
  train, test = rep.split_environments(rep.cmnist_distribution())
  with pytest.raises(ValueError, match="num_codes must be a positive integer, got 0"):
    rep.fit_discrete_encoder(jax.random.key(0), train, test, "independence", 1.0, num_codes=0)
  with pytest.raises(ValueError, match="tolerance must be a positive number, got -1"):
    rep.fit_discrete_encoder(jax.random.key(0), train, test, "independence", 1.0, tolerance=-1)
  with pytest.raises(ValueError, match=r"train and test must agree on the \(y, x\) axes"):
    rep.fit_discrete_encoder(jax.random.key(0), train, test[..., :5] / test[..., :5].sum(),
                             "independence", 1.0)


# ----------------------------------------------------------------------------- neural penalties


def _np_ce(logits: np.ndarray, label: int) -> float:
  return float(-(logits[label] - np.log(np.exp(logits).sum())))


def _np_risks(logits, labels, envs, num_env, scale=1.0):
  return np.array([np.mean([_np_ce(scale * logits[i], labels[i]) for i in range(len(labels))
                            if envs[i] == e]) for e in range(num_env)])


def _batch(seed: int = 0):
  rng = np.random.default_rng(seed)
  logits = rng.standard_normal((12, 3))
  labels = rng.integers(0, 3, 12)
  envs = np.array([0, 1, 2] * 4)
  return logits, labels, envs


def test_environment_risks_and_vrex_match_numpy():
  logits, labels, envs = _batch()
  with jax.enable_x64(True):
    risks = rep.environment_risks(jnp.asarray(logits), labels, envs, 3)
    np.testing.assert_allclose(risks, _np_risks(logits, labels, envs, 3), rtol=1e-12)
    np.testing.assert_allclose(rep.vrex_penalty(jnp.asarray(logits), labels, envs, 3),
                               np.var(_np_risks(logits, labels, envs, 3)), rtol=1e-12)


def test_irm_penalty_is_the_squared_dummy_scale_gradient():
  logits, labels, envs = _batch(1)
  h = 1e-5
  grads = (_np_risks(logits, labels, envs, 3, 1 + h)
           - _np_risks(logits, labels, envs, 3, 1 - h)) / (2 * h)
  with jax.enable_x64(True):
    np.testing.assert_allclose(rep.irm_penalty(jnp.asarray(logits), labels, envs, 3),
                               np.sum(grads ** 2), rtol=1e-7)
  # Logits equal to the log of each environment's label frequencies (3 of 4 labels are 0 in
  # both) are calibrated: the risk is stationary in the scale and the penalty vanishes.
  post = np.log(np.array([[0.75, 0.25]] * 8))
  labels = np.array([0, 0, 0, 1] * 2)
  envs = np.array([0] * 4 + [1] * 4)
  assert float(rep.irm_penalty(jnp.asarray(post), labels, envs, 2)) < 1e-12


def test_adversarial_cross_entropy_bounds_the_information():
  """With the Bayes discriminator q(e|z), H(e) - CE = I(e;z) of the batch's empirical joint."""
  counts = np.array([[3, 1, 2], [1, 3, 2]])           # [e, z], 12 samples
  e_idx, z_idx = np.nonzero(np.ones_like(counts))
  envs = np.repeat(e_idx, counts.ravel())
  zs = np.repeat(z_idx, counts.ravel())
  p = counts / counts.sum()
  posterior = np.log(p / p.sum(0, keepdims=True))    # log p(e|z), [e, z]
  with jax.enable_x64(True):
    ce = rep.adversarial_cross_entropy(jnp.asarray(posterior.T[zs]), envs)
    h_e = ds.entropy(jnp.asarray(p), 0)
    np.testing.assert_allclose(h_e - ce, ds.mutual_information(jnp.asarray(p), 0, 1),
                               atol=1e-12)
    # any other discriminator does worse
    assert rep.adversarial_cross_entropy(jnp.zeros((12, 2)), envs) > ce


def test_penalty_arguments_are_checked():
  logits, labels, envs = _batch()
  with pytest.raises(ValueError, match="environments must lie in 0..1; got 2"):
    rep.irm_penalty(jnp.asarray(logits), labels, envs, 2)
  with pytest.raises(ValueError, match="num_environments must be a positive integer, got 0"):
    rep.vrex_penalty(jnp.asarray(logits), labels, envs, 0)


def test_unbiased_irm_penalty_is_the_half_batch_product():
  """dsit's estimator: per environment, even- and odd-ranked halves' dummy-scale gradients."""
  logits, labels, envs = _batch(2)
  h = 1e-5

  def half_grad(idx, e):
    risk = lambda s: np.mean([_np_ce(s * logits[i], labels[i]) for i in idx])
    return (risk(1 + h) - risk(1 - h)) / (2 * h)

  expected = 0.0
  for e in range(3):
    members = np.flatnonzero(envs == e)
    expected += half_grad(members[::2], e) * half_grad(members[1::2], e)
  with jax.enable_x64(True):
    np.testing.assert_allclose(
        rep.irm_penalty(jnp.asarray(logits), labels, envs, 3, unbiased=True), expected,
        rtol=1e-7)
    # When each example is repeated, the halves coincide and the product is the square.
    rep2 = lambda a: np.repeat(a, 2, axis=0)
    np.testing.assert_allclose(
        rep.irm_penalty(jnp.asarray(rep2(logits)), rep2(labels), rep2(envs), 3, unbiased=True),
        rep.irm_penalty(jnp.asarray(logits), labels, envs, 3), rtol=1e-10)
    # Calibrated halves: stationary in the scale in every half, so the product vanishes.
    post = np.log(np.array([[0.75, 0.25]] * 16))
    labels = np.array([0, 0, 0, 0, 0, 0, 1, 1] * 2)   # each half: 3 of 4 labels are 0
    envs = np.array([0] * 8 + [1] * 8)
    assert abs(float(rep.irm_penalty(jnp.asarray(post), labels, envs, 2, unbiased=True))) < 1e-12


def test_vrex_batch_std_and_absent_environments():
  logits, labels, envs = _batch(3)
  with jax.enable_x64(True):
    risks = _np_risks(logits, labels, envs, 3)
    np.testing.assert_allclose(
        rep.vrex_penalty(jnp.asarray(logits), labels, envs, 3, batch_std=True),
        np.sqrt(len(labels) * np.var(risks)), rtol=1e-12)
    # An environment absent from the batch does not enter the variance.
    np.testing.assert_allclose(rep.vrex_penalty(jnp.asarray(logits), labels, envs, 4),
                               np.var(risks), rtol=1e-12)
    # Equal risks (environment 1 is a copy of environment 0): zero, with a finite gradient.
    x = np.concatenate([logits[:6], logits[:6]])
    y = np.concatenate([labels[:6], labels[:6]])
    e = np.array([0] * 6 + [1] * 6)
    f = lambda z: rep.vrex_penalty(z, y, e, 2, batch_std=True)
    assert float(f(jnp.asarray(x))) == 0.0
    assert np.all(np.isfinite(jax.grad(f)(jnp.asarray(x))))
