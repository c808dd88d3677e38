"""P-VAE distributions: sample + log_prob throughput of the hyperbolic normals, against NumPy.

Paper: Mathieu, Le Lan, Maddison, Tomioka, Teh, "Continuous Hierarchical Representations with
Poincaré Variational Auto-Encoders" (NeurIPS 2019, arXiv 1901.06033).

The speed item of the P-VAE benchmark: draw N samples and evaluate their log-densities, for the
wrapped normal and the Riemannian normal on the d-dimensional Poincaré ball, with
``tomioka_jax.generative.pvae`` (jitted ``sample_and_log_prob``; the Riemannian radius by inverse
CDF: a quantile table per (sigma, c) solved by safeguarded Newton on the closed-form CDF and
quintic Hermite interpolation of log r; the sample as ``a mu + b v`` from three inner products
per point; ``jax.random.normal``'s draws, made flat and reshaped) and with
a straightforward NumPy/SciPy implementation written here (the Riemannian radius by vectorised
rejection sampling from the Gaussian envelope ``exp(-r^2/2 s^2 + (d-1) sqrt(c) r)``, acceptance
``(1 - exp(-2 sqrt(c) r))^(d-1)``). Both in float64, and both evaluate the log-density at the
tangent vector / radius they drew (no log map or distance back from the sample). The two radius
samplers are also checked against each other (two-sample KS test).
The tree and digits likelihood experiments are benchmarks/pvae_tree.py and pvae_digits.py.
"""

from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy import special, stats  # noqa: E402

from benchmarks import _harness  # noqa: E402
from tomioka_jax.generative import pvae  # noqa: E402

PAPER = "Mathieu, Le Lan, Maddison, Tomioka, Teh 2019 (P-VAE, arXiv 1901.06033)"
NAME = "pvae"
C = 1.0
SCALE = 0.8
# Why a sample + log_prob speed claim may now be NO, with what the removed path measured (quick
# runs, same machine; samples per CPU-second, or the CPU-time speed-up over NumPy).
SPEED_NO_REASON = ("stock jax.random since issue 15 (the fused threefry+erfinv path was "
                   "removed); {before}")
FUSED_BEFORE = {
    ("wrapped", 2): "it gave 2.10x NumPy in CPU time at d = 2",
    ("wrapped", 10): "1.90M -> 1.03M samples/s CPU at d = 10",
    ("riemannian", 2): "it gave 1.58x NumPy in CPU time at d = 2",
    ("riemannian", 10): "1.74M -> 0.83M samples/s CPU at d = 10",
}


# ----------------------------------------------------------------------------- NumPy reference
def _np_mobius_add(x, y, c):
  xy, x2, y2 = np.sum(x * y, -1, keepdims=True), np.sum(x * x, -1, keepdims=True), np.sum(
      y * y, -1, keepdims=True)
  return ((1 + 2 * c * xy + c * y2) * x + (1 - c * x2) * y) / (1 + 2 * c * xy + c**2 * x2 * y2)


def _np_expmap(x, v, c):
  lam = 2 / (1 - c * np.sum(x * x, -1, keepdims=True))
  n = np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-15)
  return _np_mobius_add(x, np.tanh(np.sqrt(c) * lam * n / 2) * v / (np.sqrt(c) * n), c)


def _np_distance(x, y, c):
  n = np.linalg.norm(_np_mobius_add(-x, y, c), axis=-1)
  return 2 / np.sqrt(c) * np.arctanh(np.sqrt(c) * n)


def np_wrapped_normal(rng, loc, scale, c, n):
  d = loc.shape[-1]
  v = scale * rng.normal(size=(n, d))
  lam = 2 / (1 - c * np.sum(loc**2))
  z = _np_expmap(loc, (2 / lam) * v / 2, c)
  r = np.linalg.norm(v, axis=-1)  # the density at the drawn v = lambda_mu log_mu(z) (eq. 5)
  # The Gaussian log-density written out (scipy.stats.norm.logpdf costs ~2x more here).
  log_p = (-0.5 * np.sum(np.square(v / scale), -1)
           - d * (math.log(scale) + 0.5 * math.log(2 * math.pi))
           - (d - 1) * np.log(np.sinh(np.sqrt(c) * r) / (np.sqrt(c) * r)))
  return z, log_p


def np_riemannian_log_z(scale, c, d):
  n = d - 1
  k = np.arange(n + 1)
  b = (n - 2 * k) * np.sqrt(c)
  terms = special.gammaln(n + 1) - special.gammaln(k + 1) - special.gammaln(n - k + 1) + (
      b * scale)**2 / 2 + special.log_ndtr(b * scale)
  log_sum = special.logsumexp(terms, b=(-1.0)**k)
  log_area = math.log(2) + d / 2 * math.log(math.pi) - math.lgamma(d / 2)
  return (log_area - n / 2 * math.log(c) - n * math.log(2) + math.log(scale)
          + 0.5 * math.log(2 * math.pi) + log_sum)


