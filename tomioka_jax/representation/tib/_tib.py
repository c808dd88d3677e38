"""T-InfoMax and T-IB encoders, the latent transition model, two-stage training, simulation.

Federici, Forré, Tomioka, Veeling 2023. An encoder ``q(z | x)`` of a Markov process ``x_t`` is
trained on time-lagged pairs ``(x_{t-tau}, x_t)``:

* **T-InfoMax** maximises the autoinformation ``AI(z; tau) = I(z_{t-tau}; z_t)`` through InfoNCE
  with a separable critic ``f(z, z') = <g(z), h(z')>``;
* **T-IB** also penalises the superfluous information ``I(x_t; z_t | z_{t-tau})`` by its upper
  bound ``E KL(q(z_t | x_t) || q_phi(z_t | z_{t-tau}))`` with a Gaussian stochastic encoder and a
  learned transition model ``q_phi``:

  .. math::  \\mathcal L_{T\\text{-}IB} = -\\hat I_{NCE}(z_{t-\\tau}; z_t)
             + \\beta\\, E\\big[\\log q(z_t | x_t) - \\log q_\\phi(z_t | z_{t-\\tau})\\big].

Two stages: the encoder (with its critic, and for T-IB the transition model of the bound);
then, the encoder frozen, a fresh transition model ``q_phi(z_t | z_{t-tau})`` and a predictor
``q_psi(y_t | z_t)`` of the target label, fitted by likelihood on encoded pairs (standardized by
the training latents' mean and deviation). Latent simulation encodes a start, unrolls
``q_phi`` in steps of ``tau`` and decodes ``y`` with ``q_psi``.

``q_phi`` is a conditional normalizing flow built on distrax bijectors: a conditional diagonal
Gaussian base (mean and scale bounded functions of the context clipped to the splines' range,
so that unrolled simulations stay bounded) followed by rational-quadratic spline
couplings (``distrax.MaskedCoupling`` + ``distrax.RationalQuadraticSpline``) whose conditioner
sees the unmasked coordinates and the context ``z_{t-tau}``; for a 1-D latent the mask is
empty and each layer is a spline of ``z_t`` conditioned on the context alone. The paper uses a
Flow++ model; this is a smaller flow of the same kind.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.typing import ArrayLike

from tomioka_jax import core
from tomioka_jax.representation.tib import _estimators as est
from tomioka_jax.representation.tib import _prinz as prinz

_LOG_VAR_RANGE = (-10.0, 4.0)


class ConditionalFlow(nnx.Module):
  """A conditional normalizing flow ``q(z | context)`` over ``z_dim`` coordinates (distrax).

  Args:
    z_dim: dimension of ``z`` and of the context.
    hidden: width of the base and conditioner networks.
    num_layers: spline coupling layers (masks alternate between odd and even coordinates).
    num_bins: spline bins; the splines act on ``[-bound, bound]`` (identity outside).
    rngs: NNX random streams.
  """

  def __init__(self, z_dim: int, *, hidden: int = 64, num_layers: int = 2, num_bins: int = 8,
               bound: float = 5.0, rngs: nnx.Rngs):
    self.z_dim, self.num_bins, self.bound = z_dim, num_bins, bound
    self.base = core.MLP(z_dim, (hidden, hidden), 2 * z_dim, rngs=rngs)
    self.conditioners = nnx.List([
        core.MLP(2 * z_dim, (hidden,), z_dim * (3 * num_bins + 1), rngs=rngs)
        for _ in range(num_layers)])

  def distribution(self, context: jax.Array) -> distrax.Distribution:
    """The flow's law of ``z`` for each row of ``context`` ``(B, z_dim)`` (batch shape ``(B,)``)."""
    # a bounded function of a clipped context: unrolling the model cannot run away
    context = jnp.clip(context, -self.bound, self.bound)
    out = self.base(context)
    loc = self.bound * jnp.tanh(out[:, :self.z_dim] / self.bound)
    scale = jnp.exp(jnp.clip(out[:, self.z_dim:], -7.0, 3.0))
    layers = []
    for i, net in enumerate(self.conditioners):
      if self.z_dim == 1:
        mask = np.zeros((1,), bool)
      else:
        mask = (np.arange(self.z_dim) % 2) == (i % 2)

      def conditioner(masked, net=net):
        params = net(jnp.concatenate([masked, context], axis=-1))
        return params.reshape(params.shape[0], self.z_dim, 3 * self.num_bins + 1)

      layers.append(distrax.MaskedCoupling(
          mask=jnp.asarray(mask), conditioner=conditioner,
          bijector=lambda p: distrax.RationalQuadraticSpline(p, -self.bound, self.bound)))
    return distrax.Transformed(core.DiagonalNormal(loc, scale), distrax.Chain(layers))

  def log_prob(self, z: jax.Array, context: jax.Array) -> jax.Array:
    """``log q(z | context)`` per row, ``(B,)``."""
    return self.distribution(context).log_prob(z)

  def sample(self, key: jax.Array, context: jax.Array) -> jax.Array:
    """One draw of ``z`` per row of ``context``, ``(B, z_dim)``."""
    return self.distribution(context).sample(seed=key)


