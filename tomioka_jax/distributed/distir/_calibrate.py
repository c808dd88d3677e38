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
