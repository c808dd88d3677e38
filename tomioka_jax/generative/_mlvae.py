"""The multi-level variational autoencoder (ML-VAE) for grouped observations.

Bouchacourt, Tomioka, Nowozin, "Multi-Level Variational Autoencoder: Learning Disentangled
Representations from Grouped Observations", AAAI 2018 (arXiv 1705.08841).

Observations come in groups that share a factor of variation (images of one digit class, of
one identity). Each observation ``x_i`` of group ``G`` has its own *style* latent ``S_i`` and
the group shares one *content* latent ``C_G``. The encoder gives every observation a Gaussian
for its style and a Gaussian for the content; the group's content posterior accumulates the
evidence of all its members as a **product of Gaussians** (precisions add), so it sharpens
with the group size and is defined for groups of any size, including unseen groups at test
time. The group ELBO (paper, Eq. 6) is

.. math::
   \\mathcal L(G) = \\sum_{i \\in G} \\mathbb E_{q(C_G|X_G) q(S_i|x_i)} \\log p(x_i | C_G, S_i)
     - \\sum_{i\\in G} KL(q(S_i|x_i) \\| p(S)) - KL(q(C_G|X_G) \\| p(C)),

with one content sample per group shared by its members. Groups are arrays of shape
``(num_groups, group_size, ...)`` with a 0/1 ``mask`` of shape ``(num_groups, group_size)``
marking real members, so groups of different sizes share one compiled function.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.typing import ArrayLike

from tomioka_jax import core


class Posteriors(NamedTuple):
  """Encoder outputs for a batch of groups (means and log-variances).

  Attributes:
    style_mean, style_log_var: per observation, shape (G, K, style_dim).
    content_mean, content_log_var: the *group* content posterior, shape (G, content_dim),
      accumulated over the members.
  """

  style_mean: jax.Array
  style_log_var: jax.Array
  content_mean: jax.Array
  content_log_var: jax.Array


class ELBOTerms(NamedTuple):
  """The group ELBO and its parts, one value per group (shape (G,))."""

  elbo: jax.Array
  reconstruction: jax.Array
  style_kl: jax.Array
  content_kl: jax.Array


class MLVAE(nnx.Module):
  """An ML-VAE with MLP encoder and decoder and a Bernoulli likelihood on pixels in [0, 1].

  Args:
    in_shape: the shape of one observation, e.g. (8, 8, 1).
    style_dim, content_dim: latent sizes (the paper uses 10 and 10 on MNIST).
    hidden: hidden width of the encoder and decoder.
    rngs: NNX random streams for initialization.
  """

  def __init__(self, in_shape: tuple[int, ...], style_dim: int = 10, content_dim: int = 10,
               hidden: int = 256, *, rngs: nnx.Rngs):
    for name, value in (("style_dim", style_dim), ("content_dim", content_dim),
                        ("hidden", hidden)):
      if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    self.in_shape = tuple(in_shape)
    self.style_dim, self.content_dim = style_dim, content_dim
    d = int(np.prod(in_shape))
    self.enc = nnx.Linear(d, hidden, rngs=rngs)
    self.enc_style = nnx.Linear(hidden, 2 * style_dim, rngs=rngs)
    self.enc_content = nnx.Linear(hidden, 2 * content_dim, rngs=rngs)
    self.dec = nnx.Linear(style_dim + content_dim, hidden, rngs=rngs)
    self.dec_out = nnx.Linear(hidden, d, rngs=rngs)

  def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Per-observation ``(style_mean, style_log_var, content_mean, content_log_var)``."""
    lead = x.shape[:x.ndim - len(self.in_shape)]
    if x.shape[len(lead):] != self.in_shape:
      raise ValueError(f"x must end with the observation shape {self.in_shape}, got {x.shape}")
    h = jax.nn.relu(self.enc(jnp.reshape(x, (*lead, -1))))
    s_mean, s_log_var = jnp.split(self.enc_style(h), 2, axis=-1)
    c_mean, c_log_var = jnp.split(self.enc_content(h), 2, axis=-1)
    return s_mean, s_log_var, c_mean, c_log_var

  def decode(self, style: jax.Array, content: jax.Array) -> jax.Array:
    """Bernoulli logits of the observation, shape ``(*lead, *in_shape)``."""
    h = jax.nn.relu(self.dec(jnp.concatenate([style, content], axis=-1)))
    logits = self.dec_out(h)
    return jnp.reshape(logits, (*logits.shape[:-1], *self.in_shape))


