"""Batch policy gradient (BPG) for recurrent policies over token sequences.

Kandasamy, Bachrach, Tomioka, Tarlow, Carter, "Batch Policy Gradient Methods for Improving
Neural Conversation Models", ICLR 2017 (arXiv 1702.03334).

A response is an episode: a recurrent policy :math:`\\pi_\\theta` emits tokens
:math:`a_0, \\dots, a_{T-1}` (state :math:`s_t` = the prefix :math:`a_{<t}`) and a noisy scalar
reward arrives at the end. Learning is **off-policy and batch**: the data are a fixed batch of
sequences drawn from a behaviour policy :math:`q` (in the paper the maximum-likelihood model),
each scored once, reused for many passes. The update follows

.. math::
   \\Delta\\theta \\propto \\sum_t \\rho_t\\, \\nabla_\\theta \\log\\pi_\\theta(a_t|s_t)
     \\bigl(G^\\lambda_t - V(s_t)\\bigr), \\qquad
   \\rho_t = \\frac{\\pi_\\theta(a_t|s_t)}{q(a_t|s_t)},

with the backward, importance-weighted :math:`\\lambda`-return (an estimate of
:math:`Q^\\pi(s_t, a_t)`)

.. math::
   G^\\lambda_t = r_{t+1} + \\gamma\\bigl[(1-\\lambda) V(s_{t+1})
     + \\lambda\\, \\rho_{t+1} G^\\lambda_{t+1}\\bigr]

(:func:`lambda_returns`, a reverse ``lax.scan``). :math:`V` is either a constant (the mean
reward: "BPG-C", :func:`constant_baseline`) or a linear function of the policy's LSTM hidden
state learned off-policy by GTD(:math:`\\lambda`) (:func:`gtd_lambda`).

What the estimator estimates: with :math:`\\lambda = 1`, :math:`\\gamma = 1` and any baseline
that depends on the state only, its expectation under :math:`q` is

.. math::
   g(\\theta) = \\sum_t \\mathbb E_{s_t \\sim q}
     \\sum_a \\nabla\\pi_\\theta(a|s_t)\\, Q^{\\pi}(s_t, a),

the off-policy ("excursion") gradient of Degris et al. (2012) that the paper follows: the
per-step ratio corrects the action and everything after it, but the prefix :math:`s_t` keeps
:math:`q`'s distribution. It equals :math:`\\nabla_\\theta \\mathbb E_{\\pi_\\theta}[R]` when
:math:`\\pi_\\theta = q` (the start of training from the MLE model) and drifts from it as
:math:`\\pi_\\theta` leaves :math:`q` (:func:`exact_gradients` computes both by enumeration).

Token conventions: sequences are arrays ``(N, T)`` of ints in ``[0, vocab_size)``; the
``end_token`` (0 by default) ends a sequence and every position after the first end token is
padding, filled with the end token and masked out (``mask`` 0: no log-probability, no reward,
no update). The single reward of a sequence sits at its last valid step
(:func:`terminal_rewards`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.typing import ArrayLike

from tomioka_jax import core

# ---------------------------------------------------------------------------------------------
# Argument checks.


def _check_unit_interval(**values: Any) -> None:
  """Raises ValueError naming the first concrete value outside [0, 1]."""
  for name, value in values.items():
    if core.is_concrete(value) and not np.all((np.asarray(value) >= 0)
                                              & (np.asarray(value) <= 1)):
      raise ValueError(f"{name} must lie in [0, 1], got {name}={value!r}")


def _check_positive(**values: Any) -> None:
  for name, value in values.items():
    if core.is_concrete(value) and not np.all(np.asarray(value) > 0):
      raise ValueError(f"{name} must be positive, got {name}={value!r}")


def _check_same_shape(**arrays: Any) -> None:
  shapes = {name: jnp.shape(a) for name, a in arrays.items() if a is not None}
  if len(set(shapes.values())) > 1:
    raise ValueError(f"arrays must share one shape (..., T); got shapes {shapes}")


def _check_nonnegative(name: str, value: Any) -> None:
  if core.is_concrete(value) and np.any(np.asarray(value) < 0):
    raise ValueError(f"{name} must be >= 0 (an importance ratio pi/q), got min "
                     f"{float(np.min(np.asarray(value)))}")


def _time_last(x: jax.Array) -> jax.Array:
  return jnp.moveaxis(x, -1, 0)


def _time_back(x: jax.Array) -> jax.Array:
  return jnp.moveaxis(x, 0, -1)


# ---------------------------------------------------------------------------------------------
# The estimator.


def lambda_returns(rewards: ArrayLike, values: ArrayLike, rho: ArrayLike, gamma: float,
                   lam: float, mask: ArrayLike | None = None) -> jax.Array:
  """Backward importance-weighted lambda-returns, one reverse ``lax.scan`` over time.

  .. math::
     G^\\lambda_t = r_{t+1} + \\gamma\\, m_{t+1} \\bigl[(1-\\lambda) V(s_{t+1})
       + \\lambda\\, \\rho_{t+1} G^\\lambda_{t+1}\\bigr],

  with :math:`m_T = 0` (the episode ends after the last step, or after its last valid step):
  :math:`G^\\lambda_t` estimates :math:`Q^\\pi(s_t, a_t)` from data drawn by :math:`q`. With
  :math:`\\rho = 1` it is the usual lambda-return (rlax's ``lambda_returns`` with bootstrap
  values :math:`V(s_{t+1})` and a zero value after the last step).

  Args:
    rewards: ``(..., T)``; ``rewards[..., t]`` is :math:`r_{t+1}`, the reward after action t.
    values: ``(..., T)``; ``values[..., t]`` is :math:`V(s_t)`.
    rho: ``(..., T)`` importance ratios :math:`\\pi(a_t|s_t)/q(a_t|s_t) \\ge 0`
      (``rho[..., 0]`` is not used by the returns).
    gamma: discount in [0, 1].
    lam: lambda in [0, 1].
    mask: optional ``(..., T)`` 0/1 validity; returns are 0 at invalid steps and the
      episode ends at its last valid step.

  Returns:
    ``(..., T)`` the lambda-returns :math:`G^\\lambda_t`.

  Raises:
    ValueError: ``gamma`` or ``lam`` outside [0, 1], shapes that differ, negative ``rho``
      (value checks are skipped for traced values under ``jit``).
  """
  _check_unit_interval(gamma=gamma, lam=lam)
  _check_same_shape(rewards=rewards, values=values, rho=rho, mask=mask)
  _check_nonnegative("rho", rho)
  rewards, values, rho = (jnp.asarray(x) for x in (rewards, values, rho))
  mask = jnp.ones_like(rewards) if mask is None else jnp.asarray(mask, rewards.dtype)
  dtype = jnp.result_type(rewards, values, rho)
  # Shift by one step: the quantities at s_{t+1}, zero after the last step.
  nxt = lambda x: jnp.concatenate([x[..., 1:], jnp.zeros_like(x[..., :1])], axis=-1)
  v1, rho1, m1 = nxt(values), nxt(rho), nxt(mask)

  def body(g_next, xs):
    r, v_next, rho_next, m_next, m = xs
    g = r + gamma * m_next * ((1.0 - lam) * v_next + lam * rho_next * g_next)
    g = m * g
    return g, g

  xs = tuple(_time_last(x.astype(dtype)) for x in (rewards, v1, rho1, m1, mask))
  _, g = jax.lax.scan(body, jnp.zeros(rewards.shape[:-1], dtype), xs, reverse=True)
  return _time_back(g)


def importance_weights(log_probs: ArrayLike, behaviour_log_probs: ArrayLike,
                       mask: ArrayLike | None = None) -> jax.Array:
  """Per-step ratios :math:`\\rho_t = \\pi(a_t|s_t) / q(a_t|s_t)` (1 at masked steps)."""
  _check_same_shape(log_probs=log_probs, behaviour_log_probs=behaviour_log_probs, mask=mask)
  rho = jnp.exp(jnp.asarray(log_probs) - jnp.asarray(behaviour_log_probs))
  return rho if mask is None else jnp.where(jnp.asarray(mask) > 0, rho, 1.0)


def batch_policy_gradient_surrogate(log_probs: ArrayLike, behaviour_log_probs: ArrayLike,
                                    rewards: ArrayLike, values: ArrayLike, gamma: float,
                                    lam: float, mask: ArrayLike | None = None) -> jax.Array:
  """Per-sequence surrogate whose gradient is the batch policy gradient of one sequence.

  .. math::
     L = \\sum_t \\bot\\bigl[\\rho_t (G^\\lambda_t - V(s_t))\\bigr] \\log\\pi_\\theta(a_t|s_t),
     \\qquad \\nabla_\\theta L = \\sum_t \\rho_t \\nabla_\\theta\\log\\pi_\\theta(a_t|s_t)
       (G^\\lambda_t - V(s_t)),

  where :math:`\\bot` is ``stop_gradient``: the ratios (in the weight and inside the return),
  the returns and the values are held fixed, only the score :math:`\\nabla\\log\\pi` is
  differentiated.

  Args:
    log_probs: ``(N, T)`` :math:`\\log\\pi_\\theta(a_t|s_t)` (differentiable), 0 where masked.
    behaviour_log_probs: ``(N, T)`` :math:`\\log q(a_t|s_t)` of the data.
    rewards, values, gamma, lam, mask: as in :func:`lambda_returns`.

  Returns:
    ``(N,)`` the surrogate of each sequence (ascent direction: maximise its mean).
  """
  _check_same_shape(log_probs=log_probs, behaviour_log_probs=behaviour_log_probs,
                    rewards=rewards, values=values, mask=mask)
  log_probs = jnp.asarray(log_probs)
  rho = jax.lax.stop_gradient(importance_weights(log_probs, behaviour_log_probs, mask))
  values = jax.lax.stop_gradient(jnp.asarray(values))
  returns = lambda_returns(rewards, values, rho, gamma, lam, mask)
  weight = jax.lax.stop_gradient(rho * (returns - values))
  if mask is not None:
    weight = weight * jnp.asarray(mask, weight.dtype)
  return jnp.sum(weight * log_probs, axis=-1)


def batch_policy_gradient_loss(log_probs: ArrayLike, behaviour_log_probs: ArrayLike,
                               rewards: ArrayLike, values: ArrayLike, gamma: float, lam: float,
                               mask: ArrayLike | None = None) -> jax.Array:
  """Minus the batch mean of :func:`batch_policy_gradient_surrogate` (a loss to minimise).

  Its negative gradient is :math:`\\frac1N \\sum_i \\sum_t \\rho_{i,t}
  \\nabla\\log\\pi_\\theta(a_{i,t}|s_{i,t}) (G^\\lambda_{i,t} - V(s_{i,t}))`, the paper's update
  direction averaged over the batch.
  """
  return -jnp.mean(batch_policy_gradient_surrogate(log_probs, behaviour_log_probs, rewards,
                                                   values, gamma, lam, mask))


def constant_baseline(rewards: ArrayLike, mask: ArrayLike | None = None) -> jax.Array:
  """BPG-C's constant value: the mean over sequences of each sequence's total reward."""
  rewards = jnp.asarray(rewards)
  if mask is not None:
    _check_same_shape(rewards=rewards, mask=mask)
    rewards = rewards * jnp.asarray(mask, rewards.dtype)
  return jnp.mean(jnp.sum(rewards, axis=-1))


# ---------------------------------------------------------------------------------------------
# GTD(lambda): off-policy TD(lambda) with gradient correction, linear values.


class GTDState(NamedTuple):
  """GTD(lambda)'s weights: values :math:`V(s) = w^\\top\\phi(s)` and the auxiliary ``h``."""

  w: jax.Array
  h: jax.Array


