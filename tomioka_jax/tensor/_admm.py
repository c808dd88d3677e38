"""The ADMM engine of the tensor family: one loop, named states, one options object.

"Estimation of low-rank tensors via convex optimization", Ryota Tomioka, Kohei Hayashi,
Hisashi Kashima, 2010, arXiv:1010.0789 (Section 4: the ADMMs); Boyd, Parikh, Chu, Peleato,
Eckstein, "Distributed optimization and statistical learning via the alternating direction
method of multipliers", 2011 (Sections 3.3-3.4: stopping, residual balancing,
over-relaxation).

Every convex solver of the family (Constraint, Mixture and As-a-Matrix completion, the
Schatten-1 denoisers, the subspace-norm denoiser, the latent trace norm) is a
:class:`Splitting`: a small set of pure functions over a named iterate (a NamedTuple) that
say how one iteration goes, how the duality gap is certified, and what the two residuals
are. :func:`run` drives any splitting inside one ``lax.while_loop`` with the same tuned
step rules, held in one :class:`ADMMOptions`:

* residual balancing of the step ``eta`` (times ``step_factor`` when the primal residual
  exceeds ``balance`` times the dual one, divided in the opposite case, every
  ``adapt_every`` iterations within the first ``adapt_iterations``; fixed afterwards, so
  the usual convergence theory applies);
* over-relaxation ``relaxation`` in ``(0, 2)``;
* a float32 start for float64 data (float32 iterations until the float32 gap is within
  ``max(tol, float32_gap)``, then the state in float64, its gap certified in float64 at
  once, and float64 iterations while needed);
* the stopping rule (:func:`stopped`): the relative duality gap ``(P - D) / |P| <= tol``
  at a check (every ``check_every`` iterations), ``D`` the best dual value seen, so the
  returned primal value is within a factor ``1 / (1 - tol)`` of the optimum. Where the
  objective is strongly convex in the estimate (``lam > 0`` with every entry observed: the
  denoisers), this also bounds the distance, ``||X - X*||^2 <= 2 lam (P - D)``; where it is
  not (exact-fit completion), the gap says nothing about ``||X - X*||`` and a solve can be
  asked, with ``change_tol``, to also stop only once the estimate moves by at most
  ``change_tol * tol`` (relative) per iteration.

The tuned defaults were chosen so as not to trade accuracy for speed: on Figure 1's instances
of the 2011 paper (``benchmarks/tensor_completion.py``) the tuned solve's error stays within
1.5x of the plain ADMM's at the same ``tol``. Residual balancing did not pass that test for
the Mixture ADMM (at 80% observed it stopped, at the same certified gap, at up to 8x the
plain ADMM's error, and it bought no iterations elsewhere over over-relaxation alone) nor
for Constraint (up to 1.74x at 40%, for a third fewer iterations), so each splitting
carries its own tuned choice of balancing and over-relaxation, which the options' ``None``
select; balancing stays on only for the subspace norm, and as an option everywhere.

``ADMMOptions()`` is the tuned solver; :data:`PAPER_ADMM` the paper's plain ADMM (fixed
``eta``, no over-relaxation, float64 throughout, gap alone).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from tomioka_jax import core


@dataclasses.dataclass(frozen=True)
class ADMMOptions:
  """How the engine iterates; the defaults are the tuned solver.

  Hashable (a static argument of the jitted solves): changing an option recompiles.

  Attributes:
    check_every: evaluate the duality gap every this many iterations (the authors: 1). A
      check costs about an iteration.
    adaptive_eta: residual balancing of ``eta`` (He, Yang, Wang 2000; Boyd et al. 2011,
      Section 3.4.1); ``None`` takes the splitting's tuned choice (on for the subspace
      norm; off for Constraint, As-a-Matrix, Mixture and the latent norm: on Figure 1's
      instances it stopped Constraint at up to 1.74x and Mixture at up to 8x the plain
      ADMM's error, as the gap does not bound the distance to an exact fit's solution).
      ``False``: the authors' fixed step.
    relaxation: over-relaxation ``rho`` in ``(0, 2)`` (Eckstein, Bertsekas 1992; Boyd et
      al. 2011, Section 3.4.3); ``None`` takes the splitting's tuned value (Constraint and
      As-a-Matrix 1, Mixture and the latent norm 1.8, subspace norm 1). 1: the paper's ADMM.
    float32_start: for float64 data, start in float32 (see the module docstring); ignored
      for float32 data.
    balance: the residual ratio beyond which ``eta`` changes.
    step_factor: the factor by which it changes.
    adapt_iterations: ``eta`` is rebalanced only within the first this many iterations.
    adapt_every: and only every this many iterations.
    estimate_factor: a splitting with a cheap gap estimate forms the exact gap only when
      the estimate is within this factor of ``tol`` (``inf``: at every check).
    float32_gap: the float32 phase stops at a gap of ``max(tol, float32_gap)`` at least.
    change_tol: the second stopping condition, where the gap does not bound the distance
      of the estimate to the solution (see the module docstring): the estimate's relative
      change in the iteration before a check, ``||X_t - X_{t-1}|| / ||X_t||``, must be at
      most ``change_tol * tol``. ``None``: the gap alone (the paper's rule).
  """

  check_every: int = 5
  adaptive_eta: bool | None = None
  relaxation: float | None = None
  float32_start: bool = True
  balance: float = 3.0
  step_factor: float = 3.0
  adapt_iterations: int = 500
  adapt_every: int = 5
  estimate_factor: float = 10.0
  float32_gap: float = 1e-4
  change_tol: float | None = None

  def __post_init__(self):
    if (isinstance(self.check_every, bool) or int(self.check_every) != self.check_every
        or self.check_every < 1):
      raise ValueError(f"check_every must be a positive integer, got {self.check_every}")
    object.__setattr__(self, "check_every", int(self.check_every))
    for name in ("adaptive_eta", "float32_start"):
      if name == "adaptive_eta" and self.adaptive_eta is None:
        continue
      if not isinstance(getattr(self, name), (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
      object.__setattr__(self, name, bool(getattr(self, name)))
    if self.relaxation is not None:
      if not core.is_concrete(self.relaxation) or not 0 < float(self.relaxation) < 2:
        raise ValueError(f"relaxation must be in (0, 2) (1: no over-relaxation), got "
                         f"{self.relaxation}")
      object.__setattr__(self, "relaxation", float(self.relaxation))
    for name, low in (("balance", 1.0), ("step_factor", 1.0)):
      if not float(getattr(self, name)) > low:
        raise ValueError(f"{name} must be > {low}, got {getattr(self, name)}")
    for name in ("adapt_iterations", "adapt_every"):
      v = getattr(self, name)
      if isinstance(v, bool) or int(v) != v or v < (1 if name == "adapt_every" else 0):
        raise ValueError(f"{name} must be a {'positive' if name == 'adapt_every' else 'non-negative'} "
                         f"integer, got {v}")
    if not float(self.float32_gap) > 0:
      raise ValueError(f"float32_gap must be > 0, got {self.float32_gap}")
    if np.isnan(float(self.estimate_factor)):
      raise ValueError(f"estimate_factor must be a number (inf: always the exact gap), got "
                       f"{self.estimate_factor}")
    if self.change_tol is not None and not float(self.change_tol) > 0:
      raise ValueError(f"change_tol must be > 0 or None (the gap alone), got {self.change_tol}")

  def replace(self, **changes) -> ADMMOptions:
    """A copy with ``changes``; ``None`` values leave a field as it is."""
    return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


# The paper's plain ADMM: the authors' fixed step, no over-relaxation, float64 throughout.
PAPER_ADMM = ADMMOptions(adaptive_eta=False, relaxation=1.0, float32_start=False,
                         change_tol=None)


def resolve_options(options: ADMMOptions | None, **changes) -> ADMMOptions:
  """``options`` (default ``ADMMOptions()``) with the keyword arguments that are not None."""
  if options is None:
    options = ADMMOptions()
  elif not isinstance(options, ADMMOptions):
    raise ValueError(f"options must be an ADMMOptions or None, got {type(options).__name__}")
  return options.replace(**changes)


class Certificate(NamedTuple):
  """The last evaluated certificate: relative gap, primal value, best dual value."""

  gap: jax.Array
  primal: jax.Array
  dual: jax.Array


class LoopState(NamedTuple):
  """The engine's loop state around a splitting's named iterate.

  Attributes:
    iterate: the splitting's named iterate.
    eta: the current step.
    iteration: iterations run.
    certificate: the last evaluated :class:`Certificate`.
    change: the estimate's relative change ``||X_t - X_{t-1}|| / ||X_t||`` in the iteration
      before the last check (0 where the splitting's gap bounds the distance itself; ``inf``
      before any check).
    converged: whether the stopping rule holds.
  """

  iterate: Any
  eta: jax.Array
  iteration: jax.Array
  certificate: Certificate
  change: jax.Array
  converged: jax.Array


class Splitting(NamedTuple):
  """The problem-specific parts of an ADMM, closures over one problem's data in one dtype.

  Attributes:
    init: ``() -> iterate``, the start.
    step: ``(iterate, eta, relax) -> (iterate, aux)``, one iteration; ``aux`` is what the
      certificate may reuse (e.g. thresholded singular values).
    certify: ``(iterate, aux, last, eta, gate) -> Certificate``; ``gate`` is ``None`` to
      force the exact gap, else the level of a cheap estimate of the gap above which the
      exact one is skipped (``last`` kept). The dual value is the best one seen.
    residuals: ``(old, new, eta) -> (primal, dual)`` residual norms for balancing.
    rescale: ``(iterate, eta_old, eta_new) -> iterate``, keeping the multipliers when
      ``eta`` changes.
    restart: ``iterate -> (iterate, aux)`` after the float32 phase (cast to float64),
      with the ``aux`` a forced certificate needs.
    change: ``(old, new) -> ||X_new - X_old|| / ||X_new||``, the estimate's relative change
      in one iteration, or 0 where the gap bounds the estimate's distance to the solution
      (a strongly convex objective); ``None``: always so.
    relaxation: the splitting's tuned over-relaxation (when the options give ``None``).
    adaptive_eta: the splitting's tuned choice of residual balancing (options ``None``).
  """

  init: Callable[[], Any]
  step: Callable[[Any, jax.Array, jax.Array], tuple[Any, Any]]
  certify: Callable[..., Certificate]
  residuals: Callable[[Any, Any, jax.Array], tuple[jax.Array, jax.Array]]
  rescale: Callable[[Any, jax.Array, jax.Array], Any] = lambda it, old, new: it
  restart: Callable[[Any], tuple[Any, Any]] = lambda it: (it, None)
  change: Callable[[Any, Any], jax.Array] | None = None
  relaxation: float = 1.0
  adaptive_eta: bool = True


def relative_change(old: jax.Array, new: jax.Array) -> jax.Array:
  """``||new - old|| / ||new||`` (0 when both are 0)."""
  d = jnp.linalg.norm((new - old).ravel())
  n = jnp.linalg.norm(new.ravel())
  return jnp.where(n > 0, d / jnp.where(n > 0, n, 1), jnp.where(d > 0, jnp.inf, 0))


def check_hyper(lam, tol, max_iter, eta, tol_name="tol") -> None:
  """The argument checks every ADMM wrapper shares (``ValueError`` naming the argument)."""
  if core.is_concrete(lam) and not float(lam) >= 0:
    raise ValueError(f"lam must be >= 0 (0 fits the observations exactly), got {lam}")
  if core.is_concrete(tol) and not float(tol) > 0:
    raise ValueError(f"{tol_name} must be > 0, got {tol}")
  if isinstance(max_iter, bool) or int(max_iter) != max_iter or max_iter < 1:
    raise ValueError(f"max_iter must be a positive integer, got {max_iter}")
  if eta is not None and core.is_concrete(eta) and not float(eta) > 0:
    raise ValueError(f"eta must be > 0 (or None for the paper's default), got {eta}")


def sample_std(values: jax.Array) -> jax.Array:
  """The sample standard deviation of ``values`` (1 when it is 0): the authors' step scale."""
  if core.is_concrete(values):
    # On the host: jnp.std would compile anew for every number of observations.
    v = np.asarray(values)
    s = float(np.std(v, ddof=1)) if v.shape[0] > 1 else 0.0
    return jnp.asarray(s if s > 0 else 1.0, values.dtype)
  s = jnp.std(values, ddof=1) if values.shape[0] > 1 else jnp.zeros((), values.dtype)
  return jnp.where(s > 0, s, 1)


def stopped(certificate: Certificate, change: jax.Array, tol, change_tol) -> jax.Array:
  """The stopping rule: ``gap <= tol``, and ``change <= change_tol`` unless it is ``None``."""
  done = certificate.gap <= tol
  return done if change_tol is None else done & (change <= change_tol)


def _cast(tree, dtype):
  return jax.tree.map(
      lambda v: v.astype(dtype) if jnp.issubdtype(v.dtype, jnp.floating) else v, tree)


def _loop(split: Splitting, eta, tol, change_tol, max_iter, options: ADMMOptions, relax,
          adaptive: bool, dtype, start: LoopState | None) -> LoopState:
  tol = jnp.asarray(tol, dtype)
  relax = jnp.asarray(relax, dtype)
  gate = options.estimate_factor * tol
  if start is None:
    inf = jnp.asarray(jnp.inf, dtype)
    start = LoopState(split.init(), jnp.asarray(eta, dtype), jnp.asarray(0, jnp.int32),
                      Certificate(inf, inf, -inf), inf, jnp.asarray(False))

  def check(s, new, aux):
    change = (jnp.zeros((), dtype) if split.change is None or change_tol is None
              else split.change(s.iterate, new).astype(dtype))
    return split.certify(new, aux, s.certificate, s.eta, gate), change

  def body(s: LoopState) -> LoopState:
    new, aux = split.step(s.iterate, s.eta, relax)
    it = s.iteration + 1
    cert, change = lax.cond(it % options.check_every == 0, lambda _: check(s, new, aux),
                            lambda _: (s.certificate, s.change), None)
    eta = s.eta
    if adaptive:
      def rebalance(_):
        r, d = split.residuals(s.iterate, new, s.eta)
        e = jnp.where(r > options.balance * d, s.eta * options.step_factor,
                      jnp.where(d > options.balance * r, s.eta / options.step_factor, s.eta))
        return split.rescale(new, s.eta, e), e

      new, eta = lax.cond((it % options.adapt_every == 0)
                          & (s.iteration < options.adapt_iterations), rebalance,
                          lambda _: (new, s.eta), None)
    return LoopState(new, eta, it, cert, change, stopped(cert, change, tol, change_tol))

  def cond(s: LoopState):
    # A NaN certificate means the iterates went non-finite (NaN/inf data or hyperparameters
    # under jit, where they cannot be checked): stop there, not at max_iter; the result
    # reports converged=False with the NaN gap as the reason.
    return (s.iteration < max_iter) & ~s.converged & ~jnp.isnan(s.certificate.gap)

  return lax.while_loop(cond, body, start)


def run(make_splitting: Callable[[Any], Splitting], data, eta: ArrayLike, tol: ArrayLike,
        max_iter, options: ADMMOptions) -> tuple[LoopState, Splitting]:
  """Runs the splitting ``make_splitting(data)`` to the stopping rule; traceable.

  ``data`` is a pytree of the problem's arrays (observations, mask, ``lam``, weights); its
  floating leaves are cast to float32 for the float32 phase. Returns the final loop state
  (in ``data``'s dtype) and the splitting in that dtype, whose functions the caller may use
  to assemble a result.
  """
  dtype = next(v.dtype for v in jax.tree.leaves(data) if jnp.issubdtype(v.dtype, jnp.floating))
  split = make_splitting(data)
  relax = split.relaxation if options.relaxation is None else options.relaxation
  adaptive = split.adaptive_eta if options.adaptive_eta is None else options.adaptive_eta
  change_tol = None if options.change_tol is None else options.change_tol * tol
  start = None
  if options.float32_start and dtype == jnp.float64:
    low = jnp.float32
    split32 = make_splitting(_cast(data, low))
    tol32 = jnp.maximum(jnp.asarray(tol, low), options.float32_gap)
    # float32's thresholding (Gram path) resolves a relative change down to ~1e-6 only.
    change32 = None if change_tol is None else jnp.maximum(change_tol, _FLOAT32_CHANGE)
    state = _cast(_loop(split32, jnp.asarray(eta, low), tol32, change32, max_iter, options,
                        relax, adaptive, low, None), dtype)
    iterate, aux = split.restart(state.iterate)
    inf = jnp.asarray(jnp.inf, dtype)
    cert = split.certify(iterate, aux, Certificate(inf, inf, -inf), state.eta, None)
    start = state._replace(iterate=iterate, certificate=cert, converged=stopped(
        cert, state.change, jnp.asarray(tol, dtype), change_tol))
  return (_loop(split, eta, tol, change_tol, max_iter, options, relax, adaptive, dtype, start),
          split)


# The float32 phase's change condition stops at this level at the least.
_FLOAT32_CHANGE = 1e-5