def accumulate_group_evidence(content_mean: ArrayLike, content_log_var: ArrayLike,
                              mask: ArrayLike | None = None) -> tuple[jax.Array, jax.Array]:
  """The group content posterior: the product over members (axis 1) of their Gaussians.

  Args:
    content_mean, content_log_var: shape (G, K, content_dim).
    mask: (G, K) 0/1 member indicators (None: every member is real).

  Returns:
    ``(mean, log_var)`` of shape (G, content_dim).
  """
  return core.product_of_gaussians(content_mean, content_log_var, axis=1, mask=mask)


def encode_groups(model: MLVAE, x: jax.Array, mask: jax.Array | None = None) -> Posteriors:
  """Encodes ``x`` of shape (G, K, *in_shape) into style and group-content posteriors."""
  s_mean, s_log_var, c_mean, c_log_var = model.encode(x)
  g_mean, g_log_var = accumulate_group_evidence(c_mean, c_log_var, mask)
  return Posteriors(s_mean, s_log_var, g_mean, g_log_var)


def _bernoulli_log_likelihood(logits: jax.Array, x: jax.Array, event_ndim: int) -> jax.Array:
  # log p(x | logits) for x in [0, 1] (the continuous relaxation used for MNIST-like pixels).
  ll = x * jax.nn.log_sigmoid(logits) + (1.0 - x) * jax.nn.log_sigmoid(-logits)
  return jnp.sum(ll, axis=tuple(range(-event_ndim, 0)))


def group_elbo(model: MLVAE, key: jax.Array, x: jax.Array,
               mask: jax.Array | None = None) -> ELBOTerms:
  """The ML-VAE group ELBO (Eq. 6) for groups ``x`` of shape (G, K, *in_shape).

  One content sample per group (shared by its members) and one style sample per member, both
  reparameterized. Masked members contribute nothing.
  """
  if x.ndim != 2 + len(model.in_shape):
    raise ValueError(f"x must have shape (groups, group_size, *{model.in_shape}), got {x.shape}")
  g, k = x.shape[:2]
  mask = jnp.ones((g, k), x.dtype) if mask is None else jnp.asarray(mask, x.dtype)
  if mask.shape != (g, k):
    raise ValueError(f"mask must have shape {(g, k)}, got {mask.shape}")
  post = encode_groups(model, x, mask)
  k_style, k_content = jax.random.split(key)
  style = core.reparameterized_sample(k_style, post.style_mean, post.style_log_var)
  content = core.reparameterized_sample(k_content, post.content_mean, post.content_log_var)
  content = jnp.broadcast_to(content[:, None, :], (g, k, content.shape[-1]))
  logits = model.decode(style, content)
  recon = jnp.sum(mask * _bernoulli_log_likelihood(logits, x, len(model.in_shape)), axis=1)
  style_kl = jnp.sum(mask * core.kl_to_standard_normal(post.style_mean,
                                                            post.style_log_var), axis=1)
  content_kl = core.kl_to_standard_normal(post.content_mean, post.content_log_var)
  return ELBOTerms(recon - style_kl - content_kl, recon, style_kl, content_kl)


def group_iwae(model: MLVAE, key: jax.Array, x: jax.Array, mask: jax.Array | None = None, *,
               num_samples: int = 64) -> jax.Array:
  """The importance-weighted bound on ``log p(X_G)`` per group (shape (G,)).

  .. math::  \\log \\frac1N \\sum_{n=1}^N
     \\frac{p(C^n) \\prod_i p(S_i^n) p(x_i | C^n, S_i^n)}{q(C^n | X_G) \\prod_i q(S_i^n | x_i)}

  with ``(C^n, S^n)`` drawn from the ML-VAE's posterior, estimated by the library's IWAE
  estimator :func:`tomioka_jax.core.log_mean_exp`. It is at least the ELBO in expectation and
  tends to ``log p(X_G)`` as ``num_samples`` grows (Burda et al. 2016).
  """
  if num_samples < 1:
    raise ValueError(f"num_samples must be >= 1, got {num_samples}")
  g, k = x.shape[:2]
  mask = jnp.ones((g, k), x.dtype) if mask is None else jnp.asarray(mask, x.dtype)
  post = encode_groups(model, x, mask)

  def log_weight(key):
    k_style, k_content = jax.random.split(key)
    style = core.reparameterized_sample(k_style, post.style_mean, post.style_log_var)
    content = core.reparameterized_sample(k_content, post.content_mean,
                                               post.content_log_var)
    logits = model.decode(style, jnp.broadcast_to(content[:, None, :],
                                                  (g, k, content.shape[-1])))
    log_lik = _bernoulli_log_likelihood(logits, x, len(model.in_shape))
    zeros_s, zeros_c = jnp.zeros_like(style), jnp.zeros_like(content)
    log_p_style = core.diag_gaussian_log_prob(style, zeros_s, zeros_s)
    log_q_style = core.diag_gaussian_log_prob(style, post.style_mean, post.style_log_var)
    per_member = jnp.sum(mask * (log_lik + log_p_style - log_q_style), axis=1)
    log_p_content = core.diag_gaussian_log_prob(content, zeros_c, zeros_c)
    log_q_content = core.diag_gaussian_log_prob(content, post.content_mean,
                                                     post.content_log_var)
    return per_member + log_p_content - log_q_content

  log_w = jax.lax.map(log_weight, jax.random.split(key, num_samples))  # (N, G)
  return core.log_mean_exp(log_w, axis=0)


