"""Tests of MatterGen's score network (science/mattergen/_network.py): symmetries, padding,
adapters, classifier-free guidance and compilation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from tomioka_jax.science.mattergen import _crystal as cr
from tomioka_jax.science.mattergen import _graph as gr
from tomioka_jax.science.mattergen import _network as net

# Tiny widths; every edge within the cutoff is kept (max_neighbors None) so that the symmetry
# tests test the network, not truncation.
KW = dict(hidden=16, num_blocks=2, num_radial=8, cutoff=3.5, max_neighbors=None, max_images=3,
          coord_frame="cartesian")


@nnx.jit
def _run(model, crystals, t, conditions=None, condition_mask=None):
  # One compile per model configuration and shape (eager calls compile every op per shape).
  return model(crystals, t, conditions, condition_mask)


_guided = nnx.jit(net.guided_score)


def _model(seed: int = 0, **kw) -> net.MatterGenDenoiser:
  return net.MatterGenDenoiser(**{**KW, **kw}, rngs=nnx.Rngs(seed))


def _batch(seed: int = 0, b: int = 3, n: int = 4) -> cr.Crystals:
  rng = np.random.default_rng(seed)
  lat = np.stack([np.diag(rng.uniform(3.0, 4.0, 3)) + 0.4 * rng.normal(size=(3, 3))
                  for _ in range(b)])
  lat[np.linalg.det(lat) < 0] *= -1.0
  nat = rng.integers(2, n + 1, b)
  nat[0] = n
  mask = np.arange(n)[None] < nat[:, None]
  frac = rng.uniform(0, 1, (b, n, 3)) * mask[..., None]
  types = rng.integers(0, cr.NUM_TYPE_STATES, (b, n)) * mask
  return cr.Crystals(jnp.asarray(lat, jnp.float32), jnp.asarray(frac, jnp.float32),
                     jnp.asarray(types, jnp.int32), jnp.asarray(mask))


def _t(b: int) -> jax.Array:
  return jnp.linspace(0.1, 0.9, b)


def _rotation(seed: int, proper: bool = True) -> np.ndarray:
  q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
  q = q * np.sign(np.diag(r))
  if (np.linalg.det(q) > 0) != proper:
    q[:, 0] *= -1.0
  return q


def _assert_close(a, b, atol=2e-5):
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=atol, rtol=1e-4)


def test_output_shapes_and_padding_rows_are_zero():
  c = _batch()
  out = _run(_model(), c, _t(3))
  assert out.coord_score.shape == (3, 4, 3)
  assert out.lattice_score.shape == (3, 3, 3)
  assert out.type_logits.shape == (3, 4, cr.NUM_TYPE_STATES)
  pad = ~np.asarray(c.mask)
  assert pad.any()
  assert np.all(np.asarray(out.coord_score)[pad] == 0)
  assert np.all(np.asarray(out.type_logits)[pad] == 0)
  # The stress-like head is symmetric.
  _assert_close(out.lattice_score, jnp.swapaxes(out.lattice_score, 1, 2), atol=1e-7)
  assert float(jnp.abs(out.coord_score).max()) > 0


@pytest.mark.parametrize("proper,cosines", [(True, True), (True, False), (False, False)])
def test_rotating_the_frame_rotates_the_scores_and_leaves_logits(proper, cosines):
  # L -> L R^T rotates every Cartesian vector x -> R x (rows: x R^T); a reflection too (E(3)).
  # The edge-lattice cosines are rotation invariant; the reflection test swaps two lattice
  # vectors (another cell), which they see, so it runs without them.
  c = _batch(1)
  model = _model(lattice_cosines=cosines)
  rot = jnp.asarray(_rotation(1, proper), jnp.float32)
  out = _run(model, c, _t(3))
  cr_ = c._replace(lattice=c.lattice @ rot.T)
  if not proper:
    # A reflected cell is left-handed; swapping two lattice vectors (and the matching
    # fractional columns) describes the same crystal with a right-handed cell.
    cr_ = cr_._replace(lattice=cr_.lattice[:, [1, 0, 2]], frac_coords=c.frac_coords[..., [1, 0, 2]])
  out_r = _run(model, cr_, _t(3))
  perm = [0, 1, 2] if proper else [1, 0, 2]
  _assert_close(out_r.type_logits, out.type_logits)
  _assert_close(out_r.coord_score, out.coord_score @ rot.T)
  _assert_close(out_r.lattice_score, rot @ out.lattice_score @ rot.T)
  # The fractional score and displacement are rotation invariant.
  _assert_close(net.fractional_score(out_r.coord_score, cr_.lattice),
                net.fractional_score(out.coord_score, c.lattice)[..., perm])
  _assert_close(net.fractional_displacement(out_r.coord_score, cr_.lattice),
                net.fractional_displacement(out.coord_score, c.lattice)[..., perm], atol=1e-5)


def test_permuting_atoms_permutes_the_outputs():
  c = _batch(2, n=5)
  perm = np.array([3, 0, 4, 1, 2])  # moves padding slots between real atoms
  cp = cr.Crystals(c.lattice, c.frac_coords[:, perm], c.atom_types[:, perm], c.mask[:, perm])
  model = _model()
  out, out_p = _run(model, c, _t(3)), _run(model, cp, _t(3))
  _assert_close(out_p.coord_score, out.coord_score[:, perm])
  _assert_close(out_p.type_logits, out.type_logits[:, perm])
  _assert_close(out_p.lattice_score, out.lattice_score)


def test_integer_shifts_and_common_translations_change_nothing():
  c = _batch(3)
  model = _model()
  out = _run(model, c, _t(3))
  m = c.mask[..., None]
  # Integer shifts of single atoms (the model wraps coordinates).
  shift = jnp.asarray(np.random.default_rng(3).integers(-2, 3, c.frac_coords.shape), jnp.float32)
  out_s = _run(model, c._replace(frac_coords=c.frac_coords + shift * m), _t(3))
  # A common fractional translation of all atoms, wrapped back to [0, 1).
  tau = jnp.asarray([0.37, 0.81, 0.05], jnp.float32)[None, None]
  out_t = _run(model, c._replace(frac_coords=jnp.mod(c.frac_coords + tau, 1.0) * m), _t(3))
  for other in (out_s, out_t):
    _assert_close(other.coord_score, out.coord_score, atol=1e-4)
    _assert_close(other.lattice_score, out.lattice_score, atol=1e-5)
    _assert_close(other.type_logits, out.type_logits, atol=1e-4)


def test_the_choice_of_unit_cell_does_not_matter():
  # The same crystal in another cell: L' = U L with U unimodular, f' = f U^{-1} (mod 1), the
  # same Cartesian positions and lattice points. With complete graphs the outputs agree.
  c = _batch(4, b=2)
  u = jnp.asarray([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, -1.0, 1.0]])
  assert abs(np.linalg.det(np.asarray(u))) == 1.0
  lat2 = jnp.einsum("de,bef->bdf", u, c.lattice)
  frac2 = jnp.mod(c.frac_coords @ jnp.linalg.inv(u), 1.0) * c.mask[..., None]
  c2 = cr.Crystals(lat2, frac2, c.atom_types, c.mask)
  model = _model(max_images=4, lattice_cosines=False, cell_head=False)
  assert bool(jnp.all(model.graph(c).complete)) and bool(jnp.all(model.graph(c2).complete))
  out, out2 = _run(model, c, _t(2)), _run(model, c2, _t(2))
  _assert_close(out2.coord_score, out.coord_score, atol=1e-4)
  _assert_close(out2.lattice_score, out.lattice_score, atol=1e-5)
  _assert_close(out2.type_logits, out.type_logits, atol=1e-4)


def test_lattice_cosines_are_the_edge_directions_in_the_cell_and_reach_the_outputs():
  c = _batch(6, b=2)
  model = _model(max_images=4)
  g = model.graph(c)
  unit = g.vectors / jnp.where(g.mask, g.distances, 1.0)[..., None]
  cos = np.asarray(net.lattice_cosines_of(unit, c.lattice))
  lat = np.asarray(c.lattice, np.float64)
  b, i, k = np.argwhere(np.asarray(g.mask))[7]
  v = np.asarray(g.vectors, np.float64)[b, i, k]
  for l in range(3):
    want = v @ lat[b, l] / (np.linalg.norm(v) * np.linalg.norm(lat[b, l]))
    assert abs(cos[b, i, k, l] - want) < 1e-5
  assert np.all(np.abs(cos) <= 1 + 1e-6)
  # The feature is wired in: the same crystal in another cell now gives other outputs (the
  # lattice diffusion, too, depends on the cell), unlike the model without it (test above).
  u = jnp.asarray([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, -1.0, 1.0]])
  c2 = cr.Crystals(jnp.einsum("de,bef->bdf", u, c.lattice),
                   jnp.mod(c.frac_coords @ jnp.linalg.inv(u), 1.0) * c.mask[..., None],
                   c.atom_types, c.mask)
  out, out2 = _run(model, c, _t(2)), _run(model, c2, _t(2))
  assert float(jnp.max(jnp.abs(out2.type_logits - out.type_logits))) > 1e-3


def test_cell_head_is_an_isotropic_function_of_the_shape_metric():
  c = _batch(7, b=3)
  model = _model()
  n = jnp.sum(c.mask, axis=1)
  metric, feats = net.cell_invariants(c.lattice, n)
  lat = np.asarray(c.lattice, np.float64)
  v = np.abs(np.linalg.det(lat)) / np.asarray(n)
  gram = np.einsum("bji,bjk->bik", lat, lat) / v[:, None, None] ** (2 / 3)
  tr = np.trace(gram, axis1=1, axis2=2) / 3
  np.testing.assert_allclose(np.asarray(metric), gram / tr[:, None, None], rtol=1e-5)
  np.testing.assert_allclose(np.asarray(feats), np.stack(
      [np.log(v) / 3, np.log(tr), np.log(np.sum((gram / tr[:, None, None]) ** 2, (1, 2)) / 3)],
      -1), rtol=1e-5, atol=1e-6)
  # A cubic cell of one atom has M = I (scale-free).
  m1, _ = net.cell_invariants(jnp.asarray(2.7 * np.eye(3)[None], jnp.float32), jnp.ones(1))
  np.testing.assert_allclose(np.asarray(m1[0]), np.eye(3), atol=1e-6)
  rng = np.random.default_rng(7)
  # The head starts at zero; give its last layer weights to test its form.
  assert float(jnp.abs(model.cell_head(jnp.ones((3, 16)), jnp.ones((3, 16)), c.lattice, n)).max()) == 0
  model.cell_head.out.kernel[...] = jnp.asarray(rng.normal(size=(16, 3)), jnp.float32)
  h_mean = jnp.asarray(rng.normal(size=(3, 16)), jnp.float32)
  temb = jnp.asarray(rng.normal(size=(3, 16)), jnp.float32)
  out = np.asarray(model.cell_head(h_mean, temb, c.lattice, n), np.float64)
  # c0 I + c1 M + c2 M^2 is symmetric and commutes with M, and is not a multiple of I.
  mm = np.asarray(metric, np.float64)
  np.testing.assert_allclose(out, np.swapaxes(out, 1, 2), atol=1e-5)
  np.testing.assert_allclose(out @ mm, mm @ out, atol=1e-4 * np.abs(out).max() * np.abs(mm).max())
  assert np.abs(out - np.trace(out, axis1=1, axis2=2)[:, None, None] / 3 * np.eye(3)).max() > 1e-4
  # The model's lattice output is the stress head plus this term: with the same weights and no
  # head, the difference is non-zero and again commutes with M.
  other = _model(cell_head=False)
  nnx.update(other, nnx.state(model, nnx.Not(nnx.PathContains("cell_head"))))
  diff = np.asarray(_run(model, c, _t(3)).lattice_score - _run(other, c, _t(3)).lattice_score,
                    np.float64)
  assert np.abs(diff).max() > 1e-3
  np.testing.assert_allclose(diff @ mm, mm @ diff, atol=1e-4 * np.abs(diff).max() * np.abs(mm).max())


def test_adding_padding_slots_changes_nothing():
  c = _batch(5, n=3)
  pad = 2
  cp = cr.Crystals(c.lattice, jnp.pad(c.frac_coords, ((0, 0), (0, pad), (0, 0))),
                   jnp.pad(c.atom_types, ((0, 0), (0, pad))), jnp.pad(c.mask, ((0, 0), (0, pad))))
  model = _model()
  out, out_p = _run(model, c, _t(3)), _run(model, cp, _t(3))
  _assert_close(out_p.coord_score[:, :3], out.coord_score, atol=1e-5)
  _assert_close(out_p.type_logits[:, :3], out.type_logits, atol=1e-5)
  _assert_close(out_p.lattice_score, out.lattice_score, atol=1e-6)
  assert np.all(np.asarray(out_p.coord_score[:, 3:]) == 0)


def test_outputs_depend_on_time_and_types():
  c = _batch(6)
  model = _model()
  out = _run(model, c, _t(3))
  out_t = _run(model, c, _t(3) * 0.5)
  masked = c._replace(atom_types=jnp.where(c.mask, cr.MASK_TYPE, 0))
  out_m = _run(model, masked, _t(3))
  assert float(jnp.abs(out_t.coord_score - out.coord_score).max()) > 1e-6
  assert float(jnp.abs(out_m.type_logits - out.type_logits).max()) > 1e-4


def test_fractional_frame_is_the_reference_displacement_map_in_protocol_order():
  c = _batch(13)
  cart = _run(_model(), c, _t(3))
  lattice_out, coord_out, logits = _run(_model(coord_frame="fractional"), c, _t(3))
  assert lattice_out.shape == (3, 3, 3) and coord_out.shape == (3, 4, 3)
  _assert_close(coord_out, net.fractional_displacement(cart.coord_score, c.lattice), atol=1e-6)
  _assert_close(lattice_out, cart.lattice_score, atol=0)
  _assert_close(logits, cart.type_logits, atol=0)


def test_degenerate_inputs_give_finite_outputs_and_gradients():
  # Coincident atoms, a nearly flat cell and a crystal without atoms (possible in a noisy or
  # padded batch under jit, where the batch checks are skipped).
  c = _batch(15)
  frac = c.frac_coords.at[0, 1].set(c.frac_coords[0, 0])
  lat = c.lattice.at[1, 2].set(c.lattice[1, 0] + c.lattice[1, 1] + 1e-3)
  mask = c.mask.at[2].set(False)
  bad = cr.Crystals(lat, frac, c.atom_types, mask)
  model = _model()

  def loss(m):
    o = m(bad, _t(3))
    return sum(jnp.sum(x ** 2) for x in o)

  value, grads = nnx.jit(nnx.value_and_grad(loss))(model)
  assert np.isfinite(float(value))
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


def test_envelope_and_bases():
  x = jnp.linspace(0.0, 1.2, 13)
  u = net.polynomial_envelope(x, 5)
  assert float(u[0]) == 1.0 and np.all(np.asarray(u[10:]) == 0)
  # u, u' and u'' vanish at the cutoff (smooth edges); u is decreasing on [0, 1].
  du = jax.grad(lambda s: net.polynomial_envelope(s, 5))
  d2u = jax.grad(du)
  # u(1 - ε) = O(ε^3), u'(1 - ε) = O(ε^2), u''(1 - ε) = O(ε) (float64: no cancellation).
  with jax.enable_x64(True):
    for eps in (1e-2, 1e-3):
      x1 = jnp.float64(1 - eps)
      assert abs(float(net.polynomial_envelope(x1, 5))) < 50 * eps**3
      assert abs(float(du(x1))) < 150 * eps**2
      assert abs(float(d2u(x1))) < 300 * eps
  assert np.all(np.diff(np.asarray(u[:11])) < 0)
  e = net.gaussian_basis(jnp.asarray([0.0, 1.0]), 3, 2.0)
  np.testing.assert_allclose(np.asarray(e), np.exp(-0.5 * np.array([[0, 1, 4], [1, 0, 1]])),
                             rtol=1e-6)
  te = net.time_embedding(jnp.asarray([0.0, 0.5]), 8)
  np.testing.assert_allclose(np.asarray(te[0]), [0, 0, 0, 0, 1, 1, 1, 1], atol=1e-7)


def test_fractional_score_is_the_chain_rule_and_displacement_inverts_the_map():
  rng = np.random.default_rng(7)
  lat = jnp.asarray(np.eye(3) * 4 + rng.normal(size=(3, 3)), jnp.float32)[None]
  f = jnp.asarray(rng.uniform(size=(1, 2, 3)), jnp.float32)
  a = jnp.asarray(rng.normal(size=(2, 3)), jnp.float32)
  g = lambda x: jnp.sum(jnp.sin(x * a[None]))  # a function of Cartesian positions
  grad_x = jax.grad(g)(f @ lat)
  grad_f = jax.grad(lambda ff: g(ff @ lat))(f)
  _assert_close(net.fractional_score(grad_x, lat), grad_f, atol=1e-5)
  v = jnp.asarray(rng.normal(size=(1, 2, 3)), jnp.float32)
  _assert_close((f + net.fractional_displacement(v, lat)) @ lat, f @ lat + v, atol=1e-5)


def test_adapters_start_exactly_at_the_base_model_and_move_after_a_step():
  c = _batch(8)
  base = _model()
  cond = {"band_gap": jnp.asarray([0.5, 1.0, 2.0]), "chem": jnp.ones((3, 4))}
  adapted = net.with_adapters(base, {"band_gap": 1, "chem": 4}, rngs=nnx.Rngs(1))
  assert base.adapters is None and adapted.properties == {"band_gap": 1, "chem": 4}
  ref = _run(base, c, _t(3))
  # Conditioned, partly conditioned and unconditioned crystals all get the base outputs.
  mask = {"band_gap": jnp.asarray([True, False, True]), "chem": jnp.asarray([True, True, False])}
  out = _run(adapted, c, _t(3), cond, mask)
  for x, y in zip(out, ref):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  ones = {"band_gap": jnp.ones(3, bool), "chem": jnp.ones(3, bool)}
  zeros = {"band_gap": jnp.zeros(3, bool), "chem": jnp.zeros(3, bool)}
  # One gradient step on the adapters only: the conditional outputs move, the unconditional
  # ones ("base" mode) stay exactly the base model's.
  params = nnx.state(adapted, net.ADAPTER_PARAMS)

  def loss(p):
    m = nnx.merge(nnx.graphdef(adapted), p, nnx.state(adapted, nnx.Not(net.ADAPTER_PARAMS)))
    o = m(c, _t(3), cond, ones)
    return jnp.sum(o.coord_score ** 2) + jnp.sum(o.lattice_score ** 2) + jnp.sum(
        jax.nn.log_softmax(o.type_logits)[..., 0])

  grads = jax.jit(jax.grad(loss))(params)
  opt = optax.sgd(0.1)
  updates, _ = opt.update(grads, opt.init(params), params)
  nnx.update(adapted, optax.apply_updates(params, updates))
  out_c = _run(adapted, c, _t(3), cond, ones)
  assert float(jnp.abs(out_c.coord_score - ref.coord_score).max()) > 1e-6
  assert float(jnp.abs(out_c.type_logits - ref.type_logits).max()) > 1e-6
  out_u = _run(adapted, c, _t(3), cond, zeros)
  for x, y in zip(out_u, ref):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_null_mode_and_null_tokens_mean_unconditional():
  # The diffusion's null_condition marks dropped crystals with NaN (floats), -1 (integers) or
  # all-False (booleans); the model treats them as condition_mask False.
  np.testing.assert_array_equal(
      net.is_null_condition(jnp.asarray([[0.0, 1.0], [np.nan, 1.0]])), [False, True])
  np.testing.assert_array_equal(net.is_null_condition(jnp.asarray([[1, 0], [-1, -1]])),
                                [False, True])
  np.testing.assert_array_equal(
      net.is_null_condition(jnp.asarray([[True, False], [False, False]])), [False, True])
  c = _batch(9)
  base = _model()
  adapted = net.with_adapters(base, {"y": 1}, unconditional="null", rngs=nnx.Rngs(2))
  # Nudge the mixins so the adapters act; "no condition" then means the null embedding.
  for block in adapted.adapters.blocks["y"]:
    block.mixin.kernel[...] = 0.1 * jnp.ones_like(block.mixin.kernel[...])
  y = jnp.asarray([0.3, -1.0, 2.0])
  keep = jnp.asarray([True, False, True])
  none = _run(adapted, c, _t(3))
  dropped = _run(adapted, c, _t(3), {"y": y}, {"y": jnp.zeros(3, bool)})
  for x, z in zip(none, dropped):
    _assert_close(x, z, atol=1e-6)
  used = _run(adapted, c, _t(3), {"y": y}, {"y": jnp.ones(3, bool)})
  assert float(jnp.abs(used.coord_score - none.coord_score).max()) > 1e-6
  assert float(jnp.abs(none.coord_score - _run(base, c, _t(3)).coord_score).max()) > 1e-6
  # NaN tokens = a False mask, with finite outputs ...
  with_nan = _run(adapted, c, _t(3), {"y": jnp.where(keep, y, jnp.nan)}, {"y": jnp.ones(3, bool)})
  masked = _run(adapted, c, _t(3), {"y": y}, {"y": keep})
  for x, z in zip(with_nan, masked):
    assert np.all(np.isfinite(np.asarray(x)))
    _assert_close(x, z, atol=1e-6)

  # ... and finite gradients (the tokens never reach the embedding MLP).
  def loss(m):
    o = m(c, _t(3), {"y": jnp.where(keep, y, jnp.nan)})
    return jnp.sum(o.coord_score ** 2)

  grads = nnx.jit(nnx.grad(loss))(adapted)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


def test_guided_score_is_the_cfg_combination_in_one_batch():
  c = _batch(10)
  adapted = net.with_adapters(_model(), {"y": 1}, rngs=nnx.Rngs(3))
  for block in adapted.adapters.blocks["y"]:
    block.mixin.kernel[...] = 0.2 * jnp.ones_like(block.mixin.kernel[...])
  y = {"y": jnp.asarray([0.3, -1.0, 2.0])}
  s_c = _run(adapted, c, _t(3), y, {"y": jnp.ones(3, bool)})
  s_u = _run(adapted, c, _t(3), y, {"y": jnp.zeros(3, bool)})
  for gamma in (0.0, 1.0, 2.0):
    g = _guided(adapted, c, _t(3), y, gamma)
    for x, xc, xu in zip(g, s_c, s_u):
      _assert_close(x, gamma * xc + (1.0 - gamma) * xu, atol=1e-4)
  # Guided logits are the logits of p(a)^(1-γ) p(a|y)^γ (up to normalisation).
  g2 = _guided(adapted, c, _t(3), y, 2.0)
  lp = 2.0 * jax.nn.log_softmax(s_c.type_logits) - jax.nn.log_softmax(s_u.type_logits)
  m = np.asarray(c.mask)
  _assert_close(jax.nn.log_softmax(g2.type_logits)[m], jax.nn.log_softmax(lp)[m], atol=1e-4)


def test_random_condition_mask_drops_at_the_requested_rate():
  cond = {"a": jnp.zeros(4000), "b": jnp.zeros((4000, 2))}
  m = net.random_condition_mask(jax.random.key(0), cond, 0.2)
  for name in cond:
    assert m[name].shape == (4000,) and abs(float(jnp.mean(m[name])) - 0.8) < 0.03
  assert float(jnp.mean(m["a"] == m["b"])) < 0.8  # independent per property
  with pytest.raises(ValueError, match="p_unconditional"):
    net.random_condition_mask(jax.random.key(0), cond, 1.5)


def test_jit_compiles_once_for_batches_of_one_padded_shape():
  model = _model(max_neighbors=12)
  traces = []

  @nnx.jit
  def forward(m, c, t):
    traces.append(1)
    return m(c, t)

  a, b = _batch(11), _batch(12)
  out_a = forward(model, a, _t(3))
  out_b = forward(model, b, _t(3))
  assert len(traces) == 1
  _assert_close(out_b.coord_score, _run(model, b, _t(3)).coord_score, atol=1e-5)
  assert float(jnp.abs(out_a.coord_score - out_b.coord_score).max()) > 0


def test_bad_arguments_raise():
  with pytest.raises(ValueError, match="hidden must be"):
    net.MatterGenDenoiser(hidden=0, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="hidden must be even"):
    net.MatterGenDenoiser(hidden=15, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="cutoff must be"):
    net.MatterGenDenoiser(cutoff=0.0, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="unconditional must be"):
    net.MatterGenDenoiser(unconditional="maybe", rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="lattice_cosines must be True or False"):
    net.MatterGenDenoiser(lattice_cosines="yes", rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="cell_head must be True or False"):
    net.MatterGenDenoiser(cell_head=1, rngs=nnx.Rngs(0))
  model = _model()
  c = _batch()
  with pytest.raises(ValueError, match="t must have shape"):
    model(c, jnp.zeros(2))
  with pytest.raises(ValueError, match="unknown property 'y'"):
    model(c, _t(3), {"y": jnp.zeros(3)})
  adapted = net.with_adapters(model, {"y": 2}, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=r"conditions\['y'\] must have shape"):
    adapted(c, _t(3), {"y": jnp.zeros(3)})
  with pytest.raises(ValueError, match="already has adapters"):
    net.with_adapters(adapted, {"z": 1}, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=r"properties\['z'\] must be"):
    net.with_adapters(model, {"z": 0}, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="atom_types must be"):
    model(c._replace(atom_types=c.atom_types + 200), _t(3))
