"""Mutual-information estimators, autoinformation and divergences of discrete laws.

T-InfoMax maximises the autoinformation ``AI(z; tau) = I(z_{t-tau}; z_t)`` of a representation
through a contrastive lower bound on a critic's score matrix ``S_ij = f(a_i, b_j)`` over a batch
of ``N`` pairs whose positives sit on the diagonal (Federici et al. 2023, Section 4; the
estimators of Oord et al. 2018 and Song & Ermon 2020):

* InfoNCE, ``I >= mean_i [S_ii - log sum_j exp S_ij] + log N``, which can never exceed
  ``log N``;
* SMILE, the Donsker-Varadhan bound with the critic clipped to ``[-c, c]`` in the partition
  term, ``mean_i S_ii - log mean_{i != j} exp clip(S_ij)``, whose gradient is taken from the
  Jensen-Shannon (f-GAN) bound ``E_P[-softplus(-S)] - E_Q[softplus(S)]`` for a stable critic.

The discrete quantities (plug-in autoinformation of a label sequence, Jensen-Shannon divergence
of two histograms) are what the benchmark compares between the true process and a simulation.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike


def _check_scores(scores: jax.Array) -> None:
  if scores.ndim != 2 or scores.shape[0] != scores.shape[1] or scores.shape[0] < 2:
    raise ValueError(f"scores must be a square (N, N) matrix with N >= 2 (positives on the "
                     f"diagonal), got shape {scores.shape}")


def critic_scores(a: ArrayLike, b: ArrayLike) -> jax.Array:
  """The separable critic's score matrix ``S_ij = <a_i, b_j>`` of two ``(N, k)`` embeddings."""
  a, b = jnp.asarray(a), jnp.asarray(b)
  if a.ndim != 2 or a.shape != b.shape:
    raise ValueError(f"a and b must be (N, k) arrays of one shape, got {a.shape} and {b.shape}")
  return a @ b.T


def infonce_lower_bound(scores: ArrayLike) -> jax.Array:
  """The InfoNCE lower bound on ``I(a; b)`` from an ``(N, N)`` score matrix.

  .. math::  \\hat I_{NCE} = \\frac1N \\sum_i \\Big[S_{ii} - \\log \\frac1N \\sum_j e^{S_{ij}}\\Big]
             \\le \\log N

  Args:
    scores: ``S_ij = f(a_i, b_j)``; row ``i``'s positive is column ``i``.

  Returns:
    The estimate (nats), a scalar.
  """
  scores = jnp.asarray(scores)
  _check_scores(scores)
  n = scores.shape[0]
  return jnp.mean(jnp.diagonal(scores) - jax.nn.logsumexp(scores, axis=1)) + math.log(n)


def _off_diagonal(n: int) -> jax.Array:
  return ~jnp.eye(n, dtype=bool)


def js_lower_bound(scores: ArrayLike) -> jax.Array:
  """The Jensen-Shannon (f-GAN) bound of the pairs' law against the product of marginals.

  .. math::  E_P[-\\mathrm{softplus}(-S)] - E_Q[\\mathrm{softplus}(S)]

  with ``P`` the diagonal and ``Q`` the off-diagonal entries (Nowozin et al. 2016's critic
  objective for JS, up to constants). Not a bound on ``I``: SMILE's gradient.
  """
  scores = jnp.asarray(scores)
  _check_scores(scores)
  n = scores.shape[0]
  off = _off_diagonal(n)
  positive = jnp.mean(-jax.nn.softplus(-jnp.diagonal(scores)))
  negative = jnp.sum(jnp.where(off, jax.nn.softplus(scores), 0.0)) / (n * (n - 1))
  return positive - negative


def smile_lower_bound(scores: ArrayLike, clip: float | None = 5.0) -> jax.Array:
  """SMILE: the clipped Donsker-Varadhan estimate of ``I(a; b)``, with the JS bound's gradient.

  .. math::  \\hat I_{SMILE} = \\frac1N \\sum_i S_{ii}
             - \\log \\frac{1}{N(N-1)} \\sum_{i \\ne j} e^{\\mathrm{clip}(S_{ij}, -c, c)}

  The value is this estimate; its gradient is that of :func:`js_lower_bound` (the value is
  ``js + stop_gradient(dv - js)``, Song & Ermon 2020). ``clip=None``: plain Donsker-Varadhan.

  Raises:
    ValueError: ``scores`` not square, ``clip`` not positive.
  """
  scores = jnp.asarray(scores)
  _check_scores(scores)
  if clip is not None and not clip > 0:
    raise ValueError(f"clip must be > 0 or None, got clip={clip!r}")
  n = scores.shape[0]
  clipped = scores if clip is None else jnp.clip(scores, -clip, clip)
  off = _off_diagonal(n)
  log_partition = (jax.nn.logsumexp(jnp.where(off, clipped, -jnp.inf))
                   - math.log(n * (n - 1)))
  dv = jnp.mean(jnp.diagonal(scores)) - log_partition
  js = js_lower_bound(scores)
  return js + jax.lax.stop_gradient(dv - js)