def np_riemannian_normal(rng, loc, scale, c, n):
  d = loc.shape[-1]
  radii = np.empty(0)
  while radii.size < n:  # rejection from the Gaussian envelope
    r = rng.normal((d - 1) * np.sqrt(c) * scale**2, scale, size=2 * n)
    r = r[r > 0]
    accept = rng.uniform(size=r.size) < (-np.expm1(-2 * np.sqrt(c) * r))**(d - 1)
    radii = np.concatenate([radii, r[accept]])
  radii = radii[:n]
  e = rng.normal(size=(n, d))
  alpha = e / np.linalg.norm(e, axis=-1, keepdims=True)
  lam = 2 / (1 - c * np.sum(loc**2))
  z = _np_expmap(loc, (2 / lam) * radii[:, None] * alpha / 2, c)
  log_p = -radii**2 / (2 * scale**2) - np_riemannian_log_z(scale, c, d)  # d_c(loc, z) = radii
  return z, log_p, radii


# ----------------------------------------------------------------------------- benchmark
def _time(fn, *args, repeats: int) -> dict:
  """Median wall and process-CPU seconds of ``fn(*args)`` after one warm-up (compile) call."""
  t0 = time.perf_counter()
  _harness.block(fn(*args))
  first = time.perf_counter() - t0
  walls, cpus = [], []
  with _harness.exclusive():  # the throughput claims are timings: the others pause
    for _ in range(repeats):
      w0, c0 = time.perf_counter(), time.process_time()
      _harness.block(fn(*args))
      walls.append(time.perf_counter() - w0)
      cpus.append(time.process_time() - c0)
  wall, cpu = float(np.median(walls)), float(np.median(cpus))
  return {"wall_s": wall, "cpu_s": cpu, "compile_s": max(first - wall, 0.0), "runs_s": walls}


