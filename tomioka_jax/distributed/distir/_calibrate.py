"""Calibration of the simulator's device and link constants on the local devices.

Santhanam et al. (2021), section 5.1 (``dist_ir/executor/calibrate_simulator.py`` in the
reference). The kernel model of :mod:`_cost` is linear in its constants,

    t = L + flops * (1 / F) + bytes * (1 / B),

so timing kernels of known FLOPs and bytes (matmuls of several sizes, elementwise ops) and
solving the **non-negative least squares** problem ``min ||A c - t||, c >= 0`` with rows
``A_i = (1, flops_i, bytes_i)`` gives ``c = (L, 1/F, 1/B)``. Links are fitted the same way
from device-to-device copies: ``t = alpha + bytes / beta``. Times are medians of repeats
with the compile excluded. The relative residuals of each fit are reported.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from scipy import optimize

from tomioka_jax.distributed.distir import _ir as ir


@dataclasses.dataclass(frozen=True)
class Calibration:
  """Fitted constants and the fits' relative residuals.

  Attributes:
    flops: FLOP/s (``inf`` if the fit gives the FLOP term no weight).
    dram_bandwidth: bytes/s of kernels.
    launch_overhead: seconds per kernel launch.
    latency: link latency alpha, seconds.
    bandwidth: link bandwidth beta, bytes/s.
    kernel_residuals, link_residuals: ``(predicted - measured) / measured`` per timing.
  """

  flops: float
  dram_bandwidth: float
  launch_overhead: float
  latency: float
  bandwidth: float
  kernel_residuals: tuple[float, ...] = ()
  link_residuals: tuple[float, ...] = ()

  def topology(self, num_devices: int, **device_kwargs) -> ir.Topology:
    """A uniform topology of ``num_devices`` devices with these constants."""
    big = 1e30
    return ir.Topology.uniform(
        num_devices, bandwidth=min(self.bandwidth, big), latency=self.latency,
        flops=min(self.flops, big), dram_bandwidth=min(self.dram_bandwidth, big),
        launch_overhead=self.launch_overhead, kind="calibrated", **device_kwargs)


def _nnls(design: np.ndarray, seconds: np.ndarray, weighted: bool
          ) -> tuple[np.ndarray, np.ndarray]:
  # Relative weighting (divide each row by its time) fits small and large kernels alike.
  w = 1.0 / seconds if weighted else np.ones_like(seconds)
  coef, _ = optimize.nnls(design * w[:, None], seconds * w)
  residuals = (design @ coef - seconds) / seconds
  return coef, residuals


def _check_timings(where: str, seconds, *columns) -> np.ndarray:
  seconds = np.asarray(seconds, np.float64)
  if seconds.ndim != 1 or seconds.size < len(columns) + 1:
    raise ValueError(f"{where}: need a 1-D array of at least {len(columns) + 1} timings, got "
                     f"shape {seconds.shape}")
  if not np.all(seconds > 0):
    raise ValueError(f"{where}: timings must be > 0")
  for name, col in columns:
    col = np.asarray(col, np.float64)
    if col.shape != seconds.shape:
      raise ValueError(f"{where}: {name} must have shape {seconds.shape}, got {col.shape}")
    if not np.all(col >= 0):
      raise ValueError(f"{where}: {name} must be >= 0")
  return seconds


def fit_kernel_constants(flops, nbytes, seconds, *, weighted: bool = True
                         ) -> tuple[float, float, float, np.ndarray]:
  """NNLS fit of ``t = L + flops / F + bytes / B``; returns ``(F, B, L, residuals)``.

  ``residuals`` are relative, ``(predicted - measured) / measured``. A zero coefficient
  gives an infinite rate.
  """
  seconds = _check_timings("fit_kernel_constants", seconds, ("flops", flops),
                           ("nbytes", nbytes))
  design = np.stack([np.ones_like(seconds), np.asarray(flops, np.float64),
                     np.asarray(nbytes, np.float64)], axis=1)
  (launch, inv_f, inv_b), res = _nnls(design, seconds, weighted)
  rate = lambda c: 1.0 / c if c > 0 else float("inf")
  return float(rate(inv_f)), float(rate(inv_b)), float(launch), res


def fit_link_constants(nbytes, seconds, *, weighted: bool = True
                       ) -> tuple[float, float, np.ndarray]:
  """NNLS fit of ``t = alpha + bytes / beta``; returns ``(alpha, beta, residuals)``."""
  seconds = _check_timings("fit_link_constants", seconds, ("nbytes", nbytes))
  design = np.stack([np.ones_like(seconds), np.asarray(nbytes, np.float64)], axis=1)
  (alpha, inv_beta), res = _nnls(design, seconds, weighted)
  return float(alpha), (1.0 / inv_beta if inv_beta > 0 else float("inf")), res


def _median_time(fn, *args, repeats: int) -> float:
  jax.block_until_ready(fn(*args))  # compile and warm up
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return float(statistics.median(times))


def measure_kernels(device=None, *, matmul_sizes: Sequence[int] = (32, 64, 128, 256, 384),
                    elementwise_sizes: Sequence[int] = (1 << 12, 1 << 16, 1 << 19, 1 << 21),
                    repeats: int = 7, dtype=np.float32) -> dict[str, np.ndarray]:
  """Times jitted square matmuls and an elementwise ``x * y`` on ``device``.

  Returns ``{"flops", "bytes", "seconds", "kind"}`` arrays (FLOPs and bytes as the cost
  model counts them: ``2n^3`` and ``12 n^2`` for a matmul; ``n`` and ``3 * 4 n`` for ``x *
  y``).
  """
  device = device or jax.devices()[0]
  itemsize = np.dtype(dtype).itemsize
  matmul = jax.jit(jnp.matmul)
  mul = jax.jit(jnp.multiply)
  rows = []
  rng = np.random.default_rng(0)
  for n in matmul_sizes:
    a = jax.device_put(rng.standard_normal((n, n)).astype(dtype), device)
    rows.append(("matmul", 2.0 * n**3, 3.0 * itemsize * n * n,
                 _median_time(matmul, a, a, repeats=repeats)))
  for n in elementwise_sizes:
    a = jax.device_put(rng.standard_normal(n).astype(dtype), device)
    rows.append(("elementwise", float(n), 3.0 * itemsize * n,
                 _median_time(mul, a, a, repeats=repeats)))
  return {"kind": np.array([r[0] for r in rows]), "flops": np.array([r[1] for r in rows]),
          "bytes": np.array([r[2] for r in rows]), "seconds": np.array([r[3] for r in rows])}


def measure_transfers(source=None, target=None, *,
                      sizes: Sequence[int] = (1 << 10, 1 << 14, 1 << 18, 1 << 21),
                      repeats: int = 7) -> dict[str, np.ndarray]:
  """Times ``jax.device_put`` of float32 arrays from ``source`` to ``target`` device."""
  devices = jax.devices()
  source = source or devices[0]
  target = target or devices[1 % len(devices)]
  rows = []
  for n in sizes:
    x = jax.device_put(np.ones(n, np.float32), source)
    rows.append((4.0 * n, _median_time(lambda v: jax.device_put(v, target), x,
                                       repeats=repeats)))
  return {"bytes": np.array([r[0] for r in rows]), "seconds": np.array([r[1] for r in rows])}


def calibrate(devices=None, *, repeats: int = 7, kernels: dict | None = None,
              transfers: dict | None = None) -> Calibration:
  """Fits kernel and link constants on the local devices (module docstring).

  Args:
    devices: JAX devices (default ``jax.devices()``); kernels are timed on the first,
      transfers from the first to the second (or itself when there is one).
    repeats: timed repeats per measurement (median).
    kernels, transfers: measurements already taken (:func:`measure_kernels`,
      :func:`measure_transfers`), to fit without timing again.
  """
  if not isinstance(repeats, int) or repeats < 1:
    raise ValueError(f"calibrate: repeats must be an integer >= 1, got {repeats!r}")
  devices = list(devices or jax.devices())
  if kernels is None:
    kernels = measure_kernels(devices[0], repeats=repeats)
  if transfers is None:
    transfers = measure_transfers(devices[0], devices[1 % len(devices)], repeats=repeats)
  flops, dram, launch, kres = fit_kernel_constants(kernels["flops"], kernels["bytes"],
                                                   kernels["seconds"])
  alpha, beta, lres = fit_link_constants(transfers["bytes"], transfers["seconds"])
  return Calibration(float(flops), float(dram), float(launch), float(alpha), float(beta), tuple(float(r) for r in kres),
                     tuple(float(r) for r in lres))


# --------------------------------------------------------------------------------------
# The local runtime's constants (dispatch, fusions, products, device_put copies)
# --------------------------------------------------------------------------------------

#: Products timed by :func:`measure_runtime`: ``(batch, m, k, n)`` (batch 0: a plain matmul).
RUNTIME_DOT_SHAPES = ((0, 32, 32, 32), (0, 64, 64, 64), (0, 128, 128, 128),
                      (0, 256, 256, 256), (0, 512, 512, 512), (0, 16, 512, 512),
                      (0, 512, 512, 16), (0, 1024, 96, 96), (0, 96, 1024, 96),
                      (0, 64, 320, 1024), (0, 320, 64, 320), (8, 64, 48, 64),
                      (32, 96, 24, 96))
#: Element counts of the fused micro-programs of :func:`measure_runtime`.
RUNTIME_FUSION_SIZES = (1 << 10, 1 << 14, 1 << 17, 1 << 20)
#: Bytes of the ``device_put`` copies of :func:`measure_runtime`.
RUNTIME_PUT_SIZES = (16, 1 << 12, 1 << 16, 1 << 19, 1 << 21, 1 << 22)


def _fusion_programs(n: int) -> list[tuple[str, object, tuple]]:
  """Generic fused kernels on ``n`` elements: chains, a reduction, a normalization."""
  rows = max(n // 256, 1)
  x = np.linspace(-1.0, 1.0, n, dtype=np.float32)
  m = x.reshape(rows, -1)

  def chain(k):
    def f(v):
      for _ in range(k):
        v = v * 0.999 + 0.001
      return v
    return f

  def tanh_chain(v):
    for _ in range(4):
      v = jnp.tanh(v) * 1.01
    return v

  def row_sum(v):
    return v.sum(axis=1)

  def normalize(v):
    mu = v.mean(axis=1, keepdims=True)
    c = v - mu
    return c * jax.lax.rsqrt((c * c).mean(axis=1, keepdims=True) + 1e-5)

  def softmax(v):
    e = jnp.exp(v - v.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)

  return [(f"chain1 n={n}", chain(1), (x,)), (f"chain8 n={n}", chain(8), (x,)),
          (f"tanh4 n={n}", tanh_chain, (x,)), (f"row_sum n={n}", row_sum, (m,)),
          (f"normalize n={n}", normalize, (m,)), (f"softmax n={n}", softmax, (m,))]


#: Products per timed program: a chain, as in a step (back to back, XLA:CPU's threads stay
#: awake between them; one product alone also pays their wake-up).
DOT_CHAIN = 4


def _dot_program(shape) -> tuple[str, object, tuple]:
  batch, m, k, n = shape
  rng = np.random.default_rng(0)
  lead = (batch,) if batch else ()
  a = rng.standard_normal(lead + (m, k)).astype(np.float32)
  b = (rng.standard_normal(lead + (k, n)) / np.sqrt(k)).astype(np.float32)
  c = (rng.standard_normal(lead + (n, k)) / np.sqrt(n)).astype(np.float32)

  def chain(x, w, v):
    for i in range(DOT_CHAIN):
      x = jnp.matmul(x, w if i % 2 == 0 else v)
    return x

  return f"dot {shape}", chain, (a, b, c)


def _dispatch_time(device, repeats: int, chain: int = 32) -> tuple[float, float]:
  """(pipelined seconds per call of a trivial jitted kernel, seconds of one call + wait)."""
  f = jax.jit(lambda v: v + 1.0)
  x = jax.device_put(np.zeros(4, np.float32), device)
  blocking = _median_time(f, x, repeats=max(repeats, 20))

  def run(v):
    for _ in range(chain):
      v = f(v)
    return v

  return _median_time(run, x, repeats=repeats) / chain, blocking


def _put_times(device, targets, sizes, repeats: int) -> np.ndarray:
  """Seconds per ``device_put`` copy, issued to every target before waiting (pipelined)."""
  out = []
  for nbytes in sizes:
    x = jax.device_put(np.ones(max(nbytes // 4, 1), np.float32), device)
    copies = lambda v: [jax.device_put(v, t) for t in targets]
    out.append(_median_time(copies, x, repeats=repeats) / len(targets))
  return np.array(out)


def measure_runtime(devices=None, *, repeats: int = 7,
                    dot_shapes: Sequence[tuple[int, int, int, int]] = RUNTIME_DOT_SHAPES,
                    fusion_sizes: Sequence[int] = RUNTIME_FUSION_SIZES,
                    put_sizes: Sequence[int] = RUNTIME_PUT_SIZES) -> dict:
  """Times the micro-benchmarks that :func:`fit_runtime` fits (none is a projected program).

  * a trivial jitted kernel: its dispatch when calls are issued back to back (what
    ``run_projected`` pays per segment), and one call plus the wait;
  * jitted products of ``dot_shapes`` and fused elementwise/reduction programs on
    ``fusion_sizes`` elements (chains, tanh, a row sum, a normalization, a softmax), each
    with its :func:`~tomioka_jax.distributed.distir._runtime.program_features` (the same
    counting the simulator uses);
  * ``device_put`` copies of ``put_sizes`` bytes from the first device to each of the
    others, issued without waiting in between.

  Returns ``{"dispatch", "dispatch_blocking", "programs": [(name, features, seconds)],
  "put_bytes", "put_seconds"}``.
  """
  from tomioka_jax.distributed.distir import _runtime  # pylint: disable=g-import-not-at-top
  if not isinstance(repeats, int) or isinstance(repeats, bool) or repeats < 1:
    raise ValueError(f"measure_runtime: repeats must be an integer >= 1, got {repeats!r}")
  devices = list(devices or jax.devices())
  device = devices[0]
  targets = devices[1:] or devices[:1]
  dispatch, blocking = _dispatch_time(device, repeats)
  programs = []
  cases = [_dot_program(s) for s in dot_shapes]
  for n in fusion_sizes:
    cases += _fusion_programs(n)
  for name, f, args in cases:
    features = _runtime.program_features(ir.trace(f, *args))
    placed = [jax.device_put(a, device) for a in args]
    programs.append((name, features, _median_time(jax.jit(f), *placed, repeats=repeats)))
  put_sizes = tuple(int(s) for s in put_sizes)
  return {"dispatch": dispatch, "dispatch_blocking": blocking, "programs": programs,
          "put_bytes": np.array(put_sizes, np.float64),
          "put_seconds": _put_times(device, targets, put_sizes, repeats)}


def fit_runtime(measurements: dict, *, dot_table: bool = True) -> tuple:
  """Fits :class:`~tomioka_jax.distributed.distir.RuntimeConstants` to
  :func:`measure_runtime`'s timings.

  ``D`` is the measured pipelined dispatch. The fused programs are fitted by relative
  non-negative least squares on ``t = c + fusions l_fusion + fusion_flops / F_fusion +
  fusion_bytes / B_fusion + transcendentals / T``, with a free intercept ``c`` (one call and
  its wait, which a segment inside a step does not pay in full); the products the same way
  on ``c' + dots l_dot + dot_flops / F_dot + dot_bytes / B_dot`` (chains of products of
  several lengths would separate ``c'`` from ``l_dot``; with chains of one length the
  solver's split between them is arbitrary, and the table is used); with ``dot_table`` the products' own
  times less the blocking call of a trivial kernel also become the interpolation table. The
  copies are fitted by :func:`fit_link_constants`.

  Returns ``(constants, {"names", "programs": relative residuals of the linear fits,
  "puts": relative residuals, "intercept": c, "dot_intercept": c'})``.
  """
  from tomioka_jax.distributed.distir import _runtime  # pylint: disable=g-import-not-at-top
  programs = measurements["programs"]
  is_dot = np.array([p[1]["dots"] > 0 for p in programs], dtype=bool)
  if is_dot.sum() < 4 or (~is_dot).sum() < 6:
    raise ValueError(f"fit_runtime: need >= 4 product and >= 6 fused programs, got "
                     f"{int(is_dot.sum())} and {int((~is_dot).sum())}")
  seconds = _check_timings("fit_runtime", [p[2] for p in programs])

  def fit(mask, names):
    design = np.array([[1.0] + [p[1][k] for k in names]
                       for p, m in zip(programs, mask) if m])
    scale = np.maximum(np.abs(design).max(axis=0), 1e-300)
    coef, res = _nnls(design / scale, seconds[mask], True)
    return coef / scale, res

  dcoef, dres = fit(is_dot, ("dots", "dot_flops", "dot_bytes"))
  fcoef, fres = fit(~is_dot, ("fusions", "fusion_flops", "fusion_bytes", "transcendentals"))
  dot_intercept, l_dot, inv_fd, inv_bd = (float(c) for c in dcoef)
  intercept, l_f, inv_ff, inv_bf, inv_t = (float(c) for c in fcoef)
  rate = lambda c: 1.0 / c if c > 0 else 1e30
  alpha, beta, put_res = fit_link_constants(measurements["put_bytes"],
                                            measurements["put_seconds"])
  table = ()
  if dot_table:
    base = float(measurements["dispatch_blocking"])
    table = tuple((p[1]["dot_flops"] / p[1]["dots"], max(t - base, 1e-7) / p[1]["dots"])
                  for p, t, m in zip(programs, seconds, is_dot) if m)
  rc = _runtime.RuntimeConstants(
      dispatch=float(measurements["dispatch"]), dot_overhead=l_dot, dot_flops=rate(inv_fd),
      dot_bandwidth=rate(inv_bd), fusion_overhead=l_f, fusion_flops=rate(inv_ff),
      fusion_bandwidth=rate(inv_bf), transcendental_rate=rate(inv_t), put_latency=alpha,
      put_bandwidth=min(beta, 1e30), dot_table=table)
  residuals = np.zeros(len(programs))
  residuals[is_dot], residuals[~is_dot] = dres, fres
  return rc, {"programs": tuple(float(r) for r in residuals),
              "names": tuple(p[0] for p in programs),
              "puts": tuple(float(r) for r in put_res), "intercept": intercept,
              "dot_intercept": dot_intercept}


def calibrate_runtime(devices=None, *, repeats: int = 7) -> tuple:
  """:func:`measure_runtime` then :func:`fit_runtime` on the local devices."""
  return fit_runtime(measure_runtime(devices, repeats=repeats))
