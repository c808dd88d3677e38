"""Tests of MatterGen's joint loss and predictor-corrector sampler (mattergen/_diffusion.py):
an oracle score model gets zero loss, padding changes nothing, the condition dropout and
guidance combine as specified, and the sampler with the exact score of a known distribution
(Gaussian lattice, wrapped-normal coordinates, i.i.d. types) samples it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tomioka_jax.science.mattergen import _coords as crd
from tomioka_jax.science.mattergen import _crystal
from tomioka_jax.science.mattergen import _diffusion as dif
from tomioka_jax.science.mattergen import _lattice as lat


def _batch(b=4, n=3):
  rng = np.random.default_rng(0)
  mask = np.ones((b, n), bool)
  mask[0, 2:] = False
  mask[1, 1:] = False
  lattice = np.broadcast_to(4.0 * np.eye(3), (b, 3, 3)) + 0.2 * rng.normal(size=(b, 3, 3))
  frac = np.where(mask[..., None], rng.uniform(0, 1, (b, n, 3)), 0.0)
  types = np.where(mask, rng.integers(0, 100, (b, n)), 0)
  return _crystal.Crystals(jnp.asarray(lattice, jnp.float32), jnp.asarray(frac, jnp.float32),
                           jnp.asarray(types, jnp.int32), jnp.asarray(mask))


def _oracle(clean, config=dif.DEFAULT_DIFFUSION):
  """The exact targets, computed from the clean batch the loss was given."""
  n = jnp.sum(clean.mask, axis=-1)
  l0 = lat.symmetric_lattice(clean.lattice)

  def score_fn(noisy, t, cond):
    mean, std = lat.lattice_marginal(l0, t, n, config.lattice_sde)
    lat_out = -(noisy.lattice - mean) / std[:, None, None]
    sigma = crd.coord_sigma(t, n, config.coord_sde)
    coord_out = crd.wrapped_normal_score(noisy.frac_coords, clean.frac_coords,
                                         (sigma**2)[:, None, None]) * sigma[:, None, None]
    logits = 40.0 * jax.nn.one_hot(clean.atom_types, 101)
    return lat_out, coord_out, logits

  return score_fn


def test_oracle_score_model_has_zero_loss():
  clean = _batch()
  loss, m = jax.jit(lambda k: dif.diffusion_loss(_oracle(clean), clean, k))(jax.random.key(0))
  assert float(m["lattice"]) < 1e-8 and float(m["coords"]) < 1e-8
  assert float(m["types"]) < 1e-6 and float(loss) < 1e-6
  # A model that is wrong everywhere pays in every term.
  zero = lambda noisy, t, c: (jnp.zeros_like(noisy.lattice), jnp.zeros_like(noisy.frac_coords),
                              jnp.zeros(noisy.atom_types.shape + (101,)))
  loss0, m0 = jax.jit(lambda k: dif.diffusion_loss(zero, clean, k))(jax.random.key(0))
  assert min(float(m0["lattice"]), float(m0["coords"]), float(m0["types"])) > 0.01
  cfg = dif.DEFAULT_DIFFUSION
  np.testing.assert_allclose(
      loss0, cfg.lattice_weight * m0["lattice"] + cfg.coord_weight * m0["coords"]
      + cfg.type_weight * m0["types"], rtol=1e-6)
  assert (cfg.lattice_weight, cfg.coord_weight, cfg.type_weight, cfg.hybrid_lambda,
          cfg.p_uncond) == (1.0, 0.1, 1.0, 0.01, 0.2)


def test_padding_changes_nothing():
  clean = _batch()
  junk = clean._replace(
      frac_coords=jnp.where(clean.mask[..., None], clean.frac_coords, 0.7),
      atom_types=jnp.where(clean.mask, clean.atom_types, 42))

  def per_atom(noisy, t, cond):   # garbage on padding atoms, a function of each atom only
    f = noisy.frac_coords
    out = jnp.sin(6.0 * f) + (~noisy.mask[..., None]) * 1e3
    logits = jnp.cos(noisy.atom_types[..., None] * jnp.arange(101.0)[None, None, :])
    return 0.1 * noisy.lattice, out, logits

  loss = jax.jit(lambda c: dif.diffusion_loss(per_atom, c, jax.random.key(1))[0])
  a, b = loss(clean), loss(junk)
  np.testing.assert_array_equal(a, b)
  assert np.isfinite(float(a))
  noisy, _ = jax.jit(dif.corrupt_crystals)(jax.random.key(2), junk, jnp.full((4,), 0.5))
  np.testing.assert_array_equal(noisy.frac_coords[~np.asarray(junk.mask)], 0.0)
  np.testing.assert_array_equal(noisy.atom_types[~np.asarray(junk.mask)], 0)


def test_lattice_is_symmetrized_so_a_rotated_cell_gives_the_same_loss():
  clean = _batch()
  th = 0.7
  rot = jnp.array([[np.cos(th), -np.sin(th), 0], [np.sin(th), np.cos(th), 0], [0, 0, 1.0]])
  rotated = clean._replace(lattice=jnp.einsum("bij,kj->bik", clean.lattice, rot))
  fn = lambda noisy, t, c: (noisy.lattice * 0.3, noisy.frac_coords,
                            jnp.zeros(noisy.atom_types.shape + (101,)))
  loss = jax.jit(lambda c: dif.diffusion_loss(fn, c, jax.random.key(3))[0])
  a, b = loss(clean), loss(rotated)
  np.testing.assert_allclose(a, b, rtol=1e-4)


def test_condition_dropout_and_null_token():
  cond = {"band_gap": jnp.arange(6.0).reshape(3, 2), "group": jnp.array([1, 2, 3]),
          "flag": jnp.array([True, True, False])}
  drop = jnp.array([False, True, False])
  out = dif.null_condition(cond, drop)
  assert np.isnan(np.asarray(out["band_gap"][1])).all()
  np.testing.assert_array_equal(out["band_gap"][0], [0.0, 1.0])
  np.testing.assert_array_equal(out["group"], [1, -1, 3])
  np.testing.assert_array_equal(out["flag"], [True, False, False])
  assert dif.null_condition(None, drop) is None
  # The loss drops each crystal's condition with probability p_uncond; the model sees the null
  # token exactly there (its lattice output flags it: 1e3 on a NaN condition, so the lattice
  # loss is 1e6 x the fraction it saw, up to O(1)).
  b = 2000
  one = _crystal.Crystals(jnp.broadcast_to(4 * jnp.eye(3), (b, 3, 3)), jnp.full((b, 1, 3), 0.5),
                          jnp.zeros((b, 1), jnp.int32), jnp.ones((b, 1), bool))

  def fn(noisy, t, c):
    flag = jnp.isnan(c["y"][:, 0]).astype(jnp.float32)
    return (1e3 * flag[:, None, None] * jnp.ones_like(noisy.lattice),
            jnp.zeros_like(noisy.frac_coords), jnp.zeros(noisy.atom_types.shape + (101,)))

  _, m = jax.jit(lambda k: dif.diffusion_loss(fn, one, k, {"y": jnp.ones((b, 1))}))(
      jax.random.key(4))
  np.testing.assert_allclose(float(m["lattice"]) / 1e6, float(m["uncond_fraction"]), atol=1e-5)
  np.testing.assert_allclose(float(m["uncond_fraction"]), 0.2, atol=4 * np.sqrt(0.16 / b))


def test_make_diffusion_loss_for_the_trainers():
  clean = _batch()
  loss_fn = dif.make_diffusion_loss()
  wrapped = dif.make_diffusion_loss(score_fn_of=lambda m: m["fn"])
  model = _oracle(clean)

  @jax.jit
  def three(k):
    return (loss_fn(model, clean, k)[0], loss_fn(model, {"crystals": clean}, k)[0],
            wrapped({"fn": model}, clean, k)[0], dif.diffusion_loss(model, clean, k)[0])

  a, b, c, d = three(jax.random.key(5))
  assert a == b == c == d


def test_guidance_combines_conditional_and_unconditional_outputs():
  clean = _batch()

  def fn(noisy, t, cond):
    c = jnp.nan_to_num(cond["y"], nan=-5.0)[:, 0]
    return (c[:, None, None] * jnp.ones_like(noisy.lattice),
            c[:, None, None] * jnp.ones_like(noisy.frac_coords),
            c[:, None, None] * jnp.ones(noisy.atom_types.shape + (101,)))

  cond = {"y": jnp.array([[1.0], [2.0], [3.0], [4.0]])}
  for gamma in (0.0, 1.0, 2.0, -0.5):
    out = dif.guided_score_fn(fn, gamma)(clean, jnp.ones(4), cond)
    want = gamma * cond["y"][:, 0] + (1 - gamma) * -5.0
    for o in out:
      np.testing.assert_allclose(o.reshape(4, -1), jnp.broadcast_to(want[:, None],
                                                                    o.reshape(4, -1).shape),
                                 rtol=1e-6)
  with pytest.raises(ValueError, match="cond"):
    dif.guided_score_fn(fn, 2.0)(clean, jnp.ones(4), None)


def test_sampler_schedule_is_the_references():
  t, dt, k, k_next = dif.sampler_schedule(1000)
  np.testing.assert_allclose(t, np.linspace(1, 1e-3, 1000))
  np.testing.assert_allclose(dt, -(1 - 1e-3) / 999)
  np.testing.assert_array_equal(k, np.arange(1000, 0, -1))
  np.testing.assert_array_equal(k_next, np.arange(999, -1, -1))
  t, dt, k, k_next = dif.sampler_schedule(37)
  assert k[0] == 1000 and k_next[-1] == 0
  assert np.all(np.diff(k) < 0) and np.all(k_next < k)
  np.testing.assert_array_equal(k_next[:-1], k[1:])


def test_sampler_with_the_exact_score_samples_a_known_distribution():
  # Lattice N(mu0, s0^2) per free entry, coordinates wrapped N(c, 0.05^2), types i.i.d. pi.
  b, n, steps = 600, 3, 100
  mask = jnp.ones((b, n), bool).at[:, 2].set(False)
  natoms = jnp.sum(mask, axis=-1)
  mu0 = jnp.array([[[4.0, 0.5, 0.0], [0.5, 5.0, -0.3], [0.0, -0.3, 6.0]]])
  s0, c0, sc = 0.3, jnp.array([0.1, 0.5, 0.9]), 0.05
  pi = np.zeros(101)
  pi[[5, 10, 20]] = [0.2, 0.3, 0.5]
  logits = jnp.asarray(np.log(np.maximum(pi, 1e-30)), jnp.float32)

  def exact(noisy, t, cond):
    a = lat.lattice_mean_coeff(t)[:, None, None]
    vl = lat.lattice_limit_var(natoms)[:, None, None]
    mean = a * mu0 + (1 - a) * lat.lattice_limit_mean(natoms)
    score = -(noisy.lattice - mean) / (a**2 * s0**2 + (1 - a**2) * vl)
    lat_out = score * jnp.sqrt((1 - a**2) * vl)
    sig = crd.coord_sigma(t, natoms)[:, None, None]
    cs = crd.wrapped_normal_score(noisy.frac_coords, jnp.broadcast_to(c0, noisy.frac_coords.shape),
                                  sc**2 + sig**2, num_images=12)
    return lat_out, cs * sig, jnp.broadcast_to(logits, noisy.atom_types.shape + (101,))

  config = dif.SamplerConfig(num_steps=steps)
  out = jax.jit(lambda k: dif.sample_crystals(exact, k, mask, config=config))(jax.random.key(6))
  _crystal.check_crystals(out)
  x = np.asarray(out.lattice)
  np.testing.assert_allclose(x.mean(0), mu0[0], atol=5 * s0 / np.sqrt(b))
  np.testing.assert_allclose(x.std(0), np.full((3, 3), s0), rtol=0.1)
  disp = np.asarray(crd.nearest_image(out.frac_coords[:, :2] - c0[None, None]))
  np.testing.assert_allclose(disp.mean((0, 1)), 0.0, atol=5 * sc / np.sqrt(2 * b))
  ratio = disp.std((0, 1)) / sc
  assert np.all((ratio > 0.95) & (ratio < 1.12)), ratio   # snr-0.4 corrector: up to +9%
  np.testing.assert_array_equal(out.frac_coords[:, 2], 0.0)
  np.testing.assert_array_equal(out.atom_types[:, 2], 0)
  real = np.asarray(out.atom_types[:, :2]).ravel()
  np.testing.assert_allclose(np.bincount(real, minlength=101) / real.size, pi,
                             atol=4 * np.sqrt(0.25 / real.size))


def test_sampler_returns_right_handed_cells():
  # A score that drives the lattice to a symmetric matrix with one negative eigenvalue: the
  # reverse diffusion ends left-handed, and the sampler returns the same crystal flipped.
  mask = jnp.ones((4, 2), bool)
  target = jnp.diag(jnp.array([4.0, 5.0, -6.0]))[None]

  def score_fn(noisy, t, cond):
    n = noisy.num_atoms
    a = lat.lattice_mean_coeff(t)[:, None, None]
    vl = lat.lattice_limit_var(n)[:, None, None]
    mean = a * target + (1 - a) * lat.lattice_limit_mean(n)
    score = -(noisy.lattice - mean) / (a**2 * 1e-4 + (1 - a**2) * vl)
    return (score * jnp.sqrt((1 - a**2) * vl), jnp.zeros_like(noisy.frac_coords),
            jnp.zeros(noisy.atom_types.shape + (101,)))

  out = dif.sample_crystals(score_fn, jax.random.key(0), mask,
                            config=dif.SamplerConfig(num_steps=30))
  x = np.asarray(out.lattice, np.float64)
  assert np.all(np.linalg.det(x) > 0)
  # -target, up to the correctors' polar decompositions, which fold the negative eigenvalue
  # back at every step (the last predictor step leaves it at about -5.8).
  np.testing.assert_allclose(x, np.broadcast_to(-np.asarray(target), x.shape), atol=0.3)
  _crystal.check_crystals(out)


def test_guided_sampling_equals_sampling_the_combined_score():
  mask = jnp.ones((3, 2), bool)
  cond = {"y": jnp.array([[0.5], [1.0], [-1.0]])}

  def fn(noisy, t, c):
    y = jnp.nan_to_num(c["y"], nan=0.0)[:, 0]
    lat_out = -(noisy.lattice - 4.0 * jnp.eye(3)[None]) * (1.0 + y[:, None, None])
    return (lat_out, -jnp.sin(2 * jnp.pi * noisy.frac_coords) * y[:, None, None],
            jnp.broadcast_to(y[:, None, None] * jnp.arange(101.0)[None, None, :] / 100.0,
                             noisy.atom_types.shape + (101,)))

  gamma = 2.0
  combined = lambda noisy, t, c: tuple(
      gamma * a + (1 - gamma) * u
      for a, u in zip(fn(noisy, t, c), fn(noisy, t, dif.null_condition(c))))
  cfg = dif.SamplerConfig(num_steps=8, corrector_steps=0)
  guided = dif.SamplerConfig(num_steps=8, corrector_steps=0, guidance=gamma)
  a, b = jax.jit(lambda k: (dif.sample_crystals(fn, k, mask, cond, guided),
                            dif.sample_crystals(combined, k, mask, cond, cfg)))(jax.random.key(7))
  for u, v in zip(a, b):
    np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-5)


def test_bad_arguments_raise():
  with pytest.raises(ValueError, match="num_steps"):
    dif.SamplerConfig(num_steps=1)
  with pytest.raises(ValueError, match="corrector_steps"):
    dif.SamplerConfig(corrector_steps=-1)
  with pytest.raises(ValueError, match="coord_snr"):
    dif.SamplerConfig(coord_snr=0.0)
  with pytest.raises(ValueError, match="guidance"):
    dif.SamplerConfig(guidance=float("nan"))
  with pytest.raises(ValueError, match="p_uncond"):
    dif.DiffusionConfig(p_uncond=1.5)
  with pytest.raises(ValueError, match="coord_weight"):
    dif.DiffusionConfig(coord_weight=-1.0)
  with pytest.raises(ValueError, match="lattice_sde"):
    dif.DiffusionConfig(lattice_sde=None)
  with pytest.raises(ValueError, match="guidance needs a condition"):
    dif.sample_crystals(lambda *a: None, jax.random.key(0), jnp.ones((1, 1), bool),
                        config=dif.SamplerConfig(guidance=2.0))
  with pytest.raises(ValueError, match="mask"):
    dif.sample_crystals(lambda *a: None, jax.random.key(0), jnp.ones(3, bool))
  with pytest.raises(ValueError, match="float, int or bool"):
    dif.null_condition({"s": jnp.array([1 + 2j])}, jnp.array([True]))
  with pytest.raises(ValueError, match="score_fn_of"):
    dif.make_diffusion_loss(score_fn_of=3)
