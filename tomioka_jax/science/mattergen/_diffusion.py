"""MatterGen's joint diffusion: the training loss over lattice, coordinates and types, and the
predictor-corrector sampler with classifier-free guidance.

**The score model protocol.** Any callable

    score_fn(noisy: Crystals, t: (B,), cond) -> (lattice_out (B, 3, 3), coord_out (B, N, 3),
                                                 type_logits (B, N, 101))

where ``noisy`` holds L_t, x_t (in [0, 1)) and the types x_t (MASK = 100 allowed) with the clean
batch's ``mask``, ``t`` is the continuous diffusion time in [0, 1], and ``cond`` is ``None`` or
a pytree of arrays with leading axis B. The first two outputs are the reference's
``score_times_std`` targets: sigma_t times the score (the lattice VP's entrywise score, the
wrapped-normal score in fractional coordinates), so they are O(1) at every t; the sampler
divides them by sigma_t. ``type_logits`` parameterize p(x_0 | x_t) (the MASK logit is ignored).
The model must treat padding atoms (``mask`` False) as absent.

**The unconditional token.** A dropped condition (training, probability ``p_uncond`` = 0.2 per
crystal, all properties together as the reference's ``dropout_fields_iid: false``) and the
unconditional half of classifier-free guidance reach ``score_fn`` through
:func:`null_condition`: floating leaves become NaN on the dropped crystals, integer leaves -1,
boolean leaves False. A network recognizes them (``jnp.isnan``) and substitutes its learned
null embedding.

**Loss** (``mattergen/common/loss.py`` with ``reduce: sum`` and the default weights): per
crystal, with t ~ U[1e-5, 1],

    1.0 * mean_{9 entries} (lattice_out + z_L)^2            (z_L the symmetric lattice noise)
  + 0.1 * sum_{atoms} mean_{3} (coord_out - sigma_t s_W(x_t | x_0))^2
  + 1.0 * sum_{atoms} [D3PM hybrid loss, lambda = 0.01],

averaged over the batch; the clean lattice is first made symmetric (polar decomposition).

**Sampler** (``sampling_conf/default.yaml``, ``PredictorCorrector._denoise``): times
t_i = linspace(1, 1/S, S), dt = -(1 - 1/S) / (S - 1); at each t_i one Langevin corrector step
(snr 0.4 coordinates, 0.2 lattice, max step 1e6) then one ancestral predictor step to t_i + dt
for all three fields (the types at D3PM steps k(t) = floor(t (N - 1)) + 1 -> k(t + dt), 0 at the
end). Two model calls per step, one ``lax.scan`` under ``jit``. Classifier-free guidance with
factor gamma evaluates the unconditional and conditional model in one doubled batch and uses
gamma * out_cond + (1 - gamma) * out_uncond for every output (logits included).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from tomioka_jax.science.mattergen import _coords
from tomioka_jax.science.mattergen import _crystal
from tomioka_jax.science.mattergen import _lattice
from tomioka_jax.science.mattergen import _types

ScoreFn = Callable[[_crystal.Crystals, jax.Array, Any], tuple[jax.Array, jax.Array, jax.Array]]


def null_condition(cond: Any, drop: jax.Array | None = None) -> Any:
  """The condition with the crystals where ``drop`` (B,) is True replaced by the null token.

  Floating leaves -> NaN, integer leaves -> -1, boolean leaves -> False; ``drop=None`` drops all.
  ``None`` stays ``None``.
  """
  if cond is None:
    return None

  def leaf(x):
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.floating):
      null = jnp.nan
    elif jnp.issubdtype(x.dtype, jnp.bool_):
      null = False
    elif jnp.issubdtype(x.dtype, jnp.integer):
      null = -1
    else:
      raise ValueError(f"cond leaves must be float, int or bool arrays, got dtype {x.dtype}")
    if drop is None:
      return jnp.full_like(x, null)
    d = drop.reshape(drop.shape + (1,) * (x.ndim - 1))
    return jnp.where(d, jnp.asarray(null, x.dtype), x)

  return jax.tree.map(leaf, cond)


@dataclasses.dataclass(frozen=True)
class DiffusionConfig:
  """The corruptions and loss settings (the reference's defaults).

  Attributes:
    lattice_sde, coord_sde, type_diffusion: the three corruptions.
    lattice_weight, coord_weight, type_weight: the loss weights (cell 1, positions 0.1, types 1).
    hybrid_lambda: the D3PM cross-entropy weight.
    p_uncond: the probability of dropping a crystal's condition during training.
    min_t: training times are drawn from U[min_t, 1].
    symmetrize_lattice: make the clean lattice symmetric (polar decomposition) before noising.
  """
  lattice_sde: _lattice.LatticeVPSDE = _lattice.LATTICE_SDE
  coord_sde: _coords.WrappedVESDE = _coords.COORD_SDE
  type_diffusion: _types.MaskDiffusion = _types.TYPE_DIFFUSION
  lattice_weight: float = 1.0
  coord_weight: float = 0.1
  type_weight: float = 1.0
  hybrid_lambda: float = 0.01
  p_uncond: float = 0.2
  min_t: float = 1e-5
  symmetrize_lattice: bool = True

  def __post_init__(self):
    for name in ("lattice_weight", "coord_weight", "type_weight", "hybrid_lambda"):
      if not getattr(self, name) >= 0.0:
        raise ValueError(f"{name} must be non-negative, got {getattr(self, name)}")
    if not 0.0 <= self.p_uncond <= 1.0:
      raise ValueError(f"p_uncond must be in [0, 1], got {self.p_uncond}")
    if not 0.0 <= self.min_t < 1.0:
      raise ValueError(f"min_t must be in [0, 1), got {self.min_t}")
    if not isinstance(self.lattice_sde, _lattice.LatticeVPSDE):
      raise ValueError(f"lattice_sde must be a LatticeVPSDE, got {self.lattice_sde!r}")
    if not isinstance(self.coord_sde, _coords.WrappedVESDE):
      raise ValueError(f"coord_sde must be a WrappedVESDE, got {self.coord_sde!r}")
    if not isinstance(self.type_diffusion, _types.MaskDiffusion):
      raise ValueError(f"type_diffusion must be a MaskDiffusion, got {self.type_diffusion!r}")


DEFAULT_DIFFUSION = DiffusionConfig()


def corrupt_crystals(key: jax.Array, crystals: _crystal.Crystals, t: jax.Array,
                     config: DiffusionConfig = DEFAULT_DIFFUSION
                     ) -> tuple[_crystal.Crystals, dict[str, jax.Array]]:
  """Draws the noisy batch at times ``t`` (B,) and the regression targets.

  Returns:
    (noisy, targets) with ``targets["lattice"]`` = -z_L (B, 3, 3) (sigma_t times the lattice
    score), ``targets["coords"]`` = sigma_t s_W(x_t | x_0) (B, N, 3), ``targets["k"]`` the D3PM
    step k (B,) with the noisy types at k + 1, and ``targets["lattice0"]`` the (symmetrized)
    clean lattice. Padding atoms of ``noisy`` are 0 (coordinates and types).
  """
  lattice0, frac0, types0, mask = crystals
  n = jnp.sum(mask, axis=-1)
  k_l, k_x, k_a = jax.random.split(key, 3)
  if config.symmetrize_lattice:
    lattice0 = _lattice.symmetric_lattice(lattice0)
  lat_t, z = _lattice.lattice_sample_marginal(k_l, lattice0, t, n, config.lattice_sde)
  m3 = mask[:, :, None]
  frac_t = jnp.where(m3, _coords.coord_sample_marginal(k_x, frac0, t, n, config.coord_sde), 0.0)
  sigma = _coords.coord_sigma(t, n, config.coord_sde).astype(frac0.dtype)
  coord_target = jnp.where(
      m3, _coords.coord_marginal_score(frac_t, frac0, t, n, config.coord_sde)
      * sigma[:, None, None], 0.0)
  k = _types.d3pm_discrete_time(t, config.type_diffusion)
  types_t = _types.d3pm_sample_marginal(k_a, types0, (k + 1)[:, None], config.type_diffusion)
  types_t = jnp.where(mask, types_t, 0).astype(jnp.int32)
  noisy = _crystal.Crystals(lat_t, frac_t, types_t, mask)
  return noisy, {"lattice": -z, "coords": coord_target, "k": k, "lattice0": lattice0}


def diffusion_loss(score_fn: ScoreFn, crystals: _crystal.Crystals, key: jax.Array,
                   cond: Any = None, config: DiffusionConfig = DEFAULT_DIFFUSION
                   ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """MatterGen's training loss on a clean batch (see the module docstring); jittable.

  Args:
    score_fn: the model, see the protocol in the module docstring.
    crystals: the clean batch (types 0..99 on real atoms).
    key: PRNG key (times, noise, condition dropout).
    cond: ``None`` or a pytree of arrays with leading axis B.
    config: the corruptions, weights and dropout.

  Returns:
    (loss, metrics) with the scalar loss (mean over crystals of the weighted per-crystal sum)
    and metrics ``lattice``, ``coords``, ``types`` (each field's unweighted mean per-crystal
    loss), ``types_kl``, ``types_ce`` and ``uncond_fraction``.
  """
  _crystal.check_crystals(crystals)
  lattice0, frac0, types0, mask = crystals
  b = lattice0.shape[0]
  k_t, k_noise, k_drop = jax.random.split(key, 3)
  t = jax.random.uniform(k_t, (b,), lattice0.dtype, config.min_t, 1.0)
  noisy, tg = corrupt_crystals(k_noise, crystals, t, config)
  drop = jax.random.bernoulli(k_drop, config.p_uncond, (b,))
  cond_in = null_condition(cond, drop)
  lat_out, coord_out, logits = score_fn(noisy, t, cond_in)
  maskf = mask.astype(lattice0.dtype)
  lat_loss = jnp.mean((lat_out - tg["lattice"]) ** 2, axis=(1, 2))
  coord_loss = jnp.sum(jnp.mean((coord_out - tg["coords"]) ** 2, axis=-1) * maskf, axis=-1)
  type_atom, parts = _types.d3pm_hybrid_loss(
      types0, noisy.atom_types, tg["k"][:, None], logits, config.type_diffusion,
      config.hybrid_lambda)
  type_loss = jnp.sum(jnp.where(mask, type_atom, 0.0), axis=-1)
  total = (config.lattice_weight * lat_loss + config.coord_weight * coord_loss
           + config.type_weight * type_loss)
  metrics = {
      "lattice": jnp.mean(lat_loss), "coords": jnp.mean(coord_loss),
      "types": jnp.mean(type_loss),
      "types_kl": jnp.mean(jnp.sum(jnp.where(mask, parts["kl"], 0.0), axis=-1)),
      "types_ce": jnp.mean(jnp.sum(jnp.where(mask, parts["ce"], 0.0), axis=-1)),
      "uncond_fraction": jnp.mean(drop.astype(lattice0.dtype)) if cond is not None
      else jnp.ones((), lattice0.dtype),
  }
  return jnp.mean(total), metrics


def make_diffusion_loss(config: DiffusionConfig = DEFAULT_DIFFUSION,
                        score_fn_of: Callable[[Any], ScoreFn] | None = None
                        ) -> Callable[[Any, Any, jax.Array], tuple[jax.Array, dict]]:
  """``loss_fn(model, batch, rng)`` for the core trainers.

  The score model is ``model`` itself (the family's ``MatterGenDenoiser`` follows the protocol:
  ``model(noisy, t, cond)`` with ``cond`` a dict property -> values), or ``score_fn_of(model)``
  for a model with another interface. ``batch`` is a ``Crystals`` or a
  dict ``{"crystals": Crystals, "cond": ...}`` (cond optional).
  """
  if not isinstance(config, DiffusionConfig):
    raise ValueError(f"config must be a DiffusionConfig, got {type(config).__name__}")
  if score_fn_of is not None and not callable(score_fn_of):
    raise ValueError(f"score_fn_of must be None or callable, got {score_fn_of!r}")

  def loss_fn(model, batch, rng):
    if isinstance(batch, _crystal.Crystals):
      crystals, cond = batch, None
    else:
      crystals, cond = batch["crystals"], batch.get("cond")
    score_fn = model if score_fn_of is None else score_fn_of(model)
    return diffusion_loss(score_fn, crystals, rng, cond, config)

  return loss_fn


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
  """Predictor-corrector settings (the reference's ``sampling_conf/default.yaml``).

  Attributes:
    num_steps: S predictor steps (the reference: 1000 = the D3PM's N).
    corrector_steps: Langevin steps before each predictor step.
    coord_snr, lattice_snr: the correctors' signal-to-noise ratios.
    max_step_size: the correctors' largest step.
    per_crystal_norms: corrector step sizes from each crystal's own norms (the reference
      averages the norms over the batch: False).
    guidance: None (use ``cond`` as given) or gamma for classifier-free guidance.
  """
  num_steps: int = 1000
  corrector_steps: int = 1
  coord_snr: float = 0.4
  lattice_snr: float = 0.2
  max_step_size: float = 1e6
  per_crystal_norms: bool = False
  guidance: float | None = None

  def __post_init__(self):
    if not (isinstance(self.num_steps, int) and self.num_steps >= 2):
      raise ValueError(f"num_steps must be an integer >= 2, got {self.num_steps!r}")
    if not (isinstance(self.corrector_steps, int) and self.corrector_steps >= 0):
      raise ValueError(
          f"corrector_steps must be a non-negative integer, got {self.corrector_steps!r}")
    for name in ("coord_snr", "lattice_snr", "max_step_size"):
      if not getattr(self, name) > 0.0:
        raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
    if self.guidance is not None and not np.isfinite(self.guidance):
      raise ValueError(f"guidance must be None or a finite number, got {self.guidance}")


DEFAULT_SAMPLER = SamplerConfig()


def sampler_schedule(num_steps: int, diffusion: _types.MaskDiffusion = _types.TYPE_DIFFUSION
                     ) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
  """Times t_i = linspace(1, 1/S, S), dt, and the D3PM steps k_i -> k_{i+1} of each step.

  k(t) = floor(t (N - 1)) + 1 (computed in float64), the last target 0; with S = N these are
  N, N-1, ..., 1 -> 0, the reference's chain.
  """
  if not (isinstance(num_steps, int) and num_steps >= 2):
    raise ValueError(f"num_steps must be an integer >= 2, got {num_steps!r}")
  eps = 1.0 / num_steps
  t = np.linspace(1.0, eps, num_steps)
  dt = -(1.0 - eps) / (num_steps - 1)
  n = diffusion.num_steps
  k = np.floor(np.round(t * (n - 1), 9)).astype(np.int32) + 1
  k_next = np.concatenate([k[1:], [0]]).astype(np.int32)
  return t, dt, k, k_next


def guided_score_fn(score_fn: ScoreFn, guidance: float) -> ScoreFn:
  """Classifier-free guidance: ``out = gamma out(cond) + (1 - gamma) out(null)`` per output.

  The unconditional and conditional inputs run as one batch of 2B; gamma = 1 is the
  conditional model, gamma = 0 the unconditional one (one call each).
  """
  if not np.isfinite(guidance):
    raise ValueError(f"guidance must be finite, got {guidance}")
  gamma = float(guidance)

  def guided(noisy, t, cond):
    if cond is None:
      raise ValueError("classifier-free guidance needs a condition, got cond=None")
    if gamma == 1.0:
      return score_fn(noisy, t, cond)
    if gamma == 0.0:
      return score_fn(noisy, t, null_condition(cond))
    both = jax.tree.map(lambda x: jnp.concatenate([x, x], axis=0), noisy)
    cond2 = jax.tree.map(lambda u, c: jnp.concatenate([u, c], axis=0),
                         null_condition(cond), cond)
    out = score_fn(both, jnp.concatenate([t, t], axis=0), cond2)
    b = t.shape[0]
    return tuple(o[:b] + gamma * (o[b:] - o[:b]) for o in out)

  return guided


def sample_crystals(score_fn: ScoreFn, key: jax.Array, mask: jax.Array, cond: Any = None,
                    config: SamplerConfig = DEFAULT_SAMPLER,
                    diffusion: DiffusionConfig = DEFAULT_DIFFUSION,
                    dtype=jnp.float32) -> _crystal.Crystals:
  """Generates one crystal per row of ``mask`` (B, N) by predictor-corrector sampling.

  Args:
    score_fn: the model (protocol in the module docstring); with ``config.guidance`` set it is
      wrapped by :func:`guided_score_fn`.
    key: PRNG key.
    mask: (B, N) bool, which slots hold atoms (the atom counts are the condition on size).
    cond: ``None`` or the condition pytree (leading axis B).
    config: steps, correctors and guidance.
    diffusion: the corruptions (the same as in training).
    dtype: the float dtype of the state.

  Returns:
    The generated ``Crystals`` (the last step is noise-free for lattice and coordinates; types
    in 0..99 unless the model predicts otherwise; padding atoms 0). The reverse lattice
    diffusion keeps the cell symmetric, not positive definite; a left-handed result is returned
    as the same crystal in a right-handed cell (:func:`_crystal.right_handed`). Jittable with ``score_fn``,
    ``config``, ``diffusion`` and ``dtype`` static; call under ``jax.jit`` to compile once.

  Example (data distributed as the lattice prior, so the exact lattice score is -(L - mu_n) /
  v_n, times sigma_t for the std-scaled output; flat coordinates and types):

    >>> import jax, jax.numpy as jnp
    >>> def score_fn(noisy, t, cond):
    ...   n = noisy.num_atoms
    ...   mu, v = _lattice.lattice_limit_mean(n), _lattice.lattice_limit_var(n)[:, None, None]
    ...   sigma = _lattice.lattice_marginal(noisy.lattice, t, n)[1][:, None, None]
    ...   return (-(noisy.lattice - mu) / v * sigma, jnp.zeros_like(noisy.frac_coords),
    ...           jnp.zeros(noisy.atom_types.shape + (101,)))
    >>> mask = jnp.array([[True, True, False]])
    >>> sample = jax.jit(lambda key: sample_crystals(
    ...     score_fn, key, mask, config=SamplerConfig(num_steps=10)))(jax.random.key(0))
    >>> sample.frac_coords.shape, int(sample.atom_types[0, 2])
    ((1, 3, 3), 0)
  """
  if not isinstance(config, SamplerConfig):
    raise ValueError(f"config must be a SamplerConfig, got {type(config).__name__}")
  if not isinstance(diffusion, DiffusionConfig):
    raise ValueError(f"diffusion must be a DiffusionConfig, got {type(diffusion).__name__}")
  mask = jnp.asarray(mask, bool)
  if mask.ndim != 2:
    raise ValueError(f"mask must have shape (B, N), got {mask.shape}")
  if config.guidance is not None:
    if cond is None:
      raise ValueError("config.guidance is set but cond is None: guidance needs a condition")
    model = guided_score_fn(score_fn, config.guidance)
  else:
    model = score_fn
  b = mask.shape[0]
  n = jnp.sum(mask, axis=-1)
  ls, cs, td = diffusion.lattice_sde, diffusion.coord_sde, diffusion.type_diffusion
  times, dt, k_now, k_next = sampler_schedule(config.num_steps, td)
  dt = jnp.asarray(dt, dtype)
  k0, k1, k2, key = jax.random.split(key, 4)
  state = _crystal.Crystals(
      _lattice.lattice_prior_sample(k0, n, ls, dtype),
      _coords.coord_prior_sample(k1, mask, cs, dtype),
      _types.d3pm_prior_sample(mask, td), mask)

  def scores(x, t_b):
    lat_out, coord_out, logits = model(x, t_b, cond)
    return (_lattice.lattice_score_from_output(lat_out, t_b, n, ls),
            _coords.coord_score_from_output(coord_out, t_b, n, cs), logits)

  def step(x, inp):
    t, kn, kx, skey = inp
    t_b = jnp.full((b,), t, dtype)
    for c in range(config.corrector_steps):
      ck_l, ck_x = jax.random.split(jax.random.fold_in(skey, c + 1))
      s_lat, s_coord, _ = scores(x, t_b)
      lat, _ = _lattice.lattice_corrector_step(
          ck_l, x.lattice, s_lat, t_b, dt, snr=config.lattice_snr,
          max_step_size=config.max_step_size, per_crystal=config.per_crystal_norms, sde=ls)
      frac, _ = _coords.coord_corrector_step(
          ck_x, x.frac_coords, s_coord, mask, snr=config.coord_snr,
          max_step_size=config.max_step_size, per_crystal=config.per_crystal_norms)
      x = x._replace(lattice=lat, frac_coords=frac)
    pk_l, pk_x, pk_a = jax.random.split(jax.random.fold_in(skey, 0), 3)
    s_lat, s_coord, logits = scores(x, t_b)
    lat, _ = _lattice.lattice_predictor_step(pk_l, x.lattice, s_lat, t_b, dt, n, ls)
    frac, _ = _coords.coord_predictor_step(pk_x, x.frac_coords, s_coord, t_b, dt, mask, cs)
    types, _ = _types.d3pm_ancestral_step(pk_a, x.atom_types, logits, kn, kx, mask, td)
    return _crystal.Crystals(lat, frac, types, mask), None

  keys = jax.random.split(k2, config.num_steps)
  xs = (jnp.asarray(times, dtype), jnp.asarray(k_now), jnp.asarray(k_next), keys)
  out, _ = jax.lax.scan(step, state, xs)
  return _crystal.right_handed(out)
