"""Tests for tomioka_jax.tensor._completion: duality gaps, recovery, agreement with the proxes."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tomioka_jax.tensor import _admm as admm
from tomioka_jax.tensor import _completion as completion
from tomioka_jax.tensor import _ops as ops
from tomioka_jax.tensor import _prox as prox


def _problem(shape, ranks, fraction, seed=0, dtype=jnp.float64):
  x = ops.tucker_to_tensor(*ops.random_tucker(jax.random.key(seed), shape, ranks, dtype))
  rng = np.random.default_rng(seed)
  size = int(np.prod(shape))
  flat = rng.choice(size, int(round(fraction * size)), replace=False)
  idx = np.stack(np.unravel_index(flat, shape), axis=1)
  return x, idx, x[tuple(idx.T)]


def _test_error(x_hat, x, idx):
  test = np.ones(x.shape, bool)
  test[tuple(idx.T)] = False
  d = np.asarray(x_hat - x, np.float64)[test]
  return np.linalg.norm(d) / np.linalg.norm(np.asarray(x, np.float64)[test])


def test_constraint_gap_reaches_tolerance_and_recovers_at_60_percent():
  with jax.enable_x64(True):
    x, idx, y = _problem((12, 12, 10), (2, 2, 2), 0.6)
    res = completion.constraint(x.shape, idx, y, tol=1e-4)
    assert bool(res.converged) and float(res.gap) <= 1e-4 and int(res.iterations) < 2000
    assert int(res.iterations) % 5 == 0  # the gap is checked every check_every=5 iterations
    every = completion.constraint(x.shape, idx, y, tol=1e-4, check_every=1)
    assert bool(every.converged) and int(res.iterations) - 5 < int(every.iterations) <= int(
        res.iterations)
    assert float(res.dual) <= float(res.primal)
    # lam = 0 is the exact-fit constraint, and the primal is the overlapped norm of X.
    np.testing.assert_allclose(res.X[tuple(idx.T)], y, atol=1e-12)
    np.testing.assert_allclose(res.primal, prox.overlapped_trace_norm(res.X), rtol=1e-8)
    assert _test_error(res.X, x, idx) < 1e-2


def test_mixture_gap_reaches_tolerance_and_recovers_with_many_observations():
  with jax.enable_x64(True):
    x, idx, y = _problem((12, 12, 10), (2, 2, 2), 0.85, seed=1)
    res = completion.mixture(x.shape, idx, y, tol=1e-4)
    assert bool(res.converged) and float(res.gap) <= 1e-4
    np.testing.assert_allclose(res.X[tuple(idx.T)], y, atol=1e-12)
    np.testing.assert_allclose(res.components.sum(0), res.X, atol=1e-12)
    # The feasible split's latent norm upper-bounds the optimum, within tol of the dual.
    split = sum(prox.nuclear_norm(ops.unfold(res.components[k], k)) for k in range(3))
    assert float(res.dual) <= float(split) <= float(res.dual) * (1 + 2e-4)
    assert _test_error(res.X, x, idx) < 1e-2


def test_fully_observed_noisy_solves_are_the_proxes():
  # With every entry observed and lam > 0, Constraint solves prox_{lam overlapped}(Y) and
  # Mixture solves prox_{lam latent}(Y): two independent algorithms must agree.
  with jax.enable_x64(True):
    shape = (6, 5, 4)
    y = jnp.asarray(np.random.default_rng(0).standard_normal(shape))
    idx = np.stack(np.unravel_index(np.arange(y.size), shape), axis=1)
    vals = y[tuple(idx.T)]
    lam = 0.8
    over = completion.constraint(shape, idx, vals, lam=lam, tol=1e-9, eta=1.0)
    np.testing.assert_allclose(over.X, prox.overlapped_trace_norm_prox(y, lam), atol=2e-4)
    lat = completion.mixture(shape, idx, vals, lam=lam, tol=1e-9, eta=1.0)
    np.testing.assert_allclose(lat.X, prox.latent_trace_norm_prox(y, lam).x, atol=2e-4)
    # A certificate's dual value is a lower bound: the gap is never negative (the float32
    # start's clipping once gave a dual value above the optimum, gap -3.8e-7, at 2e-4 error).
    assert float(over.gap) >= 0 and float(lat.gap) >= 0


def test_jit_matches_no_jit_and_eager_loop():
  with jax.enable_x64(True):
    x, idx, y = _problem((4, 3, 3), (2, 2, 2), 0.7, seed=2)
    # Float64 throughout: one loop to trace eagerly (the float32 start is tested apart).
    run = functools.partial(completion.constraint, x.shape, max_iter=2, check_every=1,
                            float32_start=False)
    plain = run(idx, y)
    jitted = jax.jit(run)(idx, y)
    with jax.disable_jit():
      eager = run(idx, y)
    for other in (jitted, eager):
      np.testing.assert_allclose(other.X, plain.X, rtol=1e-9, atol=1e-12)
      np.testing.assert_allclose(other.gap, plain.gap, rtol=1e-9)
      assert int(other.iterations) == int(plain.iterations) == 2


@pytest.mark.parametrize("solver", ["constraint", "mixture"])
def test_float32_agrees_with_float64(solver):
  with jax.enable_x64(True):
    x, idx, y = _problem((10, 9, 8), (2, 2, 2), 0.9, seed=3)
    res64 = getattr(completion, solver)(x.shape, idx, y, tol=1e-4)
  x, y = np.asarray(x, np.float32), np.asarray(y, np.float32)
  res = getattr(completion, solver)(x.shape, idx, y, tol=1e-4)
  assert res.X.dtype == jnp.float32 and res.gap.dtype == jnp.float32
  assert bool(res.converged) and float(res.gap) <= 1e-4
  assert _test_error(res.X, x, idx) < 1e-2
  assert _test_error(res.X, np.asarray(res64.X), idx) < 1e-3


def test_four_way_tensor():
  with jax.enable_x64(True):
    x, idx, y = _problem((6, 6, 5, 5), (2, 2, 2, 2), 0.8, seed=4)
    res = completion.constraint(x.shape, idx, y, tol=1e-4)
    assert bool(res.converged) and res.components.shape == (4,) + x.shape
    assert _test_error(res.X, x, idx) < 1e-3
    mix = completion.mixture(x.shape, idx, y, tol=1e-3)
    assert bool(mix.converged) and float(mix.gap) <= 1e-3


def test_as_matrix_and_tucker_em():
  with jax.enable_x64(True):
    x, idx, y = _problem((12, 12, 10), (2, 2, 2), 0.6, seed=5)
    mat = completion.as_matrix(x.shape, idx, y, 0, tol=1e-4)
    assert bool(mat.converged) and mat.components.shape == (1,) + x.shape
    np.testing.assert_allclose(mat.primal, prox.nuclear_norm(ops.unfold(mat.X, 0)), rtol=1e-8)
    tuck = completion.tucker_em(x.shape, idx, y, (2, 2, 2))
    assert bool(tuck.converged)
    for u in tuck.factors:
      np.testing.assert_allclose(u.T @ u, np.eye(2), atol=1e-10)
    np.testing.assert_allclose(ops.tucker_to_tensor(tuck.core, tuck.factors), tuck.X, atol=1e-10)
    assert _test_error(tuck.X, x, idx) < 1e-3


def _nway_reference(x_obs, mask, ranks, max_iter, impute_every):
  """tucker.m's missing-value loop written out in NumPy: start, schedule, SVD factors."""
  shape = x_obs.shape
  x1 = np.where(mask, x_obs, np.nan).reshape(shape[0], -1)  # mode-1 unfolding (C order)
  with np.errstate(invalid="ignore"), __import__("warnings").catch_warnings():
    __import__("warnings").simplefilter("ignore", RuntimeWarning)
    col, row = np.nanmean(x1, 0) / 3, np.nanmean(x1, 1) / 3
  filled = x1.copy()
  for i, j in zip(*np.nonzero(np.isnan(x1))):
    filled[i, j] = row[i] + col[j]
  filled[np.isnan(filled)] = (np.nanmean(col) + np.nanmean(row)) / 2
  filled = filled.reshape(shape)

  def unfold(t, k):
    return np.moveaxis(t, k, 0).reshape(t.shape[k], -1)

  def project(t, mats):
    for k, u in enumerate(mats):
      if u is not None:
        t = np.moveaxis(np.tensordot(u.T, t, axes=(1, k)), 0, k)
    return t

  def leading(t, k, r):
    return np.linalg.svd(unfold(t, k), full_matrices=False)[0][:, :r]

  factors = [leading(filled, k, r) for k, r in enumerate(ranks)]
  for it in range(1, max_iter + 1):
    for k, r in enumerate(ranks):
      factors[k] = leading(project(filled, [None if j == k else u
                                            for j, u in enumerate(factors)]), k, r)
    model = project(project(filled, factors), [u.T for u in factors])
    if it == 1 or it % impute_every == 0:
      filled = np.where(mask, x_obs, model)
  return model