def mlvae_loss(model: MLVAE, batch: dict[str, jax.Array], rng: jax.Array):
  """Loss for :func:`tomioka_jax.core.make_train_step`: minus the ELBO per observation.

  ``batch = {"x": (G, K, *in_shape), "mask": (G, K)}`` (``mask`` optional).
  """
  mask = batch.get("mask")
  terms = group_elbo(model, rng, batch["x"], mask)
  count = batch["x"].shape[0] * batch["x"].shape[1] if mask is None else jnp.sum(mask)
  per_obs = jnp.sum(terms.elbo) / count
  return -per_obs, {"elbo_per_obs": per_obs,
                    "content_kl_per_group": jnp.mean(terms.content_kl),
                    "style_kl_per_obs": jnp.sum(terms.style_kl) / count}


def swap(model: MLVAE, x_style: jax.Array, x_content: jax.Array,
         content_mask: jax.Array | None = None) -> jax.Array:
  """Decodes every style of ``x_style`` with the content of the group ``x_content``.

  Args:
    x_style: observations (N, *in_shape) whose style (posterior mean) is kept.
    x_content: one group (K, *in_shape) whose accumulated content (posterior mean) is used.
    content_mask: (K,) member indicators of the content group.

  Returns:
    Reconstruction probabilities (N, *in_shape): the content group's factor with each
    observation's style.
  """
  s_mean, _, _, _ = model.encode(x_style)
  post = encode_groups(model, x_content[None],
                       None if content_mask is None else jnp.asarray(content_mask)[None])
  content = jnp.broadcast_to(post.content_mean, (s_mean.shape[0], post.content_mean.shape[-1]))
  return jax.nn.sigmoid(model.decode(s_mean, content))


def make_group_sampler(labels: np.ndarray, num_groups: int, group_size: int
                       ) -> Callable[[jax.Array], jax.Array]:
  """A jittable ``key -> indices (num_groups, group_size)`` of groups of same-label examples.

  Each group picks a label uniformly among those with at least ``group_size`` examples, then
  ``group_size`` distinct examples of that label (uniform without replacement: the top
  ``group_size`` of i.i.d. uniform scores over the label's members). The labels are fixed when
  the sampler is made, so it can run inside ``jit`` and ``lax.scan`` (a whole training run's
  batches drawn on the device).
  """
  labels = np.asarray(labels)
  if labels.ndim != 1:
    raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
  for name, value in (("num_groups", num_groups), ("group_size", group_size)):
    if int(value) < 1:
      raise ValueError(f"{name} must be >= 1, got {value}")
  classes = [c for c in np.unique(labels) if np.sum(labels == c) >= group_size]
  if not classes:
    raise ValueError(f"no label has group_size={group_size} examples")
  members = [np.nonzero(labels == c)[0] for c in classes]
  width = max(len(m) for m in members)
  table = np.zeros((len(classes), width), np.int32)  # members of each class, padded
  for i, m in enumerate(members):
    table[i, :len(m)] = m
  valid = jnp.asarray(np.arange(width)[None, :] < np.array([len(m) for m in members])[:, None])
  table = jnp.asarray(table)

  def sample(key: jax.Array) -> jax.Array:
    k_class, k_members = jax.random.split(key)
    cls = jax.random.randint(k_class, (num_groups,), 0, len(classes))
    scores = jax.random.uniform(k_members, (num_groups, width))
    scores = jnp.where(valid[cls], scores, -1.0)
    _, pos = jax.lax.top_k(scores, group_size)
    return jnp.take_along_axis(table[cls], pos, axis=1)

  return sample


def group_batches(key: jax.Array, labels: np.ndarray, num_groups: int, group_size: int
                  ) -> np.ndarray:
  """Indices (num_groups, group_size) of groups of same-label examples, drawn by ``key``.

  The host-side form of :func:`make_group_sampler` (same groups for the same key).
  """
  return np.asarray(make_group_sampler(labels, num_groups, group_size)(key))


__all__ = [
    "MLVAE",
    "Posteriors",
    "ELBOTerms",
    "accumulate_group_evidence",
    "encode_groups",
    "group_elbo",
    "group_iwae",
    "mlvae_loss",
    "swap",
    "group_batches",
    "make_group_sampler",
]
