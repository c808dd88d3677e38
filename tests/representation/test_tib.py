"""Tests of T-InfoMax / T-IB, the conditional flow and latent simulation (tib/_tib.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tomioka_jax import core
from tomioka_jax.representation.tib import _estimators as est
from tomioka_jax.representation.tib import _prinz as prinz
from tomioka_jax.representation.tib import _tib as tib


@pytest.mark.parametrize("z_dim", [1, 2])
def test_conditional_flow_density_integrates_to_one(z_dim):
  flow = tib.ConditionalFlow(z_dim, hidden=16, rngs=nnx.Rngs(0))
  context = jnp.full((1, z_dim), 0.3)
  g = np.linspace(-9, 9, 361 if z_dim == 1 else 181)
  h = g[1] - g[0]
  if z_dim == 1:
    pts = g[:, None]
  else:
    pts = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
  pts = jnp.asarray(pts, jnp.float32)
  ctx = jnp.broadcast_to(context, pts.shape)
  total = float(jnp.sum(jnp.exp(flow.log_prob(pts, ctx)))) * h**z_dim
  assert abs(total - 1.0) < 0.02, total
  z = flow.sample(jax.random.key(0), jnp.broadcast_to(context, (4000, z_dim)))
  assert z.shape == (4000, z_dim) and bool(jnp.all(jnp.isfinite(z)))
  # sample mean equals the density's mean
  dens = np.asarray(jnp.exp(flow.log_prob(pts, ctx))) * h**z_dim
  np.testing.assert_allclose(np.asarray(z.mean(0)), dens @ np.asarray(pts), atol=0.1)


def test_tib_loss_equals_its_equation():
  model = tib.TIBEncoderModel(2, 2, hidden=(16,), critic_hidden=16, critic_dim=8, flow_hidden=16,
                              rngs=nnx.Rngs(1))
  x = jax.random.normal(jax.random.key(2), (64 * 2,)).reshape(64, 2)
  batch = {"x0": x[:32], "xt": x[32:]}
  rng = jax.random.key(3)
  loss, metrics = tib.make_tib_loss(0.0, stochastic=False)(model, batch, rng)
  m0, _ = model.encode(batch["x0"])
  mt, _ = model.encode(batch["xt"])
  ref = -est.infonce_lower_bound(model.critic_a(m0) @ model.critic_b(mt).T)
  np.testing.assert_allclose(float(loss), float(ref), rtol=1e-6)
  beta = 0.7
  loss, metrics = tib.make_tib_loss(beta, stochastic=True)(model, batch, rng)
  k0, kt = jax.random.split(rng)
  m0, lv0 = model.encode(batch["x0"])
  mt, lvt = model.encode(batch["xt"])
  z0 = m0 + jnp.exp(0.5 * lv0) * jax.random.normal(k0, m0.shape)
  zt = mt + jnp.exp(0.5 * lvt) * jax.random.normal(kt, mt.shape)
  kl = jnp.mean(core.diag_gaussian_log_prob(zt, mt, lvt) - model.transition.log_prob(zt, z0))
  ai = est.infonce_lower_bound(model.critic_a(z0) @ model.critic_b(zt).T)
  np.testing.assert_allclose(float(metrics["kl"]), float(kl), rtol=1e-5)
  np.testing.assert_allclose(float(loss), float(-ai + beta * kl), rtol=1e-5)


def test_two_stage_training_and_latent_simulation():
  data = prinz.prinz_trajectories(jax.random.key(0), 4, 200)
  fit = tib.train_tib(data.x, data.y, 5, beta=0.01, z_dim=2, encoder_steps=60,
                      transition_steps=60, batch_size=64, hidden=(32,), seeds=(0, 1))
  info = fit.encoder_metrics["infonce"]
  assert info.shape == (2, 60) and fit.encoder_metrics["kl"].shape == (2, 60)
  assert np.all(info[:, -10:].mean(1) > info[:, :5].mean(1))
  nll = fit.transition_metrics["transition_nll"]
  assert np.all(nll[:, -10:].mean(1) < nll[:, :5].mean(1))
  z, y = tib.simulate_latent(fit, 1, jax.random.key(1), data.x[:, 0], 7)
  assert z.shape == (4, 8, 2) and y.shape == (4, 8)
  assert int(y.min()) >= 0 and int(y.max()) < 4 and bool(jnp.all(jnp.isfinite(z)))
  # the simulation's first latent is the standardized encoding of the start
  z0 = tib.encode_latent(fit, 1, jax.random.split(jax.random.key(1))[0], data.x[:, 0])
  np.testing.assert_allclose(np.asarray(z[:, 0]), np.asarray(z0), rtol=1e-5, atol=1e-5)


def test_bad_input():
  with pytest.raises(ValueError, match="beta must be >= 0"):
    tib.make_tib_loss(-1.0)
  with pytest.raises(ValueError, match="needs a stochastic encoder"):
    tib.make_tib_loss(1.0, stochastic=False)
  x = np.zeros((2, 10, 2), np.float32)
  y = np.zeros((2, 10), np.int32)
  with pytest.raises(ValueError, match="lag must be smaller than the trajectory length 10"):
    tib.train_tib(x, y, 10, beta=0.0)
  with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\)"):
    tib.train_tib(x, y + 4, 2, beta=0.0)
