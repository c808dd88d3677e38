"""Tests for tomioka_jax.tensor._admm: the options, the loop and what its stopping rule certifies."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tomioka_jax import tensor
from tomioka_jax.tensor import _admm as admm
from tomioka_jax.tensor import _completion as completion
from tomioka_jax.tensor import _ops as ops
from tomioka_jax.tensor import _schatten as schatten


def _low_rank(shape, ranks, seed):
  rng = np.random.default_rng(seed)
  x = rng.standard_normal(ranks)
  for k, (n, r) in enumerate(zip(shape, ranks)):
    u = np.linalg.qr(rng.standard_normal((n, r)))[0]
    x = np.moveaxis(np.tensordot(u, x, axes=(1, k)), 0, k)
  return x


def _nuclear(m):
  return float(np.linalg.svd(np.asarray(m, np.float64), compute_uv=False).sum())


def _spectral(m):
  return float(np.linalg.norm(np.asarray(m, np.float64), 2))


def test_options_defaults_and_paper_admm():
  o = admm.ADMMOptions()
  assert (o.check_every, o.adaptive_eta, o.relaxation, o.float32_start) == (5, None, None, True)
  p = tensor.PAPER_ADMM
  assert (p.adaptive_eta, p.relaxation, p.float32_start, p.change_tol) == (False, 1.0, False,
                                                                           None)
  assert tensor.ADMMOptions is admm.ADMMOptions
  # Hashable (a static jit argument), and replace() skips None.
  assert hash(o) == hash(admm.ADMMOptions())
  assert o.replace(check_every=None, relaxation=1.5).relaxation == 1.5
  assert admm.resolve_options(None, check_every=2).check_every == 2


@pytest.mark.parametrize("kwargs, match", [
    (dict(check_every=0), "check_every must be a positive integer, got 0"),
    (dict(adaptive_eta="yes"), "adaptive_eta must be True or False, got 'yes'"),
    (dict(float32_start=1), "float32_start must be True or False, got 1"),
    (dict(relaxation=2.0), r"relaxation must be in \(0, 2\) \(1: no over-relaxation\), got 2.0"),
    (dict(balance=1.0), "balance must be > 1.0, got 1.0"),
    (dict(adapt_every=0), "adapt_every must be a positive integer, got 0"),
    (dict(float32_gap=0.0), "float32_gap must be > 0, got 0.0"),
    (dict(change_tol=-1.0), r"change_tol must be > 0 or None \(the gap alone\), got -1.0"),
])
def test_bad_options(kwargs, match):
  with pytest.raises(ValueError, match=match):
    admm.ADMMOptions(**kwargs)


def test_bad_options_object():
  with pytest.raises(ValueError, match="options must be an ADMMOptions or None, got dict"):
    completion.constraint((4, 4, 4), [[0, 0, 0], [1, 2, 3]], [1.0, 2.0], options={})


def test_relative_change_and_stopping_rule():
  old, new = jnp.asarray([3.0, 4.0]), jnp.asarray([3.0, 0.0])
  np.testing.assert_allclose(admm.relative_change(old, new), 4 / 3)
  assert float(admm.relative_change(jnp.zeros(2), jnp.zeros(2))) == 0
  assert np.isinf(float(admm.relative_change(old, jnp.zeros(2))))
  cert = admm.Certificate(jnp.asarray(1e-4), jnp.asarray(1.0), jnp.asarray(1.0))
  assert bool(admm.stopped(cert, jnp.asarray(1.0), 1e-3, None))
  assert not bool(admm.stopped(cert, jnp.asarray(1.0), 1e-3, 1e-2))
  assert bool(admm.stopped(cert, jnp.asarray(1e-3), 1e-3, 1e-2))
  assert not bool(admm.stopped(cert, jnp.asarray(0.0), 1e-5, 1e-2))


def test_sample_std_is_the_authors_step_scale():
  v = np.asarray([1.0, 2.0, 4.0])
  np.testing.assert_allclose(admm.sample_std(jnp.asarray(v)), np.std(v, ddof=1), rtol=1e-6)
  assert float(admm.sample_std(jnp.asarray([2.0, 2.0]))) == 1.0


@pytest.mark.parametrize("options", [admm.ADMMOptions(), admm.PAPER_ADMM],
                         ids=["tuned", "paper"])
def test_mixture_stop_certifies_its_gap_recomputed_independently(options):
  # What the stopping rule certifies at lam = 0: a feasible split (sum_k W_k = X, X = y on
  # the observed entries) whose value P = sum_k ||W_k,(k)||_* and a dual value D <= P*
  # satisfy (P - D) / P <= tol, so P <= P* / (1 - tol). Recomputed here in NumPy from the
  # returned split (P) and compared with a tightly solved reference (P*), tuned (float32
  # start, over-relaxation) and plain alike.
  with jax.enable_x64(True):
    shape = (8, 7, 6)
    x = _low_rank(shape, (2, 2, 2), seed=0)
    rng = np.random.default_rng(1)
    idx = np.argwhere(rng.random(shape) < 0.8)
    y = x[tuple(idx.T)]
    tol = 1e-3
    res = completion.mixture(shape, idx, y, tol=tol, options=options)
    assert bool(res.converged) and res.X.dtype == jnp.float64
    comps = np.asarray(res.components)
    np.testing.assert_allclose(comps.sum(0), res.X, atol=1e-12)
    np.testing.assert_allclose(np.asarray(res.X)[tuple(idx.T)], y, atol=1e-12)
    p = sum(_nuclear(ops.unfold(comps[k], k)) for k in range(3))
    # rtol 1e-7: XLA's SVD and LAPACK's differ by ~1e-9 relative on these near-singular
    # unfoldings (seen under pytest-xdist); the certificate below needs far less.
    np.testing.assert_allclose(p, float(res.primal), rtol=1e-7)
    assert (p - float(res.dual)) / p <= tol
    ref = completion.mixture(shape, idx, y, tol=1e-7, max_iter=20000)
    assert float(ref.gap) <= 1e-4  # ref.dual <= P* <= ref.primal
    assert float(res.dual) <= float(ref.primal) * (1 + 1e-12)  # D <= P*
    assert p <= float(ref.dual) / (1 - tol)  # P <= P* / (1 - tol)


def test_denoising_gap_bounds_the_distance_to_the_solution():
  # With lam > 0 and every entry observed the objective P(X) = ||X||_overlap + ||Y - X||^2 /
  # (2 lam) is strongly convex with modulus 1 / lam, so P(X) - P* >= ||X - X*||^2 / (2 lam):
  # the certified gap bounds the distance, ||X - X*||^2 <= 2 lam (P - D).
  with jax.enable_x64(True):
    rng = np.random.default_rng(2)
    y = jnp.asarray(_low_rank((6, 7, 8), (2, 2, 2), seed=3) * 3
                    + 0.3 * rng.standard_normal((6, 7, 8)))
    lam = 1.0
    for solve in (schatten.overlapped_schatten_denoising, schatten.latent_schatten_denoising):
      res = solve(y, lam, tol=1e-3)
      ref = solve(y, lam, tol=1e-11, max_iter=20000, check_every=1)
      assert bool(res.converged) and bool(ref.converged)
      dist2 = float(jnp.sum((res.X - ref.X) ** 2))
      assert dist2 <= 2 * lam * (float(res.primal) - float(res.dual)) * (1 + 1e-6) + 1e-12


def test_change_condition_holds_at_the_stop():
  # With change_tol the solve also requires ||X_t - X_{t-1}|| / ||X_t|| <= change_tol * tol
  # at the stopping check: recomputed from the iterate one iteration before.
  with jax.enable_x64(True):
    shape = (8, 7, 6)
    x = _low_rank(shape, (2, 2, 2), seed=4)
    idx = np.argwhere(np.random.default_rng(5).random(shape) < 0.7)
    y = x[tuple(idx.T)]
    tol, change_tol = 1e-3, 1e-2
    opts = admm.ADMMOptions(float32_start=False, change_tol=change_tol)
    res = completion.constraint(shape, idx, y, tol=tol, options=opts)
    gap_only = completion.constraint(shape, idx, y, tol=tol,
                                     options=admm.ADMMOptions(float32_start=False))
    assert bool(res.converged) and float(res.gap) <= tol
    assert int(res.iterations) >= int(gap_only.iterations)
    before = completion.constraint(shape, idx, y, tol=tol, max_iter=int(res.iterations) - 1,
                                   options=opts)
    change = float(jnp.linalg.norm(res.X - before.X) / jnp.linalg.norm(res.X))
    assert change <= change_tol * tol


def test_latent_trace_norm_uses_the_tuned_engine_and_matches_plain():
  with jax.enable_x64(True):
    x = jnp.asarray(np.random.default_rng(6).standard_normal((5, 6, 4)))
    tuned = completion.latent_trace_norm(x, tol=1e-8)
    plain = completion.latent_trace_norm(x, tol=1e-8, options=admm.PAPER_ADMM)
    np.testing.assert_allclose(tuned, plain, rtol=2e-8)
    # Pairing with the dual norm max_k ||X_(k)||_op: <X, X> <= latent(X) * dual(X).
    dual = max(_spectral(ops.unfold(x, k)) for k in range(3))
    assert float(jnp.vdot(x, x)) <= float(tuned) * dual * (1 + 1e-9)