def run(quick: bool, smoke: bool = False) -> _harness.Result:
  n = 1000 if smoke else 100_000 if quick else 1_000_000
  repeats = 1 if smoke else 3 if quick else 5
  dims = (2, 10)
  rows, data, claims = [], {"n": n, "c": C, "scale": SCALE, "dims": dims}, []
  radii_for_plot = {}
  ups = {}
  with jax.enable_x64(True):
    for d in dims:
      loc = np.full(d, 0.3 / np.sqrt(d))
      wn = pvae.WrappedNormal(jnp.asarray(loc), jnp.full(d, SCALE), C)
      rn = pvae.RiemannianNormal(jnp.asarray(loc), SCALE, C)
      # One jit over sample + log_prob (distrax's sample_and_log_prob).
      ours = {
          "wrapped": jax.jit(lambda k, dist=wn: dist.sample_and_log_prob(seed=k, sample_shape=n)),
          "riemannian": jax.jit(lambda k, dist=rn: dist.sample_and_log_prob(seed=k,
                                                                            sample_shape=n)),
          "N(0, I) draws only": jax.jit(lambda k: jax.random.normal(k, (n, d), jnp.float64)),
      }
      rng = np.random.default_rng(0)
      numpy_fns = {
          "wrapped": lambda: np_wrapped_normal(rng, loc, SCALE, C, n),
          "riemannian": lambda: np_riemannian_normal(rng, loc, SCALE, C, n)[:2],
          "N(0, I) draws only": lambda: rng.normal(size=(n, d)),
      }
      for name in ("wrapped", "riemannian", "N(0, I) draws only"):
        t_np = _time(numpy_fns[name], repeats=repeats)
        t_jax = _time(ours[name], jax.random.key(d), repeats=repeats)
        wall_up, cpu_up = t_np["wall_s"] / t_jax["wall_s"], t_np["cpu_s"] / t_jax["cpu_s"]
        ups[(name, d)] = (wall_up, cpu_up)
        rows.append([name, d, f"{n / t_jax['wall_s']:,.0f}", f"{n / t_np['wall_s']:,.0f}",
                     f"{wall_up:.3g}x", f"{cpu_up:.3g}x", f"{t_jax['compile_s']:.2f}"])
        data[f"{name}_d{d}"] = {"jax": t_jax, "numpy": t_np}
      # Agreement of the two samplers (inverse CDF vs rejection) and of the log-normalisers.
      z, log_p = ours["riemannian"](jax.random.key(100 + d))
      r_ours = np.asarray(pvae.distance(jnp.broadcast_to(jnp.asarray(loc), z.shape), z, C))
      # The fused log-density equals the density recomputed from z (NumPy geometry).
      recomputed = (-_np_distance(loc, np.asarray(z), C)**2 / (2 * SCALE**2)
                    - np_riemannian_log_z(SCALE, C, d))
      data[f"fused_log_prob_gap_d{d}"] = float(np.max(np.abs(np.asarray(log_p) - recomputed)))
      r_np = np_riemannian_normal(np.random.default_rng(1), loc, SCALE, C, n)[2]
      ks = stats.ks_2samp(r_ours, r_np).pvalue
      log_z_gap = abs(float(pvae.log_normalizer(SCALE, C, d)) - np_riemannian_log_z(SCALE, C, d))
      data[f"ks_pvalue_d{d}"], data[f"log_z_gap_d{d}"] = ks, log_z_gap
      radii_for_plot[d] = (r_ours, r_np)
      claims.append(_harness.Claim(
          f"inverse-CDF radius sampler matches rejection sampling (d={d}, n={n}, KS p > 0.001)",
          "-", f"p = {ks:.3f}", bool(ks > 1e-3)))
  table = _harness.markdown_table(
      ["distribution", "d", "ours samples/s", "NumPy samples/s", "speed-up (wall)",
       "speed-up (CPU time)", "compile s"], rows)
  for name in ("wrapped", "riemannian"):
    for d in dims:
      wall_up, cpu_up = ups[(name, d)]
      holds = bool(wall_up > 1 and cpu_up > 1)
      claims.append(_harness.Claim(
          f"{name} normal, d={d}: sample + log_prob faster than the NumPy reference (CPU, "
          f"float64, n={n}; speed-up in wall / CPU time)",
          "-", f"{wall_up:.3g}x / {cpu_up:.3g}x", holds,
          reason="" if holds else SPEED_NO_REASON.format(before=FUSED_BEFORE[(name, d)])))

  fig, axes = plt.subplots(1, len(dims), figsize=(5 * len(dims), 3.5))
  with jax.enable_x64(True):
    for ax, d in zip(axes, dims):
      r_ours, r_np = radii_for_plot[d]
      bins = np.linspace(0, max(r_ours.max(), r_np.max()), 60)
      ax.hist(r_ours, bins, density=True, alpha=0.5, label="ours (inverse CDF)")
      ax.hist(r_np, bins, density=True, histtype="step", color="k", label="NumPy (rejection)")
      grid = np.linspace(1e-3, bins[-1], 300)
      ax.plot(grid, np.exp(np.asarray(pvae.radius_log_prob(jnp.asarray(grid), SCALE, C, d))),
              "r-", label="closed-form density")
      ax.set(title=f"Riemannian normal radius, d={d}, c={C}, sigma={SCALE}", xlabel="d_c(mu, z)")
      ax.legend(fontsize=7)
  fig.tight_layout()
  return _harness.Result(
      name=NAME, paper=PAPER, claims=claims, tables=[table], data=data, figure=fig,
      notes=("Throughput of draw-N-samples-and-evaluate-their-log-density, float64, "
             f"N = {n}, c = {C}, sigma = {SCALE}, loc at Euclidean radius 0.3, one jit over "
             "sample + log_prob; medians of wall and process-CPU time (XLA may use both cores, "
             "NumPy uses one; the machine is shared, so wall ratios are noisy). The NumPy "
             "reference is written in benchmarks/pvae.py (the same geometry and closed-form "
             "log-normaliser; the radius by rejection from the Gaussian envelope, as the "
             "reference code's rejection sampler). Both sides return the log-density at the "
             "tangent vector / radius they drew (distrax's sample_and_log_prob), not "
             "recomputed from z. Our radius sampler is an exact inverse CDF with implicit "
             "gradients: with many samples per (sigma, c) it tabulates log r(z) once (257 "
             "z-nodes solved by safeguarded Newton on the closed-form log-CDF, with r' and r'' "
             "from the quantile equation) and maps each sample by quintic Hermite interpolation "
             "and one exp (relative error < 1e-9, no per-sample CDF evaluation). The sample "
             "mu (+) exp_0(v / 2) is formed as a mu + b v from three inner products per point "
             "(|eps|^2, |v|^2, <mu, v>), with both of the Möbius operations' projections, "
             "instead of the vector-valued composition (five passes over the (N, d) arrays). "
             "The N(0, I) draws are stock jax.random.normal's (core.flat_normal: one flat "
             "vector, reshaped; the same numbers, a shorter compile). An earlier version wrote "
             "the threefry hash out so that XLA:CPU fused it with erfinv (JAX's CPU lowering "
             "loops over the hash's five blocks of rounds, materialising the bit arrays each "
             "time): ~2x the samples per CPU-second at d = 10 (wrapped 1.90M vs 1.03M, "
             "Riemannian 1.74M vs 0.83M; 1.1x-1.3x in wall time), dropped so that the library "
             "draws only with jax.random (issue 15). The "
             "'draws only' rows time jax.random.normal itself: its float64 N(0, 1) (threefry "
             "bits + erfinv, ~30 ns per number of which the f64 log1p is half) costs several "
             "times NumPy's ziggurat on CPU, and the d = 10 samplers need 10 of them per point "
             "(JAX's rbg keys were not consistently faster in a side-by-side run here). "
             "Earlier versions: a reduce over the size-2 event axis ran ~6x slower than the "
             "unrolled sum now used, a per-sample Newton polish (two 4-point Gauss-Legendre "
             "integrals) made the Riemannian radius 2x slower, and the vector-valued Möbius "
             "composition with jax.random.normal's rolled hash made the d = 10 samplers 0.5x-0.6x "
             "NumPy's speed in CPU time."))
