"""DistIR's simulator: hand-computed clocks, live-memory peaks and the Chrome trace."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest

from tomioka_jax.distributed import distir
from tomioka_jax.distributed.distir import _cost as cost_lib
from tomioka_jax.distributed.distir import _simulate as simulate_lib

simulate = simulate_lib.simulate

F, B, L = 1e9, 2e9, 1e-6          # device FLOP/s, bytes/s, launch overhead
LINK_BW, LINK_LAT = 1e8, 5e-6      # link bytes/s and latency


def _topology(n=3):
  return distir.Topology.uniform(n, bandwidth=LINK_BW, latency=LINK_LAT, flops=F,
                                 dram_bandwidth=B, launch_overhead=L)


def _piece(f, *shapes):
  fn = distir.trace(f, *[np.ones(s, np.float32) for s in shapes])
  assert len(fn.ops) == 1, [op.name for op in fn.ops]
  return fn


def _kernel(flops, nbytes):
  return L + flops / F + nbytes / B


def test_two_devices_and_a_send_hand_computed():
  b = distir.FunctionBuilder("send")
  x0 = b.input("x0", (4, 8), np.float32, device=0)
  w0 = b.input("w0", (8, 8), np.float32, device=0)
  v1 = b.input("v1", (1000,), np.float32, device=1)
  (y0,) = b.inline(_piece(lambda x, w: x @ w, (4, 8), (8, 8)), [x0, w0], device=0)
  (u1,) = b.inline(_piece(jnp.exp, (1000,)), [v1], device=1)
  y1 = b.send(y0, 1)
  (z1,) = b.inline(_piece(jnp.sin, (4, 8)), [y1], device=1)
  fn = b.finish([z1, u1])
  sim = simulate(fn, _topology(2))
  t_dot = _kernel(2 * 4 * 8 * 8, 4 * (32 + 64 + 32))
  t_exp = _kernel(1000, 4 * 2000)
  assert t_exp > t_dot  # device 0 waits for device 1 at the send (a rendezvous)
  t_send = LINK_LAT + 4 * 32 / LINK_BW
  t_sin = _kernel(32, 4 * 64)
  assert sim.device_times[0] == pytest.approx(t_exp + t_send)
  assert sim.device_times[1] == pytest.approx(t_exp + t_send + t_sin)
  assert sim.total_time == pytest.approx(t_exp + t_send + t_sin)
  assert sim.busy_time(0) == pytest.approx(t_dot + t_send)


def test_allreduce_synchronizes_then_advances_all_devices():
  b = distir.FunctionBuilder("ar")
  sizes = (100, 3000, 700)
  xs = [b.input(f"x{i}", (n,), np.float32, device=i) for i, n in enumerate(sizes)]
  zs = [b.input(f"z{i}", (16,), np.float32, device=i) for i in range(3)]
  ys = [b.inline(_piece(jnp.exp, (n,)), [x], device=i)[0]
        for i, (x, n) in enumerate(zip(xs, sizes))]
  outs = b.allreduce(zs)
  fn = b.finish(ys + list(outs))
  sim = simulate(fn, _topology(3))
  slowest = max(sim.events[i]["duration"] for i in range(3))
  n, nbytes = 3, 16 * 4
  t_ar = 2 * (n - 1) * LINK_LAT + 2 * (n - 1) / n * nbytes / LINK_BW
  for d in range(3):
    assert sim.device_times[d] == pytest.approx(slowest + t_ar)
  # The allreduce starts at the same time on every device.
  starts = {e["start"] for e in sim.events if e["name"] == "allreduce"}
  assert len(starts) == 1


def test_peak_memory_by_live_values_on_a_chain():
  n = 256
  nbytes = 4 * n
  b = distir.FunctionBuilder("chain")
  x = b.input("x", (n,), np.float32, device=0)
  (a,) = b.inline(_piece(jnp.sin, (n,)), [x], device=0)
  (dead,) = b.inline(_piece(jnp.negative, (n,)), [x], device=0)
  (c,) = b.inline(_piece(jnp.cos, (n,)), [a], device=0)
  (e,) = b.inline(_piece(lambda u, v: u * v, (n,), (n,)), [a, c], device=0)
  (f,) = b.inline(_piece(jnp.exp, (n,)), [e], device=0)
  fn = b.finish([f])
  del dead
  sim = simulate(fn, _topology(1))
  # x resident (1); sin: +a (2); neg: +dead, freed at once (peak 3, back to 2);
  # cos: +c (3); mul: +e (4), frees a and c (2); exp: +f (3), frees e (2).
  assert sim.peak_memory[0] == 4 * nbytes
  # A slow reference: replay the same bookkeeping from the op list.
  live, peak, last_use = nbytes, nbytes, {}
  for i, op in enumerate(fn.ops):
    for v in op.inputs:
      last_use[id(v)] = i
  for i, op in enumerate(fn.ops):
    live += sum(v.type.nbytes for v in op.outputs)
    peak = max(peak, live)
    for v in op.outputs:
      if id(v) not in last_use and v is not f:
        live -= v.type.nbytes
    for v in op.inputs:
      if v is not x and last_use[id(v)] == i:
        live -= v.type.nbytes
  assert sim.peak_memory[0] == peak


def test_shared_executors_serialize_the_devices():
  b = distir.FunctionBuilder("par")
  xs = [b.input(f"x{i}", (512,), np.float32, device=i) for i in range(3)]
  ys = [b.inline(_piece(jnp.exp, (512,)), [x], device=i)[0] for i, x in enumerate(xs)]
  fn = b.finish(ys)
  t = _kernel(512, 4 * 1024)
  assert simulate(fn, _topology(3)).total_time == pytest.approx(t)
  assert simulate(fn, _topology(3), executors=1).total_time == pytest.approx(3 * t)
  assert simulate(fn, _topology(3), executors=2).total_time == pytest.approx(2 * t)


def test_chrome_trace_schema(tmp_path):
  b = distir.FunctionBuilder("tr")
  x0 = b.input("x0", (8,), np.float32, device=0)
  (y0,) = b.inline(_piece(jnp.sin, (8,)), [x0], device=0)
  y1 = b.send(y0, 1)
  fn = b.finish([y1])
  sim = simulate(fn, _topology(2))
  path = tmp_path / "trace.json"
  sim.to_chrome_trace(path)
  trace = json.loads(path.read_text())
  events = [e for e in trace["traceEvents"] if e["ph"] == "X"]
  assert {e["name"] for e in events} == {"sin", "send"}
  for e in events:
    assert isinstance(e["pid"], int) and e["ts"] >= 0 and e["dur"] > 0
  end_us = {e["pid"]: e["ts"] + e["dur"] for e in events}
  for d, clock in sim.device_times.items():
    assert end_us[d] == pytest.approx(clock * 1e6)
  names = {e["pid"]: e["args"]["name"] for e in trace["traceEvents"] if e["ph"] == "M"}
  assert names == {0: "device 0", 1: "device 1"}


def test_bad_input_raises():
  b = distir.FunctionBuilder("bad")
  x = b.input("x", (4,), np.float32, device=3)
  fn = b.finish([b.inline(_piece(jnp.sin, (4,)), [x], device=3)[0]])
  with pytest.raises(ValueError, match="device 3"):
    simulate(fn, _topology(2))
  with pytest.raises(ValueError, match="executors"):
    simulate(fn, _topology(4), executors=0)
  model = cost_lib.CostModel(_topology(4))
  with pytest.raises(ValueError, match="either topology or cost_model"):
    simulate_lib.simulate(fn, _topology(4), cost_model=model)


# --------------------------------------------------------------------------------------
# Calibration (fits on synthetic timings from known constants, not on wall clock)
# --------------------------------------------------------------------------------------

from tomioka_jax.distributed.distir import _calibrate as calibrate_lib  # noqa: E402


def _synthetic_kernels(f=3e10, bw=8e9, launch=4e-6, noise=0.0, seed=0):
  rng = np.random.default_rng(seed)
  sizes = np.array([32, 64, 128, 256, 384])
  flops = np.concatenate([2.0 * sizes**3, 2.0 ** np.arange(12, 22, 2)])
  nbytes = np.concatenate([12.0 * sizes**2, 12.0 * 2.0 ** np.arange(12, 22, 2)])
  t = launch + flops / f + nbytes / bw
  return flops, nbytes, t * np.exp(noise * rng.standard_normal(t.shape))


def test_kernel_fit_recovers_known_constants():
  flops, nbytes, t = _synthetic_kernels()
  f, bw, launch, res = calibrate_lib.fit_kernel_constants(flops, nbytes, t)
  assert f == pytest.approx(3e10, rel=1e-6)
  assert bw == pytest.approx(8e9, rel=1e-6)
  assert launch == pytest.approx(4e-6, rel=1e-6)
  assert np.max(np.abs(res)) < 1e-8
  # With 5% multiplicative noise the constants stay within ~15%.
  f, bw, launch, res = calibrate_lib.fit_kernel_constants(*_synthetic_kernels(noise=0.05))
  assert f == pytest.approx(3e10, rel=0.15) and bw == pytest.approx(8e9, rel=0.15)
  assert launch == pytest.approx(4e-6, rel=0.3)
  # A term the data do not support gets (numerically) zero weight: a huge rate.
  t0 = 2e-6 + flops / 1e10
  f, bw, launch, _ = calibrate_lib.fit_kernel_constants(flops, nbytes, t0)
  assert bw > 1e20 and f == pytest.approx(1e10, rel=1e-6)


def test_link_fit_and_calibrated_topology():
  nbytes = 4.0 * 2.0 ** np.arange(8, 22, 3)
  t = 2e-5 + nbytes / 5e9
  alpha, beta, res = calibrate_lib.fit_link_constants(nbytes, t)
  assert alpha == pytest.approx(2e-5, rel=1e-6) and beta == pytest.approx(5e9, rel=1e-6)
  flops, kb, kt = _synthetic_kernels()
  cal = calibrate_lib.calibrate(kernels={"flops": flops, "bytes": kb, "seconds": kt},
                                transfers={"bytes": nbytes, "seconds": t})
  topo = cal.topology(4)
  assert topo.devices[2].flops == pytest.approx(3e10, rel=1e-6)
  assert topo.bandwidth[0, 3] == pytest.approx(5e9, rel=1e-6)
  assert topo.latency[1, 2] == pytest.approx(2e-5, rel=1e-6)
  assert len(cal.kernel_residuals) == len(kt)


def test_calibration_bad_input():
  with pytest.raises(ValueError, match="timings must be > 0"):
    calibrate_lib.fit_link_constants([1.0, 2.0, 3.0], [1.0, 0.0, 1.0])
  with pytest.raises(ValueError, match="at least 2"):
    calibrate_lib.fit_link_constants([1.0], [1.0])
  with pytest.raises(ValueError, match="flops must have shape"):
    calibrate_lib.fit_kernel_constants([1.0, 2.0], [1.0, 2.0, 3.0, 4.0], [1.0] * 4)
  with pytest.raises(ValueError, match="repeats"):
    calibrate_lib.calibrate(repeats=0)


def test_launch_per_segment_charges_one_overhead_per_compute_run():
  b = distir.FunctionBuilder("seg")
  x0 = b.input("x0", (64,), np.float32, device=0)
  (a,) = b.inline(_piece(jnp.sin, (64,)), [x0], device=0)
  (c,) = b.inline(_piece(jnp.cos, (64,)), [a], device=0)
  c1 = b.send(c, 1)
  (e,) = b.inline(_piece(jnp.exp, (64,)), [c1], device=1)
  (f,) = b.inline(_piece(jnp.sin, (64,)), [e], device=1)
  fn = b.finish([f])
  per_op = simulate(fn, _topology(2))
  per_segment = simulate(fn, _topology(2), launch="segment")
  # Two segments of two ops each: two launches fewer.
  assert per_op.total_time - per_segment.total_time == pytest.approx(2 * L)
  with pytest.raises(ValueError, match="launch"):
    simulate(fn, _topology(2), launch="kernel")
