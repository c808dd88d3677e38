"""The N-VAE and the P-VAE: models, the ELBO, the IWAE bound and a compiled training run.

"Continuous Hierarchical Representations with Poincaré Variational Auto-Encoders", Emile Mathieu,
Charline Le Lan, Chris J. Maddison, Ryota Tomioka, Yee Whye Teh, 2019, arXiv:1901.06033.

One Flax NNX module, :class:`VAE`, covers the paper's model family (Section 4), chosen by a
:class:`VAEConfig`:

* ``distribution="normal"``: the Euclidean N-VAE, Gaussian prior ``N(0, s^2 I)`` and diagonal
  Gaussian posterior;
* ``distribution="wrapped"`` or ``"riemannian"``: the P^c-VAE, prior and posterior both wrapped
  normals or both Riemannian normals on the Poincaré ball of curvature ``-c``, the prior centred
  at the origin with scale ``s`` (fixed, or learned as ``s softplus(t) / log 2`` from ``t = 0``
  like the reference code).

The encoder is an MLP giving a location (sent to the ball by ``exp_0`` for the P-VAE) and a
scale (``softplus + 1e-5``; one scalar per example for the Riemannian normal, which is isotropic).
For the P-VAE both are kept where floating point can represent the posterior (see
:func:`posterior_limits`): otherwise samples are clipped at the ball's edge, the density no
longer describes them, and the "bound" is unbounded -- in float32 an unguarded Riemannian
posterior learned ``sigma ~ 1600`` and a training ELBO of ``+1e5`` on the tree data.
The decoder reads the latent through ``log_0`` (``"wrapped"``), a gyroplane layer
(``"gyroplane"``, paper eq. 12) or directly (``"linear"``, the N-VAE's), then an MLP; the
likelihood is a unit-variance Gaussian (the tree data) or a Bernoulli on grey levels in [0, 1]
(digits, as the reference code). The objectives are pure functions of one unbatched example:
:func:`elbo` (one sample, Monte Carlo KL, as the paper) and :func:`iwae_bound`
(``log (1/K) sum_k p(x, z_k) / q(z_k | x)``, Burda et al. 2016), usable inside ``jit``, ``vmap``
and ``grad``. :func:`make_train` builds a whole training run as one compiled function of
``(key, c, x_train)`` that can be ``vmap``-ed over seeds, curvatures and data sets.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import NamedTuple

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.typing import ArrayLike

from tomioka_jax import core
from tomioka_jax.generative.pvae import _manifold as manifold
from tomioka_jax.generative.pvae._distributions import RiemannianNormal
from tomioka_jax.generative.pvae._distributions import WrappedNormal
from tomioka_jax.generative.pvae._layers import Curvature
from tomioka_jax.generative.pvae._layers import GyroplaneLayer

DISTRIBUTIONS = ("normal", "wrapped", "riemannian")
DECODERS = ("linear", "wrapped", "gyroplane")
LIKELIHOODS = ("gaussian", "bernoulli")
_SCALE_FLOOR = 1e-5  # added to the softplus scale head (the reference code's eta)
_LOG_2PI = math.log(2.0 * math.pi)


@dataclasses.dataclass(frozen=True)
class VAEConfig:
  """What :func:`make_vae` builds.

  Attributes:
    data_dim: size of one (flattened) observation.
    latent_dim: dimension d of the latent space (the ball's dimension for the P-VAE).
    hidden_dim: width of the hidden layers of the encoder and decoder.
    num_hidden_layers: hidden layers in each MLP (0: the encoder and decoder are affine, which
      with ``distribution="normal"``, ``likelihood="gaussian"`` gives a linear-Gaussian model with
      a tractable marginal likelihood).
    distribution: ``"normal"`` (N-VAE), ``"wrapped"`` or ``"riemannian"`` (P-VAE); prior and
      posterior are of this family.
    decoder: ``"linear"`` (MLP on the coordinates), ``"wrapped"`` (``log_0`` then MLP) or
      ``"gyroplane"`` (a :class:`~tomioka_jax.generative.pvae._layers.GyroplaneLayer` as the
      first layer). The last two need a ball (not ``"normal"``).
    likelihood: ``"gaussian"`` (unit variance) or ``"bernoulli"`` (logits; observations in [0, 1]).
    c: curvature magnitude of the ball, > 0 (ignored by the N-VAE).
    prior_scale: the prior's scale s > 0 (the reference code's ``--prior-std``).
    learn_prior_scale: learn the prior's scale (``s softplus(t) / log 2``, ``t`` from 0).
    activation: hidden non-linearity.
  """

  data_dim: int
  latent_dim: int = 2
  hidden_dim: int = 200
  num_hidden_layers: int = 1
  distribution: str = "riemannian"
  decoder: str = "wrapped"
  likelihood: str = "gaussian"
  c: float = 1.0
  prior_scale: float = 1.0
  learn_prior_scale: bool = False
  activation: Callable[[jax.Array], jax.Array] = jax.nn.relu

  def __post_init__(self):
    for name in ("data_dim", "latent_dim", "hidden_dim"):
      value = getattr(self, name)
      if not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {name}={value!r}")
    if not isinstance(self.num_hidden_layers, (int, np.integer)) or self.num_hidden_layers < 0:
      raise ValueError(f"num_hidden_layers must be an integer >= 0, got "
                       f"num_hidden_layers={self.num_hidden_layers!r}")
    for name, allowed in (("distribution", DISTRIBUTIONS), ("decoder", DECODERS),
                          ("likelihood", LIKELIHOODS)):
      value = getattr(self, name)
      if value not in allowed:
        raise ValueError(f"unknown {name}={value!r}; allowed: {', '.join(allowed)}")
    if self.distribution == "normal" and self.decoder != "linear":
      raise ValueError(f"decoder={self.decoder!r} reads points of the Poincaré ball; with "
                       f"distribution='normal' (the N-VAE) the allowed decoder is 'linear'")
    manifold.check_curvature(self.c)
    if not (np.isfinite(self.prior_scale) and self.prior_scale > 0):
      raise ValueError(f"prior_scale must be finite and > 0, got prior_scale={self.prior_scale!r}")

  @property
  def hyperbolic(self) -> bool:
    """Whether the latent space is the Poincaré ball (the P-VAE)."""
    return self.distribution != "normal"


class ELBOTerms(NamedTuple):
  """One-sample ELBO of one example and its parts (scalars).

  Attributes:
    elbo: ``log p(x | z) - kl``.
    log_likelihood: ``log p(x | z)``.
    kl: the one-sample KL estimate ``log q(z | x) - log p(z)``.
  """

  elbo: jax.Array
  log_likelihood: jax.Array
  kl: jax.Array


def representable_radius(c: ArrayLike, dtype=jnp.float32) -> jax.Array:
  """Geodesic radius of the ball that ``dtype`` represents: points are clipped beyond it.

  ``(2 / sqrt(c)) artanh(1 - eps)`` with the manifold's boundary margin ``eps``: about
  ``6.2 / sqrt(c)`` in float32 and ``12.2 / sqrt(c)`` in float64.
  """
  eps = manifold.boundary_eps(dtype)
  return 2.0 * math.atanh(1.0 - eps) / jnp.sqrt(jnp.asarray(c, dtype))


def posterior_limits(distribution: str, latent_dim: int, c: ArrayLike, dtype=jnp.float32,
                     fraction: float = 0.5) -> tuple[jax.Array, jax.Array]:
  """Largest posterior location radius and scale whose samples the ball represents.

  With ``R = fraction * representable_radius(c)``, the location is kept within geodesic
  distance ``R`` of the origin and the scale below ``sigma_max``, chosen so that samples stay
  within ``R`` of the location (so within ``2R`` of the origin) but in a ~3-sigma tail:

  * wrapped normal, ``d(mu, z) = |v|``, ``v ~ N(0, sigma^2 I_d)``:
    ``sigma_max = R / (sqrt(d) + 3)``;
  * Riemannian normal, radius law ``~ exp(-r^2/2 sigma^2) sinh(sqrt(c) r)^(d-1)`` peaking near
    ``(d-1) sqrt(c) sigma^2`` with width ``~sigma``: the root of
    ``(d-1) sqrt(c) sigma^2 + (3 + sqrt(d-1)) sigma = R``.

  Returns:
    ``(max_distance, max_scale)``.
  """
  radius = fraction * representable_radius(c, dtype)
  d = latent_dim
  if distribution == "wrapped":
    return radius, radius / (math.sqrt(d) + 3.0)
  a = (d - 1) * jnp.sqrt(jnp.asarray(c, dtype))
  b = 3.0 + math.sqrt(d - 1)
  # Positive root of a s^2 + b s - R = 0, written stably (2R / (b + sqrt(b^2 + 4aR))).
  return radius, 2.0 * radius / (b + jnp.sqrt(b * b + 4.0 * a * radius))


def _mlp(sizes: list[int], rngs: nnx.Rngs) -> nnx.List:
  return nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])


class VAE(nnx.Module):
  """A VAE with Euclidean (N-VAE) or Poincaré-ball (P-VAE) latents; build it with :func:`make_vae`.

  Args:
    config: the :class:`VAEConfig`.
    c: the curvature to use instead of ``config.c``; may be a traced array (to ``vmap`` a
      training run over curvatures). It is a non-trainable
      :class:`~tomioka_jax.generative.pvae._layers.Curvature` variable (also the gyroplane
      layer's), so optimiser updates over ``nnx.Param`` leave it unchanged.
    rngs: ``nnx.Rngs`` for initialisation.
  """

  def __init__(self, config: VAEConfig, *, c: ArrayLike | None = None, rngs: nnx.Rngs):
    self.config = config
    c = config.c if c is None else c
    manifold.check_curvature(c)
    self.c = Curvature(jnp.asarray(c, jnp.float32))
    d, h, n = config.latent_dim, config.hidden_dim, config.num_hidden_layers
    self.encoder = _mlp([config.data_dim] + [h] * n, rngs)
    width = h if n else config.data_dim
    self.loc_head = nnx.Linear(width, d, rngs=rngs)
    self.scale_head = nnx.Linear(width, 1 if config.distribution == "riemannian" else d,
                                 rngs=rngs)
    if config.decoder == "gyroplane":
      self.gyroplane = GyroplaneLayer(d, h, c=self.c[...], rngs=rngs)
      sizes = [h] * n
    else:
      self.gyroplane = None
      sizes = [d] + [h] * n
    self.decoder = _mlp(sizes, rngs)
    self.output = nnx.Linear(h if (n or config.decoder == "gyroplane") else d, config.data_dim,
                             rngs=rngs)
    raw = jnp.zeros((), jnp.float32)
    self.prior_raw_scale = nnx.Param(raw) if config.learn_prior_scale else nnx.Variable(raw)

  # ----------------------------------------------------------------------------- distributions
  def prior_scale(self) -> jax.Array:
    """The prior's scale: ``prior_scale * softplus(t) / log 2`` (= ``prior_scale`` at ``t = 0``)."""
    return self.config.prior_scale * jax.nn.softplus(self.prior_raw_scale[...]) / math.log(2.0)

  def _distribution(self, loc: jax.Array, scale: jax.Array) -> distrax.Distribution:
    kind = self.config.distribution
    if kind == "normal":
      return core.DiagonalNormal(loc, scale)
    if kind == "wrapped":
      return WrappedNormal(loc, jnp.broadcast_to(scale, loc.shape), self.c[...])
    return RiemannianNormal(loc, scale, self.c[...])

  def prior(self) -> distrax.Distribution:
    """``p(z)``: the chosen family at the origin with the (possibly learned) prior scale."""
    loc = jnp.zeros((self.config.latent_dim,), jnp.float32)
    return self._distribution(loc, self.prior_scale())

  def encode(self, x: ArrayLike) -> tuple[jax.Array, jax.Array]:
    """Posterior parameters of observations ``x`` (..., data_dim).

    Returns:
      ``(loc, scale)``: ``loc`` (..., d), on the ball for the P-VAE; ``scale`` (..., d), or (...)
      for the Riemannian normal. For the P-VAE both are kept within :func:`posterior_limits`.
    """
    h = jnp.asarray(x, jnp.float32)
    for layer in self.encoder:
      h = self.config.activation(layer(h))
    u = self.loc_head(h)
    scale = jax.nn.softplus(self.scale_head(h)) + _SCALE_FLOOR
    if self.config.distribution == "riemannian":
      scale = scale[..., 0]
    if not self.config.hyperbolic:
      return u, scale
    c = self.c[...]
    max_distance, max_scale = posterior_limits(self.config.distribution, self.config.latent_dim,
                                               c, u.dtype)
    # d(0, exp_0(u)) = 2|u|: squash |u| smoothly below max_distance / 2 (identity near 0).
    rho = 0.5 * max_distance
    norm = jnp.sqrt(manifold.event_sum(jnp.square(u)) + 1e-12)[..., None]
    u = u * (rho * jnp.tanh(norm / rho) / norm)
    return manifold.expmap0(u, c), jnp.minimum(scale, max_scale)

  def posterior(self, x: ArrayLike) -> distrax.Distribution:
    """``q(z | x)`` for observations ``x`` (..., data_dim) (batch shape ``x.shape[:-1]``)."""
    return self._distribution(*self.encode(x))

  def decode(self, z: ArrayLike) -> jax.Array:
    """The likelihood's parameter for latents ``z`` (..., d): Gaussian means or Bernoulli logits."""
    h = jnp.asarray(z)
    if self.config.decoder == "wrapped":
      h = manifold.logmap0(h, self.c[...])
    elif self.config.decoder == "gyroplane":
      h = self.config.activation(self.gyroplane(h))
    for layer in self.decoder:
      h = self.config.activation(layer(h))
    return self.output(h)

  def log_likelihood(self, x: ArrayLike, z: ArrayLike) -> jax.Array:
    """``log p(x | z)`` summed over the observation's entries; broadcasts ``x`` against ``z``."""
    out = self.decode(z)
    x = jnp.asarray(x, out.dtype)
    shape = jnp.broadcast_shapes(x.shape, out.shape)
    x, out = jnp.broadcast_to(x, shape), jnp.broadcast_to(out, shape)
    if self.config.likelihood == "gaussian":
      ll = -0.5 * (jnp.square(x - out) + _LOG_2PI)
    else:
      # Cross-entropy on grey levels in [0, 1] (the reference code's relaxed Bernoulli).
      ll = x * jax.nn.log_sigmoid(out) + (1.0 - x) * jax.nn.log_sigmoid(-out)
    return jnp.sum(ll, axis=-1)


def make_vae(config: VAEConfig, *, rngs: nnx.Rngs, c: ArrayLike | None = None) -> VAE:
  """Builds the :class:`VAE` described by ``config`` (``c`` overrides ``config.c``).

  Example:
    >>> cfg = VAEConfig(data_dim=50, latent_dim=2, distribution="wrapped", c=1.2)
    >>> model = make_vae(cfg, rngs=nnx.Rngs(0))
    >>> elbo(model, jax.random.key(1), jnp.zeros(50)).elbo.shape
    ()
  """
  if not isinstance(config, VAEConfig):
    raise TypeError(f"config must be a VAEConfig, got {type(config).__name__}")
  return VAE(config, c=c, rngs=rngs)


def _check_example(model: VAE, x: jax.Array) -> None:
  if x.shape != (model.config.data_dim,):
    raise ValueError(f"x must be one observation of shape ({model.config.data_dim},), got shape "
                     f"{x.shape}; vmap over a batch")


def _check_num_samples(num_samples: int) -> None:
  if not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
    raise ValueError(f"num_samples must be a positive integer, got num_samples={num_samples!r}")


def elbo(model: VAE, key: jax.Array, x: ArrayLike) -> ELBOTerms:
  """One-sample ELBO of one observation, with the Monte Carlo KL of the paper.

  .. math::  \\mathcal L(x) = \\log p_\\theta(x | z) + \\log p(z) - \\log q_\\phi(z | x),
     \\qquad z \\sim q_\\phi(z | x)\\ \\text{(reparameterised)}

  Args:
    model: a :class:`VAE`.
    key: PRNG key for the posterior sample.
    x: one observation, shape (data_dim,).

  Returns:
    :class:`ELBOTerms` of scalars.
  """
  x = jnp.asarray(x)
  _check_example(model, x)
  q = model.posterior(x)
  # log q at the draw itself (the P-VAE's samplers return it from the tangent vector / radius
  # they drew): the same value and gradient as q.log_prob(z), without mapping z back.
  z, log_q = q.sample_and_log_prob(seed=key)
  log_lik = model.log_likelihood(x, z)
  kl = log_q - model.prior().log_prob(z)
  return ELBOTerms(log_lik - kl, log_lik, kl)


def log_importance_weights(model: VAE, key: jax.Array, x: ArrayLike,
                           num_samples: int) -> jax.Array:
  """``log p(x | z_k) + log p(z_k) - log q(z_k | x)`` for ``num_samples`` draws ``z_k ~ q(z | x)``.

  Args:
    model: a :class:`VAE`.
    key: PRNG key (with ``num_samples = 1`` the draw is the one :func:`elbo` makes with it).
    x: one observation, shape (data_dim,).
    num_samples: K >= 1 (static).

  Returns:
    Log-weights of shape (K,).
  """
  _check_num_samples(num_samples)
  x = jnp.asarray(x)
  _check_example(model, x)
  q = model.posterior(x)
  z, log_q = q.sample_and_log_prob(seed=key, sample_shape=int(num_samples))
  return model.log_likelihood(x, z) + model.prior().log_prob(z) - log_q


def iwae_bound(model: VAE, key: jax.Array, x: ArrayLike, num_samples: int) -> jax.Array:
  """The importance-weighted bound on ``log p(x)`` for one observation (Burda et al. 2016).

  .. math::  \\mathcal L_K(x) = \\log \\frac1K \\sum_{k=1}^K
     \\frac{p_\\theta(x | z_k)\\, p(z_k)}{q_\\phi(z_k | x)}, \\qquad z_k \\sim q_\\phi(z | x)

  ``E[L_1] = ELBO <= E[L_K] <= E[L_{K+1}] <= log p(x)``, and ``L_K -> log p(x)`` as ``K`` grows;
  the paper reports it with K = 5000 as the test marginal log-likelihood. With ``K = 1`` and the
  same key it equals :func:`elbo`'s estimate. The estimator is the library's one,
  :func:`tomioka_jax.core.log_mean_exp`, of :func:`log_importance_weights`.

  Args:
    model: a :class:`VAE`.
    key: PRNG key.
    x: one observation, shape (data_dim,).
    num_samples: K >= 1 (static).

  Returns:
    A scalar.
  """
  return core.log_mean_exp(log_importance_weights(model, key, x, num_samples))


def vae_loss(model: VAE, batch: dict[str, jax.Array], rng: jax.Array):
  """Minus the mean ELBO of ``batch["x"]`` (B, D), for :func:`tomioka_jax.core.make_train_step`."""
  x = batch["x"]
  terms = jax.vmap(lambda k, xi: elbo(model, k, xi))(jax.random.split(rng, x.shape[0]), x)
  mean = jax.tree.map(jnp.mean, terms)
  return -mean.elbo, {"elbo": mean.elbo, "log_likelihood": mean.log_likelihood, "kl": mean.kl}


def abstract_graphdef(config: VAEConfig) -> nnx.GraphDef:
  """The :class:`VAE`'s static structure, without allocating parameters."""
  return nnx.graphdef(nnx.eval_shape(lambda: make_vae(config, rngs=nnx.Rngs(0))))


def make_train(config: VAEConfig, *, batch_size: int, epochs: int, learning_rate: float = 1e-3,
               optimizer: optax.GradientTransformation | None = None,
               output_bias: ArrayLike | None = None
               ) -> tuple[nnx.GraphDef, Callable[[jax.Array, ArrayLike, ArrayLike],
                                                 tuple[nnx.State, jax.Array]]]:
  """A whole training run as one compiled function ``train(key, c, x_train) -> (state, elbos)``.

  The library's scan trainer (:func:`tomioka_jax.core.make_scan_trainer`) on :func:`vae_loss`:
  shuffled minibatches each epoch (the last partial batch dropped, as the reference code),
  one-sample ELBO, AMSGrad (the reference's optimiser) unless ``optimizer`` is given.
  ``train`` initialises the model from ``key`` with curvature ``c`` (the N-VAE ignores it),
  trains on ``x_train`` (n, data_dim) and is jitted; ``jax.vmap`` it over keys (seeds),
  curvatures and data sets to train many models in one compiled call.
  ``nnx.merge(graphdef, state)`` rebuilds a trained model.

  Args:
    config: the model.
    batch_size, epochs: positive integers (``batch_size <= n``).
    learning_rate: for the default AMSGrad.
    optimizer: any optax transformation instead of AMSGrad.
    output_bias: initial bias of the decoder's output layer (e.g. the logit of the mean pixel).

  Returns:
    ``(graphdef, train)``; ``train(key, c, x_train)`` returns the final state (all model
    variables) and the mean training ELBO of every epoch.

  Example:
    >>> graphdef, train = make_train(VAEConfig(data_dim=50, distribution="wrapped"),
    ...                              batch_size=64, epochs=10)
    >>> x = jnp.zeros((128, 50))
    >>> cs = jnp.array([0.1, 0.3, 1.0, 1.5])  # four curvatures, one seed each
    >>> states, elbos = jax.vmap(train, (0, 0, None))(jax.random.split(jax.random.key(0), 4),
    ...                                               cs, x)
    >>> elbos.shape
    (4, 10)
  """
  opt = optax.amsgrad(learning_rate) if optimizer is None else optimizer
  graphdef = abstract_graphdef(config)
  trainer = core.make_scan_trainer(graphdef, vae_loss, opt, batch_size=batch_size,
                                   epochs=epochs)

  @jax.jit
  def train(key: jax.Array, c: ArrayLike, x_train: ArrayLike) -> tuple[nnx.State, jax.Array]:
    x_train = jnp.asarray(x_train, jnp.float32)
    if x_train.ndim != 2 or x_train.shape[1] != config.data_dim:
      raise ValueError(f"x_train must have shape (n, {config.data_dim}), got {x_train.shape}")
    init_key, step_key, shuffle_key = jax.random.split(key, 3)
    model = make_vae(config, rngs=nnx.Rngs(init_key), c=c)
    if output_bias is not None:
      model.output.bias[...] = jnp.broadcast_to(jnp.asarray(output_bias, jnp.float32),
                                                (config.data_dim,))
    _, state = core.create_train_state(model, opt, step_key)
    state, metrics = trainer(state, {"x": x_train}, shuffle_key)
    return nnx.merge_state(state.params, state.model_state), metrics["elbo"]

  return graphdef, train


def evaluate_iwae(graphdef: nnx.GraphDef, state: nnx.State, key: jax.Array, x: ArrayLike,
                  num_samples: int, *, batch_size: int = 64) -> jax.Array:
  """IWAE bounds of every row of ``x`` (n, data_dim) under the model ``(graphdef, state)``.

  Rows are processed ``batch_size`` at a time (``lax.map``) to bound memory at
  ``batch_size * num_samples`` decoder evaluations. Jit-able; ``vmap`` over states for seeds.

  Returns:
    Shape (n,).
  """
  _check_num_samples(num_samples)
  x = jnp.asarray(x, jnp.float32)
  model = nnx.merge(graphdef, state)
  n = x.shape[0]
  pad = (-n) % batch_size
  xs = jnp.concatenate([x, jnp.zeros((pad, x.shape[1]), x.dtype)]).reshape(-1, batch_size,
                                                                         x.shape[1])
  keys = jax.random.split(key, xs.shape[0] * batch_size).reshape(xs.shape[0], batch_size)

  def chunk(inputs):
    xb, kb = inputs
    return jax.vmap(lambda k, xi: iwae_bound(model, k, xi, num_samples))(kb, xb)

  return jax.lax.map(chunk, (xs, keys)).reshape(-1)[:n]


__all__ = [
    "DECODERS",
    "DISTRIBUTIONS",
    "LIKELIHOODS",
    "Curvature",
    "ELBOTerms",
    "VAE",
    "VAEConfig",
    "abstract_graphdef",
    "elbo",
    "evaluate_iwae",
    "iwae_bound",
    "log_importance_weights",
    "make_train",
    "posterior_limits",
    "representable_radius",
    "make_vae",
    "vae_loss",
]