def test_tucker_nway_matches_the_toolbox_loop_written_out():
  with jax.enable_x64(True):
    x, idx, y = _problem((9, 8, 7), (2, 3, 2), 0.5, seed=6)
    mask = np.zeros(x.shape, bool)
    mask[tuple(idx.T)] = True
    mask[:, 0, 0] = False  # a column of the mode-1 unfolding with no observation
    idx = np.argwhere(mask)
    y = np.asarray(x)[mask]
    x_obs = np.where(mask, np.asarray(x), 0)
    for ranks in ((2, 3, 2), (3, 4, 3)):
      ref = _nway_reference(x_obs, mask, ranks, max_iter=23, impute_every=5)
      res = completion.tucker_nway(x.shape, idx, y, ranks, max_iter=23, impute_every=5,
                                   crit=1e-30, skip_settled=False)
      assert int(res.iterations) == 23 and not bool(res.converged)
      np.testing.assert_allclose(res.X, ref, atol=1e-9)
      for u in res.factors:
        np.testing.assert_allclose(u.T @ u, np.eye(u.shape[1]), atol=1e-10)


def test_tucker_nway_skipping_settled_sweeps_changes_nothing_and_recovers():
  with jax.enable_x64(True):
    x, idx, y = _problem((12, 12, 10), (2, 2, 2), 0.8, seed=5)
    fast = completion.tucker_nway(x.shape, idx, y, (2, 2, 2))
    slow = completion.tucker_nway(x.shape, idx, y, (2, 2, 2), skip_settled=False)
    assert bool(fast.converged) and bool(slow.converged)
    assert int(fast.iterations) % 100 == 0 and int(fast.iterations) == int(slow.iterations)
    assert float(fast.gap) < 1e-5  # criterion 2: 10 crit on the imputed sum of squares
    np.testing.assert_allclose(fast.X, slow.X, atol=1e-8)
    assert _test_error(fast.X, x, idx) < 1e-3
    # With the true ranks and one E-step per 100 sweeps it still gets there; the over-sized
    # model keeps its imputation (the paper's Tucker x1.2 curve).
    big = completion.tucker_nway(x.shape, idx, y, (4, 4, 4))
    assert _test_error(big.X, x, idx) > 10 * _test_error(fast.X, x, idx)