class TIBEncoderModel(nnx.Module):
  """Stage one: the Gaussian encoder ``q(z | x)``, the separable critic and ``q_phi``."""

  def __init__(self, x_dim: int, z_dim: int, *, hidden: Sequence[int] = (64, 64),
               critic_hidden: int = 64, critic_dim: int = 32, flow_hidden: int = 64,
               flow_layers: int = 2, rngs: nnx.Rngs):
    self.z_dim = z_dim
    self.encoder = core.MLP(x_dim, tuple(hidden), 2 * z_dim, rngs=rngs)
    self.critic_a = core.MLP(z_dim, (critic_hidden,), critic_dim, rngs=rngs)
    self.critic_b = core.MLP(z_dim, (critic_hidden,), critic_dim, rngs=rngs)
    self.transition = ConditionalFlow(z_dim, hidden=flow_hidden, num_layers=flow_layers,
                                      rngs=rngs)

  def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean and log-variance of ``q(z | x)``."""
    out = self.encoder(x)
    return out[:, :self.z_dim], jnp.clip(out[:, self.z_dim:], *_LOG_VAR_RANGE)


def make_tib_loss(beta: float | jax.Array, *, stochastic: bool = True):
  """The stage-one loss: ``-InfoNCE(z_{t-tau}; z_t) + beta E KL(q(z_t|x_t) || q_phi(z_t|z_{t-tau}))``.

  ``beta = 0`` with ``stochastic=False`` is T-InfoMax (deterministic ``z`` = the encoder's
  mean); ``beta > 0`` is T-IB (``stochastic`` must then be True: the KL needs a density). The
  KL is a one-sample Monte Carlo estimate with reparameterised ``z``; its gradient reaches the
  encoder through both ``z_t`` and ``z_{t-tau}``, and the transition model.

  ``beta`` may be a traced scalar (a sweep of ``beta`` vmapped in one program,
  :func:`train_tib_sweep`): the KL term is then always computed (``stochastic`` must be True)
  and the checks on ``beta``'s value are skipped.
  """
  concrete = core.is_concrete(beta)
  if concrete and not beta >= 0:
    raise ValueError(f"beta must be >= 0, got beta={beta!r}")
  if (not concrete or beta > 0) and not stochastic:
    raise ValueError("T-IB (beta > 0) needs a stochastic encoder: got stochastic=False")
  penalized = not concrete or beta > 0

  def loss_fn(model: TIBEncoderModel, batch: dict[str, jax.Array], rng: jax.Array):
    m0, lv0 = model.encode(batch["x0"])
    mt, lvt = model.encode(batch["xt"])
    if stochastic:
      k0, kt = jax.random.split(rng)
      z0 = core.reparameterized_sample(k0, m0, lv0)
      zt = core.reparameterized_sample(kt, mt, lvt)
    else:
      z0, zt = m0, mt
    ai = est.infonce_lower_bound(est.critic_scores(model.critic_a(z0), model.critic_b(zt)))
    metrics = {"infonce": ai}
    loss = -ai
    if penalized:
      kl = jnp.mean(core.diag_gaussian_log_prob(zt, mt, lvt) - model.transition.log_prob(zt, z0))
      metrics["kl"] = kl
      loss = loss + beta * kl
    return loss, metrics

  return loss_fn


class TransitionModel(nnx.Module):
  """Stage two: ``q_phi(z_t | z_{t-tau})`` and the label predictor ``q_psi(y | z)``."""

  def __init__(self, z_dim: int, num_labels: int, *, flow_hidden: int = 64, flow_layers: int = 2,
               predictor_hidden: int = 64, rngs: nnx.Rngs):
    self.transition = ConditionalFlow(z_dim, hidden=flow_hidden, num_layers=flow_layers,
                                      rngs=rngs)
    self.predictor = core.MLP(z_dim, (predictor_hidden,), num_labels, rngs=rngs)


def transition_loss(model: TransitionModel, batch: dict[str, jax.Array], rng: jax.Array):
  """``-E log q_phi(z_t | z_{t-tau}) - E log q_psi(y_t | z_t)`` on encoded pairs."""
  del rng
  nll = -jnp.mean(model.transition.log_prob(batch["zt"], batch["z0"]))
  logits = model.predictor(batch["zt"])
  ce = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, batch["yt"]))
  return nll + ce, {"transition_nll": nll, "predictor_ce": ce}


class TIBFit(NamedTuple):
  """Two-stage fits, one per run (leading axis of every array leaf).

  A run is one seed (:func:`train_tib`) or one ``(beta, seed)`` pair of a sweep
  (:func:`train_tib_sweep`, run ``b * len(seeds) + s``); ``seed_index`` arguments index runs.

  Attributes:
    encoder_graphdef, encoder_states: stage one (:class:`TIBEncoderModel`).
    transition_graphdef, transition_states: stage two (:class:`TransitionModel`).
    latent_mean, latent_std: ``(runs, z_dim)`` standardization of stage two's latents.
    stochastic: whether ``z`` is sampled from ``q(z | x)`` (T-IB) or its mean (T-InfoMax).
    encoder_metrics, transition_metrics: per-step training metrics, ``(runs, steps)``.
    betas, seeds: ``(runs,)`` NumPy arrays, each run's ``beta`` and seed.
  """

  encoder_graphdef: nnx.GraphDef
  encoder_states: core.TrainState
  transition_graphdef: nnx.GraphDef
  transition_states: core.TrainState
  latent_mean: jax.Array
  latent_std: jax.Array
  stochastic: bool
  encoder_metrics: dict
  transition_metrics: dict
  betas: np.ndarray | None = None
  seeds: np.ndarray | None = None


def _check_sizes(**values) -> None:
  for name, v in values.items():
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
      raise ValueError(f"{name} must be a positive integer, got {name}={v!r}")


def train_tib(trajectories: ArrayLike, labels: ArrayLike, lag: int, *, beta: float,
              stochastic: bool | None = None, num_labels: int = prinz.NUM_WELLS,
              z_dim: int = 2, encoder_steps: int = 2000, transition_steps: int = 2000,
              batch_size: int = 256, learning_rate: float = 1e-3,
              hidden: Sequence[int] = (64, 64), flow_layers: int = 2,
              seeds: Sequence[int] = (0,)) -> TIBFit:
  """Two-stage T-IB (``beta > 0``) or T-InfoMax (``beta = 0``) training, all seeds one program.

  Stage one runs ``core.make_sampler_trainer`` on :func:`make_tib_loss` (each step draws
  ``batch_size`` lagged pairs with replacement); stage two encodes every training pair with the
  frozen encoder, standardizes, and runs a second sampler trainer on :func:`transition_loss`
  (a fresh ``z`` drawn from ``q(z | x)`` per step for T-IB). Both stages of every seed are one
  ``jax.jit(jax.vmap(...))``.

  Args:
    trajectories: ``(n, T, d)`` coordinates; labels: ``(n, T)`` integer targets.
    lag: ``tau`` in frames.
    beta: the superfluous-information weight (0: T-InfoMax).
    stochastic: Gaussian encoder sampled (default: ``beta > 0``).
    num_labels, z_dim, hidden, flow_layers: sizes.
    encoder_steps, transition_steps, batch_size, learning_rate: the two Adam runs.
    seeds: one run each.

  Raises:
    ValueError: bad ``lag`` (see :func:`lagged_pairs`), ``beta``, sizes or labels.
  """
  stochastic = beta > 0 if stochastic is None else stochastic
  make_tib_loss(beta, stochastic=stochastic)  # checks beta and stochastic
  seeds = tuple(int(s) for s in seeds)
  return _train_runs(trajectories, labels, lag, betas=(float(beta),) * len(seeds), seeds=seeds,
                     traced_beta=False, stochastic=stochastic, num_labels=num_labels,
                     z_dim=z_dim, encoder_steps=encoder_steps,
                     transition_steps=transition_steps, batch_size=batch_size,
                     learning_rate=learning_rate, hidden=hidden, flow_layers=flow_layers)


def train_tib_sweep(trajectories: ArrayLike, labels: ArrayLike, lag: int,
                    betas: Sequence[float], *, seeds: Sequence[int] = (0,),
                    num_labels: int = prinz.NUM_WELLS, z_dim: int = 2,
                    encoder_steps: int = 2000, transition_steps: int = 2000,
                    batch_size: int = 256, learning_rate: float = 1e-3,
                    hidden: Sequence[int] = (64, 64), flow_layers: int = 2) -> TIBFit:
  """T-IB for every ``(beta, seed)`` pair of a grid, all runs one ``jit(vmap)`` program.

  The same two stages as :func:`train_tib` with a stochastic encoder; ``beta`` is a traced
  per-run scalar, so the whole grid compiles once. Run ``b * len(seeds) + s`` is ``betas[b]``
  with ``seeds[s]``; runs with the same seed share the initialization and the minibatch draws
  (common random numbers: differences between ``beta`` values are not seed noise).
  ``beta = 0`` in the grid is the stochastic T-InfoMax (the KL is computed, weighted by 0).

  Raises:
    ValueError: an empty grid or a negative ``beta``, and as :func:`train_tib`.
  """
  betas = tuple(float(b) for b in betas)
  if not betas or not all(b >= 0 and math.isfinite(b) for b in betas):
    raise ValueError(f"betas must be a non-empty sequence of finite values >= 0, got "
                     f"betas={betas!r}")
  seeds = tuple(int(s) for s in seeds)
  if not seeds:
    raise ValueError("seeds must be a non-empty sequence of integers, got seeds=()")
  return _train_runs(trajectories, labels, lag, betas=tuple(b for b in betas for _ in seeds),
                     seeds=seeds * len(betas), traced_beta=True, stochastic=True,
                     num_labels=num_labels, z_dim=z_dim, encoder_steps=encoder_steps,
                     transition_steps=transition_steps, batch_size=batch_size,
                     learning_rate=learning_rate, hidden=hidden, flow_layers=flow_layers)


def _train_runs(trajectories, labels, lag, *, betas, seeds, traced_beta, stochastic, num_labels,
                z_dim, encoder_steps, transition_steps, batch_size, learning_rate, hidden,
                flow_layers) -> TIBFit:
  _check_sizes(z_dim=z_dim, encoder_steps=encoder_steps, transition_steps=transition_steps,
               batch_size=batch_size)
  x0, xt = prinz.lagged_pairs(trajectories, lag)
  _, yt = prinz.lagged_pairs(jnp.asarray(labels, jnp.int32), lag)
  if int(jnp.min(yt)) < 0 or int(jnp.max(yt)) >= num_labels:
    raise ValueError(f"labels must lie in [0, {num_labels})")
  opt = optax.adam(learning_rate)
  states1, states2 = [], []
  for seed in seeds:
    m1 = TIBEncoderModel(x0.shape[1], z_dim, hidden=hidden, flow_layers=flow_layers,
                         rngs=nnx.Rngs(seed))
    g1, s1 = core.create_train_state(m1, opt, jax.random.key(seed))
    m2 = TransitionModel(z_dim, num_labels, flow_layers=flow_layers, rngs=nnx.Rngs(seed + 7919))
    g2, s2 = core.create_train_state(m2, opt, jax.random.fold_in(jax.random.key(seed), 3))
    states1.append(s1)
    states2.append(s2)
  stack = lambda states: jax.tree.map(lambda *a: jnp.stack(a), *states)
  states1, states2 = stack(states1), stack(states2)
  n = x0.shape[0]

  def sample_x(key):
    idx = jax.random.randint(key, (batch_size,), 0, n)
    return {"x0": x0[idx], "xt": xt[idx]}

  def run(s1, s2, key, beta):
    k1, k2 = jax.random.split(key)
    loss1 = make_tib_loss(beta if traced_beta else betas[0], stochastic=stochastic)
    train1 = core.make_sampler_trainer(g1, loss1, opt, sample=sample_x, steps=encoder_steps)
    s1, metrics1 = train1(s1, k1)
    model = nnx.merge(g1, s1.params, s1.model_state)
    m0, lv0 = model.encode(x0)
    mt, lvt = model.encode(xt)
    mu = jnp.mean(mt, axis=0)
    sd = jnp.std(mt, axis=0) + 1e-6
    if not stochastic:
      lv0, lvt = jnp.full_like(lv0, -jnp.inf), jnp.full_like(lvt, -jnp.inf)

    def sample_z(key):
      ki, k0, kt = jax.random.split(key, 3)
      idx = jax.random.randint(ki, (batch_size,), 0, n)
      z0 = core.reparameterized_sample(k0, m0[idx], lv0[idx])
      zt = core.reparameterized_sample(kt, mt[idx], lvt[idx])
      return {"z0": (z0 - mu[None]) / sd[None], "zt": (zt - mu[None]) / sd[None], "yt": yt[idx]}

    train2 = core.make_sampler_trainer(g2, transition_loss, opt, sample=sample_z,
                                       steps=transition_steps)
    s2, metrics2 = train2(s2, k2)
    return s1, s2, mu, sd, metrics1, metrics2

  keys = jax.vmap(lambda s: jax.random.fold_in(jax.random.key(s), 1))(jnp.asarray(seeds))
  beta_arr = jnp.asarray(betas, jnp.float32)
  s1, s2, mu, sd, metrics1, metrics2 = jax.jit(jax.vmap(run))(states1, states2, keys, beta_arr)
  return TIBFit(encoder_graphdef=g1, encoder_states=s1, transition_graphdef=g2,
                transition_states=s2, latent_mean=mu, latent_std=sd, stochastic=stochastic,
                encoder_metrics=jax.tree.map(np.asarray, metrics1),
                transition_metrics=jax.tree.map(np.asarray, metrics2),
                betas=np.asarray(betas, np.float64), seeds=np.asarray(seeds, np.int64))


def take_runs(fit: TIBFit, runs: Sequence[int]) -> TIBFit:
  """The sub-fit of the given run indices (e.g. one ``beta``'s seeds of a sweep)."""
  idx = np.asarray(runs, np.int64)
  num = fit.latent_mean.shape[0]
  if idx.ndim != 1 or idx.size == 0 or idx.min() < 0 or idx.max() >= num:
    raise ValueError(f"runs must be a non-empty list of run indices in [0, {num}), got "
                     f"runs={list(np.asarray(runs).ravel())!r}")
  pick = lambda tree: jax.tree.map(lambda a: a[idx], tree)
  return fit._replace(encoder_states=pick(fit.encoder_states),
                      transition_states=pick(fit.transition_states),
                      latent_mean=fit.latent_mean[idx], latent_std=fit.latent_std[idx],
                      encoder_metrics=pick(fit.encoder_metrics),
                      transition_metrics=pick(fit.transition_metrics),
                      betas=None if fit.betas is None else fit.betas[idx],
                      seeds=None if fit.seeds is None else fit.seeds[idx])


def _seed(fit: TIBFit, seed_index: int):
  pick = lambda tree: jax.tree.map(lambda a: a[seed_index], tree)
  return (pick(fit.encoder_states), pick(fit.transition_states), fit.latent_mean[seed_index],
          fit.latent_std[seed_index])


def encode_latent(fit: TIBFit, seed_index: int, key: jax.Array, x: ArrayLike) -> jax.Array:
  """Standardized latents of ``(M, d)`` points (sampled from ``q(z|x)`` for T-IB)."""
  s1, _, mu, sd = _seed(fit, seed_index)
  return _encode(fit.encoder_graphdef, fit.stochastic, s1, mu, sd, key, jnp.asarray(x))


def _encode(g1, stochastic, s1, mu, sd, key, x):
  model = nnx.merge(g1, s1.params, s1.model_state)
  m, lv = model.encode(x)
  z = core.reparameterized_sample(key, m, lv) if stochastic else m
  return (z - mu[None]) / sd[None]


def simulate_latent(fit: TIBFit, seed_index: int, key: jax.Array, x_start: ArrayLike,
                    steps: int) -> tuple[jax.Array, jax.Array]:
  """Latent simulation: encode ``x_start`` ``(M, d)``, unroll ``q_phi`` ``steps`` times (each a
  lag ``tau``) in ``lax.scan``, decode a label from ``q_psi(y | z)`` at every step.

  Returns ``(z, y)``: ``(M, steps + 1, z_dim)`` latents and ``(M, steps + 1)`` labels.
  """
  if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
    raise ValueError(f"steps must be a positive integer, got steps={steps!r}")
  x_start = jnp.asarray(x_start)
  if core.is_concrete(x_start) and not bool(jnp.all(jnp.isfinite(x_start))):
    raise ValueError("x_start must have finite coordinates, got non-finite values")
  s1, s2, mu, sd = _seed(fit, seed_index)
  return _simulate(fit.encoder_graphdef, fit.transition_graphdef, fit.stochastic, steps,
                   s1, s2, mu, sd, key, x_start)


def _simulate_impl(g1, g2, stochastic, steps, s1, s2, mu, sd, key, x_start):
  k_enc, k_run = jax.random.split(key)
  z0 = _encode(g1, stochastic, s1, mu, sd, k_enc, x_start)
  model = nnx.merge(g2, s2.params, s2.model_state)

  def step(z, k):
    kz, ky = jax.random.split(k)
    y = jax.random.categorical(ky, model.predictor(z), axis=-1)
    return model.transition.sample(kz, z), (z, y)

  _, (zs, ys) = jax.lax.scan(step, z0, jax.random.split(k_run, steps + 1))
  return jnp.swapaxes(zs, 0, 1), ys.T.astype(jnp.int32)


_simulate = jax.jit(_simulate_impl, static_argnums=(0, 1, 2, 3))


def predict_labels(fit: TIBFit, seed_index: int, key: jax.Array, x: ArrayLike) -> jax.Array:
  """The most probable label under ``q_psi(y | z)`` for encoded ``(M, d)`` points."""
  _, s2, _, _ = _seed(fit, seed_index)
  z = encode_latent(fit, seed_index, key, x)
  model = nnx.merge(fit.transition_graphdef, s2.params, s2.model_state)
  return jnp.argmax(model.predictor(z), axis=-1).astype(jnp.int32)


def _simulate_runs_impl(g1, g2, stochastic, steps, s1, s2, mu, sd, key, x_start):
  one = lambda a, b, c, d: _simulate_impl(g1, g2, stochastic, steps, a, b, c, d, key, x_start)
  return jax.vmap(one)(s1, s2, mu, sd)


_simulate_runs = jax.jit(_simulate_runs_impl, static_argnums=(0, 1, 2, 3))


def latent_simulation_js(fit: TIBFit, key: jax.Array, trajectories: ArrayLike,
                         labels: ArrayLike, lag: int, *, starts: int = 256, steps: int = 50,
                         num_labels: int = prinz.NUM_WELLS) -> tuple[np.ndarray, np.ndarray]:
  """The paper's evaluation of a latent simulation, for every run of ``fit`` in one program.

  ``starts`` frames drawn uniformly from ``(n, T, d)`` reference ``trajectories`` are encoded
  and unrolled ``steps`` lags by :func:`simulate_latent` (all runs vmapped, one key: common
  random numbers); the simulated labels are compared with the reference ``labels`` by

  .. math::  JS\\big(\\hat p(y),\\, p(y)\\big), \\qquad
             JS\\big(\\hat p(y_t, y_{t+\\tau}),\\, p(y_t, y_{t+\\tau})\\big),

  the marginal over every simulated step and the joint of consecutive steps against the
  reference's histogram and its ``lag``-frame joint.

  Returns:
    ``(js_marginal, js_transition)``: two ``(runs,)`` NumPy arrays (nats).

  Raises:
    ValueError: ``starts`` or ``steps`` not a positive integer, ``labels`` not ``(n, T)`` in
      ``[0, num_labels)``, bad ``lag``.
  """
  _check_sizes(starts=starts, steps=steps)
  x = np.asarray(trajectories)
  y = np.asarray(labels)
  if x.ndim != 3 or y.shape != x.shape[:2]:
    raise ValueError(f"trajectories must be (n, T, d) and labels (n, T), got {x.shape} and "
                     f"{y.shape}")
  true_joint = est.lagged_joint(y, lag, num_labels)  # checks lag and the label range
  true_marginal = np.bincount(y.ravel(), minlength=num_labels) / y.size
  k_pick, k_sim = jax.random.split(key)
  flat = x.reshape(-1, x.shape[-1])
  pick = np.asarray(jax.random.randint(k_pick, (starts,), 0, flat.shape[0]))
  _, ys = _simulate_runs(fit.encoder_graphdef, fit.transition_graphdef, fit.stochastic, steps,
                         fit.encoder_states, fit.transition_states, fit.latent_mean,
                         fit.latent_std, k_sim, jnp.asarray(flat[pick]))
  ys = np.asarray(ys)
  js_m, js_t = [], []
  for sim in ys:
    marginal = np.bincount(sim.ravel(), minlength=num_labels) / sim.size
    js_m.append(float(est.js_divergence(marginal, true_marginal)))
    js_t.append(float(est.js_divergence(est.lagged_joint(sim, 1, num_labels), true_joint)))
  return np.asarray(js_m), np.asarray(js_t)


class TIBBetaSelection(NamedTuple):
  """The outcome of :func:`select_tib_beta`.

  Attributes:
    betas: ``(B,)`` the grid.
    js_marginal, js_transition: ``(B, S)`` validation JS divergences per ``beta`` and seed.
    score: ``(B,)`` the criterion, the seed mean of ``js_marginal + js_transition``.
    best_index, best_beta: the grid point of the lowest score.
    fit: every run of the sweep (run ``b * S + s``); best_fit: the best ``beta``'s ``S`` runs.
  """

  betas: np.ndarray
  js_marginal: np.ndarray
  js_transition: np.ndarray
  score: np.ndarray
  best_index: int
  best_beta: float
  fit: TIBFit
  best_fit: TIBFit


def select_tib_beta(trajectories: ArrayLike, labels: ArrayLike, val_trajectories: ArrayLike,
                    val_labels: ArrayLike, lag: int, betas: Sequence[float], *,
                    key: jax.Array, seeds: Sequence[int] = (0,), starts: int = 256,
                    sim_steps: int = 50, num_labels: int = prinz.NUM_WELLS,
                    **train_kwargs) -> TIBBetaSelection:
  """Chooses T-IB's ``beta`` on validation trajectories, the whole grid trained in one program.

  The paper compares T-IB over a grid of ``beta`` and reports the one chosen on validation
  data; the criterion is not stated in the notes we have, and the training objective cannot
  serve (its value depends on ``beta``: a larger ``beta`` always costs more nats, and the
  InfoNCE term alone always prefers ``beta = 0``). We select by the paper's own evaluation
  metric measured on held-out trajectories: each run of :func:`train_tib_sweep` is simulated
  from validation frames (:func:`latent_simulation_js`) and scored by

  .. math::  s(\\beta) = \\frac1S \\sum_{seeds} \\Big[JS_{marginal} + JS_{transition}\\Big],

  ``best_beta = argmin s``. Test trajectories are never seen.

  Args:
    trajectories, labels: training data, ``(n, T, d)`` and ``(n, T)``.
    val_trajectories, val_labels: validation data of the same kind.
    lag: ``tau`` in frames.
    betas: the grid (values >= 0).
    key: the validation starts and simulations.
    seeds: seeds per ``beta``.
    starts, sim_steps: the validation simulation's size.
    num_labels: label classes.
    **train_kwargs: the rest of :func:`train_tib_sweep`'s arguments (steps, sizes).

  Raises:
    ValueError: as :func:`train_tib_sweep` and :func:`latent_simulation_js`.
  """
  fit = train_tib_sweep(trajectories, labels, lag, betas, seeds=seeds, num_labels=num_labels,
                        **train_kwargs)
  js_m, js_t = latent_simulation_js(fit, key, val_trajectories, val_labels, lag, starts=starts,
                                    steps=sim_steps, num_labels=num_labels)
  num_b, num_s = len(tuple(betas)), len(tuple(seeds))
  js_m, js_t = js_m.reshape(num_b, num_s), js_t.reshape(num_b, num_s)
  score = (js_m + js_t).mean(axis=1)
  best = int(np.argmin(score))
  grid = np.asarray([float(b) for b in betas])
  return TIBBetaSelection(
      betas=grid, js_marginal=js_m, js_transition=js_t, score=score, best_index=best,
      best_beta=float(grid[best]), fit=fit,
      best_fit=take_runs(fit, range(best * num_s, (best + 1) * num_s)))