def gtd_lambda_init(num_features: int, dtype: Any = jnp.float32) -> GTDState:
  """Zero weights for ``num_features`` features."""
  if not isinstance(num_features, (int, np.integer)) or num_features < 1:
    raise ValueError(f"num_features must be a positive integer, got {num_features!r}")
  return GTDState(jnp.zeros(num_features, dtype), jnp.zeros(num_features, dtype))


def gtd_values(state: GTDState, features: ArrayLike) -> jax.Array:
  """Linear values :math:`w^\\top \\phi` for features ``(..., d)``."""
  return jnp.asarray(features) @ state.w


def gtd_lambda_step(state: GTDState, trace: jax.Array, features: jax.Array,
                    next_features: jax.Array, reward: jax.Array, rho: jax.Array, gamma: float,
                    lam: float, alpha: float, beta: float) -> tuple[GTDState, jax.Array]:
  """One GTD(lambda) (TDC with eligibility traces) update, Maei (2011):

  .. math::
     \\delta_t &= r_{t+1} + \\gamma w^\\top\\phi_{t+1} - w^\\top\\phi_t, \\qquad
     e_t = \\rho_t(\\phi_t + \\gamma\\lambda e_{t-1}), \\\\
     w &\\leftarrow w + \\alpha\\bigl[\\delta_t e_t
        - \\gamma(1-\\lambda)(e_t^\\top h)\\phi_{t+1}\\bigr], \\qquad
     h \\leftarrow h + \\beta\\bigl[\\delta_t e_t - (h^\\top\\phi_t)\\phi_t\\bigr].

  Its expected update vanishes at the off-policy TD(lambda) fixed point
  :math:`\\mathbb E_q[\\delta_t e_t] = 0` (the projected lambda-Bellman equation of
  :math:`\\pi` under the behaviour's state distribution).

  Returns:
    The new state and the trace :math:`e_t`.
  """
  w, h = state
  delta = reward + gamma * next_features @ w - features @ w
  trace = rho * (features + gamma * lam * trace)
  w_new = w + alpha * (delta * trace - gamma * (1.0 - lam) * (trace @ h) * next_features)
  h_new = h + beta * (delta * trace - (features @ h) * features)
  return GTDState(w_new, h_new), trace


