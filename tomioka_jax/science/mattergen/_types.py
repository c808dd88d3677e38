"""The atom-type corruption of MatterGen: D3PM absorbing ("mask") diffusion (Austin et al. 2021).

Types live in K = 101 states, the 100 elements and the absorbing MASK (index K - 1 = 100). Step
k = 1..N (N = 1000) masks an unmasked atom with probability beta_k = 1 / (N - k + 1) (the
reference's ``standard`` schedule, 1 / (N - step) for step = k - 1), so

    q(x_k | x_{k-1}) = (1 - beta_k) [x_k = x_{k-1}] + beta_k [x_k = MASK]  (MASK stays MASK),
    q(x_k | x_0)     = alpha_k [x_k = x_0] + (1 - alpha_k) [x_k = MASK],
    alpha_k = prod_{i <= k} (1 - beta_i) = 1 - k / N,

and x_N is all MASK. For s < t the reverse posterior is Bayes' rule,

    q(x_s | x_t, x_0) = q(x_t | x_s) q(x_s | x_0) / q(x_t | x_0),
    q(x_t = j | x_s = i) = (alpha_t / alpha_s) [j = i] + (1 - alpha_t / alpha_s) [j = MASK]
                           (i != MASK),

and the model's posterior follows the reference (Austin et al. eq. 4 with the x_0
parameterization): with p(x_0 | x_t) the softmax of the network's logits,

    p(x_s | x_t) oc q(x_t | x_s) sum_{x_0} q(x_s | x_0) p(x_0 | x_t).

The MASK entry of p(x_0 | x_t) is left out (a clean type is never MASK; the reference's denoiser
sets that logit to -1e10). Training minimizes the hybrid loss per atom, at k = floor(t (N - 1))
and x_{k+1} ~ q(x_{k+1} | x_0),

    L = KL(q(x_k | x_{k+1}, x_0) || p(x_k | x_{k+1}))  (k > 0),   -log p(x_0 | x_1)  (k = 0),
        + lambda (-log p(x_0 | x_{k+1})),  lambda = 0.01,

as ``compute_kl_reverse_process`` in ``mattergen/diffusion/d3pm/d3pm.py``. Sampling starts from
all MASK and draws x_s ~ p(x_s | x_t). The closed forms above allow any s < t, so a sampler may
take fewer steps than N (with N steps it is the reference's one-step chain).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from tomioka_jax.science.mattergen import _crystal

# The reference's floor inside logarithms of probabilities that may be exactly 0.
_LOG_EPS = 1e-20


@dataclasses.dataclass(frozen=True)
class MaskDiffusion:
  """Hyperparameters of the absorbing type diffusion (the reference's defaults).

  Attributes:
    num_steps: N, the number of forward steps.
    num_states: K, the states including MASK (the last, index K - 1).
  """
  num_steps: int = 1000
  num_states: int = _crystal.NUM_TYPE_STATES

  def __post_init__(self):
    if not (isinstance(self.num_steps, int) and self.num_steps >= 1):
      raise ValueError(f"num_steps must be a positive integer, got {self.num_steps!r}")
    if not (isinstance(self.num_states, int) and self.num_states >= 2):
      raise ValueError(f"num_states must be an integer >= 2, got {self.num_states!r}")

  @property
  def mask_state(self) -> int:
    return self.num_states - 1


TYPE_DIFFUSION = MaskDiffusion()


def _check(diffusion: MaskDiffusion) -> None:
  if not isinstance(diffusion, MaskDiffusion):
    raise ValueError(f"diffusion must be a MaskDiffusion, got {type(diffusion).__name__}")


def d3pm_keep_prob(k: jax.Array, diffusion: MaskDiffusion = TYPE_DIFFUSION) -> jax.Array:
  """alpha_k = 1 - k / N, the probability that an atom is still unmasked at step k."""
  _check(diffusion)
  return 1.0 - jnp.asarray(k).astype(jnp.result_type(float)) / diffusion.num_steps


def d3pm_transition_matrix(k: int, diffusion: MaskDiffusion = TYPE_DIFFUSION) -> jax.Array:
  """Q_k[i, j] = q(x_k = j | x_{k-1} = i) for step k in 1..N, shape (K, K)."""
  _check(diffusion)
  if not (isinstance(k, int) and 1 <= k <= diffusion.num_steps):
    raise ValueError(f"k must be an integer step in 1..{diffusion.num_steps}, got {k!r}")
  beta = 1.0 / (diffusion.num_steps - k + 1)
  eye = jnp.eye(diffusion.num_states)
  # (1 - beta) I + beta 1 e_M^T: the MASK row is e_M, so MASK is absorbing.
  return (1.0 - beta) * eye + beta * jnp.broadcast_to(eye[diffusion.mask_state], eye.shape)


def d3pm_marginal_probs(x0: jax.Array, k: jax.Array,
                        diffusion: MaskDiffusion = TYPE_DIFFUSION) -> jax.Array:
  """q(x_k | x_0) for integer ``x0`` (...,) and step ``k`` broadcastable to it; (..., K)."""
  _check(diffusion)
  x0 = jnp.asarray(x0)
  alpha = jnp.broadcast_to(d3pm_keep_prob(k, diffusion), x0.shape)[..., None]
  onehot = jax.nn.one_hot(x0, diffusion.num_states, dtype=alpha.dtype)
  maskhot = jnp.broadcast_to(
      jax.nn.one_hot(diffusion.mask_state, diffusion.num_states, dtype=alpha.dtype), onehot.shape)
  return alpha * onehot + (1.0 - alpha) * maskhot


def d3pm_sample_marginal(key: jax.Array, x0: jax.Array, k: jax.Array,
                         diffusion: MaskDiffusion = TYPE_DIFFUSION) -> jax.Array:
  """Draws x_k ~ q(x_k | x_0): x_0 kept with probability alpha_k, else MASK."""
  x0 = jnp.asarray(x0)
  alpha = jnp.broadcast_to(d3pm_keep_prob(k, diffusion), x0.shape)
  keep = jax.random.uniform(key, x0.shape, alpha.dtype) < alpha
  return jnp.where(keep, x0, diffusion.mask_state).astype(x0.dtype)


def x0_probs_from_logits(logits: jax.Array, diffusion: MaskDiffusion = TYPE_DIFFUSION
                         ) -> jax.Array:
  """p(x_0 | x_t): the softmax of ``logits`` (..., K) over the K - 1 clean types, 0 at MASK."""
  _check(diffusion)
  if logits.shape[-1] != diffusion.num_states:
    raise ValueError(
        f"logits must have {diffusion.num_states} states in the last axis, got {logits.shape}")
  p = jax.nn.softmax(logits[..., :diffusion.mask_state], axis=-1)
  return jnp.concatenate([p, jnp.zeros_like(p[..., :1])], axis=-1)


def d3pm_posterior_logits(x_t: jax.Array, x0_probs: jax.Array, t: jax.Array, s: jax.Array,
                          diffusion: MaskDiffusion = TYPE_DIFFUSION) -> jax.Array:
  """Logits of p(x_s | x_t) oc q(x_t | x_s) sum_{x_0} q(x_s | x_0) p(x_0), for 0 <= s < t <= N.

  With ``x0_probs`` one-hot at x_0 this is the true posterior q(x_s | x_t, x_0); with the
  model's p(x_0 | x_t) it is the model's reverse step. Probabilities that are exactly 0 get
  log(1e-20), as in the reference.

  Args:
    x_t: integer states (...,).
    x0_probs: a distribution over x_0, (..., K).
    t, s: integer steps broadcastable to ``x_t``, s < t (s == t gives the identity step).

  Returns:
    Unnormalized logits (..., K).
  """
  _check(diffusion)
  x_t = jnp.asarray(x_t)
  m = diffusion.mask_state
  a_t = jnp.broadcast_to(d3pm_keep_prob(t, diffusion), x_t.shape)[..., None]
  a_s = jnp.broadcast_to(d3pm_keep_prob(s, diffusion), x_t.shape)[..., None]
  maskhot = jnp.broadcast_to(jax.nn.one_hot(m, diffusion.num_states, dtype=x0_probs.dtype),
                             x0_probs.shape)
  # q(x_s = i | x_0 ~ p): alpha_s p_i off MASK, 1 - alpha_s (1 - p_M) at MASK.
  p_clean = x0_probs * (1.0 - maskhot)
  q_mask = jnp.maximum(1.0 - a_s * jnp.sum(p_clean, axis=-1, keepdims=True), 0.0)
  q_s = a_s * p_clean + q_mask * maskhot
  # q(x_t | x_s = i) as a function of i, for the given x_t.
  ratio = a_t / jnp.where(a_s > 0, a_s, 1.0)
  is_mask = (x_t == m)[..., None]
  onehot_t = jax.nn.one_hot(x_t, diffusion.num_states, dtype=x0_probs.dtype)
  trans = jnp.where(is_mask, (1.0 - ratio) * (1.0 - maskhot) + maskhot,
                    ratio * onehot_t * (1.0 - maskhot))
  return jnp.log(q_s + _LOG_EPS) + jnp.log(trans + _LOG_EPS)


def d3pm_discrete_time(t: jax.Array, diffusion: MaskDiffusion = TYPE_DIFFUSION) -> jax.Array:
  """The reference's ``to_discrete_time``: floor(t (N - 1)) in 0..N-1 for t in [0, 1]."""
  _check(diffusion)
  return jnp.floor(t * (diffusion.num_steps - 1)).astype(jnp.int32)


def d3pm_hybrid_loss(x0: jax.Array, x_next: jax.Array, k: jax.Array, logits: jax.Array,
                     diffusion: MaskDiffusion = TYPE_DIFFUSION, hybrid_lambda: float = 0.01
                     ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The per-atom hybrid loss at step k (0..N-1) given x_{k+1} = ``x_next``; shape of ``x0``.

  KL(q(x_k | x_{k+1}, x_0) || p(x_k | x_{k+1})) for k > 0, -log p(x_0 | x_1) for k = 0, plus
  ``hybrid_lambda`` times -log p(x_0 | x_{k+1}) (the x_0 prediction's cross entropy).

  Returns:
    (loss, {"kl": the base term, "ce": the x_0 cross entropy}), each of the shape of ``x0``.
  """
  if not hybrid_lambda >= 0.0:
    raise ValueError(f"hybrid_lambda must be non-negative, got {hybrid_lambda}")
  x0 = jnp.asarray(x0)
  k = jnp.broadcast_to(k, x0.shape)
  onehot0 = jax.nn.one_hot(x0, diffusion.num_states, dtype=logits.dtype)
  p0 = x0_probs_from_logits(logits, diffusion)
  lq = jax.nn.log_softmax(d3pm_posterior_logits(x_next, onehot0, k + 1, k, diffusion), axis=-1)
  lp = jax.nn.log_softmax(d3pm_posterior_logits(x_next, p0, k + 1, k, diffusion), axis=-1)
  kl = jnp.sum(jnp.exp(lq) * (lq - lp), axis=-1)
  ce_step = -jnp.sum(onehot0 * lp, axis=-1)
  base = jnp.where(k == 0, ce_step, kl)
  log_p0 = jax.nn.log_softmax(logits[..., :diffusion.mask_state], axis=-1)
  ce0 = -jnp.sum(onehot0[..., :diffusion.mask_state] * log_p0, axis=-1)
  return base + hybrid_lambda * ce0, {"kl": base, "ce": ce0}


def d3pm_prior_sample(mask: jax.Array, diffusion: MaskDiffusion = TYPE_DIFFUSION) -> jax.Array:
  """x_N: MASK on real atoms, 0 on padding; int32 of the shape of ``mask``."""
  _check(diffusion)
  return jnp.where(mask, diffusion.mask_state, 0).astype(jnp.int32)


def d3pm_ancestral_step(key: jax.Array, x_t: jax.Array, logits: jax.Array, t: jax.Array,
                        s: jax.Array, mask: jax.Array, diffusion: MaskDiffusion = TYPE_DIFFUSION
                        ) -> tuple[jax.Array, jax.Array]:
  """Draws x_s ~ p(x_s | x_t) (s < t) from the model's x_0 logits; returns (sample, argmax).

  ``t``, ``s`` broadcast to ``x_t`` (B, N); padding atoms stay 0.
  """
  lg = d3pm_posterior_logits(x_t, x0_probs_from_logits(logits, diffusion), t, s, diffusion)
  sample = jax.random.categorical(key, lg, axis=-1).astype(jnp.int32)
  best = jnp.argmax(lg, axis=-1).astype(jnp.int32)
  return jnp.where(mask, sample, 0), jnp.where(mask, best, 0)
