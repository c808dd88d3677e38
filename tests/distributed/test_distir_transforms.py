"""DistIR transforms: data parallel, Megatron horizontal, pipeline (GPipe / 1F1B), nesting."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tomioka_jax.distributed import distir
from tomioka_jax.distributed.distir import _pipeline

H, L, B = 8, 4, 16


def _mlp_problem(hidden=H, num_layers=L, batch=B, seed=0):
  rng = np.random.default_rng(seed)
  weights = [(rng.normal(size=(hidden, hidden)) / np.sqrt(hidden)).astype(np.float32)
             for _ in range(num_layers)]
  x = rng.normal(size=(batch, hidden)).astype(np.float32)
  y = rng.normal(size=(batch, hidden)).astype(np.float32)
  return weights, x, y


def _numpy_step(weights, x, y, lr):
  """Hand-written backpropagation in float64 NumPy (the slow reference)."""
  acts = [x.astype(np.float64)]
  for w in weights:
    acts.append(np.maximum(acts[-1] @ w.astype(np.float64), 0.0))
  g = (acts[-1] - y) / x.shape[0]
  new = [None] * len(weights)
  for layer in reversed(range(len(weights))):
    dz = g * (acts[layer + 1] > 0)
    new[layer] = weights[layer] - lr * (acts[layer].T @ dz)
    g = dz @ weights[layer].T.astype(np.float64)
  return new


def _run_mlp(d, h, p, m=1, schedule="gpipe", problem=None, lr=0.1):
  weights, x, y = problem or _mlp_problem()
  fn = distir.mlp_training_step(d, h, p, num_layers=len(weights), hidden=x.shape[1],
                                batch=x.shape[0], num_microbatches=m, schedule=schedule,
                                learning_rate=lr)
  outs = distir.execute(fn, *distir.shard_mlp_inputs(weights, x, y, d, h, p))
  return fn, outs


def test_reference_step_is_backpropagation():
  weights, x, y = _mlp_problem()
  got = distir.mlp_reference_step(weights, x, y, learning_rate=0.3)
  want = _numpy_step(weights, x, y, 0.3)
  for a, b in zip(got, want):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  # the step moves every weight (so the comparisons below can fail)
  assert all(np.abs(np.asarray(a) - w).max() > 1e-3 for a, w in zip(got, weights))


def test_data_parallel_only_equals_the_undistributed_step():
  problem = _mlp_problem()
  want = _numpy_step(*problem, 0.1)
  fn, outs = _run_mlp(4, 1, 1, problem=problem)
  assert fn.devices == (0, 1, 2, 3)
  distir.infer_types(fn)
  for replica in range(4):  # every replica holds the same updated weights
    got = distir.gather_mlp_outputs(outs, 4, 1, 1, num_layers=L, replica=replica)
    for a, b in zip(got, want):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  # one gradient allreduce per weight, nothing else communicates
  assert [op.name for op in fn.ops if op.is_communication] == ["allreduce"] * L


@pytest.mark.parametrize("d,h,p,m,schedule", [
    (1, 2, 1, 1, "gpipe"), (1, 4, 1, 1, "gpipe"), (1, 1, 2, 4, "gpipe"),
    (1, 1, 4, 4, "1f1b"), (2, 2, 1, 2, "1f1b"), (2, 1, 2, 2, "gpipe"),
    (1, 2, 2, 2, "1f1b"), (2, 2, 2, 2, "1f1b"), (1, 2, 4, 1, "gpipe"),
])
def test_every_dhp_configuration_computes_the_undistributed_update(d, h, p, m, schedule):
  problem = _mlp_problem()
  want = _numpy_step(*problem, 0.1)
  fn, outs = _run_mlp(d, h, p, m, schedule, problem=problem)
  assert fn.devices == tuple(range(d * h * p))
  assert distir.infer_types(fn) == tuple(v.type for v in fn.outputs)
  got = distir.gather_mlp_outputs(outs, d, h, p, num_layers=L)
  for a, b in zip(got, want):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_megatron_communication_counts_and_placement():
  """L = 4 in one stage: two (column, row) pairs. Forward: one allreduce per pair;
  backward: one per pair except the first (the input needs no gradient); the data-parallel
  gradient allreduce adds L * h per step."""
  for d in (1, 2):
    fn = distir.mlp_training_step(d, 2, 1, num_layers=4, hidden=H, batch=B)
    comm = [op for op in fn.ops if op.is_communication]
    assert len(comm) == d * (2 + 1) + (4 * 2 if d > 1 else 0)
    assert {op.name for op in comm} == {"allreduce"}
  # a stage with 3 layers ends with an unpaired column layer -> allgather
  fn = distir.mlp_training_step(1, 2, 1, num_layers=3, hidden=H, batch=B)
  assert [op.name for op in fn.ops if op.is_communication].count("allgather") == 1
  # layout: device (i * h + j) * p + k; weight shard shapes
  fn = distir.mlp_training_step(2, 2, 2, num_layers=4, hidden=H, batch=B)
  by_name = {v.name: v.type for v in fn.inputs}
  assert by_name["x.d0"].shape == (B // 2, H) and by_name["y.d1"].shape == (B // 2, H)
  assert by_name["x.d6"].device == 6 and "x.d1" not in by_name
  assert by_name["w0.d2"].shape == (H, H // 2)   # replica 0, rank 1, stage 0: column
  assert by_name["w1.d2"].shape == (H // 2, H)   # row
  assert by_name["w2.d3"].shape == (H, H // 2)   # stage 1 on device 3


def test_pipeline_schedules_by_hand():
  assert distir.pipeline_schedule(2, 3, "gpipe") == [
      [("F", 0), ("F", 1), ("F", 2), ("B", 0), ("B", 1), ("B", 2)]] * 2
  f, b = "F", "B"
  assert distir.pipeline_schedule(3, 4, "1f1b") == [
      [(f, 0), (f, 1), (f, 2), (b, 0), (f, 3), (b, 1), (b, 2), (b, 3)],
      [(f, 0), (f, 1), (b, 0), (f, 2), (b, 1), (f, 3), (b, 2), (b, 3)],
      [(f, 0), (b, 0), (f, 1), (b, 1), (f, 2), (b, 2), (f, 3), (b, 3)]]
  # 1F1B keeps at most p - s microbatches in flight on stage s; GPipe keeps m
  for p, m in itertools.product((1, 2, 4), (1, 3, 8)):
    for sched, bound in (("1f1b", lambda s: min(p - s, m)), ("gpipe", lambda s: m)):
      for s, order in enumerate(distir.pipeline_schedule(p, m, sched)):
        assert sorted(order) == sorted([("F", k) for k in range(m)]
                                       + [("B", k) for k in range(m)])
        live = peak = 0
        for kind, _ in order:
          live += 1 if kind == "F" else -1
          peak = max(peak, live)
        assert peak == bound(s)


def test_global_task_order_is_the_start_time_order():
  """p = 2, m = 2, GPipe, F = 1 and B = 2 time units: stage 1 runs F0 [1, 2), F1 [2, 3),
  B0 [3, 5), B1 [5, 7); stage 0 runs F0 [0, 1), F1 [1, 2), B0 [5, 7), B1 [7, 9)."""
  order = _pipeline.interleave_stages(distir.pipeline_schedule(2, 2, "gpipe"))
  f, b = "F", "B"
  assert order == [(0, (f, 0)), (0, (f, 1)), (1, (f, 0)), (1, (f, 1)), (1, (b, 0)),
                   (0, (b, 0)), (1, (b, 1)), (0, (b, 1))]
  # for any schedule: a topological order that keeps each stage's order
  for sched in ("gpipe", "1f1b"):
    orders = distir.pipeline_schedule(4, 6, sched)
    order = _pipeline.interleave_stages(orders)
    position = {item: i for i, item in enumerate(order)}
    for s, tasks in enumerate(orders):
      assert [t for st, t in order if st == s] == tasks
      for kind, k in tasks:
        dep = ((s - 1, (f, k)) if kind == f and s > 0 else
               (s + 1, (b, k)) if kind == b and s < 3 else
               (s, (f, k)) if kind == b else None)
        if dep is not None:
          assert position[dep] < position[s, (kind, k)]
  with pytest.raises(ValueError, match="deadlock"):
    _pipeline.interleave_stages([[(b, 0), (f, 0)], [(f, 0), (b, 0)]])


def _device_task_order(fn, device):
  """The sequence of F/B task labels of the compute ops on ``device``."""
  order = []
  for op in fn.ops:
    if op.is_communication or op.devices != (device,):
      continue
    label = distir.op_label(op.outputs[0])
    if label[:1] in "FB" and (not order or order[-1] != label):
      order.append(label)
  return order


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
def test_each_device_runs_its_tasks_in_schedule_order(schedule):
  p, m = 3, 4
  fn = distir.mlp_training_step(2, 1, p, num_layers=3, hidden=H, batch=B,
                                num_microbatches=m, schedule=schedule)
  orders = distir.pipeline_schedule(p, m, schedule)
  for di in range(2):
    for s in range(p):
      want = [f"{kind}{k}" for kind, k in orders[s]]
      assert _device_task_order(fn, di * p + s) == want
  if schedule == "1f1b":  # stage 0 starts a backward before its last forward
    first = _device_task_order(fn, 0)
    assert first.index("B0") < first.index("F3")


def test_data_parallel_transform_of_any_step():
  def loss(params, x, y):
    h = jnp.tanh(x @ params["w1"] + params["b1"][None, :])
    return jnp.mean(jnp.square(h @ params["w2"] - y))

  rng = np.random.default_rng(3)
  params = {"w1": rng.normal(size=(5, 6)).astype(np.float32),
            "b1": rng.normal(size=(6,)).astype(np.float32),
            "w2": rng.normal(size=(6, 2)).astype(np.float32)}
  x = rng.normal(size=(8, 5)).astype(np.float32)
  y = rng.normal(size=(8, 2)).astype(np.float32)
  step = jax.value_and_grad(loss)
  want = jax.tree.leaves(step(params, x, y))
  fn = distir.data_parallel(step, (params, x, y), batch_argnums=(1, 2), devices=4)
  assert fn.devices == (0, 1, 2, 3)
  inputs = distir.data_parallel_inputs((params, x, y), batch_argnums=(1, 2), num_devices=4)
  outs = distir.execute(fn, *[leaf for dev in inputs for leaf in dev])
  assert len(outs) == 4 * len(want)
  for r in range(4):
    for a, b in zip(outs[r * len(want):(r + 1) * len(want)], want):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  # reduce=None keeps each shard's own outputs
  fn = distir.data_parallel(step, (params, x, y), batch_argnums=(1, 2),
                            devices=(5, 2), reduce=None)
  assert fn.devices == (2, 5)
  inputs = distir.data_parallel_inputs((params, x, y), batch_argnums=(1, 2), num_devices=2)
  outs = distir.execute(fn, *[leaf for dev in inputs for leaf in dev])
  np.testing.assert_allclose(outs[0], step(params, x[:4], y[:4])[0], rtol=1e-6)
  np.testing.assert_allclose(outs[4], step(params, x[4:], y[4:])[0], rtol=1e-6)


def test_bad_input_is_named():
  kw = dict(num_layers=4, hidden=8, batch=16)
  with pytest.raises(ValueError, match="d must be an integer >= 1, got 0"):
    distir.mlp_training_step(0, 1, 1, **kw)
  with pytest.raises(ValueError, match=r"devices has 3 entries but d \* h \* p = 2 \* 1 \* 2"):
    distir.mlp_training_step(2, 1, 2, devices=(0, 1, 2), **kw)
  with pytest.raises(ValueError, match="devices must be distinct"):
    distir.mlp_training_step(2, 1, 1, devices=(1, 1), **kw)
  with pytest.raises(ValueError, match="num_microbatches = 3 must divide the per-replica"):
    distir.mlp_training_step(2, 1, 2, num_microbatches=3, **kw)
  with pytest.raises(ValueError, match="batch = 16 must be divisible by d = 3"):
    distir.mlp_training_step(3, 1, 1, **kw)
  with pytest.raises(ValueError, match="hidden = 8 must be divisible by h = 3"):
    distir.mlp_training_step(1, 3, 1, **kw)
  with pytest.raises(ValueError, match="num_layers = 4 must be divisible by p = 3"):
    distir.mlp_training_step(1, 1, 3, **kw)
  with pytest.raises(ValueError, match="schedule must be one of"):
    distir.mlp_training_step(1, 1, 2, schedule="interleaved", **kw)
  with pytest.raises(ValueError, match="num_microbatches must be an integer >= 1"):
    distir.pipeline_schedule(2, 0)
  with pytest.raises(ValueError, match="does not split into 3 equal shards"):
    distir.data_parallel(jnp.sum, (np.ones((4, 2), np.float32),), batch_argnums=(0,),
                         devices=3)
  with pytest.raises(ValueError, match="reduce must be"):
    distir.data_parallel(jnp.sum, (np.ones((4, 2), np.float32),), batch_argnums=(0,),
                         devices=2, reduce="max")
  with pytest.raises(ValueError, match="batch_argnums entry 2 is out of range"):
    distir.data_parallel(jnp.sum, (np.ones((4, 2), np.float32),), batch_argnums=(2,),
                         devices=2)


# --------------------------------------------------------------------------------------
# GPT inference
# --------------------------------------------------------------------------------------

D, NH, S, V, NL, NB = 8, 4, 5, 11, 2, 4


def gpt_problem(seed=0):
  rng = np.random.default_rng(seed)

  def normal(*shape, scale=0.3):
    return (rng.normal(size=shape) * scale).astype(np.float32)

  shapes = {"w_fc": (D, 4 * D), "b_fc": (4 * D,), "w_proj": (4 * D, D)}
  blocks = []
  for _ in range(NL):
    block = {}
    for key in distir.GPT_BLOCK_SPLITS:
      shape = shapes.get(key, (D, D) if key.startswith("w") else (D,))
      block[key] = 1 + normal(*shape) if key.endswith("scale") else normal(*shape)
    blocks.append(block)
  params = {"wte": normal(V, D), "wpe": normal(S, D), "lnf_scale": 1 + normal(D),
            "lnf_bias": normal(D), "blocks": blocks}
  tokens = rng.integers(0, V, size=(NB, S)).astype(np.int32)
  return params, tokens


def _plain_gpt(params, tokens):
  """GPT-2 forward written directly (all heads at once, no splitting)."""
  def ln(x, s, b):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / jnp.sqrt(var + 1e-5) * s[None, None, :] + b[None, None, :]

  batch, seq = tokens.shape
  dh = D // NH
  x = params["wte"][tokens] + params["wpe"][None]
  for blk in params["blocks"]:
    a = ln(x, blk["ln1_scale"], blk["ln1_bias"])
    q, k, v = ((a @ blk[w] + blk[b][None, None, :]).reshape(batch, seq, NH, dh)
               for w, b in (("wq", "bq"), ("wk", "bk"), ("wv", "bv")))
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(dh)
    scores = jnp.where(jnp.tril(jnp.ones((seq, seq), bool))[None, None], scores, -jnp.inf)
    o = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, -1), v).reshape(batch, seq, D)
    x = x + o @ blk["wo"] + blk["bo"][None, None, :]
    a = ln(x, blk["ln2_scale"], blk["ln2_bias"])
    hidden = jax.nn.gelu(a @ blk["w_fc"] + blk["b_fc"][None, None, :], approximate=True)
    x = x + hidden @ blk["w_proj"] + blk["b_proj"][None, None, :]
  return ln(x, params["lnf_scale"], params["lnf_bias"]) @ params["wte"].T


@pytest.mark.parametrize("d,h,p,m", [(1, 1, 1, 1), (2, 1, 1, 2), (1, 2, 1, 1),
                                     (1, 1, 2, 2), (2, 2, 2, 1), (1, 4, 1, 1)])
def test_gpt_inference_equals_a_plain_gpt_forward(d, h, p, m):
  params, tokens = gpt_problem()
  want = np.asarray(_plain_gpt(params, tokens))
  fn = distir.gpt_inference(d, h, p, num_layers=NL, d_model=D, num_heads=NH, seq_len=S,
                            batch=NB, vocab=V, num_microbatches=m)
  assert fn.devices == tuple(range(d * h * p))
  distir.infer_types(fn)
  outs = distir.execute(fn, *distir.shard_gpt_inputs(params, tokens, d, h, p))
  np.testing.assert_allclose(distir.gather_gpt_outputs(outs, d, m), want, rtol=1e-5,
                             atol=1e-5)
  # causality: changing the last token changes only the last position's logits
  changed = tokens.copy()
  changed[:, -1] = (changed[:, -1] + 1) % V
  outs2 = distir.execute(fn, *distir.shard_gpt_inputs(params, changed, d, h, p))
  delta = np.abs(distir.gather_gpt_outputs(outs2, d, m) - want).max(axis=(0, 2))
  assert np.all(delta[:-1] < 1e-5) and delta[-1] > 1e-3
  # Megatron: two allreduces per block and microbatch; one send per stage boundary
  names = [op.name for op in fn.ops if op.is_communication]
  assert names.count("allreduce") == (d * m * NL * 2 if h > 1 else 0)
  assert names.count("send") == d * h * m * (p - 1)


def test_gpt_bad_input_is_named():
  kw = dict(num_layers=2, d_model=8, seq_len=5, batch=4, vocab=11)
  with pytest.raises(ValueError, match="num_heads = 4 must be divisible by h = 3"):
    distir.gpt_inference(1, 3, 1, num_heads=4, **kw)
  with pytest.raises(ValueError, match="d_model = 8 must be divisible by num_heads = 3"):
    distir.gpt_inference(1, 1, 1, num_heads=3, **kw)
  with pytest.raises(ValueError, match="num_layers = 2 must be divisible by p = 3"):
    distir.gpt_inference(1, 1, 3, num_heads=4, **kw)
  with pytest.raises(ValueError, match="num_microbatches = 3 must divide"):
    distir.gpt_inference(1, 1, 1, num_heads=4, num_microbatches=3, **kw)
  with pytest.raises(ValueError, match="expected d \\* num_microbatches = 2 outputs"):
    distir.gather_gpt_outputs([np.zeros((1, 5, 11))], 2)