def gtd_lambda(state: GTDState, features: ArrayLike, rewards: ArrayLike, rho: ArrayLike,
               gamma: float, lam: float, alpha: float, beta: float,
               mask: ArrayLike | None = None,
               last_features: ArrayLike | None = None) -> GTDState:
  """GTD(lambda) over one trajectory ``(T, d)`` or over episodes ``(N, T, d)`` in order.

  The trace starts at zero in each episode; after the last (valid) step the next features
  are ``last_features`` (default zeros: the episode terminates). One ``lax.scan`` over the
  episodes of a ``lax.scan`` over time (:func:`gtd_lambda_step` at each valid step).

  Args:
    state: the current :class:`GTDState`.
    features: ``(T, d)`` or ``(N, T, d)`` :math:`\\phi(s_t)`.
    rewards, rho, mask: ``(T,)`` or ``(N, T)``: :math:`r_{t+1}`, :math:`\\rho_t`, validity.
    gamma, lam: in [0, 1]. alpha, beta: positive step sizes of ``w`` and ``h``.
    last_features: ``(d,)`` or ``(N, d)`` :math:`\\phi(s_T)` (bootstrap of a truncated
      trajectory); default zeros.

  Returns:
    The updated :class:`GTDState`.

  Raises:
    ValueError: ``gamma``/``lam`` outside [0, 1], non-positive step sizes, mismatched
      shapes, negative ``rho`` (value checks skipped under ``jit``).
  """
  _check_unit_interval(gamma=gamma, lam=lam)
  _check_positive(alpha=alpha, beta=beta)
  features, rewards, rho = (jnp.asarray(x) for x in (features, rewards, rho))
  _check_same_shape(rewards=rewards, rho=rho, mask=mask)
  if features.ndim not in (2, 3) or features.shape[:-1] != rewards.shape:
    raise ValueError(f"features must have shape rewards.shape + (d,) with rewards (T,) or "
                     f"(N, T); got features {features.shape}, rewards {rewards.shape}")
  if features.shape[-1] != state.w.shape[-1]:
    raise ValueError(f"features have {features.shape[-1]} columns but the state has "
                     f"{state.w.shape[-1]} weights")
  _check_nonnegative("rho", rho)
  single = features.ndim == 2
  if single:
    features, rewards, rho = features[None], rewards[None], rho[None]
    mask = None if mask is None else jnp.asarray(mask)[None]
    last_features = None if last_features is None else jnp.asarray(last_features)[None]
  dtype = state.w.dtype
  mask = jnp.ones(rewards.shape, dtype) if mask is None else jnp.asarray(mask, dtype)
  if last_features is None:
    last_features = jnp.zeros(features.shape[::2], dtype)
  last_features = jnp.asarray(last_features, dtype)
  if last_features.shape != features.shape[::2]:
    raise ValueError(f"last_features must have shape {features.shape[::2]}, got "
                     f"{last_features.shape}")
  features = features.astype(dtype)
  # phi_{t+1}: the next step's features if it is valid, else the episode's last features.
  shifted = jnp.concatenate([features[:, 1:], last_features[:, None]], axis=1)
  next_mask = jnp.concatenate([mask[:, 1:], jnp.zeros_like(mask[:, :1])], axis=1)
  next_features = jnp.where(next_mask[..., None] > 0, shifted,
                            jnp.where(mask[..., None] > 0, last_features[:, None], 0.0))

  def time_step(carry, xs):
    st, trace = carry
    phi, phi_next, r, p, m = xs
    new_st, new_trace = gtd_lambda_step(st, trace, phi, phi_next, r, p, gamma, lam, alpha,
                                        beta)
    keep = m > 0
    st = jax.tree.map(lambda a, b: jnp.where(keep, a, b), new_st, st)
    return (st, jnp.where(keep, new_trace, trace)), None

  def episode(st, xs):
    trace0 = jnp.zeros_like(st.w)
    (st, _), _ = jax.lax.scan(time_step, (st, trace0), xs)
    return st, None

  xs = (features, next_features, rewards.astype(dtype), rho.astype(dtype), mask)
  state, _ = jax.lax.scan(episode, GTDState(*(jnp.asarray(x, dtype) for x in state)), xs)
  return state


