"""Baselines of the T-IB paper: TICA, VAMPNets, and Markov state models on their latent space.

* TICA (Pérez-Hernández et al. 2013): the linear projections of maximal lagged autocorrelation,
  the generalized eigenproblem ``C_tau r = C_0 r lambda`` of the time-lagged covariances. As in
  deeptime's ``TICA`` the covariances are estimated reversibly: one mean over both halves of the
  pairs, ``C_0 = (X^T X + Y^T Y) / 2N``, ``C_tau = (X^T Y + Y^T X) / 2N``.
* VAMPNets (Mardt et al. 2018): a network ``chi(x)`` (softmax over ``n`` states) trained to
  maximise the VAMP-2 score ``||C_00^{-1/2} C_0t C_tt^{-1/2}||_F^2`` of its outputs on lagged
  pairs; the states are the argmax of ``chi``.
* A Markov state model on discrete states: the row-normalized matrix of lagged transition
  counts, sampled by ``lax.scan``; the labels are decoded from the states through the
  empirical emission ``p(y | state)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.typing import ArrayLike

from tomioka_jax import core
from tomioka_jax.representation.tib import _estimators as est
from tomioka_jax.representation.tib import _prinz as prinz


class TICA(NamedTuple):
  """A TICA model.

  Attributes:
    mean: ``(d,)`` the mean removed from the data.
    eigenvalues: ``(m,)`` lagged autocorrelations of the components, descending.
    eigenvectors: ``(d, m)`` the components, ``R^T C_0 R = I``.
  """

  mean: jax.Array
  eigenvalues: jax.Array
  eigenvectors: jax.Array


def tica(trajectories: ArrayLike, lag: int, *, epsilon: float = 1e-10) -> TICA:
  """TICA of ``(n, T, d)`` trajectories at ``lag`` frames (reversible covariances).

  Solves ``C_tau r = C_0 r lambda`` by whitening ``C_0`` (eigenvalues ``<= epsilon`` are
  dropped: fixed shapes, so their directions get zero weight) and diagonalising the whitened
  symmetric ``C_tau``.

  Raises:
    ValueError: ``lag`` not in ``[1, T)`` or non-finite data (from :func:`lagged_pairs`).
  """
  x, y = prinz.lagged_pairs(trajectories, lag)
  if x.ndim != 2:
    raise ValueError(f"trajectories must have shape (n, T, d), got {jnp.shape(trajectories)}")
  mean = 0.5 * (jnp.mean(x, axis=0) + jnp.mean(y, axis=0))
  xc, yc = x - mean[None, :], y - mean[None, :]
  n = x.shape[0]
  c0 = (xc.T @ xc + yc.T @ yc) / (2 * n)
  ct = (xc.T @ yc + yc.T @ xc) / (2 * n)
  s, u = jnp.linalg.eigh(c0)
  keep = s > epsilon
  w = u * jnp.where(keep, 1.0 / jnp.sqrt(jnp.where(keep, s, 1.0)), 0.0)[None, :]
  lam, v = jnp.linalg.eigh(w.T @ ct @ w)
  order = jnp.argsort(-lam)
  return TICA(mean=mean, eigenvalues=lam[order], eigenvectors=(w @ v)[:, order])


def tica_transform(model: TICA, x: ArrayLike, dim: int = 1) -> jax.Array:
  """The first ``dim`` TICA components of ``x`` (``(..., d) -> (..., dim)``)."""
  x = jnp.asarray(x)
  mean = model.mean.reshape((1,) * (x.ndim - 1) + (-1,))
  return (x - mean) @ model.eigenvectors[:, :dim]


def _inverse_sqrt(c: jax.Array, epsilon: float) -> jax.Array:
  s, u = jnp.linalg.eigh(c)
  return (u / jnp.sqrt(jnp.abs(s) + epsilon)[None, :]) @ u.T


def vamp2_score(chi_0: ArrayLike, chi_t: ArrayLike, epsilon: float = 1e-6) -> jax.Array:
  """The VAMP-2 score of features on lagged pairs, ``(N, k)`` each.

  .. math::  \\|C_{00}^{-1/2} C_{0t} C_{tt}^{-1/2}\\|_F^2,

  the sum of the squared singular values of the whitened lagged covariance, with mean-free
  covariances ``C = X^T Y / (N - 1)`` and the inverse square roots regularised as deeptime's
  VAMPNet does (``|eigenvalue| + epsilon``). The constant singular function (value 1) is not
  included, as in deeptime's ``vamp_score``.
  """
  chi_0, chi_t = jnp.asarray(chi_0), jnp.asarray(chi_t)
  if chi_0.ndim != 2 or chi_0.shape != chi_t.shape:
    raise ValueError(f"chi_0 and chi_t must be (N, k) arrays of one shape, got {chi_0.shape} "
                     f"and {chi_t.shape}")
  if not epsilon > 0:
    raise ValueError(f"epsilon must be > 0, got epsilon={epsilon!r}")
  n = chi_0.shape[0]
  x = chi_0 - jnp.mean(chi_0, axis=0, keepdims=True)
  y = chi_t - jnp.mean(chi_t, axis=0, keepdims=True)
  c00, c0t, ctt = x.T @ x / (n - 1), x.T @ y / (n - 1), y.T @ y / (n - 1)
  k = _inverse_sqrt(c00, epsilon) @ c0t @ _inverse_sqrt(ctt, epsilon)
  return jnp.sum(jnp.square(k))


def vampnet_loss(model: nnx.Module, batch: dict[str, jax.Array], rng: jax.Array
                 ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """``-vamp2_score(softmax(model(x0)), softmax(model(xt)))``: the VAMPNet loss (one lobe)."""
  del rng
  score = vamp2_score(jax.nn.softmax(model(batch["x0"])), jax.nn.softmax(model(batch["xt"])))
  return -score, {"vamp2": score}


class VAMPNetFit(NamedTuple):
  """Trained VAMPNets, one per seed (leading axis of ``states``' leaves)."""

  graphdef: nnx.GraphDef
  states: core.TrainState
  vamp2: np.ndarray  # (seeds, steps) the training score


def train_vampnet(trajectories: ArrayLike, lag: int, *, num_states: int = 4, steps: int = 1000,
                  batch_size: int = 512, learning_rate: float = 1e-3,
                  hidden: Sequence[int] = (64, 64), seeds: Sequence[int] = (0,)) -> VAMPNetFit:
  """VAMPNets on ``(n, T, d)`` trajectories, every seed in one ``jit(vmap(...))``.

  Each seed's run is ``core.make_sampler_trainer``: a step draws ``batch_size`` lagged pairs
  with replacement and ascends the VAMP-2 score of a ``core.MLP`` with softmax outputs.
  """
  if isinstance(num_states, bool) or not isinstance(num_states, int) or num_states < 2:
    raise ValueError(f"num_states must be an integer >= 2, got num_states={num_states!r}")
  x0, xt = prinz.lagged_pairs(trajectories, lag)
  optimizer = optax.adam(learning_rate)
  states = []
  for seed in seeds:
    model = core.MLP(x0.shape[1], tuple(hidden), num_states, rngs=nnx.Rngs(int(seed)))
    graphdef, state = core.create_train_state(model, optimizer, jax.random.key(int(seed)))
    states.append(state)
  states = jax.tree.map(lambda *a: jnp.stack(a), *states)
  n = x0.shape[0]

  def sample(key):
    idx = jax.random.randint(key, (batch_size,), 0, n)
    return {"x0": x0[idx], "xt": xt[idx]}

  train = core.make_sampler_trainer(graphdef, vampnet_loss, optimizer, sample=sample, steps=steps)
  keys = jax.vmap(lambda s: jax.random.fold_in(jax.random.key(s), 1))(jnp.asarray(seeds))
  final, metrics = jax.jit(jax.vmap(train))(states, keys)
  return VAMPNetFit(graphdef=graphdef, states=final, vamp2=np.asarray(metrics["vamp2"]))


def vampnet_assign(fit: VAMPNetFit, seed_index: int, x: ArrayLike) -> jax.Array:
  """The VAMPNet state (argmax of ``chi``) of ``(..., d)`` points, for one seed's network."""
  state = jax.tree.map(lambda a: a[seed_index], fit.states)
  x = jnp.asarray(x)
  flat = x.reshape(-1, x.shape[-1])
  logits = core.apply_model(fit.graphdef, state, flat)
  return jnp.argmax(logits, axis=-1).reshape(x.shape[:-1])


def vampnet_features(fit: VAMPNetFit, seed_index: int, x: ArrayLike) -> jax.Array:
  """The softmax outputs ``chi(x)`` of one seed's network for ``(..., d)`` points."""
  state = jax.tree.map(lambda a: a[seed_index], fit.states)
  x = jnp.asarray(x)
  logits = core.apply_model(fit.graphdef, state, x.reshape(-1, x.shape[-1]))
  return jax.nn.softmax(logits, axis=-1).reshape((*x.shape[:-1], logits.shape[-1]))


def vamp_singular_functions(chi_0: ArrayLike, chi_t: ArrayLike, epsilon: float = 1e-6
                            ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The left singular functions of the whitened lagged covariance of features ``(N, k)``.

  With ``K = C_00^{-1/2} C_0t C_tt^{-1/2} = U S V^T`` returns ``(mean, weights, s)``: the
  singular functions are ``(chi - mean) @ weights`` (``weights = C_00^{-1/2} U``), ordered by
  the singular values ``s`` (``sum s^2`` is :func:`vamp2_score`). A VAMPNet's argmax is not
  meaningful (the score is invariant to linear maps of ``chi``); its slowest singular function
  is what the benchmark discretizes, as TICA's first component.
  """
  chi_0, chi_t = jnp.asarray(chi_0), jnp.asarray(chi_t)
  n = chi_0.shape[0]
  mean = jnp.mean(chi_0, axis=0, keepdims=True)
  x = chi_0 - mean
  y = chi_t - jnp.mean(chi_t, axis=0, keepdims=True)
  c00_is = _inverse_sqrt(x.T @ x / (n - 1), epsilon)
  ctt_is = _inverse_sqrt(y.T @ y / (n - 1), epsilon)
  u, s, _ = jnp.linalg.svd(c00_is @ (x.T @ y / (n - 1)) @ ctt_is)
  return mean[0], c00_is @ u, s


def quantile_edges(values: ArrayLike, num_states: int) -> np.ndarray:
  """Inner edges of ``num_states`` equal-mass bins of 1-D ``values`` (for discretizing TICA)."""
  values = np.asarray(values).ravel()
  return np.quantile(values, np.linspace(0, 1, num_states + 1)[1:-1])


def assign_bins(values: ArrayLike, edges: ArrayLike) -> np.ndarray:
  """The bin (0..len(edges)) of each value."""
  return np.searchsorted(np.asarray(edges), np.asarray(values), side="right").astype(np.int32)


def fit_msm(states: ArrayLike, lag: int, num_states: int, *, pseudocount: float = 1e-8
            ) -> np.ndarray:
  """Maximum-likelihood (non-reversible) MSM: row-normalized lagged transition counts.

  ``pseudocount`` is added to every count so that unvisited rows stay stochastic.
  """
  joint = est.lagged_joint(states, lag, num_states)
  counts = joint + pseudocount
  return counts / counts.sum(axis=1, keepdims=True)


def emission_matrix(states: ArrayLike, labels: ArrayLike, num_states: int, num_labels: int,
                    *, pseudocount: float = 1e-8) -> np.ndarray:
  """``p(label | state)`` from co-occurring ``states`` and ``labels`` (rows sum to one)."""
  s = np.asarray(states).ravel()
  y = np.asarray(labels).ravel()
  counts = np.bincount(s * num_labels + y, minlength=num_states * num_labels).astype(np.float64)
  counts = counts.reshape(num_states, num_labels) + pseudocount
  return counts / counts.sum(axis=1, keepdims=True)


def simulate_msm(key: jax.Array, transition: ArrayLike, starts: ArrayLike, steps: int
                 ) -> jax.Array:
  """Markov-chain paths ``(M, steps + 1)`` from ``starts`` ``(M,)`` under ``transition``."""
  log_t = jnp.log(jnp.asarray(transition))
  starts = jnp.asarray(starts, jnp.int32)

  def step(s, k):
    nxt = jax.random.categorical(k, log_t[s], axis=-1).astype(jnp.int32)
    return nxt, nxt

  @jax.jit
  def run(key, starts):
    _, path = jax.lax.scan(step, starts, jax.random.split(key, steps))
    return jnp.concatenate([starts[None], path], axis=0).T

  return run(key, starts)


def decode_labels(key: jax.Array, emission: ArrayLike, states: ArrayLike) -> jax.Array:
  """A label for each state drawn from ``emission[state]``."""
  log_e = jnp.log(jnp.asarray(emission))
  return jax.random.categorical(key, log_e[jnp.asarray(states)], axis=-1).astype(jnp.int32)
