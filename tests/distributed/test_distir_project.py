"""Rank projection and real execution of per-device programs on 8 simulated CPU devices."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tomioka_jax.distributed import distir


def _mlp(d, h, p, m=1, schedule="gpipe", hidden=8, num_layers=4, batch=16):
  rng = np.random.default_rng(0)
  weights = [(rng.normal(size=(hidden, hidden)) / np.sqrt(hidden)).astype(np.float32)
             for _ in range(num_layers)]
  x = rng.normal(size=(batch, hidden)).astype(np.float32)
  y = rng.normal(size=(batch, hidden)).astype(np.float32)
  fn = distir.mlp_training_step(d, h, p, num_layers=num_layers, hidden=hidden, batch=batch,
                                num_microbatches=m, schedule=schedule)
  return fn, distir.shard_mlp_inputs(weights, x, y, d, h, p)


def _every_collective():
  """A hand-built program with each kind of communication op."""
  b = distir.FunctionBuilder("collectives")
  x = b.input("x", (4, 6), np.float32, device=0)
  w = b.input("w", (6, 8), np.float32, device=3)
  xs = b.scatter(x, axis=0, devices=(0, 1, 2, 3))
  ws = b.broadcast(w, devices=(0, 1, 2))
  ws = list(ws) + [w]
  square = distir.trace(lambda a, v: jnp.tanh(a @ v), np.zeros((1, 6), np.float32),
                        np.zeros((6, 8), np.float32))
  ys = [b.inline(square, [xi, wi], device=r)[0] for r, (xi, wi) in enumerate(zip(xs, ws))]
  summed = b.allreduce(ys)
  gathered = b.allgather(list(summed), axis=0)
  parts = b.reduce_scatter(list(gathered), axis=1)
  moved = b.send(parts[2], device=0)
  total = b.gather([parts[0], parts[1], parts[3]], axis=1, device=1)
  return b.finish([total, gathered[3], moved])


def test_projection_splits_ops_and_messages():
  fn = _every_collective()
  programs = distir.rank_projection(fn)
  assert sorted(programs) == [0, 1, 2, 3]
  # every compute op on exactly one device, in the global order
  for r, prog in programs.items():
    compute = [op for op in prog.ops if op.primitive is not None]
    want = [op for op in fn.ops if op.primitive is not None and op.devices == (r,)]
    assert compute == want
  send = [op for op in programs[2].ops if op.name == "send"]
  recv = [op for op in programs[0].ops if op.name == "recv"]
  assert len(send) == len(recv) == 1
  assert send[0].outputs == () and recv[0].inputs == ()
  assert send[0].params["comm_id"] == recv[0].params["comm_id"]
  for r in range(4):
    (ar,) = [op for op in programs[r].ops if op.name == "allreduce"]
    assert ar.params["group"] == (0, 1, 2, 3) and len(ar.inputs) == len(ar.outputs) == 1
  # the broadcast's source (device 3) sends and keeps nothing, the targets only receive
  (bc,) = [op for op in programs[3].ops if op.name == "mpi_broadcast"]
  assert len(bc.inputs) == 1 and bc.outputs == ()
  # outputs follow the values' devices
  assert [v.type.device for v in programs[1].outputs] == [1]
  assert [v.type.device for v in programs[0].outputs] == [0]


def _check_against_execute(fn, args, repeats=2, collectives="copies"):
  want = distir.execute(fn, *args)
  outs, seconds = distir.run_projected(distir.rank_projection(fn), distir.project_inputs(fn, args),
                                       repeats=repeats, collectives=collectives)
  got = distir.gather_projected_outputs(fn, outs)
  assert len(got) == len(want)
  for a, b, v in zip(got, want, fn.outputs):
    assert a.devices() == {jax.devices()[v.type.device]}  # each output on its device
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
  assert 0 < seconds < 10
  return seconds


def test_run_projected_equals_execute_for_every_collective():
  fn = _every_collective()
  rng = np.random.default_rng(1)
  _check_against_execute(fn, [rng.normal(size=(4, 6)).astype(np.float32),
                              rng.normal(size=(6, 8)).astype(np.float32)])


@pytest.mark.parametrize("d,h,p,m,schedule,collectives", [
    (8, 1, 1, 1, "gpipe", "copies"), (2, 2, 2, 2, "1f1b", "copies"),
    (1, 2, 4, 4, "gpipe", "copies"), (4, 2, 1, 1, "gpipe", "xla")])
def test_run_projected_equals_execute_for_mlp_steps(d, h, p, m, schedule, collectives):
  fn, args = _mlp(d, h, p, m, schedule)
  _check_against_execute(fn, args, collectives=collectives)


def test_run_projected_runs_a_data_parallel_step():
  def loss(w, x):
    return jnp.mean(jnp.square(jnp.tanh(x @ w)))

  rng = np.random.default_rng(2)
  w = rng.normal(size=(4, 3)).astype(np.float32)
  x = rng.normal(size=(8, 4)).astype(np.float32)
  fn = distir.data_parallel(jax.value_and_grad(loss), (w, x), batch_argnums=(1,), devices=4)
  args = [leaf for dev in distir.data_parallel_inputs((w, x), batch_argnums=(1,), num_devices=4)
          for leaf in dev]
  _check_against_execute(fn, args)
  # placement on other local devices: rank r on device 7 - r
  reverse = {r: jax.devices()[7 - r] for r in range(4)}
  outs, _ = distir.run_projected(distir.rank_projection(fn), distir.project_inputs(fn, args),
                                 devices=reverse, repeats=1)
  assert all(x.devices() == {reverse[r]} for r in outs for x in outs[r])
  want = distir.execute(fn, *args)
  for a, b in zip(distir.gather_projected_outputs(fn, outs), want):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_run_projected_bad_input():
  fn, args = _mlp(2, 1, 1)
  programs = distir.rank_projection(fn)
  inputs = distir.project_inputs(fn, args)
  with pytest.raises(ValueError, match="repeats must be an integer >= 1, got 0"):
    distir.run_projected(programs, inputs, repeats=0)
  with pytest.raises(ValueError, match="collectives must be 'copies' or 'xla'"):
    distir.run_projected(programs, inputs, collectives="nccl")
  with pytest.raises(ValueError, match="no entry for rank 1"):
    distir.run_projected(programs, {0: inputs[0]})
  with pytest.raises(ValueError, match="rank 0 takes"):
    distir.run_projected(programs, {0: inputs[0][:1], 1: inputs[1]})
  with pytest.raises(ValueError, match="takes .* inputs, got 1"):
    distir.project_inputs(fn, args[:1])
  big = distir.data_parallel(jnp.sum, (np.ones((9, 2), np.float32),), batch_argnums=(0,),
                             devices=9)
  with pytest.raises(ValueError, match="needs 9 local devices"):
    distir.run_projected(distir.rank_projection(big), {r: [np.ones((1, 2), np.float32)]
                                               for r in range(9)})


def test_run_projected_runs_gpt_inference():
  from tests.distributed.test_distir_transforms import NB, NH, NL, S, V, D, gpt_problem

  params, tokens = gpt_problem()
  fn = distir.gpt_inference(2, 2, 2, num_layers=NL, d_model=D, num_heads=NH, seq_len=S,
                            batch=NB, vocab=V)
  _check_against_execute(fn, distir.shard_gpt_inputs(params, tokens, 2, 2, 2))