# ---------------------------------------------------------------------------------------------
# Recurrent token policies.


class TokenPolicy(nnx.Module):
  """An autoregressive LSTM policy over tokens: embedding, ``nnx.OptimizedLSTMCell``, softmax.

  The state :math:`s_t` (prefix :math:`a_{<t}`) is the LSTM's hidden state after reading a
  begin-of-sequence symbol (index ``vocab_size`` of the embedding) and :math:`a_0, \\dots,
  a_{t-1}`; the head maps it to logits over the ``vocab_size`` tokens. The hidden state is
  also GTD(lambda)'s feature vector (:func:`token_log_probs`).
  """

  def __init__(self, vocab_size: int, hidden_size: int, embed_size: int = 8, *,
               logit_scale: float = 1.0, rngs: nnx.Rngs):
    for name, value in (("vocab_size", vocab_size), ("hidden_size", hidden_size),
                        ("embed_size", embed_size)):
      if not isinstance(value, (int, np.integer)) or value < (2 if name == "vocab_size" else 1):
        raise ValueError(f"{name} must be a positive integer (vocab_size >= 2), got {value!r}")
    self.vocab_size = vocab_size
    self.hidden_size = hidden_size
    self.embed = nnx.Embed(vocab_size + 1, embed_size, rngs=rngs)
    self.cell = nnx.OptimizedLSTMCell(embed_size, hidden_size, rngs=rngs)
    self.head = nnx.Linear(hidden_size, vocab_size,
                           kernel_init=nnx.initializers.normal(logit_scale / hidden_size**0.5),
                           rngs=rngs)

  def initial_carry(self, batch: int) -> tuple[jax.Array, jax.Array]:
    zeros = jnp.zeros((batch, self.hidden_size), jnp.float32)
    return (zeros, zeros)

  def __call__(self, tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Teacher-forced pass over ``tokens (N, T)``: logits ``(N, T, V)`` and the hidden states
    ``(N, T, H)`` of the states :math:`s_0, \\dots, s_{T-1}`."""
    tokens = jnp.asarray(tokens)
    n = tokens.shape[0]
    inputs = jnp.concatenate([jnp.full((n, 1), self.vocab_size, tokens.dtype),
                              tokens[:, :-1]], axis=1)
    x = self.embed(inputs)  # (N, T, E)

    def body(carry, x_t):
      carry, h = self.cell(carry, x_t)
      return carry, h

    _, hs = jax.lax.scan(body, self.initial_carry(n), jnp.swapaxes(x, 0, 1))
    hs = jnp.swapaxes(hs, 0, 1)
    return self.head(hs), hs


def sequence_mask(tokens: ArrayLike, end_token: int = 0) -> jax.Array:
  """1 up to and including the first ``end_token``, 0 after it (padding)."""
  tokens = jnp.asarray(tokens)
  is_end = (tokens == end_token).astype(jnp.int32)
  ended_before = jnp.cumsum(is_end, axis=-1) - is_end
  return (ended_before == 0).astype(jnp.float32)


def token_log_probs(policy: TokenPolicy, tokens: ArrayLike, end_token: int = 0
                    ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Per-step :math:`\\log\\pi(a_t|s_t)` of ``tokens (N, T)`` (0 at padding), the mask, and
  the features :math:`\\phi(s_t) = [h_t, 1]` (``(N, T, H + 1)``, gradient stopped)."""
  tokens = jnp.asarray(tokens)
  logits, hs = policy(tokens)
  logp = jax.nn.log_softmax(logits, axis=-1)
  step_logp = jnp.take_along_axis(logp, tokens[..., None], axis=-1)[..., 0]
  mask = sequence_mask(tokens, end_token)
  feats = jax.lax.stop_gradient(jnp.concatenate([hs, jnp.ones_like(hs[..., :1])], axis=-1))
  return step_logp * mask, mask, feats


def sample_tokens(policy: TokenPolicy, key: jax.Array, num_sequences: int, length: int,
                  end_token: int = 0) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Draws ``num_sequences`` sequences of ``length`` tokens (one ``lax.scan``; jittable).

  After the first ``end_token`` the sequence is padded with it. Returns the tokens
  ``(N, T)`` int32, their per-step log-probabilities (0 at padding) and the mask.
  """
  n = num_sequences

  def body(carry, key_t):
    lstm, prev, done = carry
    lstm, h = policy.cell(lstm, policy.embed(prev))
    logits = policy.head(h)
    a = jax.random.categorical(key_t, logits, axis=-1).astype(jnp.int32)
    a = jnp.where(done, end_token, a)
    lp = jnp.take_along_axis(jax.nn.log_softmax(logits, -1), a[:, None], axis=-1)[:, 0]
    valid = ~done
    return (lstm, a, done | (a == end_token)), (a, jnp.where(valid, lp, 0.0),
                                               valid.astype(jnp.float32))

  carry = (policy.initial_carry(n), jnp.full((n,), policy.vocab_size, jnp.int32),
           jnp.zeros((n,), bool))
  _, (a, lp, m) = jax.lax.scan(body, carry, jax.random.split(key, length))
  return a.T, lp.T, m.T


def terminal_rewards(scores: ArrayLike, mask: ArrayLike) -> jax.Array:
  """Places each sequence's score ``(N,)`` at its last valid step of ``mask (N, T)``."""
  mask = jnp.asarray(mask)
  scores = jnp.asarray(scores)
  if scores.shape != mask.shape[:-1]:
    raise ValueError(f"scores must have shape {mask.shape[:-1]}, got {scores.shape}")
  nxt = jnp.concatenate([mask[..., 1:], jnp.zeros_like(mask[..., :1])], axis=-1)
  last = mask * (1.0 - nxt)
  return last * scores[..., None]


def enumerate_token_sequences(vocab_size: int, length: int, end_token: int = 0) -> np.ndarray:
  """Every distinct sequence (``(M, length)`` int32): padding after the end token is fixed,
  so the probabilities of the rows under any :class:`TokenPolicy` sum to one."""
  if vocab_size < 2 or length < 1:
    raise ValueError(f"need vocab_size >= 2 and length >= 1, got {vocab_size}, {length}")
  if vocab_size**length > 2_000_000:
    raise ValueError(f"vocab_size**length = {vocab_size**length} is too many to enumerate")
  rows = np.array(list(itertools.product(range(vocab_size), repeat=length)), np.int32)
  is_end = rows == end_token
  ended = np.cumsum(is_end, axis=1) - is_end > 0
  canonical = np.all(~ended | is_end, axis=1)
  return rows[canonical]


def exact_gradients(policy: TokenPolicy, behaviour_log_probs: ArrayLike, sequences: ArrayLike,
                    scores: ArrayLike, end_token: int = 0) -> tuple[Any, Any, jax.Array]:
  """By enumeration: :math:`\\nabla J`, the excursion gradient, and :math:`J`.

  ``sequences`` are all sequences (:func:`enumerate_token_sequences`), ``scores`` their
  deterministic rewards and ``behaviour_log_probs`` their per-step :math:`\\log q`. Returns
  ``(grad_J, grad_excursion, J)`` with gradients as ``nnx.State`` of the policy's parameters:

  * :math:`J(\\theta) = \\sum_y \\pi_\\theta(y) R(y)` and its gradient;
  * :math:`g(\\theta) = \\sum_y \\sum_t q(y_{<t})\\, \\pi_\\theta(y_{\\ge t} | y_{<t})\\,
    \\nabla\\log\\pi_\\theta(y_t | y_{<t})\\, R(y)`, the off-policy gradient that the batch
    estimator with :math:`\\lambda = \\gamma = 1` is unbiased for.
  """
  sequences = jnp.asarray(sequences)
  scores = jnp.asarray(scores, jnp.float32)
  lq = jnp.asarray(behaviour_log_probs)
  graphdef, params, rest = nnx.split(policy, nnx.Param, ...)

  def objective(p):
    logp, _, _ = token_log_probs(nnx.merge(graphdef, p, rest), sequences, end_token)
    return jnp.sum(jnp.exp(jnp.sum(logp, -1)) * scores)

  def excursion_surrogate(p):
    logp, _, _ = token_log_probs(nnx.merge(graphdef, p, rest), sequences, end_token)
    prefix_q = jnp.cumsum(lq, -1) - lq  # log q(y_{<t})
    suffix_pi = jnp.cumsum(logp[..., ::-1], -1)[..., ::-1]  # log pi(y_{>=t} | y_{<t})
    weight = jax.lax.stop_gradient(jnp.exp(prefix_q + suffix_pi) * scores[:, None])
    return jnp.sum(weight * logp)

  value, grad_j = jax.value_and_grad(objective)(params)
  return grad_j, jax.grad(excursion_surrogate)(params), value


# ---------------------------------------------------------------------------------------------
# Training: loss functions for core's trainers.


class CriticWeight(nnx.Variable):
  """GTD(lambda) weights: updated by the TD rule, not by the optimizer."""


class ActorCritic(nnx.Module):
  """A :class:`TokenPolicy` and a linear critic on its features :math:`[h_t, 1]`.

  The critic's ``w`` and ``h`` are :class:`CriticWeight` variables, so core's trainers keep
  their updates (made inside the loss) as non-parameter state.
  """

  def __init__(self, policy: TokenPolicy):
    self.policy = policy
    d = policy.hidden_size + 1
    self.critic_w = CriticWeight(jnp.zeros(d, jnp.float32))
    self.critic_h = CriticWeight(jnp.zeros(d, jnp.float32))

  @property
  def gtd_state(self) -> GTDState:
    return GTDState(self.critic_w[...], self.critic_h[...])

  def set_gtd_state(self, state: GTDState) -> None:
    self.critic_w[...] = jax.lax.stop_gradient(state.w)
    self.critic_h[...] = jax.lax.stop_gradient(state.h)


LossFn = Callable[[ActorCritic, Any, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]

BASELINES = ("constant", "gtd")


def _critic_values(model: ActorCritic, feats: jax.Array, logp: jax.Array, mask: jax.Array,
                   rewards: jax.Array, rho: jax.Array, gamma: float, lam: float, alpha: float,
                   beta: float) -> jax.Array:
  """Values of the current critic, then one GTD(lambda) pass over the batch (in place)."""
  st = model.gtd_state
  values = gtd_values(st, feats) * mask
  model.set_gtd_state(gtd_lambda(st, feats, rewards, rho, gamma, lam, alpha, beta, mask))
  return values


def make_batch_pg_loss(*, baseline: str = "constant", gamma: float = 1.0, lam: float = 1.0,
                       alpha: float = 0.01, beta: float = 0.01, end_token: int = 0,
                       constant: float | jax.Array | None = None) -> LossFn:
  """The off-policy BPG loss for :func:`tomioka_jax.core.make_scan_trainer` on a fixed batch.

  The batch is ``{"tokens": (B, T), "behaviour_log_probs": (B, T), "reward": (B,)}`` drawn
  from :math:`q` with (noisy) rewards. ``baseline="constant"`` uses ``constant`` (default:
  the minibatch's mean reward) for :math:`V`; ``"gtd"`` uses the model's linear critic,
  updated by GTD(lambda) on each minibatch with the current ratios (``alpha``, ``beta``).

  GTD(lambda)'s trace carries products of untruncated ratios: with ``lam`` near 1 and a
  policy far from :math:`q` it can diverge (``benchmarks/batch_pg.py`` saw NaN at
  ``lam = 1`` and at step sizes 0.05; ``lam = 0.5`` with 0.005 was stable). Keep the step
  sizes small.
  """
  if baseline not in BASELINES:
    raise ValueError(f"baseline must be one of {BASELINES}, got {baseline!r}")
  _check_unit_interval(gamma=gamma, lam=lam)
  _check_positive(alpha=alpha, beta=beta)

  def loss_fn(model: ActorCritic, batch: Any, rng: jax.Array):
    del rng
    logp, mask, feats = token_log_probs(model.policy, batch["tokens"], end_token)
    rewards = terminal_rewards(batch["reward"], mask)
    lq = batch["behaviour_log_probs"]
    rho = jax.lax.stop_gradient(importance_weights(logp, lq, mask))
    if baseline == "gtd":
      values = _critic_values(model, feats, logp, mask, rewards, rho, gamma, lam, alpha, beta)
    else:
      c = jnp.mean(batch["reward"]) if constant is None else constant
      values = c * mask
    loss = batch_policy_gradient_loss(logp, lq, rewards, values, gamma, lam, mask)
    return loss, {"mean_rho": jnp.sum(rho * mask) / jnp.sum(mask),
                  "max_rho": jnp.max(rho)}

  return loss_fn


def make_reinforce_loss(score: Callable[[jax.Array, jax.Array], jax.Array], *,
                        batch_size: int, length: int, noise: float = 0.0,
                        end_token: int = 0) -> LossFn:
  """On-policy REINFORCE for :func:`tomioka_jax.core.make_sampler_trainer`.

  Each step draws ``batch_size`` fresh sequences from the current policy (with the step's
  ``rng``) and scores them: ``score(tokens, mask) + noise * batch["noise"]`` (the sampler
  supplies standard normals ``(batch_size,)``). The baseline is the leave-one-out mean of
  the other sequences' rewards (unbiased).
  """
  if not isinstance(batch_size, (int, np.integer)) or batch_size < 2:
    raise ValueError(f"batch_size must be an integer >= 2 (leave-one-out baseline), got "
                     f"{batch_size!r}")
  _check_positive(length=length)

  def loss_fn(model: ActorCritic, batch: Any, rng: jax.Array):
    tokens, _, _ = sample_tokens(model.policy, rng, batch_size, length, end_token)
    tokens = jax.lax.stop_gradient(tokens)
    logp, mask, _ = token_log_probs(model.policy, tokens, end_token)
    reward = score(tokens, mask) + noise * batch["noise"]
    loo = (jnp.sum(reward) - reward) / (batch_size - 1)
    adv = jax.lax.stop_gradient(reward - loo)
    return -jnp.mean(adv * jnp.sum(logp, -1)), {"reward": jnp.mean(reward)}

  return loss_fn


def make_actor_critic_loss(score: Callable[[jax.Array, jax.Array], jax.Array], *,
                           batch_size: int, length: int, noise: float = 0.0,
                           gamma: float = 1.0, lam: float = 0.5, alpha: float = 0.01,
                           beta: float = 0.01, end_token: int = 0) -> LossFn:
  """Online actor-critic for :func:`tomioka_jax.core.make_sampler_trainer`.

  Each step draws fresh sequences from the current policy, updates the linear critic by
  GTD(lambda) on them (on-policy: :math:`\\rho = 1`) and takes the policy-gradient step
  with advantages :math:`G^\\lambda_t - V(s_t)`.
  """
  _check_unit_interval(gamma=gamma, lam=lam)
  _check_positive(batch_size=batch_size, length=length, alpha=alpha, beta=beta)

  def loss_fn(model: ActorCritic, batch: Any, rng: jax.Array):
    tokens, _, _ = sample_tokens(model.policy, rng, batch_size, length, end_token)
    tokens = jax.lax.stop_gradient(tokens)
    logp, mask, feats = token_log_probs(model.policy, tokens, end_token)
    reward = score(tokens, mask) + noise * batch["noise"]
    rewards = terminal_rewards(reward, mask)
    ones = jnp.ones_like(mask)
    values = _critic_values(model, feats, logp, mask, rewards, ones, gamma, lam, alpha, beta)
    loss = batch_policy_gradient_loss(logp, jax.lax.stop_gradient(logp), rewards, values,
                                      gamma, lam, mask)
    return loss, {"reward": jnp.mean(reward)}

  return loss_fn
