"""Tests for tomioka_jax.matrix._completability (Király-Theran-Tomioka 2015, Király-Tomioka 2012).

The generic-point Jacobian test is checked against exact combinatorics where it exists (rank one:
bipartite connectivity), against dimension counts (full observation, empty rows), and against
the small examples of the papers; completions of noiseless low-rank matrices must be exact and
the error estimates must match Monte Carlo.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse
import scipy.sparse.csgraph

from tomioka_jax import matrix as mc
from tomioka_jax.matrix import _completability

KEY = jax.random.key(0)


def _low_rank(rng, m, n, r):
  return rng.normal(size=(m, r)) @ rng.normal(size=(r, n))


# ----------------------------------------------------------------------------------------------
# The generic-point test
# ----------------------------------------------------------------------------------------------


def test_jacobian_test_equals_bipartite_connectivity_for_rank_one():
  """Rank one: the closure of E is the union of complete bipartite graphs on the connected
  components of E (JMLR 2015). 200 random masks over a range of densities."""
  rng = np.random.default_rng(1)
  keys = jax.random.split(KEY, 200)
  for t in range(200):
    shape = (8, 11) if t % 2 else (8, 8)   # shapes shared with other tests: few compilations
    mask = rng.random(shape) < rng.uniform(0.05, 0.4)
    result = mc.jacobian_completability(mask, 1, keys[t])
    np.testing.assert_array_equal(result.completable, mc.rank_one_completable(mask))
    assert bool(result.consistent)
    assert float(result.log10_gap) > 4.0


def test_bipartite_components_match_scipy():
  rng = np.random.default_rng(2)
  for _ in range(20):
    mask = rng.random((9, 13)) < 0.12
    labels = np.asarray(mc.bipartite_components(mask))
    adjacency = scipy.sparse.bmat([[None, scipy.sparse.csr_matrix(mask)],
                                   [scipy.sparse.csr_matrix(mask.T), None]])
    _, ref = scipy.sparse.csgraph.connected_components(adjacency, directed=False)
    # Same partition: labels agree iff reference labels agree.
    np.testing.assert_array_equal(labels[:, None] == labels[None, :], ref[:, None] == ref[None, :])
    # Each label is the smallest node index of its component.
    assert all(labels[i] == np.min(np.nonzero(ref == ref[i])[0]) for i in range(len(ref)))


@pytest.mark.parametrize("m,n,r", [(8, 11, 1), (8, 8, 2), (8, 8, 3)])
def test_full_observation_has_rank_r_times_m_plus_n_minus_r(m, n, r):
  """dim of the rank-r determinantal variety = r(m+n-r) = generic rank of the full Jacobian."""
  mask = np.ones((m, n), bool)
  result = mc.jacobian_completability(mask, r, KEY)
  assert int(result.jacobian_rank) == r * (m + n - r) == result.max_rank
  assert bool(mc.is_completable(mask, r, KEY))
  # An unobserved row frees its r coordinates: rank drops by exactly r and nothing in the row
  # is determined, everything else still is.
  mask[2] = False
  result = mc.jacobian_completability(mask, r, KEY)
  assert int(result.jacobian_rank) == r * (m + n - r) - r
  assert not bool(result.completable[2].any())
  assert bool(np.delete(np.asarray(result.completable), 2, axis=0).all())
  assert not bool(mc.is_completable(mask, r, KEY))


def test_paper_examples():
  # (a) Rank one, 2x2 with three entries (JMLR 2015; ICML 2012): the cycle
  # closes, a_22 = a_12 a_21 / a_11.
  # All examples sit in an 8 x 8 matrix (unobserved elsewhere) to share compilations.
  mask = np.zeros((8, 8), bool)
  mask[:2, :2] = [[1, 1], [1, 0]]
  assert bool(mc.completable_entries(mask, 1, KEY)[1, 1])
  assert not bool(mc.completable_entries(mask, 1, KEY)[2, 1])
  # (b) Rank r, an (r+1)x(r+1) minor missing one entry (the minors are circuits of the
  # determinantal matroid, JMLR 2015): the entry is determined; with a second
  # entry missing in the same minor, neither is.
  for r in (1, 2, 3):
    mask = np.zeros((8, 8), bool)
    mask[:r + 1, :r + 1] = True
    mask[r, r] = False
    assert bool(mc.completable_entries(mask, r, KEY)[r, r])
    mask[0, 0] = False
    assert not bool(mc.completable_entries(mask, r, KEY)[r, r])
  # (c) A row with fewer than r observed entries is not determined (the degree condition of
  # ICML 2012: every row and column needs at least r edges).
  mask = np.ones((8, 8), bool)
  mask[0, 2:] = False                      # row 0 keeps 2 < r = 3 entries
  c = mc.completable_entries(mask, 3, KEY)
  assert not bool(c[0, 2:].any()) and bool(c[1:].all())
  # (d) The "cross": r full rows and r full columns, exactly r(m+n-r) entries, complete
  # (A = A[:, C] A[R, C]^{-1} A[R, :]), and minimal: dropping any entry breaks it.
  m, n, r = 8, 8, 2
  mask = np.zeros((m, n), bool)
  mask[:r] = True
  mask[:, :r] = True
  assert mask.sum() == r * (m + n - r)
  result = mc.jacobian_completability(mask, r, KEY)
  assert int(result.jacobian_rank) == mask.sum() and bool(result.completable.all())
  mask[r + 1, 0] = False
  assert not bool(mc.is_completable(mask, r, KEY))


@pytest.mark.parametrize("r,p", [(2, 0.35), (2, 0.5), (3, 0.7)])
def test_closure_contains_mask_and_is_idempotent(r, p):
  rng = np.random.default_rng(3)
  mask = rng.random((8, 8)) < p
  c1 = np.asarray(mc.closure(mask, r, KEY))
  assert c1[mask].all() and c1.sum() > mask.sum()   # non-trivial: it adds entries
  np.testing.assert_array_equal(np.asarray(mc.closure(c1, r, jax.random.key(7))), c1)
  # The closure has the same matroid rank as the mask (it adds only dependent entries).
  assert int(mc.jacobian_completability(c1, r, KEY).jacobian_rank) == int(
      mc.jacobian_completability(mask, r, KEY).jacobian_rank)


# ----------------------------------------------------------------------------------------------
# Rank one: paths and the minimum-variance combination
# ----------------------------------------------------------------------------------------------


def test_rank_one_path_and_combination_are_exact_on_noiseless_data():
  rng = np.random.default_rng(4)
  m, n = 15, 18
  with jax.enable_x64(True):
    u = rng.uniform(0.3, 2.0, m) * rng.choice([-1, 1], m)
    v = rng.uniform(0.3, 2.0, n) * rng.choice([-1, 1], n)
    a = np.outer(u, v)
    # Path 3 -> col 5 -> row 7 -> col 2 -> row 1 -> col 9: a[3,9] = a35 a72 a19 / (a75 a12).
    path = [3, 5, 7, 2, 1, 9]
    est = mc.rank_one_path_completion(jnp.asarray(a), path, noise_std=0.1)
    np.testing.assert_allclose(float(est.estimate), a[3, 9], rtol=1e-12)
    expected_var = sum(0.01 / a[i, j] ** 2 for i, j in [(3, 5), (7, 5), (7, 2), (1, 2), (1, 9)])
    np.testing.assert_allclose(float(est.log_variance), expected_var, rtol=1e-12)
    mask = rng.random((m, n)) < 0.15
    res = mc.rank_one_complete(jnp.asarray(a), mask)
    np.testing.assert_array_equal(res.completable, mc.rank_one_completable(mask))
    c = np.asarray(res.completable)
    assert c.sum() > 0.5 * c.size
    np.testing.assert_allclose(np.asarray(res.estimate)[c], a[c], rtol=1e-8, atol=1e-10)
    assert np.isnan(np.asarray(res.estimate)[~c]).all()


def test_rank_one_error_estimate_matches_monte_carlo():
  """The effective-resistance standard deviation is the first-order sd of the estimate."""
  rng = np.random.default_rng(5)
  m, n, sigma = 10, 12, 1e-3
  with jax.enable_x64(True):
    a = np.outer(rng.uniform(0.5, 2.0, m), rng.uniform(0.5, 2.0, n) * rng.choice([-1, 1], n))
    mask = rng.random((m, n)) < 0.3
    pred = mc.rank_one_complete(jnp.asarray(a), mask, noise_std=sigma)
    noisy = a[None] + sigma * rng.normal(size=(400, m, n))
    draws = jax.vmap(lambda x: _completability._rank_one_complete(
        x, jnp.asarray(mask), jnp.asarray(sigma)).estimate)(jnp.asarray(noisy))
    c = np.asarray(pred.completable)
    empirical = np.asarray(jnp.std(draws, axis=0))[c]
    ratio = empirical / np.asarray(pred.std)[c]
    assert np.all((ratio > 0.8) & (ratio < 1.2)), ratio
    # Minimum variance: no single path beats the combination.
    i, j = np.argwhere(mask)[0]
    single = mc.rank_one_path_completion(jnp.asarray(a), [i, j], noise_std=sigma)
    assert float(pred.log_std[i, j]) ** 2 <= float(single.log_variance) * (1 + 1e-9)


def test_rank_one_complete_float32():
  rng = np.random.default_rng(6)
  a = np.outer(rng.uniform(0.5, 2, 9), rng.uniform(0.5, 2, 8)).astype(np.float32)
  mask = rng.random((9, 8)) < 0.4
  res = mc.rank_one_complete(a, mask)
  assert res.estimate.dtype == jnp.float32
  c = np.asarray(res.completable)
  np.testing.assert_allclose(np.asarray(res.estimate)[c], a[c], rtol=1e-4)


# ----------------------------------------------------------------------------------------------
# Rank r: circuits and single-entry completion
# ----------------------------------------------------------------------------------------------


def test_find_circuit_is_a_circuit():
  """C + {kl} is dependent (kl in closure(C)) and minimal (kl not in closure(C - e))."""
  rng = np.random.default_rng(7)
  mask = rng.random((8, 8)) < 0.55
  r = 2
  comp = np.asarray(mc.completable_entries(mask, r, KEY))
  k, l = np.argwhere(comp & ~mask)[0]
  circuit = mc.find_circuit(mask, r, (k, l), KEY)
  assert circuit.completable
  c = circuit.entries
  assert c.sum() >= (r + 1) ** 2 - 1 and not (c & ~mask).any()
  assert bool(mc.completable_entries(c, r, KEY)[k, l])
  for i, j in np.argwhere(c):
    smaller = c.copy()
    smaller[i, j] = False
    assert not bool(mc.completable_entries(smaller, r, KEY)[k, l])
  # The 3x3 minor: the circuit through a missing corner is the other eight entries.
  mask = np.zeros((5, 5), bool)
  mask[:3, :3] = True
  mask[2, 2] = False
  assert (mc.find_circuit(mask, 2, (2, 2), KEY).entries == mask).all()
  # Not completable: empty circuit.
  assert not mc.find_circuit(mask, 2, (4, 4), KEY).completable


@pytest.mark.parametrize("r,p", [(2, 0.55), (3, 0.75)])
def test_complete_entry_is_exact_on_noiseless_low_rank(r, p):
  # 8 x 8 keeps every local block at the solver's smallest padded shape: one compilation.
  rng = np.random.default_rng(8 + r)
  with jax.enable_x64(True):
    a = _low_rank(rng, 8, 8, r)
    mask = rng.random((8, 8)) < p
    comp = np.asarray(mc.completable_entries(mask, r, KEY))
    targets = np.argwhere(comp & ~mask)
    assert len(targets) >= 3
    for k, l in targets[rng.permutation(len(targets))[:3]]:
      out = mc.complete_entry(jnp.asarray(a), mask, r, (k, l), jax.random.key(int(k * 8 + l)))
      assert abs(float(out.value) - a[k, l]) <= 1e-8 * max(1.0, abs(a[k, l])), (k, l)
      assert float(out.residual) < 1e-8


def test_complete_entry_error_estimate_matches_monte_carlo():
  rng = np.random.default_rng(11)
  r, sigma = 2, 1e-4
  with jax.enable_x64(True):
    a = _low_rank(rng, 8, 8, r)
    mask = rng.random((8, 8)) < 0.6
    comp = np.asarray(mc.completable_entries(mask, r, KEY))
    k, l = np.argwhere(comp & ~mask)[0]
    pred = mc.complete_entry(jnp.asarray(a), mask, r, (k, l), KEY, noise_std=sigma)
    errors = []
    for t in range(40):
      noisy = a + sigma * rng.normal(size=a.shape)
      out = mc.complete_entry(jnp.asarray(noisy), mask, r, (k, l), KEY, noise_std=sigma)
      errors.append(float(out.value) - a[k, l])
    ratio = np.sqrt(np.mean(np.square(errors))) / float(pred.std)
    assert 0.6 < ratio < 1.5, ratio


def test_complete_entry_propagated_start_is_exact_near_counting_bound():
  """Regression: rank 2 at 1.6x the counting bound r(m+n-r) (24 x 24, the regime of the
  100 x 100 benchmark), where random starts of the local solve stall. The local solve starts
  from the r-neighbour propagation and must return the truth."""
  rng = np.random.default_rng(21)
  n, r = 24, 2
  with jax.enable_x64(True):
    a = _low_rank(rng, n, n, r)
    mask = rng.random((n, n)) < 1.6 * r * (2 * n - r) / n**2
    comp = np.asarray(mc.completable_entries(mask, r, KEY))
    targets = np.argwhere(comp & ~mask)
    for k, l in targets[rng.permutation(len(targets))[:2]]:
      out = mc.complete_entry(jnp.asarray(a), mask, r, (k, l), jax.random.key(int(k)))
      assert out.strategy == "propagated"
      assert abs(float(out.value) - a[k, l]) <= 1e-8 * max(1.0, abs(a[k, l])), (k, l)


def test_low_rank_fit_start_completes_rank_three_exactly():
  """Rank 3 near the counting bound: propagation from a 3 x 3 seed dies out, and the local
  solves start from one global fit (nuclear-norm start + Levenberg-Marquardt)."""
  rng = np.random.default_rng(22)
  n, r = 24, 3
  with jax.enable_x64(True):
    a = _low_rank(rng, n, n, r)
    mask = rng.random((n, n)) < 1.6 * r * (2 * n - r) / n**2
    fit = mc.low_rank_fit(jnp.asarray(a), mask, r)
    core = np.asarray(_completability._prune_low_degree(jnp.asarray(mask), r))
    # The fit interpolates every observed entry it fits (rows/columns with >= r entries).
    np.testing.assert_allclose(np.asarray(fit.u @ fit.v.T)[core], a[core], atol=1e-9)
    assert float(fit.residual) < 1e-10
    comp = np.asarray(mc.completable_entries(mask, r, KEY))
    targets = np.argwhere(comp & ~mask)
    for k, l in targets[rng.permutation(len(targets))[:2]]:
      out = mc.complete_entry(jnp.asarray(a), mask, r, (k, l), KEY, start=(fit.u, fit.v))
      assert out.strategy == "given"
      assert abs(float(out.value) - a[k, l]) <= 1e-8 * max(1.0, abs(a[k, l])), (k, l)
    with pytest.raises(ValueError, match="start must be factors of shapes"):
      mc.complete_entry(jnp.asarray(a), mask, r, tuple(targets[0]), KEY,
                        start=(fit.u[:, :2], fit.v))


def test_unobservable_entry_returns_nan():
  mask = np.zeros((8, 8), bool)
  mask[:3, :3] = True
  out = mc.complete_entry(np.ones((8, 8)), mask, 2, (7, 7), KEY)
  assert np.isnan(float(out.value)) and not out.circuit.any()


def test_nuclear_norm_completion_recovers_easy_instance():
  rng = np.random.default_rng(12)
  with jax.enable_x64(True):
    a = _low_rank(rng, 30, 30, 2)
    mask = rng.random((30, 30)) < 0.6
    out = mc.nuclear_norm_complete(jnp.asarray(a), mask, tol=1e-9)
    err = np.linalg.norm(np.asarray(out.estimate) - a) / np.linalg.norm(a)
    assert err < 1e-3, err


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [mc.completable_entries, mc.is_completable, mc.closure,
                                mc.jacobian_completability])
def test_bad_mask_and_rank(fn):
  with pytest.raises(ValueError, match="mask must be a boolean array"):
    fn(np.ones((3, 3)), 1, KEY)
  with pytest.raises(ValueError, match="mask must be 2-D"):
    fn(np.ones(3, bool), 1, KEY)
  with pytest.raises(ValueError, match="mask must be 2-D"):
    fn(np.ones((2, 3, 3), bool), 1, KEY)
  with pytest.raises(ValueError, match="rank must satisfy 1 <= rank"):
    fn(np.ones((3, 4), bool), 0, KEY)
  with pytest.raises(ValueError, match=r"rank must satisfy 1 <= rank <= min\(m, n\) = 3"):
    fn(np.ones((3, 4), bool), 4, KEY)
  with pytest.raises(ValueError, match="rank must be an int"):
    fn(np.ones((3, 4), bool), 1.5, KEY)


def test_bad_values_entry_path_lambda():
  mask = np.ones((3, 3), bool)
  with pytest.raises(ValueError, match="values must have the mask's shape"):
    mc.rank_one_complete(np.ones((3, 4)), mask)
  with pytest.raises(ValueError, match="values must be a floating-point array"):
    mc.rank_one_complete(np.ones((3, 3), int), mask)
  with pytest.raises(ValueError, match="entry must index a 3x3 matrix"):
    mc.complete_entry(np.ones((3, 3)), mask, 1, (3, 0), KEY)
  with pytest.raises(ValueError, match="entry must be a pair"):
    mc.find_circuit(mask, 1, 5, KEY)
  with pytest.raises(ValueError, match="path must be an even-length"):
    mc.rank_one_path_completion(np.ones((3, 3)), [0, 1, 2])
  with pytest.raises(ValueError, match="lam must be >= 0"):
    mc.nuclear_norm_complete(np.ones((3, 3)), mask, lam=-1.0)


def test_complete_entry_retries_a_start_whose_misfit_rejects_the_noise_model():
  """A start the local solve cannot leave (zero factors: zero gradient) leaves the whole misfit;
  the chi-square test of the misfit rejects it and the next start (the propagation) is used.
  Data inconsistent with the nominal noise level keep the best fit, flagged, and its sd uses
  the noise level its misfit implies, sqrt(SSR / (N - p)) (least-squares prediction sd)."""
  rng = np.random.default_rng(8 + 2)
  with jax.enable_x64(True):
    a = _low_rank(rng, 8, 8, 2)
    mask = rng.random((8, 8)) < 0.55
    comp = np.asarray(mc.completable_entries(mask, 2, KEY))
    k, l = np.argwhere(comp & ~mask)[0]
    zeros = (np.zeros((8, 2)), np.zeros((8, 2)))
    out = mc.complete_entry(jnp.asarray(a), mask, 2, (k, l), KEY, noise_std=1e-6, start=zeros)
    assert out.strategy == "propagated" and out.consistent
    assert [(t.strategy, t.accepted) for t in out.attempts] == [("given", False),
                                                                 ("propagated", True)]
    assert abs(float(out.value) - a[k, l]) <= 1e-8 * max(1.0, abs(a[k, l]))
    # Without a fallback the zero start is returned, flagged.
    stuck = mc.complete_entry(jnp.asarray(a), mask, 2, (k, l), KEY, noise_std=1e-6, start=zeros,
                              strategies=(mc.GivenStart(),))
    assert not stuck.consistent
    # Noise 100x the nominal level: every start misfits; sd from the misfit, ~100x nominal.
    noisy = jnp.asarray(a + 1e-3 * rng.normal(size=a.shape))
    nominal = mc.complete_entry(noisy, mask, 2, (k, l), KEY, noise_std=1e-3)
    assert nominal.consistent
    flagged = mc.complete_entry(noisy, mask, 2, (k, l), KEY, noise_std=1e-5,
                                strategies=(mc.PropagatedStart(max_propagations=1),))
    assert not flagged.consistent
    np.testing.assert_allclose(float(flagged.value), float(nominal.value), rtol=1e-6)
    ratio = float(flagged.std) / float(nominal.std)
    assert 0.2 < ratio < 5.0, ratio
    with pytest.raises(ValueError, match="misfit_level"):
      mc.complete_entry(noisy, mask, 2, (k, l), KEY, misfit_level=1.5)
    with pytest.raises(ValueError, match="noise_std"):
      mc.complete_entry(noisy, mask, 2, (k, l), KEY, noise_std=-1.0)
    with pytest.raises(ValueError, match="n_restarts must be an int >= 1"):
      mc.RandomRestarts(n_restarts=0)


# ----------------------------------------------------------------------------------------------
# The completion strategies, one at a time
# ----------------------------------------------------------------------------------------------

STRATEGIES = [mc.GivenStart(), mc.PropagatedStart(), mc.GlobalFitStart(), mc.RandomRestarts()]


def _rank_two_instance():
  """8 x 8, rank 2, 55% observed (the instance of the tests above), with its true factors, a
  start near them and two missing determined entries."""
  rng = np.random.default_rng(10)
  u, vt = rng.normal(size=(8, 2)), rng.normal(size=(2, 8))
  mask = rng.random((8, 8)) < 0.55
  targets = np.argwhere(np.asarray(mc.completable_entries(mask, 2, KEY)) & ~mask)[:2]
  start = (u + 1e-3 * rng.normal(size=u.shape), vt.T + 1e-3 * rng.normal(size=vt.T.shape))
  return u @ vt, mask, [tuple(int(i) for i in t) for t in targets], start


def _projective_plane_mask():
  """Point-line incidence of the projective plane over GF(3): 13 x 13, four entries in each
  row and column, and no fully observed 2 x 2 block (two lines meet in one point), yet its 52
  entries exceed the rank-2 counting bound 2 (13 + 13 - 2) = 48 and determine every entry."""
  vecs = [v for v in itertools.product(range(3), repeat=3) if any(v)]
  points = [v for v in vecs if v[next(i for i in range(3) if v[i])] == 1]
  return np.array([[np.dot(p, q) % 3 == 0 for q in points] for p in points])


def _start_for(strategy, start):
  return start if isinstance(strategy, mc.GivenStart) else None


@pytest.mark.parametrize("strategy", STRATEGIES, ids=lambda s: s.name)
def test_each_strategy_alone_completes_a_noiseless_entry_exactly(strategy):
  with jax.enable_x64(True):
    a, mask, targets, start = _rank_two_instance()
    for k, l in targets:
      out = mc.complete_entry(jnp.asarray(a), mask, 2, (k, l), KEY, noise_std=1e-8,
                              strategies=(strategy,), start=_start_for(strategy, start))
      assert out.strategy == strategy.name and out.consistent
      assert [(t.strategy, t.accepted) for t in out.attempts] == [(strategy.name, True)]
      assert abs(float(out.value) - a[k, l]) <= 1e-8 * max(1.0, abs(a[k, l])), (k, l)
      assert float(out.residual) < 1e-8


@pytest.mark.parametrize("strategy", STRATEGIES, ids=lambda s: s.name)
def test_each_strategy_alone_has_a_calibrated_error_estimate(strategy):
  """Root-mean-square error over 30 noise draws against the first-order sd the solve reports."""
  sigma = 1e-4
  with jax.enable_x64(True):
    a, mask, targets, start = _rank_two_instance()
    k, l = targets[0]
    kwargs = dict(noise_std=sigma, strategies=(strategy,), start=_start_for(strategy, start))
    pred = mc.complete_entry(jnp.asarray(a), mask, 2, (k, l), KEY, **kwargs)
    rng = np.random.default_rng(11)
    errors = []
    for _ in range(30):
      out = mc.complete_entry(jnp.asarray(a + sigma * rng.normal(size=a.shape)), mask, 2, (k, l),
                              KEY, **kwargs)
      assert out.strategy == strategy.name and out.consistent
      errors.append(float(out.value) - a[k, l])
    ratio = np.sqrt(np.mean(np.square(errors))) / float(pred.std)
    assert 0.6 < ratio < 1.5, ratio


def test_strategies_decline_or_fail_where_they_must():
  """On the projective-plane mask there is no seed block: the propagation declines (NaN,
  ``consistent=False``, the reason recorded), the default order falls through to the global fit
  (exact), and random restarts land on a wrong root that the misfit test rejects."""
  mask = _projective_plane_mask()
  with jax.enable_x64(True):
    test = mc.jacobian_completability(mask, 2, KEY)
    assert int(test.jacobian_rank) == test.max_rank == 48 and bool(test.completable.all())
    a = _low_rank(np.random.default_rng(5), 13, 13, 2)
    aj = jnp.asarray(a)
    only = mc.complete_entry(aj, mask, 2, (0, 0), KEY, strategies=(mc.PropagatedStart(),))
    assert only.strategy == "none" and not only.consistent
    assert np.isnan(float(only.value)) and np.isinf(float(only.std))
    assert [t.strategy for t in only.attempts] == ["propagated"]
    assert "no fully observed 2x2 seed block" in only.attempts[0].reason
    out = mc.complete_entry(aj, mask, 2, (0, 0), KEY, noise_std=1e-8)
    assert [(t.strategy, t.accepted) for t in out.attempts] == [
        ("given", False), ("propagated", False), ("global", True)]
    assert out.attempts[0].reason == "no start was given"
    assert out.strategy == "global" and out.consistent
    assert abs(float(out.value) - a[0, 0]) <= 1e-8 * max(1.0, abs(a[0, 0]))
    stalled = mc.complete_entry(aj, mask, 2, (0, 0), KEY, noise_std=1e-6,
                                strategies=(mc.RandomRestarts(),))
    assert stalled.strategy == "random" and not stalled.consistent
    assert stalled.attempts[0].misfit_excess > 1.0 and not stalled.attempts[0].accepted
    # A given start stands for the global fit, which then declines.
    fit = mc.low_rank_fit(aj, mask, 2)
    given = mc.complete_entry(aj, mask, 2, (0, 0), KEY, noise_std=1e-8, start=(fit.u, fit.v),
                              strategies=(mc.GlobalFitStart(), mc.GivenStart()))
    assert [t.strategy for t in given.attempts] == ["global", "given"]
    assert "a start was given" in given.attempts[0].reason and given.strategy == "given"


def test_unobserved_values_are_ignored_even_when_not_finite():
  with jax.enable_x64(True):
    a, mask, targets, _ = _rank_two_instance()
    zero_filled = jnp.asarray(np.where(mask, a, 0.0))
    bad = np.where(mask, a, np.nan)
    bad[~mask & (np.arange(8)[:, None] < 2)] = np.inf
    for strategies in [mc.DEFAULT_COMPLETION_STRATEGIES, (mc.GlobalFitStart(),)]:
      ref = mc.complete_entry(zero_filled, mask, 2, targets[0], KEY, strategies=strategies)
      out = mc.complete_entry(jnp.asarray(bad), mask, 2, targets[0], KEY, strategies=strategies)
      assert out.consistent and out.strategy == ref.strategy
      assert float(out.value) == float(ref.value) and float(out.residual) == float(ref.residual)
    np.testing.assert_array_equal(mc.low_rank_fit(bad, mask, 2).u,
                                  mc.low_rank_fit(zero_filled, mask, 2).u)
    np.testing.assert_array_equal(mc.nuclear_norm_complete(bad, mask).estimate,
                                  mc.nuclear_norm_complete(zero_filled, mask).estimate)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_observed_values_raise(bad):
  a, mask, targets, _ = _rank_two_instance()
  i, j = np.argwhere(mask)[3]
  a[i, j] = bad
  match = rf"values must be finite at the observed positions \(mask\).*at \({i}, {j}\)"
  with pytest.raises(ValueError, match=match):
    mc.complete_entry(a, mask, 2, targets[0], KEY)
  with pytest.raises(ValueError, match=match):
    mc.low_rank_fit(a, mask, 2)
  with pytest.raises(ValueError, match=match):
    mc.nuclear_norm_complete(a, mask)


def test_bad_strategies_and_options():
  a, mask, targets, start = _rank_two_instance()
  with pytest.raises(ValueError, match="strategies must be a non-empty sequence"):
    mc.complete_entry(a, mask, 2, targets[0], KEY, strategies=())
  with pytest.raises(ValueError, match="strategies must be a non-empty sequence"):
    mc.complete_entry(a, mask, 2, targets[0], KEY, strategies=("random",))
  with pytest.raises(ValueError, match="options.iterations must be an int >= 1"):
    mc.complete_entry(a, mask, 2, targets[0], KEY, options=mc.LocalSolveOptions(iterations=0))
  with pytest.raises(ValueError, match="start must be finite"):
    mc.complete_entry(a, mask, 2, targets[0], KEY, start=(np.full((8, 2), np.nan), start[1]))
  with pytest.raises(ValueError, match="max_seeds must be an int >= 1"):
    mc.PropagatedStart(max_seeds=0)
  with pytest.raises(ValueError, match="max_propagations must be an int >= 1"):
    mc.PropagatedStart(max_propagations=1.5)
