"""The local runtime's cost model: dispatch per segment, fusions, products, device_put copies."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest

from tomioka_jax.distributed import distir
from tomioka_jax.distributed.distir import _calibrate as calibrate_lib
from tomioka_jax.distributed.distir import _runtime as runtime_lib

D, L_DOT, F_DOT, B_DOT = 5e-6, 3e-5, 1e11, 2e10
L_F, F_F, B_F, T = 2e-6, 4e11, 3e10, 2e9
ALPHA, BETA = 2e-5, 1e10
SLOW = 1e30  # a rate that charges nothing


def _rc(**kw):
  base = dict(dispatch=D, dot_overhead=L_DOT, dot_flops=F_DOT, dot_bandwidth=B_DOT,
              fusion_overhead=L_F, fusion_flops=F_F, fusion_bandwidth=B_F,
              transcendental_rate=T, put_latency=ALPHA, put_bandwidth=BETA)
  base.update(kw)
  return distir.RuntimeConstants(**base)


def _sim(fn, rc, **kw):
  model = distir.CostModel(distir.Topology.uniform(max(fn.devices) + 1))
  return distir.simulate(fn, cost_model=model, launch="segment", runtime=rc, **kw)


def _trace(f, *shapes):
  return distir.trace(f, *[np.ones(s, np.float32) for s in shapes])


def test_k_trivial_segments_cost_k_dispatches():
  # k segments on device 0, split by sends of a scalar constant-free value to device 1
  rc = _rc(fusion_overhead=0.0, fusion_flops=SLOW, fusion_bandwidth=SLOW, put_latency=0.0,
           put_bandwidth=SLOW)
  for k in (1, 3, 7):
    b = distir.FunctionBuilder("k")
    x = b.input("x", (4,), np.float32, device=0)
    outs = []
    for _ in range(k):
      (x,) = b.inline(_trace(lambda v: v + 1.0, (4,)), [x], device=0)
      outs.append(b.send(x, 1))
    fn = b.finish(outs)
    sim = _sim(fn, rc)
    assert sim.device_times[0] == pytest.approx(k * D)


def test_a_chain_of_elementwise_ops_is_one_fusion():
  n, k = 1000, 6

  def chain(v):
    for _ in range(k):
      v = v * 0.5 + 1.0
    return v

  fn = _trace(chain, (n,))
  rc = _rc()
  feats = distir.program_features(fn)
  assert feats["dispatches"] == 1 and feats["fusions"] == 1 and feats["dots"] == 0
  assert feats["fusion_bytes"] == 2 * 4 * n          # read x once, write the result once
  assert feats["fusion_flops"] == 2 * k * n
  expected = D + L_F + 2 * k * n / F_F + 2 * 4 * n / B_F
  assert _sim(fn, rc).total_time == pytest.approx(expected)
  assert runtime_lib.predicted_time(feats, rc) == pytest.approx(expected)


def test_products_and_materialized_operands():
  m, k, n = 8, 16, 4

  def f(a, w):
    return jnp.tanh(a * 2.0) @ w       # the tanh feeds a product: written to memory

  fn = _trace(f, (m, k), (k, n))
  feats = distir.program_features(fn)
  assert feats["dots"] == 1 and feats["dot_flops"] == 2 * m * k * n
  assert feats["fusions"] == 1 and feats["transcendentals"] == m * k
  assert feats["fusion_bytes"] == 2 * 4 * m * k
  rc = _rc()
  t_dot = L_DOT + 2 * m * k * n / F_DOT + 4 * (m * k + k * n + m * n) / B_DOT
  t_fus = L_F + 2 * m * k / F_F + 8 * m * k / B_F + m * k / T
  assert _sim(fn, rc).total_time == pytest.approx(D + t_dot + t_fus)


def test_reductions_are_written_and_bitcasts_are_free():
  def f(v):
    s = v.sum(axis=1)                   # a reduction's output is materialized
    return (s * 2.0).reshape(2, -1)     # the reshape of a written value costs nothing

  fn = _trace(f, (8, 32))
  feats = distir.program_features(fn)
  assert feats["fusions"] == 2
  assert feats["fusion_bytes"] == 4 * (8 * 32 + 8) + 4 * (8 + 8)


def test_send_and_allreduce_copy_costs():
  rc = _rc(dispatch=0.0, fusion_overhead=0.0, fusion_flops=SLOW, fusion_bandwidth=SLOW)
  n, size = 4, 1000
  b = distir.FunctionBuilder("comm")
  xs = [b.input(f"x{i}", (size,), np.float32, device=i) for i in range(n)]
  ys = b.allreduce(xs)
  z = b.send(ys[0], 1)
  fn = b.finish(list(ys) + [z])
  sim = _sim(fn, rc)
  m = 4 * size
  t_ar = 2 * (n - 1) * (ALPHA + m / BETA)  # N-1 copies to the first, N-1 back
  assert runtime_lib.communication_time(fn.ops[0], rc) == pytest.approx(t_ar)
  assert runtime_lib.communication_time(fn.ops[1], rc) == pytest.approx(ALPHA + m / BETA)
  assert sim.total_time == pytest.approx(t_ar + ALPHA + m / BETA)
  assert rc.put_time(m) == pytest.approx(ALPHA + m / BETA)


def test_dot_table_interpolates_log_log_and_extrapolates_at_f_dot():
  table = ((1e6, 1e-5), (1e8, 1e-3))
  rc = _rc(dot_table=table)
  assert rc.dot_time(1e6, 0.0) == pytest.approx(1e-5)
  assert rc.dot_time(1e8, 0.0) == pytest.approx(1e-3)
  assert rc.dot_time(1e7, 0.0) == pytest.approx(1e-4)  # geometric midpoint
  assert rc.dot_time(1e3, 0.0) == pytest.approx(1e-5)  # below the table: its smallest
  assert rc.dot_time(3e8, 0.0) == pytest.approx(1e-3 + 2e8 / F_DOT)


def test_fit_runtime_recovers_constants_from_synthetic_timings():
  rc = _rc(dispatch=4e-6)
  rng = np.random.default_rng(0)
  programs = []
  for i in range(8):  # products
    k = float(1 + i % 4)  # chains of 1-4 products separate l_dot from the intercept
    f = {"dispatches": 1.0, "dots": k, "dot_flops": k * float(10 ** rng.uniform(5, 9)),
         "dot_bytes": k * float(10 ** rng.uniform(4, 7)), "fusions": 0.0, "fusion_flops": 0.0,
         "fusion_bytes": 0.0, "transcendentals": 0.0}
    programs.append((f"dot{i}", f, 1e-5 + runtime_lib.predicted_time(f, rc) - 4e-6))
  for i in range(12):  # fusions
    f = {"dispatches": 1.0, "dots": 0.0, "dot_flops": 0.0, "dot_bytes": 0.0,
         "fusions": float(rng.integers(1, 4)), "fusion_flops": float(10 ** rng.uniform(3, 8)),
         "fusion_bytes": float(10 ** rng.uniform(4, 8)),
         "transcendentals": float(10 ** rng.uniform(2, 7)) * (i % 2)}
    programs.append((f"fus{i}", f, 1e-5 + runtime_lib.predicted_time(f, rc) - 4e-6))
  sizes = np.array([16.0, 4096.0, 65536.0, 1 << 20])
  meas = {"dispatch": 4e-6, "dispatch_blocking": 1e-5, "programs": programs,
          "put_bytes": sizes, "put_seconds": ALPHA + sizes / BETA}
  fitted, res = distir.fit_runtime(meas, dot_table=False)
  assert max(abs(r) for r in res["programs"]) < 1e-6
  assert fitted.fusion_overhead == pytest.approx(L_F, rel=1e-4)
  assert fitted.fusion_flops == pytest.approx(F_F, rel=1e-4)
  assert fitted.fusion_bandwidth == pytest.approx(B_F, rel=1e-4)
  assert fitted.transcendental_rate == pytest.approx(T, rel=1e-4)
  assert fitted.dot_overhead == pytest.approx(L_DOT, rel=1e-4)
  assert fitted.dot_flops == pytest.approx(F_DOT, rel=1e-4)
  assert fitted.put_latency == pytest.approx(ALPHA, rel=1e-6)
  assert fitted.put_bandwidth == pytest.approx(BETA, rel=1e-6)
  assert fitted.dispatch == 4e-6
  with_table, _ = distir.fit_runtime(meas)
  assert len(with_table.dot_table) == 8
  f0, t0, k0 = min((p[1]["dot_flops"] / p[1]["dots"], p[2], p[1]["dots"])
                   for p in programs[:8])
  assert with_table.dot_time(f0, 0.0) == pytest.approx((t0 - 1e-5) / k0)


def test_simulated_runtime_of_a_projected_mlp_counts_its_segments():
  fn = distir.mlp_training_step(2, 1, 1, num_layers=2, hidden=8, batch=8)
  rc = _rc(dot_overhead=0.0, dot_flops=SLOW, dot_bandwidth=SLOW, fusion_overhead=0.0,
           fusion_flops=SLOW, fusion_bandwidth=SLOW, transcendental_rate=SLOW,
           put_latency=0.0, put_bandwidth=SLOW)
  plan = distir.fusion_plan(fn)
  segments = sum(p.segment_start for p in plan.values())
  # two devices: compute, then the gradient all-reduces split each device's program
  assert segments >= 2
  sim = _sim(fn, rc, executors=1)
  assert sim.total_time == pytest.approx(segments * D + sum(
      runtime_lib.communication_time(op, rc) for op in fn.ops if op.is_communication))


def test_bad_input():
  with pytest.raises(ValueError, match="dispatch must be >= 0"):
    _rc(dispatch=-1.0)
  with pytest.raises(ValueError, match="fusion_flops must be > 0"):
    _rc(fusion_flops=0.0)
  with pytest.raises(ValueError, match="dot_table"):
    _rc(dot_table=((0.0, 1.0),))
  fn = _trace(lambda v: v + 1.0, (4,))
  model = distir.CostModel(distir.Topology.uniform(1))
  with pytest.raises(ValueError, match="launch='segment'"):
    distir.simulate(fn, cost_model=model, runtime=_rc())
  with pytest.raises(ValueError, match="RuntimeConstants"):
    distir.simulate(fn, cost_model=model, launch="segment", runtime={"dispatch": 1.0})
  with pytest.raises(ValueError, match="product"):
    distir.fit_runtime({"programs": [], "dispatch": 1e-6, "dispatch_blocking": 1e-6,
                        "put_bytes": np.ones(3), "put_seconds": np.ones(3)})
  with pytest.raises(ValueError, match="repeats"):
    calibrate_lib.measure_runtime(repeats=0)
  b = distir.FunctionBuilder("c")
  x = b.input("x", (4,), np.float32, device=0)
  fn2 = b.finish([b.send(x, 1)])
  with pytest.raises(ValueError, match="communication op send"):
    distir.program_features(fn2)
  assert math.isfinite(_sim(fn2, _rc()).total_time)