@pytest.mark.parametrize("kwargs, match", [
    (dict(indices=[[0, 0, 0], [0, 0, 4]]), r"indices out of range.*\(0, 0, 4\)"),
    (dict(indices=[[0, 0, -1], [0, 0, 0]]), "indices out of range"),
    (dict(indices=[[1, 1, 1], [1, 1, 1]], values=[1.0, 2.0]), r"distinct; \(1, 1, 1\)"),
    (dict(values=[1.0, 2.0, 3.0]), r"values must have shape \(n_observed,\) = \(2,\)"),
    (dict(indices=[[0, 0], [1, 1]]), r"indices must be an integer array of shape"),
    (dict(indices=[[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]), "integer array"),
    (dict(lam=-1.0), "lam must be >= 0"),
    (dict(tol=0.0), "tol must be > 0"),
    (dict(eta=-2.0), "eta must be > 0"),
    (dict(max_iter=0), "max_iter must be a positive integer"),
    (dict(check_every=0), "check_every must be a positive integer"),
    (dict(shape=(4, 0, 4)), "shape must be a tuple"),
])
def test_bad_input(kwargs, match):
  args = dict(shape=(4, 4, 4), indices=[[0, 0, 0], [1, 2, 3]], values=[1.0, 2.0])
  args.update(kwargs)
  for solver in (completion.constraint, completion.mixture):
    with pytest.raises(ValueError, match=match):
      solver(args["shape"], args["indices"], args["values"],
             **{k: v for k, v in args.items() if k not in ("shape", "indices", "values")})


@pytest.mark.parametrize("ranks, match", [((5, 2, 2), r"ranks\[0\] must be in \[1, 4\]"),
                                          ((2, 2), "one entry per mode"),
                                          ((2.5, 2, 2), "must be integers")])
def test_tucker_bad_ranks(ranks, match):
  for solver in (completion.tucker_em, completion.tucker_nway):
    with pytest.raises(ValueError, match=match):
      solver((4, 4, 4), [[0, 0, 0], [1, 2, 3]], [1.0, 2.0], ranks)


@pytest.mark.parametrize("kwargs, match", [
    (dict(impute_every=0), "impute_every must be a positive integer, got 0"),
    (dict(impute_every=2.5), "impute_every must be a positive integer"),
    (dict(skip_settled="yes"), "skip_settled must be True or False"),
    (dict(crit=0.0), "crit must be > 0, got 0.0"),
    (dict(max_iter=0), "max_iter must be a positive integer"),
])
def test_tucker_nway_bad_input(kwargs, match):
  with pytest.raises(ValueError, match=match):
    completion.tucker_nway((4, 4, 4), [[0, 0, 0], [1, 2, 3]], [1.0, 2.0], (2, 2, 2),
                           **kwargs)


def test_as_matrix_bad_mode():
  with pytest.raises(ValueError, match=r"mode must be an integer in \[0, 3\)"):
    completion.as_matrix((4, 4, 4), [[0, 0, 0], [1, 2, 3]], [1.0, 2.0], 3)


def _svt_np(m, tau):
  u, s, vt = np.linalg.svd(m, full_matrices=False)
  return (u * np.maximum(s - tau, 0)) @ vt


def test_constraint_iterations_match_the_papers_updates():
  # The solver keeps B_k = X_(k) + A_k / eta; n of its iterations must equal n iterations of
  # the paper's X-, Z- and A-steps written out plainly (lam > 0 exercises the blended X-step).
  with jax.enable_x64(True):
    x, idx, y = _problem((5, 4, 3), (2, 2, 2), 0.6, seed=6)
    mask, y_dense = completion.observation_tensors(x.shape, idx, y)
    mask, y_dense = np.asarray(mask), np.asarray(y_dense)
    eta, n_iter, k_modes = 0.7, 4, 3
    for lam in (0.0, 0.3):
      z = [np.zeros_like(np.asarray(ops.unfold(y_dense, k))) for k in range(k_modes)]
      a = [np.zeros_like(zk) for zk in z]
      for _ in range(n_iter):
        m = sum(np.asarray(ops.fold(z[k] - a[k] / eta, k, x.shape)) for k in range(3)) / 3
        c = lam * eta * 3
        x_ref = np.where(mask, (y_dense + c * m) / (1 + c), m)
        for k in range(k_modes):
          xk = np.asarray(ops.unfold(x_ref, k))
          z[k] = _svt_np(xk + a[k] / eta, 1 / eta)
          a[k] = a[k] + eta * (xk - z[k])
      res = completion.constraint(x.shape, idx, y, lam=lam, eta=eta, max_iter=n_iter,
                                  check_every=100, float32_start=False)
      assert int(res.iterations) == n_iter
      np.testing.assert_allclose(res.X, x_ref, atol=1e-10)
      for k in range(k_modes):
        np.testing.assert_allclose(ops.unfold(res.components[k], k), z[k], atol=1e-10)


@pytest.mark.parametrize("solver, tol, lam", [("constraint", 1e-3, 0.0),
                                              ("constraint", 1e-7, 0.0),
                                              ("constraint", 1e-5, 0.05),
                                              ("mixture", 1e-3, 0.0), ("mixture", 5e-5, 0.0),
                                              ("mixture", 1e-5, 0.05)])
def test_float32_start_keeps_the_float64_certificate(solver, tol, lam):
  # The float32 iterations hand over to float64 ones: the result's gap is evaluated in
  # float64 at the returned X (which fits y exactly at lam = 0) and meets the same stopping
  # rule; below the float32 phase's floor (1e-4) the float64 iterations carry on to tol.
  with jax.enable_x64(True):
    x, idx, y = _problem((12, 12, 10), (2, 2, 2), *((0.6, 7) if solver == "constraint"
                                                   else (0.9, 1)))
    solve = functools.partial(getattr(completion, solver), x.shape, idx, y, tol=tol, lam=lam)
    fast, slow = solve(), solve(float32_start=False)
    for res in (fast, slow):
      assert res.X.dtype == jnp.float64 and bool(res.converged) and float(res.gap) <= tol
      if lam == 0:
        np.testing.assert_allclose(res.X[tuple(idx.T)], y, atol=1e-13)
      if solver == "constraint":
        fit = np.sum((np.asarray(res.X)[tuple(idx.T)] - y) ** 2) / (2 * lam) if lam else 0
        np.testing.assert_allclose(res.primal, prox.overlapped_trace_norm(res.X) + fit,
                                   rtol=1e-10)
    assert not np.array_equal(fast.X, slow.X)  # the float32 phase did run
    # Both are within tol of the same optimum.
    assert abs(float(fast.primal) - float(slow.primal)) <= 2 * tol * float(slow.primal)
    assert abs(int(fast.iterations) - int(slow.iterations)) <= 10
    if tol < 1e-4:
      assert _test_error(fast.X, np.asarray(slow.X), idx) < 1e-3
    if solver == "constraint":
      mat = completion.as_matrix(x.shape, idx, y, 1, tol=tol, lam=lam)
      assert bool(mat.converged) and float(mat.gap) <= tol
  with pytest.raises(ValueError, match="float32_start must be True or False"):
    getattr(completion, solver)(x.shape, idx, y, float32_start=1)


def test_mixture_iterations_match_the_papers_updates():
  with jax.enable_x64(True):
    x, idx, y = _problem((5, 4, 3), (2, 2, 2), 0.6, seed=7)
    mask, y_dense = completion.observation_tensors(x.shape, idx, y)
    mask, y_dense = np.asarray(mask), np.asarray(y_dense)
    eta, n_iter, lam = 0.9, 4, 0.2
    z = [np.zeros_like(np.asarray(ops.unfold(y_dense, k))) for k in range(3)]
    alpha = np.where(mask, y_dense, 0)
    for _ in range(n_iter):
      v_sum = np.zeros_like(y_dense)
      for k in range(3):
        t = z[k] + eta * np.asarray(ops.unfold(alpha, k))
        z[k] = _svt_np(t, eta)
        v_sum += np.asarray(ops.fold((t - z[k]) / eta, k, x.shape))
      z_sum = sum(np.asarray(ops.fold(z[k], k, x.shape)) for k in range(3))
      alpha = np.where(mask, (y_dense - z_sum + eta * v_sum) / (lam + eta * 3), 0)
    res = completion.mixture(x.shape, idx, y, lam=lam, eta=eta, max_iter=n_iter, check_every=100,
                             relaxation=1.0, float32_start=False)
    np.testing.assert_allclose(res.X, z_sum, atol=1e-10)
    for k in range(3):
      np.testing.assert_allclose(ops.unfold(res.components[k], k), z[k], atol=1e-10)


def test_as_matrix_is_constraint_on_one_unfolding():
  # as_matrix solves the unfolding as a matrix; it must equal the tensor solve over that mode.
  with jax.enable_x64(True):
    x, idx, y = _problem((6, 5, 4), (2, 2, 2), 0.7, seed=8)
    mask, y_dense = completion.observation_tensors(x.shape, idx, y)
    for mode in range(3):
      mat = completion.as_matrix(x.shape, idx, y, mode, tol=1e-4)
      eta = 1 / (10 * np.std(np.asarray(y), ddof=1))
      ref = completion.constraint_jit(
          mask, y_dense, 0.0, eta, 1e-4, jnp.ones((1,)), modes=(mode,), max_iter=2000,
          options=admm.ADMMOptions())
      assert int(mat.iterations) == int(ref.iterations)
      np.testing.assert_allclose(mat.X, ref.X, atol=1e-10)
      np.testing.assert_allclose(mat.components, ref.components, atol=1e-10)
      np.testing.assert_allclose(mat.gap, ref.gap, rtol=1e-8)


@pytest.mark.parametrize("lam", [0.0, 0.3])
def test_mixture_static_exact_flag_matches_the_run_time_branch(lam):
  # exact=True/False compiles only the lam == 0 / lam > 0 primal value; exact=None picks one
  # with lax.cond at run time. Both must give the same iterates, gap and certificate.
  with jax.enable_x64(True):
    y = jnp.asarray(np.random.default_rng(0).standard_normal((6, 7, 8)))
    mask = jnp.asarray(np.random.default_rng(1).random(y.shape) < 0.6)
    args = (mask, jnp.where(mask, y, 0), lam, 1.0, 1e-4, jnp.ones((3,)))
    solve = completion.mixture_jit
    opts = admm.ADMMOptions(check_every=1)
    ref = solve(*args, max_iter=300, options=opts)
    res = solve(*args, max_iter=300, exact=lam == 0, options=opts)
    assert int(res.iterations) == int(ref.iterations)
    np.testing.assert_allclose(res.primal, ref.primal, rtol=1e-12)
    np.testing.assert_allclose(res.X, ref.X, atol=1e-12)


@pytest.mark.parametrize("solver", ["constraint", "mixture"])
def test_gap_estimate_only_skips_checks(solver):
  # The exact gap (Constraint) or the feasible split's value (Mixture at lam = 0) runs only
  # once a cheap estimate is within options.estimate_factor of tol. With the estimate never trusted
  # (factor inf: every check exact) the solve must stop at the same iteration with the same
  # certificate; with it always distrusted (factor -inf) no exact gap is ever formed, and the
  # best dual value must still lower-bound the optimum (for Constraint it then comes from the
  # decomposition-free bound alone, which is never tighter than the exact scaling).
  with jax.enable_x64(True):
    x, idx, y = _problem((8, 7, 6), (2, 2, 2), 0.6 if solver == "constraint" else 0.9, seed=9)
    mask, y_dense = completion.observation_tensors(x.shape, idx, y)
    std = np.std(np.asarray(y), ddof=1)
    tol = 1e-4 if solver == "constraint" else 1e-3
    if solver == "constraint":
      fn, eta, static = completion.constraint_solve, 1 / (10 * std), dict(modes=(0, 1, 2))
    else:
      fn, eta, static = completion.mixture_solve, 10 * std, dict(exact=True)
    args = (mask, y_dense, 0.0, eta, tol, jnp.ones((3,)))

    def solve(factor, max_iter):
      # The plain ADMM in float64, so that only the gate differs.
      opts = admm.PAPER_ADMM.replace(estimate_factor=factor, check_every=1)
      return jax.jit(lambda *a: fn(*a, **static, max_iter=max_iter, options=opts))(*args)

    gated = solve(10.0, 2000)
    always = solve(np.inf, 2000)
    assert bool(gated.converged) and bool(always.converged)
    assert int(gated.iterations) == int(always.iterations)
    np.testing.assert_allclose(gated.gap, always.gap, rtol=1e-10)
    np.testing.assert_allclose(gated.X, always.X, atol=1e-12)
    never = solve(-np.inf, int(gated.iterations))
    assert not bool(never.converged) and np.isinf(float(never.gap))
    assert -np.inf < float(never.dual) <= float(always.primal) * (1 + 1e-12)
    assert float(never.dual) <= float(always.dual) * (1 + 1e-12)


def _rebalanced(eta, r, s, it):
  # Residual balancing as documented, after every 5th iteration: times 3 when r > 3 s,
  # divided by 3 when s > 3 r.
  if it % 5:
    return eta
  return eta * 3 if r > 3 * s else eta / 3 if s > 3 * r else eta


@pytest.mark.parametrize("lam, relax", [(0.0, 1.0), (0.3, 1.0), (0.0, 1.6)])
def test_constraint_adaptive_eta_matches_residual_balancing_written_out(lam, relax):
  # n iterations of the paper's updates with eta rebalanced every 5 iterations from the
  # residuals ||X_(k) - Z_k|| and eta ||sum_k fold(Z_k - Z_k_prev)|| (where X is free); the
  # multipliers A_k carry over unchanged. The start eta is far off so that it must change.
  # Over-relaxation: the Z- and A-steps take relax X_(k) + (1 - relax) Z_k for X_(k).
  with jax.enable_x64(True):
    x, idx, y = _problem((5, 4, 3), (2, 2, 2), 0.6, seed=6)
    mask, y_dense = completion.observation_tensors(x.shape, idx, y)
    mask, y_dense = np.asarray(mask), np.asarray(y_dense)
    eta, n_iter = 50.0, 12
    z = [np.zeros_like(np.asarray(ops.unfold(y_dense, k))) for k in range(3)]
    a = [np.zeros_like(zk) for zk in z]
    etas = [eta]
    for it in range(1, n_iter + 1):
      m = sum(np.asarray(ops.fold(z[k] - a[k] / eta, k, x.shape)) for k in range(3)) / 3
      c = lam * eta * 3
      x_ref = np.where(mask, (y_dense + c * m) / (1 + c), m)
      z_old, r2 = list(z), 0.0
      for k in range(3):
        xk = np.asarray(ops.unfold(x_ref, k))
        xr = relax * xk + (1 - relax) * z[k]
        z[k] = _svt_np(xr + a[k] / eta, 1 / eta)
        a[k] = a[k] + eta * (xr - z[k])
        r2 += np.sum((xk - z[k]) ** 2)
      dz = sum(np.asarray(ops.fold(z[k] - z_old[k], k, x.shape)) for k in range(3))
      free = ~mask if lam == 0 else np.ones_like(mask)
      eta = _rebalanced(eta, np.sqrt(r2), eta * np.linalg.norm(dz[free]), it)
      etas.append(eta)
    assert len(set(etas)) > 1  # the rule was exercised
    opts = admm.ADMMOptions(check_every=1, adaptive_eta=True, relaxation=relax,
                            float32_start=False, adapt_iterations=100)
    res = completion.constraint_solve(
        jnp.asarray(mask), jnp.asarray(y_dense), lam, 50.0, 0.0, jnp.ones((3,)),
        modes=(0, 1, 2), max_iter=n_iter, options=opts)
    np.testing.assert_allclose(res.X, x_ref, atol=1e-10)
    for k in range(3):
      np.testing.assert_allclose(ops.unfold(res.components[k], k), z[k], atol=1e-10)


@pytest.mark.parametrize("relax", [1.0, 1.8])
def test_mixture_adaptive_eta_matches_residual_balancing_written_out(relax):
  # The primal residual is (W_k_new - W_k) / eta (alpha_(k) - V_k without relaxation); the
  # dual one eta times the change of Omega(sum_k V_k). The multipliers W_k are unscaled:
  # nothing carries. Over-relaxation: the V- and W-steps take relax alpha_(k) + (1 - relax)
  # V_k (the previous V_k, zero at the start) for alpha_(k).
  with jax.enable_x64(True):
    x, idx, y = _problem((5, 4, 3), (2, 2, 2), 0.6, seed=7)
    mask, y_dense = completion.observation_tensors(x.shape, idx, y)
    mask, y_dense = np.asarray(mask), np.asarray(y_dense)
    eta, n_iter, lam = 0.01, 12, 0.2
    z = [np.zeros_like(np.asarray(ops.unfold(y_dense, k))) for k in range(3)]
    alpha, v_sum = np.where(mask, y_dense, 0), np.zeros_like(y_dense)
    v = [np.zeros_like(zk) for zk in z]
    etas = [eta]
    for it in range(1, n_iter + 1):
      v_old, v_sum, r2 = v_sum, np.zeros_like(y_dense), 0.0
      for k in range(3):
        t = z[k] + eta * (relax * np.asarray(ops.unfold(alpha, k)) + (1 - relax) * v[k])
        z_k = _svt_np(t, eta)
        r2 += np.sum((z_k - z[k]) ** 2)
        z[k] = z_k
        v[k] = (t - z[k]) / eta
        v_sum += np.asarray(ops.fold(v[k], k, x.shape))
      z_sum = sum(np.asarray(ops.fold(z[k], k, x.shape)) for k in range(3))
      alpha = np.where(mask, (y_dense - z_sum + eta * v_sum) / (lam + eta * 3), 0)
      eta = _rebalanced(eta, np.sqrt(r2) / eta, eta * np.linalg.norm((v_sum - v_old)[mask]), it)
      etas.append(eta)
    assert len(set(etas)) > 1
    opts = admm.ADMMOptions(check_every=1, adaptive_eta=True, relaxation=relax,
                            float32_start=False, adapt_iterations=100)
    res = completion.mixture_solve(jnp.asarray(mask), jnp.asarray(y_dense), lam, 0.01, 0.0,
                                   jnp.ones((3,)), max_iter=n_iter, options=opts)
    np.testing.assert_allclose(res.X, z_sum, atol=1e-10)
    for k in range(3):
      np.testing.assert_allclose(ops.unfold(res.components[k], k), z[k], atol=1e-10)


@pytest.mark.parametrize("solver", ["constraint", "mixture"])
def test_step_options_reach_the_same_optimum(solver):
  # Rebalancing and over-relaxation change the path, not the problem: the defaults and the
  # paper's plain ADMM must certify the same optimal value (each gap <= tol bounds its
  # distance to the optimum). Constraint from the authors' eta, Mixture from a fifth of
  # theirs (at theirs the plain ADMM needs > 2000 iterations here).
  with jax.enable_x64(True):
    x, idx, y = _problem((8, 7, 6), (2, 2, 2), 0.7, seed=3)
    fn = getattr(completion, solver)
    tol = 1e-4
    std = np.std(np.asarray(y), ddof=1)
    eta = 1 / (10 * std) if solver == "constraint" else 2 * std
    fixed = fn(x.shape, idx, y, tol=tol, eta=eta, adaptive_eta=False, relaxation=1.0)
    # Constraint: residual balancing (an option; off by default); Mixture: the defaults
    # (over-relaxation).
    adaptive = fn(x.shape, idx, y, tol=tol, eta=eta,
                  **({"adaptive_eta": True} if solver == "constraint" else {}))
    assert bool(fixed.converged) and bool(adaptive.converged)
    assert int(adaptive.iterations) < int(fixed.iterations)
    for res in (fixed, adaptive):
      assert float(res.dual) <= float(res.primal)
    # Each primal value is within tol of the optimum, which lies above both dual values.
    assert float(adaptive.primal) >= float(fixed.dual) - 1e-12
    assert float(fixed.primal) >= float(adaptive.dual) - 1e-12
    np.testing.assert_allclose(adaptive.primal, fixed.primal, rtol=2 * tol)


@pytest.mark.parametrize("kwargs, match", [
    (dict(adaptive_eta="yes"), "adaptive_eta must be True or False, got 'yes'"),
    (dict(relaxation=2.0), r"relaxation must be in \(0, 2\) \(1: no over-relaxation\), got 2.0"),
    (dict(relaxation=0.0), r"relaxation must be in \(0, 2\)")])
def test_bad_step_options(kwargs, match):
  for solver in (completion.constraint, completion.mixture):
    with pytest.raises(ValueError, match=match):
      solver((4, 4, 4), [[0, 0, 0], [1, 2, 3]], [1.0, 2.0], **kwargs)


def test_non_finite_observations_raise_eagerly_and_stop_the_solve_under_jit():
  shape = (6, 6, 6)
  rng = np.random.default_rng(0)
  idx = np.argwhere(rng.random(shape) < 0.5)
  values = rng.normal(size=len(idx))
  bad = values.copy()
  bad[3] = np.nan
  for solver in (completion.constraint, completion.mixture):
    with pytest.raises(ValueError, match=r"values must be finite: 1 of \d+ are NaN or inf, the "
                       r"first at observation 3"):
      solver(shape, idx, bad)
  # Under jit the values are not checked: the solve stops at the first NaN certificate
  # instead of running to max_iter, and reports converged=False with a NaN gap.
  for solver in (completion.constraint, completion.mixture):
    result = jax.jit(lambda v, solver=solver: solver(shape, jnp.asarray(idx), v, max_iter=500))(
        jnp.asarray(bad))
    assert not bool(result.converged) and np.isnan(float(result.gap))
    assert int(result.iterations) <= 10
