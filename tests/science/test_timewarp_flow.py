"""Tests of science/timewarp/_flow.py: the conditional RealNVP's change of variables, its
normalization, kernel attention's symmetries, masking, random rotations and NLL training."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tomioka_jax.science.timewarp import _flow as fl
from tomioka_jax.science.timewarp import _toys as toys

SMALL = dict(num_couplings=2, num_layers=1, d_model=16, dim_feedforward=32,
             lengthscales=(0.3, 1.0), atom_embedding_dim=8)


def _random_flow(num_types=3, scale=None, seed=0, **kw):
  """A non-trivial flow: random output layers (optionally shrunk by ``scale``)."""
  cfg = dict(SMALL, **kw)
  flow = fl.TimewarpFlow(num_types, identity_init=False, rngs=nnx.Rngs(seed), **cfg)
  if scale is not None:
    for i, c in enumerate(flow.couplings):
      c.net.outp.kernel[...] = c.net.outp.kernel[...] * scale
      c.net.outp.bias[...] = scale * jax.random.normal(jax.random.key(100 + i), (6,))
  flow.positions_log_scale[...] = jnp.asarray(-0.4)
  flow.velocities_log_scale[...] = jnp.asarray(0.3)
  return flow


def _inputs(n=3, batch=(), seed=0):
  ks = jax.random.split(jax.random.key(seed), 4)
  shape = tuple(batch) + (n, 3)
  return [0.5 * jax.random.normal(k, shape) for k in ks]


def test_log_det_matches_brute_force_jacobian():
  flow = _random_flow()
  types = jnp.array([0, 2, 1])
  x, v, zx, zv = _inputs()
  out = flow.forward(types, x, v, zx, zv)

  def fwd(z):
    o = flow.forward(types, x, v, z[:9].reshape(3, 3), z[9:].reshape(3, 3))
    return jnp.concatenate([o.positions.ravel(), o.velocities.ravel()])

  jac = jax.jit(jax.jacobian(fwd))(jnp.concatenate([zx.ravel(), zv.ravel()]))
  _, brute = np.linalg.slogdet(np.asarray(jac, np.float64))
  assert abs(float(out.log_det)) > 0.1  # a non-trivial map
  np.testing.assert_allclose(float(out.log_det), brute, rtol=1e-4, atol=1e-4)
  # The inverse undoes it, with the opposite log-determinant.
  inv = flow.inverse(types, x, v, out.positions, out.velocities)
  np.testing.assert_allclose(inv.positions, zx, atol=2e-5)
  np.testing.assert_allclose(inv.velocities, zv, atol=2e-5)
  np.testing.assert_allclose(inv.log_det, -out.log_det, rtol=1e-5)


def test_sample_log_prob_consistent_with_log_prob_and_base_density():
  flow = _random_flow()
  types = jnp.array([1, 0, 2])
  x, v, _, _ = _inputs(batch=(5,))
  y, w, lp = flow.sample_and_log_prob(jax.random.key(3), types, x, v)
  np.testing.assert_allclose(lp, flow.log_prob(types, x, v, y, w), rtol=1e-5, atol=1e-4)
  # log p = log N(z; 0, e^{2a}) + log N(z_v; 0, e^{2b}) + log|det dz/dy|, recomputed by hand.
  inv = flow.inverse(types, x, v, y, w)
  a, b = -0.4, 0.3
  base = (np.sum(-0.5 * (np.asarray(inv.positions) / math.exp(a)) ** 2 - a, axis=(-1, -2))
          + np.sum(-0.5 * (np.asarray(inv.velocities) / math.exp(b)) ** 2 - b, axis=(-1, -2))
          - 18 * 0.5 * math.log(2 * math.pi))
  np.testing.assert_allclose(lp, base + np.asarray(inv.log_det), rtol=1e-5, atol=1e-4)


def test_density_integrates_to_one_by_importance_sampling():
  # One atom: a 6-dimensional density (displacement, velocity). E_q[p/q] = 1 with q a wide
  # Gaussian; the flow is random and far from Gaussian-with-unit-scale.
  flow = _random_flow(num_types=1, scale=0.3)
  x = jnp.array([[0.2, -0.1, 0.4]])
  v = jnp.array([[0.5, -1.0, 0.3]])
  types = jnp.array([0])
  log_prob = jax.jit(lambda y, w: flow.log_prob(types, jnp.broadcast_to(x, y.shape),
                                                jnp.broadcast_to(v, w.shape), y, w))
  # q: a diagonal Gaussian matched to the flow's samples, widened by 1.5 (any q with heavier
  # tails than p gives an unbiased estimate; the match only lowers its variance).
  ys, ws = flow.sample(jax.random.key(8), types, jnp.broadcast_to(x, (4000, 1, 3)),
                       jnp.broadcast_to(v, (4000, 1, 3)))
  s = np.concatenate([np.asarray(ys - x[None]).reshape(-1, 3), np.asarray(ws).reshape(-1, 3)], 1)
  mu, sd = s.mean(0), 1.5 * s.std(0)
  assert np.abs(s[:, :3].mean(0)).max() > 0.05  # the flow moved the mean: p is not the base
  num = 200_000
  e = np.asarray(jax.random.normal(jax.random.key(7), (num, 6)), np.float64)
  z = mu[None] + sd[None] * e
  log_q = np.sum(-0.5 * e ** 2 - np.log(sd)[None] - 0.5 * math.log(2 * math.pi), axis=1)
  y = jnp.asarray(z[:, None, :3] + np.asarray(x)[None], jnp.float32)
  w = jnp.asarray(z[:, None, 3:], jnp.float32)
  log_p = np.asarray(log_prob(y, w), np.float64)
  ratio = np.exp(log_p - log_q)
  est, err = ratio.mean(), ratio.std() / math.sqrt(num)
  assert err < 0.01, (est, err)
  assert abs(est - 1.0) < 4 * err + 1e-3, (est, err)


def test_kernel_attention_matches_slow_reference_and_mask():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(5, 3)).astype(np.float32)
  ls = (0.5, 1.5)
  mask = np.array([True, True, False, True, True])
  got = np.asarray(fl.kernel_attention_weights(x, ls, mask))
  want = np.zeros((2, 5, 5))
  for h, l in enumerate(ls):
    for i in range(5):
      row = np.array([math.exp(-np.sum((x[i] - x[j]) ** 2) / l ** 2) * mask[j]
                      for j in range(5)])
      want[h, i] = row / row.sum()
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_permutation_equivariance_and_translation_invariance():
  flow = _random_flow()
  n = 4
  types = jnp.array([0, 1, 2, 1])
  x, v, zx, zv = _inputs(n=n, seed=1)
  out = flow.forward(types, x, v, zx, zv)
  perm = jnp.array([2, 0, 3, 1])
  out_p = flow.forward(types[perm], x[perm], v[perm], zx[perm], zv[perm])
  np.testing.assert_allclose(out_p.positions, out.positions[perm], atol=1e-5)
  np.testing.assert_allclose(out_p.velocities, out.velocities[perm], atol=1e-5)
  np.testing.assert_allclose(out_p.log_det, out.log_det, rtol=1e-5)
  lp = flow.log_prob(types, x, v, out.positions, out.velocities)
  np.testing.assert_allclose(
      flow.log_prob(types[perm], x[perm], v[perm], out.positions[perm], out.velocities[perm]),
      lp, rtol=1e-5)
  # Translating the conditioning state translates the samples and keeps the density.
  shift = jnp.array([[1.3, -0.7, 2.1]])
  out_t = flow.forward(types, x + shift, v, zx, zv)
  np.testing.assert_allclose(out_t.positions, out.positions + shift, atol=1e-5)
  np.testing.assert_allclose(out_t.velocities, out.velocities, atol=1e-5)
  np.testing.assert_allclose(flow.log_prob(types, x + shift, v, out.positions + shift,
                                           out.velocities), lp, rtol=1e-5)
  # Not rotation equivariant (per-axis scales): a check that the last test can fail.
  r = fl.random_rotation(jax.random.key(0))
  rot = flow.log_prob(types, x @ r.T, v, out.positions @ r.T, out.velocities)
  assert float(jnp.abs(rot - lp)) > 1e-3


def test_padded_atoms_are_ignored():
  flow = _random_flow()
  types = jnp.array([0, 1, 2])
  x, v, y, w = _inputs(n=3, seed=2)
  lp = flow.log_prob(types, x, v, y, w)
  junk = 5.0 * jnp.ones((2, 3))
  pad = lambda a: jnp.concatenate([a, junk], axis=0)
  mask = jnp.array([True, True, True, False, False])
  lp_pad = flow.log_prob(jnp.array([0, 1, 2, 2, 0]), pad(x), pad(v), pad(y), pad(w), mask)
  np.testing.assert_allclose(lp_pad, lp, rtol=1e-5)
  yp, wp = flow.sample(jax.random.key(0), jnp.array([0, 1, 2, 2, 0]), pad(x), pad(v), mask)
  np.testing.assert_allclose(yp[3:], junk)
  np.testing.assert_allclose(wp[3:], 0.0)


def test_random_rotations_are_proper_and_haar_moments():
  r = np.asarray(fl.random_rotation(jax.random.key(0), (20000,)), np.float64)
  np.testing.assert_allclose(np.einsum("bij,bkj->bik", r, r), np.broadcast_to(np.eye(3), r.shape),
                             atol=1e-5)
  np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-5)
  # Haar measure on SO(3): E[R] = 0, E[R_ij^2] = 1/3, E[tr R] = 0.
  np.testing.assert_allclose(r.mean(0), 0.0, atol=0.02)
  np.testing.assert_allclose((r ** 2).mean(0), 1.0 / 3.0, atol=0.02)


def test_nll_loss_and_training_on_dimer_pairs():
  system = toys.double_well_dimer()
  traj = toys.simulate_langevin(system.energy, np.stack([system.positions] * 8),
                                jax.random.key(0), masses=system.masses, kT=system.kT,
                                friction=1.0, timestep=0.01, num_frames=40, spacing=10)
  x = np.asarray(traj[:, :-1]).reshape(-1, 2, 3)
  y = np.asarray(traj[:, 1:]).reshape(-1, 2, 3)
  flow = fl.TimewarpFlow(1, rngs=nnx.Rngs(0), **SMALL)
  # Without rotation the loss is -mean log p at the loss's own auxiliary velocities.
  batch = {"x": jnp.asarray(x[:16]), "y": jnp.asarray(y[:16]),
           "atom_types": jnp.zeros((16, 2), jnp.int32)}
  loss, metrics = fl.make_flow_loss(rotate=False)(flow, batch, jax.random.key(5))
  _, k_v, k_w = jax.random.split(jax.random.key(5), 3)
  v = jax.random.normal(k_v, (16, 2, 3))
  w = jax.random.normal(k_w, (16, 2, 3))
  want = -jnp.mean(flow.log_prob(batch["atom_types"], batch["x"], v, batch["y"], w))
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  np.testing.assert_allclose(metrics["nll_per_atom"], want / 2, rtol=1e-5)
  trained, m = fl.train_flow(flow, x, y, jax.random.key(1), atom_types=system.atom_types,
                             steps=120, batch_size=32, learning_rate=3e-3, warmup_steps=10)
  assert m["loss"].shape == (120,)
  assert m["loss"][-30:].mean() < m["loss"][:10].mean() - 1.0
  assert isinstance(trained, fl.TimewarpFlow)


def test_ad1_configuration_is_constructible():
  flow = nnx.eval_shape(lambda: fl.TimewarpFlow(12, **fl.AD1_FLOW_CONFIG, rngs=nnx.Rngs(0)))
  assert len(flow.couplings) == 8
  assert len(flow.couplings[0].net.layers) == 3
  assert flow.lengthscales == (0.1, 0.2, 0.5, 0.7, 1.0, 1.2)
  assert flow.couplings[0].net.layers[0].ff1.kernel.shape == (128, 2048)


def test_bad_input_raises():
  with pytest.raises(ValueError, match="num_couplings"):
    fl.TimewarpFlow(2, num_couplings=3, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="lengthscales"):
    fl.TimewarpFlow(2, lengthscales=(0.1, -1.0), rngs=nnx.Rngs(0))
  flow = _random_flow()
  x, v, y, w = _inputs(n=3)
  with pytest.raises(ValueError, match="atom_types"):
    flow.log_prob(jnp.array([0, 1]), x, v, y, w)  # 2 types for 3 atoms
  with pytest.raises(ValueError, match="atom_types must lie"):
    flow.log_prob(jnp.array([0, 1, 7]), x, v, y, w)
  with pytest.raises(ValueError, match="finite"):
    flow.log_prob(jnp.array([0, 1, 2]), x.at[0, 0].set(jnp.nan), v, y, w)
  with pytest.raises(ValueError, match="shape of x"):
    flow.log_prob(jnp.array([0, 1, 2]), x, v, y[:2], w)
  with pytest.raises(ValueError, match="steps"):
    fl.train_flow(flow, x[None], y[None], jax.random.key(0), atom_types=[0, 1, 2], steps=0)


def test_regularized_energy_difference():
  du = jnp.array([-5.0, 10.0, 99.0, 101.0, 1e12, jnp.inf])
  got = fl.regularized_energy_difference(du, 100.0)
  np.testing.assert_allclose(got[:3], du[:3])
  np.testing.assert_allclose(got[3], 100.0 + math.log(2.0), rtol=1e-6)
  np.testing.assert_allclose(got[4], 100.0 + math.log1p(1e12 - 100.0), rtol=1e-6)
  assert np.isfinite(got[5]) and got[5] > got[4]
  g = jax.grad(lambda d: jnp.sum(fl.regularized_energy_difference(d, 100.0)))(du)
  np.testing.assert_allclose(g[:3], 1.0)
  np.testing.assert_allclose(g[3], 0.5, rtol=1e-6)
  assert float(g[5]) == 0.0


def test_acceptance_loss_is_the_mean_negative_log_acceptance():
  system = toys.double_well_dimer()
  flow = _random_flow(num_types=1, scale=0.05)
  flow.positions_log_scale[...] = jnp.asarray(math.log(0.05))
  x = jnp.asarray(system.positions)[None] + 0.01 * jax.random.normal(jax.random.key(1), (8, 2, 3))
  y = x + 0.02 * jax.random.normal(jax.random.key(2), (8, 2, 3))
  batch = {"x": x, "y": y, "atom_types": jnp.zeros((8, 2), jnp.int32)}
  kT, cutoff = system.kT, 5.0
  loss_fn = fl.make_acceptance_loss(system.energy, kT, likelihood_weight=0.3,
                                    energy_cutoff=cutoff, rotate=False)
  loss, m = loss_fn(flow, batch, jax.random.key(3))
  # By hand, with the loss's own keys.
  _, k_nll, k_v, k_p = jax.random.split(jax.random.key(3), 4)
  nll, _ = fl.make_flow_loss(rotate=False)(flow, batch, k_nll)
  v = jax.random.normal(k_v, x.shape)
  prop, w, lp_fwd = flow.sample_and_log_prob(k_p, batch["atom_types"], x, v)
  lp_rev = flow.log_prob(batch["atom_types"], prop, w, x, v)
  du = system.energy(prop) - system.energy(x)
  delta = (fl.regularized_energy_difference(du, cutoff) / kT
           + 0.5 * (jnp.sum(w ** 2, (-1, -2)) - jnp.sum(v ** 2, (-1, -2))) + lp_fwd - lp_rev)
  want = jnp.mean(jnp.maximum(delta, 0.0)) + 0.3 * nll
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  exact = du / kT + delta - fl.regularized_energy_difference(du, cutoff) / kT
  np.testing.assert_allclose(m["acceptance"], jnp.mean(jnp.exp(-jnp.maximum(exact, 0.0))),
                             rtol=1e-5)
  # Fine-tuning with it raises the acceptance of a poor proposal (too wide for the dimer).
  flow.positions_log_scale[...] = jnp.asarray(math.log(0.3))
  tuned, mt = fl.train_flow(flow, x, y, jax.random.key(5), atom_types=[0, 0], steps=150,
                            batch_size=8, learning_rate=3e-3, warmup_steps=5,
                            loss_fn=fl.make_acceptance_loss(system.energy, kT,
                                                            likelihood_weight=0.0))
  assert mt["acceptance"].shape == (150,)
  assert mt["acceptance"][-30:].mean() > 2 * mt["acceptance"][:10].mean()
  with pytest.raises(ValueError, match="kT must be a finite number > 0"):
    fl.make_acceptance_loss(system.energy, 0.0)
  with pytest.raises(ValueError, match="energy_cutoff must be a finite number > 0"):
    fl.make_acceptance_loss(system.energy, 1.0, energy_cutoff=float("nan"))
  with pytest.raises(ValueError, match="likelihood_weight must be a finite number >= 0"):
    fl.make_acceptance_loss(system.energy, 1.0, likelihood_weight=-1.0)
  with pytest.raises(TypeError, match="energy_fn must be callable"):
    fl.make_acceptance_loss(None, 1.0)
