"""Tests of science/timewarp/_sampler.py: the MH chain keeps the Boltzmann distribution exactly
(double-well dimer, untrained non-trivial flow), the batched-proposal bookkeeping, exploration's
energy threshold and reject predicate (also with energies through jax.pure_callback),
bad input."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tomioka_jax.science.timewarp import _flow as fl
from tomioka_jax.science.timewarp import _sampler as sa
from tomioka_jax.science.timewarp import _toys as toys


def _proposal_flow(scale=0.02, seed=0):
  """An untrained but non-trivial flow: random couplings shrunk so proposals are local."""
  flow = fl.TimewarpFlow(1, num_couplings=2, num_layers=1, d_model=16, dim_feedforward=32,
                         lengthscales=(0.2, 0.5), atom_embedding_dim=8,
                         init_log_scale=float(np.log(0.1)), identity_init=False,
                         rngs=nnx.Rngs(seed))
  for i, c in enumerate(flow.couplings):
    c.net.outp.kernel[...] = c.net.outp.kernel[...] * scale
    c.net.outp.bias[...] = scale * jax.random.normal(jax.random.key(10 + i), (6,))
  return flow


@pytest.fixture(scope="module")
def dimer_chain():
  system = toys.double_well_dimer()
  flow = _proposal_flow()
  x0 = np.broadcast_to(system.positions, (64, 2, 3))
  sampler = sa.make_chain_sampler(flow, system.energy, atom_types=system.atom_types,
                                  num_steps=1000, kT=system.kT, num_proposals=2)
  return system, flow, sampler(x0, jax.random.key(1))


def test_mh_chain_keeps_the_exact_bond_length_density(dimer_chain):
  system, flow, res = dimer_chain
  # The proposal is asymmetric (q(y|x) != q(x|y)), so the MH correction is doing work.
  x = jnp.asarray(system.positions)[None]
  v = jax.random.normal(jax.random.key(0), (1, 2, 3))
  y, w, lp = flow.sample_and_log_prob(jax.random.key(2), system.atom_types, x, v)
  assert float(jnp.abs(lp - flow.log_prob(system.atom_types, y, w, x, v))[0]) > 0.5
  burn = 100
  d = np.asarray(toys.dimer_distance(res.positions[:, burn:])).ravel()
  wts = np.asarray(res.weights[:, burn:]).ravel()
  edges = np.linspace(0.15, 0.9, 31)
  hist, _ = np.histogram(d, edges, weights=wts)
  hist = hist / hist.sum()
  exact = toys.dimer_distance_density(system, edges)
  assert exact.sum() > 1 - 1e-6  # the bins cover the support
  kl = float(np.sum(np.where(hist > 0, hist * np.log(np.maximum(hist, 1e-300) / exact), 0.0)))
  rate = float(np.mean(res.acceptance_rate))
  assert 0.1 < rate < 0.9, rate
  assert kl < 0.01, kl
  # The mass of the inner well (d < d0, where the d^2 factor makes it the smaller one).
  inner = edges[1:] <= system.params["center"]
  assert 0.15 < exact[inner].sum() < 0.4
  assert abs(hist[inner].sum() - exact[inner].sum()) < 0.02


def test_chain_bookkeeping(dimer_chain):
  system, _, res = dimer_chain
  acc, used, wts = (np.asarray(a) for a in (res.accepted, res.num_evaluated, res.weights))
  assert np.all((used >= 1) & (used <= 2))
  assert np.all(used[~acc] == 2)  # no acceptance: all k proposals are rejections
  np.testing.assert_array_equal(wts.sum(-1), 1 + used.sum(-1))
  # Slow reference of the weights: walk the sequential chain.
  for c in range(3):
    seq = [0]  # index into positions of each sequential state
    for i in range(acc.shape[1]):
      seq += [i] * int(used[c, i] - acc[c, i]) + ([i + 1] if acc[c, i] else [])
    np.testing.assert_array_equal(np.bincount(seq, minlength=acc.shape[1] + 1), wts[c])
  # A state changes only on acceptance; energies are the energies of the states.
  pos = np.asarray(res.positions)
  moved = np.any(pos[:, 1:] != pos[:, :-1], axis=(-1, -2))
  np.testing.assert_array_equal(moved, acc)
  np.testing.assert_allclose(res.energies, system.energy(res.positions), rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(np.diff(np.asarray(res.energies), axis=-1), res.delta_energy,
                             atol=1e-4)
  np.testing.assert_allclose(res.acceptance_rate, acc.sum(-1) / used.sum(-1), rtol=1e-6)
  expanded = sa.expand_chain(res.positions[0], res.weights[0])
  assert expanded.shape == (1 + used[0].sum(), 2, 3)


def test_exploration_respects_threshold_and_reject_fn():
  system = toys.double_well_dimer()
  flow = _proposal_flow()
  x0 = np.broadcast_to(system.positions, (4, 2, 3))
  threshold = 0.5
  res = sa.explore(flow, system.energy, x0, jax.random.key(0), atom_types=system.atom_types,
                   num_steps=200, num_proposals=3, threshold=threshold)
  acc = np.asarray(res.accepted)
  du = np.asarray(res.delta_energy)
  assert acc.mean() > 0.1 and not acc.all()  # some moves taken, some refused
  assert np.all(du[acc] < threshold)
  # The same chain with the energy behind jax.pure_callback (how OpenMM energies come in).
  host = jax.jit(system.energy)

  def callback_energy(positions):
    spec = jax.ShapeDtypeStruct(positions.shape[:-2], positions.dtype)
    return jax.pure_callback(lambda p: np.asarray(host(p)), spec, positions,
                             vmap_method="expand_dims")

  via_callback = sa.explore(flow, callback_energy, x0, jax.random.key(0),
                            atom_types=system.atom_types, num_steps=200, num_proposals=3,
                            threshold=threshold)
  np.testing.assert_array_equal(via_callback.accepted, res.accepted)
  np.testing.assert_allclose(via_callback.positions, res.positions, atol=1e-6)
  np.testing.assert_allclose(np.diff(np.asarray(res.energies), axis=-1), du, atol=1e-3)
  # A predicate that rejects every move freezes the chain.
  frozen = sa.explore(flow, system.energy, x0, jax.random.key(0), atom_types=system.atom_types,
                      num_steps=20, num_proposals=3, threshold=threshold,
                      reject_fn=lambda x, y: jnp.ones(x.shape[0], bool))
  assert not np.asarray(frozen.accepted).any()
  np.testing.assert_array_equal(frozen.positions[:, -1], x0)


def test_bad_input_raises():
  system = toys.double_well_dimer()
  flow = _proposal_flow()
  kw = dict(atom_types=system.atom_types, num_steps=5)
  with pytest.raises(ValueError, match="num_proposals"):
    sa.make_chain_sampler(flow, system.energy, num_proposals=0, **kw)
  with pytest.raises(ValueError, match="kT"):
    sa.make_chain_sampler(flow, system.energy, kT=0.0, **kw)
  with pytest.raises(ValueError, match="kT"):
    sa.make_chain_sampler(flow, system.energy, kT=-1.0, **kw)
  with pytest.raises(ValueError, match="mode"):
    sa.make_chain_sampler(flow, system.energy, mode="langevin", **kw)
  with pytest.raises(ValueError, match="reject_fn"):
    sa.make_chain_sampler(flow, system.energy, reject_fn=lambda x, y: x[..., 0, 0] > 0, **kw)
  with pytest.raises(ValueError, match="num_steps"):
    sa.make_chain_sampler(flow, system.energy, atom_types=system.atom_types, num_steps=0)
  with pytest.raises(ValueError, match="atom_types must lie"):
    sa.make_chain_sampler(flow, system.energy, atom_types=np.array([0, 3]), num_steps=5)
  sampler = sa.make_chain_sampler(flow, system.energy, **kw)
  with pytest.raises(ValueError, match="atoms"):
    sampler(np.zeros((3, 3)), jax.random.key(0))  # 3 atoms for a 2-atom topology
  with pytest.raises(ValueError, match="finite"):
    sampler(np.full((2, 3), np.nan), jax.random.key(0))
  bad_energy = sa.make_chain_sampler(flow, lambda p: jnp.sum(p, axis=(-1,)), **kw)
  with pytest.raises(ValueError, match="energy_fn"):
    bad_energy(system.positions, jax.random.key(0))
