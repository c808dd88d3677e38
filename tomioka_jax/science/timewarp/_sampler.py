"""Timewarp's samplers: Metropolis-Hastings with the flow as proposal, and exploration.

**Metropolis-Hastings** (Klein et al. 2023, Sec. 3.3, Alg. 1) targets the augmented Boltzmann
distribution ``mu(x, v) ∝ exp(-U(x)/kT) N(v; 0, I)`` whose position marginal is the Boltzmann
distribution. From state ``x`` a step draws ``v ~ N(0, I)`` (an exact Gibbs step), proposes
``(y, w) ~ p(. | x, v)`` and accepts with probability

.. math::  \\alpha = \\min\\Big(1, \\exp\\Big(-\\Big[\\frac{U(y) - U(x)}{kT}
           + \\frac{|w|^2 - |v|^2}{2} + \\log p(y, w | x, v) - \\log p(x, v | y, w)\\Big]\\Big)\\Big),

so the chain of positions keeps the Boltzmann distribution exactly whatever the flow (a
better flow only raises the acceptance).

**Batched proposals** (the reference's ``evaluation_utils``): each iteration draws ``k``
proposals from the current state at once (one batched flow and energy call) and accepts each
independently; the states up to and including the first accepted proposal join the chain
(``j`` copies of ``x`` then ``y_j`` when proposal ``j`` (0-based) is the first accepted, ``k``
copies of ``x`` when none is). Proposals from one state are i.i.d. and a rejection leaves the
state unchanged, so this chain is *exactly* the sequential MH chain, computed ``k`` steps at a
time; the proposals after the first acceptance are discarded.

**Exploration** (the reference's ``exploration.py``): no MH correction, proposal ``j`` is
acceptable when ``U(y_j) - U(x) < threshold`` (300 kJ/mol by default) and an optional
``reject_fn(x, y)`` (e.g. a chirality flip) is False; the first acceptable proposal is taken.

Every iteration is one step of a ``lax.scan``; the whole chain is one ``jit`` and independent
chains are ``vmap``-ped. The energy is any JAX-traceable ``energy_fn(positions (..., n, 3)) ->
(...)`` (kJ/mol), e.g. a ``jax.pure_callback`` into OpenMM; it is called once per iteration on
the ``(k, n, 3)`` proposals (``(C, k, n, 3)`` under the chain ``vmap``). Non-finite proposal
energies are always rejected.

**Output.** :class:`ChainResult` holds the state after each iteration, its energy and the
multiplicity of each state in the equivalent sequential chain (``weights``), so that
``expand_chain(result.positions, result.weights)`` is the plain MH chain of
``1 + sum(num_evaluated)`` states, and weighted histograms of ``positions`` are histograms of
that chain.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.typing import ArrayLike

from tomioka_jax import core
from tomioka_jax.science.timewarp import _flow

MODES = ("metropolis", "explore")
DEFAULT_EXPLORATION_THRESHOLD = 300.0  # kJ/mol, the reference's energy cut-off


class ChainResult(NamedTuple):
  """Chains of the Timewarp samplers (leading chain axis ``C`` only when ``x0`` had one).

  Attributes:
    positions: ``(C, T + 1, n, 3)`` the start ``x0`` and the state after each of the ``T``
      iterations.
    energies: ``(C, T + 1)`` ``U`` of those states (kJ/mol).
    accepted: ``(C, T)`` bool, whether the iteration accepted a proposal (moved).
    num_evaluated: ``(C, T)`` int32, the proposals the iteration consumed (the first accepted
      index + 1, or ``k``): the number of sequential MH steps it stands for.
    weights: ``(C, T + 1)`` int32 multiplicity of each state of ``positions`` in the
      equivalent sequential chain (sums to ``1 + sum(num_evaluated)``).
    delta_energy: ``(C, T)`` ``U(new) - U(old)`` of the iteration (0 when it did not move).
    acceptance_probability: ``(C, T)`` the mean over the ``k`` proposals of the MH acceptance
      probability ``alpha`` (exploration: the fraction of acceptable proposals).
    acceptance_rate: ``(C,)`` accepted moves per sequential MH step,
      ``sum(accepted) / sum(num_evaluated)``.
  """

  positions: jax.Array
  energies: jax.Array
  accepted: jax.Array
  num_evaluated: jax.Array
  weights: jax.Array
  delta_energy: jax.Array
  acceptance_probability: jax.Array
  acceptance_rate: jax.Array


def _positive_int(name: str, value: Any) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    raise ValueError(f"{name} must be a positive integer, got {name}={value!r}")
  return int(value)


def chain_weights(accepted: ArrayLike, num_evaluated: ArrayLike) -> jax.Array:
  """Multiplicities ``(..., T + 1)`` of the states ``positions[..., 0..T]`` in the sequential chain.

  The start counts once plus the rejections of iteration 0; state ``i >= 1`` counts once if
  iteration ``i - 1`` moved to it, plus the rejections ``num_evaluated - accepted`` of
  iteration ``i`` (which start from it).
  """
  acc = jnp.asarray(accepted).astype(jnp.int32)
  rej = jnp.asarray(num_evaluated, jnp.int32) - acc
  ones = jnp.ones(acc.shape[:-1] + (1,), jnp.int32)
  zeros = jnp.zeros(acc.shape[:-1] + (1,), jnp.int32)
  return jnp.concatenate([ones, acc], axis=-1) + jnp.concatenate([rej, zeros], axis=-1)


def expand_chain(positions: ArrayLike, weights: ArrayLike) -> np.ndarray:
  """The sequential MH chain of one chain's ``positions (T + 1, ...)`` with ``weights (T + 1,)``.

  Returns ``np.repeat(positions, weights, axis=0)`` (NumPy, host memory).
  """
  p, w = np.asarray(positions), np.asarray(weights)
  if w.ndim != 1 or p.shape[:1] != w.shape:
    raise ValueError(f"positions (T + 1, ...) and weights (T + 1,) of one chain must agree, got "
                     f"{p.shape} and {w.shape}")
  return np.repeat(p, w, axis=0)


def make_chain_sampler(flow: _flow.TimewarpFlow, energy_fn: Callable[[jax.Array], jax.Array], *,
                       atom_types: ArrayLike, num_steps: int, kT: float = 1.0,
                       num_proposals: int = 1, mode: str = "metropolis",
                       threshold: float = DEFAULT_EXPLORATION_THRESHOLD,
                       reject_fn: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
                       mask: ArrayLike | None = None
                       ) -> Callable[[ArrayLike, jax.Array], ChainResult]:
  """A compiled sampler ``sample(x0, key) -> ChainResult`` (module docstring).

  The flow's parameters are captured now (a later change to ``flow`` is not seen) and passed
  to one jitted function, so repeated calls with the same ``x0`` shape reuse the compilation
  (time the second call).

  Args:
    flow: the proposal :class:`~tomioka_jax.science.timewarp.TimewarpFlow`.
    energy_fn: ``energy_fn(positions (..., n, 3)) -> (...)`` kJ/mol, JAX-traceable.
    atom_types: ``(n,)`` ints of the flow's vocabulary.
    num_steps: iterations ``T`` (each consumes up to ``num_proposals`` MH steps).
    kT: thermal energy (kJ/mol), > 0 (Metropolis mode; ignored by exploration).
    num_proposals: ``k >= 1`` parallel proposals per iteration.
    mode: ``"metropolis"`` (exact MH) or ``"explore"`` (energy threshold, no correction).
    threshold: exploration's cut-off on ``U(y) - U(x)`` (kJ/mol).
    reject_fn: exploration only, optional ``reject_fn(x (k, n, 3), y (k, n, 3)) -> (k,)``
      bool, True rejects (e.g. a chirality change).
    mask: optional ``(n,)`` bool, False for padded atoms (kept fixed).

  Returns:
    ``sample(x0, key)``: ``x0`` ``(n, 3)`` or ``(C, n, 3)`` (``C`` chains, keys split from
    ``key``) -> :class:`ChainResult`.

  Raises:
    ValueError: ``num_proposals`` or ``num_steps`` not a positive integer, ``kT <= 0`` or not
      finite, an unknown ``mode``, a non-finite ``threshold``, ``reject_fn`` given in
      Metropolis mode; when sampling: ``x0`` not ``(n, 3)`` / ``(C, n, 3)`` with ``n`` the
      number of ``atom_types``, non-finite ``x0``, an energy not of shape ``(k,)`` for
      ``(k, n, 3)`` positions.
  """
  k = _positive_int("num_proposals", num_proposals)
  steps = _positive_int("num_steps", num_steps)
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got mode={mode!r}")
  if isinstance(kT, bool) or not isinstance(kT, (int, float, np.floating, np.integer)) or not (
      math.isfinite(kT) and kT > 0):
    raise ValueError(f"kT must be a finite number > 0 (kJ/mol), got kT={kT!r}")
  if not math.isfinite(threshold):
    raise ValueError(f"threshold must be a finite energy (kJ/mol), got threshold={threshold!r}")
  if reject_fn is not None and mode != "explore":
    raise ValueError("reject_fn is only used by mode='explore'; the Metropolis chain must not "
                     "reject moves outside the acceptance rule")
  if not callable(energy_fn):
    raise TypeError(f"energy_fn must be callable, got {type(energy_fn).__name__}")
  types = np.asarray(atom_types)
  if types.ndim != 1 or not np.issubdtype(types.dtype, np.integer):
    raise ValueError(f"atom_types must be a 1-D integer array (n_atoms,), got {types.shape} "
                     f"({types.dtype})")
  n = types.shape[0]
  if types.size and (types.min() < 0 or types.max() >= flow.num_atom_types):
    raise ValueError(f"atom_types must lie in [0, {flow.num_atom_types}), got values in "
                     f"[{types.min()}, {types.max()}]")
  m = np.ones(n, bool) if mask is None else np.asarray(mask, bool)
  if m.shape != (n,):
    raise ValueError(f"mask must have shape ({n},) like atom_types, got {m.shape}")
  types_j, mask_j = jnp.asarray(types, jnp.int32), jnp.asarray(m)
  graphdef, params = nnx.split(flow)
  kT = float(kT)
  threshold = float(threshold)

  def energies(y):
    u = energy_fn(y)
    if jnp.shape(u) != y.shape[:-2]:
      raise ValueError(f"energy_fn must map positions (..., n_atoms, 3) {y.shape} to energies "
                       f"{y.shape[:-2]}, got shape {jnp.shape(u)}")
    return jnp.asarray(u, y.dtype)

  def chain(params, x0, key):
    model = nnx.merge(graphdef, params)
    keep = mask_j[:, None]

    def step(carry, key):
      x, u = carry
      k_v, k_p, k_u = jax.random.split(key, 3)
      xs = jnp.broadcast_to(x, (k, n, 3))
      v = jnp.where(keep, jax.random.normal(k_v, (k, n, 3), x.dtype), 0.0)
      y, w, logp_fwd = model.sample_and_log_prob(k_p, types_j, xs, v, mask_j)
      u_y = energies(y)
      du = u_y - u
      if mode == "metropolis":
        logp_rev = model.log_prob(types_j, y, w, xs, v, mask_j)
        kinetic = 0.5 * (jnp.sum(w * w, axis=(-1, -2)) - jnp.sum(v * v, axis=(-1, -2)))
        log_alpha = -(du / kT + kinetic + logp_fwd - logp_rev)
        log_alpha = jnp.where(jnp.isnan(log_alpha), -jnp.inf, log_alpha)
        prob = jnp.exp(jnp.minimum(log_alpha, 0.0))
        ok = jnp.log(jax.random.uniform(k_u, (k,), x.dtype)) < log_alpha
      else:
        ok = du < threshold
        if reject_fn is not None:
          ok = ok & ~jnp.asarray(reject_fn(xs, y), bool)
        prob = ok.astype(x.dtype)
      ok = ok & jnp.isfinite(u_y)
      moved = jnp.any(ok)
      j = jnp.argmax(ok)
      new_x = jnp.where(moved, y[j], x)
      new_u = jnp.where(moved, u_y[j], u)
      used = jnp.where(moved, j + 1, k).astype(jnp.int32)
      out = (new_x, new_u, moved, used, jnp.where(moved, du[j], 0.0), jnp.mean(prob))
      return (new_x, new_u), out

    u0 = energies(x0[None])[0]
    _, (xs, us, moved, used, du, prob) = jax.lax.scan(step, (x0, u0),
                                                      jax.random.split(key, steps))
    positions = jnp.concatenate([x0[None], xs], axis=0)
    energies_all = jnp.concatenate([u0[None], us], axis=0)
    weights = chain_weights(moved, used)
    rate = jnp.sum(moved) / jnp.sum(used)
    return ChainResult(positions, energies_all, moved, used, weights, du, prob, rate)

  batched = jax.jit(jax.vmap(chain, in_axes=(None, 0, 0)))
  single = jax.jit(chain)

  def sample(x0: ArrayLike, key: jax.Array) -> ChainResult:
    x = jnp.asarray(x0)
    if not jnp.issubdtype(x.dtype, jnp.floating):
      x = x.astype(jnp.float32)
    if x.ndim not in (2, 3) or x.shape[-2:] != (n, 3):
      raise ValueError(f"x0 must have shape ({n}, 3) or (num_chains, {n}, 3) for the {n} atoms "
                       f"of atom_types (the model/topology), got {x.shape}")
    if core.is_concrete(x) and not bool(jnp.all(jnp.isfinite(x))):
      raise ValueError("x0 must have finite coordinates, got non-finite values")
    if x.ndim == 3:
      return batched(params, x, jax.random.split(key, x.shape[0]))
    return single(params, x, key)

  return sample


def metropolis_hastings(flow: _flow.TimewarpFlow, energy_fn: Callable[[jax.Array], jax.Array],
                        x0: ArrayLike, key: jax.Array, *, atom_types: ArrayLike, kT: float,
                        num_steps: int, num_proposals: int = 1,
                        mask: ArrayLike | None = None) -> ChainResult:
  """Exact Metropolis-Hastings chains with the flow as proposal (module docstring).

  ``make_chain_sampler(flow, energy_fn, mode="metropolis", ...)(x0, key)``; see there for the
  arguments and errors.
  """
  return make_chain_sampler(flow, energy_fn, atom_types=atom_types, num_steps=num_steps, kT=kT,
                            num_proposals=num_proposals, mode="metropolis", mask=mask)(x0, key)


def explore(flow: _flow.TimewarpFlow, energy_fn: Callable[[jax.Array], jax.Array],
            x0: ArrayLike, key: jax.Array, *, atom_types: ArrayLike, num_steps: int,
            num_proposals: int = 1, threshold: float = DEFAULT_EXPLORATION_THRESHOLD,
            reject_fn: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
            mask: ArrayLike | None = None) -> ChainResult:
  """Timewarp exploration: take the first proposal with ``U(y) - U(x) < threshold``.

  ``make_chain_sampler(flow, energy_fn, mode="explore", ...)(x0, key)``; see there.
  """
  return make_chain_sampler(flow, energy_fn, atom_types=atom_types, num_steps=num_steps,
                            num_proposals=num_proposals, mode="explore", threshold=threshold,
                            reject_fn=reject_fn, mask=mask)(x0, key)