def mutual_information_discrete(joint: ArrayLike) -> jax.Array:
  """``I`` (nats) of a discrete joint ``p(a, b)`` given as a (possibly unnormalized) table."""
  joint = jnp.asarray(joint, jnp.result_type(float))
  joint = joint / jnp.sum(joint)
  pa = jnp.sum(joint, axis=1, keepdims=True)
  pb = jnp.sum(joint, axis=0, keepdims=True)
  ratio = joint / jnp.maximum(pa * pb, 1e-300)
  return jnp.sum(jnp.where(joint > 0, joint * jnp.log(jnp.where(joint > 0, ratio, 1.0)), 0.0))


def lagged_joint(labels: ArrayLike, lag: int, num_states: int) -> np.ndarray:
  """The empirical joint law of ``(s_{t-lag}, s_t)`` of ``(n, T)`` integer label trajectories.

  Returns a normalized ``(num_states, num_states)`` NumPy table.

  Raises:
    ValueError: ``lag`` not in ``[1, T)``, labels outside ``[0, num_states)``.
  """
  labels = np.asarray(labels)
  if labels.ndim == 1:
    labels = labels[None]
  if labels.ndim != 2:
    raise ValueError(f"labels must have shape (n, T) or (T,), got {labels.shape}")
  if isinstance(lag, bool) or not isinstance(lag, (int, np.integer)) or lag < 1:
    raise ValueError(f"lag must be a positive integer, got lag={lag!r}")
  if lag >= labels.shape[1]:
    raise ValueError(f"lag must be smaller than the trajectory length {labels.shape[1]}, got "
                     f"lag={lag}")
  if labels.min() < 0 or labels.max() >= num_states:
    raise ValueError(f"labels must lie in [0, {num_states}), got values in "
                     f"[{labels.min()}, {labels.max()}]")
  a, b = labels[:, :-lag].ravel(), labels[:, lag:].ravel()
  joint = np.bincount(a * num_states + b, minlength=num_states**2).astype(np.float64)
  return joint.reshape(num_states, num_states) / joint.sum()


def discrete_autoinformation(labels: ArrayLike, lag: int, num_states: int) -> float:
  """Plug-in ``AI(s; lag) = I(s_{t-lag}; s_t)`` (nats) of integer label trajectories.

  Biased upward by about ``(num_states - 1)^2 / (2 N)`` for ``N`` pairs.
  """
  return float(mutual_information_discrete(lagged_joint(labels, lag, num_states)))


def js_divergence(p: ArrayLike, q: ArrayLike) -> jax.Array:
  """Jensen-Shannon divergence (nats, at most ``log 2``) of two discrete laws (any shape).

  .. math::  JS(p, q) = \\tfrac12 KL(p \\| m) + \\tfrac12 KL(q \\| m), \\quad m = (p + q)/2

  Inputs are normalized; zero cells contribute nothing.
  """
  p = jnp.asarray(p, jnp.result_type(float)).ravel()
  q = jnp.asarray(q, jnp.result_type(float)).ravel()
  if p.shape != q.shape:
    raise ValueError(f"p and q must have the same number of cells, got {p.shape} and {q.shape}")
  p, q = p / jnp.sum(p), q / jnp.sum(q)
  m = 0.5 * (p + q)

  def kl(a):
    return jnp.sum(jnp.where(a > 0, a * jnp.log(jnp.where(a > 0, a, 1.0) / jnp.where(a > 0, m,
                                                                                     1.0)), 0.0))

  return 0.5 * kl(p) + 0.5 * kl(q)


def kl_divergence_discrete(p: ArrayLike, q: ArrayLike) -> jax.Array:
  """``KL(p || q)`` (nats) of two discrete laws (normalized here); ``inf`` where ``q = 0 < p``."""
  p = jnp.asarray(p, jnp.result_type(float)).ravel()
  q = jnp.asarray(q, jnp.result_type(float)).ravel()
  p, q = p / jnp.sum(p), q / jnp.sum(q)
  terms = jnp.where(p > 0, p * (jnp.log(jnp.where(p > 0, p, 1.0)) - jnp.log(q)), 0.0)
  return jnp.sum(terms)
