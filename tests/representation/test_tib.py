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


def _js(p, q):
  p, q = np.asarray(p, np.float64).ravel(), np.asarray(q, np.float64).ravel()
  p, q = p / p.sum(), q / q.sum()
  m = (p + q) / 2
  kl = lambda a: np.sum(np.where(a > 0, a * np.log(np.where(a > 0, a, 1) / np.where(a > 0, m, 1)),
                                 0))
  return 0.5 * kl(p) + 0.5 * kl(q)


def test_beta_sweep_and_selection_on_validation():
  data = prinz.prinz_trajectories(jax.random.key(5), 6, 160)
  train_x, train_y, val_x, val_y = data.x[:4], data.y[:4], data.x[4:], data.y[4:]
  kw = dict(encoder_steps=30, transition_steps=30, batch_size=64, hidden=(16,))
  key = jax.random.key(9)
  sel = tib.select_tib_beta(train_x, train_y, val_x, val_y, 5, [0.0, 0.5], key=key,
                            seeds=(0, 1), starts=48, sim_steps=6, **kw)
  # runs are beta-major; the best fit is the best beta's seeds
  np.testing.assert_array_equal(sel.fit.betas, [0.0, 0.0, 0.5, 0.5])
  np.testing.assert_array_equal(sel.fit.seeds, [0, 1, 0, 1])
  assert sel.js_marginal.shape == (2, 2) and sel.js_transition.shape == (2, 2)
  np.testing.assert_allclose(sel.score, (sel.js_marginal + sel.js_transition).mean(1))
  assert sel.best_index == int(np.argmin(sel.score))
  assert sel.best_beta == [0.0, 0.5][sel.best_index]
  np.testing.assert_array_equal(sel.best_fit.betas, [sel.best_beta] * 2)
  np.testing.assert_allclose(sel.best_fit.encoder_metrics["infonce"],
                             sel.fit.encoder_metrics["infonce"][2 * sel.best_index:
                                                                2 * sel.best_index + 2])
  # the traced-beta sweep is train_tib's run: same first step, same loss equation
  single = tib.train_tib(train_x, train_y, 5, beta=0.5, seeds=(1,), **kw)
  np.testing.assert_allclose(single.encoder_metrics["kl"][0, 0],
                             sel.fit.encoder_metrics["kl"][3, 0], rtol=1e-4)
  np.testing.assert_allclose(single.encoder_metrics["infonce"][0, :10],
                             sel.fit.encoder_metrics["infonce"][3, :10], atol=1e-3)
  loss = sel.fit.encoder_metrics["loss"]
  np.testing.assert_allclose(loss, -sel.fit.encoder_metrics["infonce"]
                             + sel.fit.betas[:, None] * sel.fit.encoder_metrics["kl"],
                             rtol=1e-5, atol=1e-5)
  # the validation criterion against a slow reference: each run simulated alone
  k_pick, k_sim = jax.random.split(key)
  flat = val_x.reshape(-1, 2)
  pick = np.asarray(jax.random.randint(k_pick, (48,), 0, flat.shape[0]))
  true_joint = np.zeros((4, 4))
  for a, b in zip(val_y[:, :-5].ravel(), val_y[:, 5:].ravel()):
    true_joint[a, b] += 1
  for run in (0, 3):
    _, y = tib.simulate_latent(sel.fit, run, k_sim, flat[pick], 6)
    y = np.asarray(y)
    sim_joint = np.zeros((4, 4))
    for a, b in zip(y[:, :-1].ravel(), y[:, 1:].ravel()):
      sim_joint[a, b] += 1
    b, s = divmod(run, 2)
    np.testing.assert_allclose(sel.js_marginal[b, s],
                               _js(np.bincount(y.ravel(), minlength=4),
                                   np.bincount(val_y.ravel(), minlength=4)), atol=1e-5)
    np.testing.assert_allclose(sel.js_transition[b, s], _js(sim_joint, true_joint), atol=1e-5)


def test_sweep_and_selection_bad_input():
  x = np.zeros((2, 10, 2), np.float32)
  y = np.zeros((2, 10), np.int32)
  with pytest.raises(ValueError, match="betas must be a non-empty sequence"):
    tib.train_tib_sweep(x, y, 2, [])
  with pytest.raises(ValueError, match="betas must be a non-empty sequence"):
    tib.train_tib_sweep(x, y, 2, [0.1, -1.0])
  with pytest.raises(ValueError, match="seeds must be a non-empty"):
    tib.train_tib_sweep(x, y, 2, [0.1], seeds=())
  fake = tib.TIBFit(None, None, None, None, jnp.zeros((3, 2)), jnp.ones((3, 2)), True, {}, {})
  with pytest.raises(ValueError, match=r"runs must be a non-empty list of run indices in \[0, 3\)"):
    tib.take_runs(fake, [3])
  with pytest.raises(ValueError, match="starts must be a positive integer"):
    tib.latent_simulation_js(fake, jax.random.key(0), x, y, 2, starts=0)
  with pytest.raises(ValueError, match=r"trajectories must be \(n, T, d\) and labels \(n, T\)"):
    tib.latent_simulation_js(fake, jax.random.key(0), x, y[0], 2)
