"""Tests of AMPNet (tomioka_jax/distributed/_ampnet.py): the synchronous limit, staleness,
update counts, the list-reduction loop, GPipe, and failures that must not hang."""

from __future__ import annotations

import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from tomioka_jax import distributed
from tomioka_jax.distributed import _ampnet


def _dense(key, n_in, n_out):
  return {"w": jax.random.normal(key, (n_in, n_out)) / np.sqrt(n_in), "b": jnp.zeros(n_out)}


def _linear(p, x):
  return x @ p["w"] + p["b"][None, :]


def _tanh_layer(p, x):
  return jnp.tanh(_linear(p, x))


def _xent(logits, y):
  return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))


def _mlp_program(seed=0, nnx_first=False):
  k = jax.random.split(jax.random.key(seed), 3)
  first = (nnx.Linear(5, 6, rngs=nnx.Rngs(seed)) if nnx_first
           else (_tanh_layer, _dense(k[0], 5, 6)))
  stages = [first, (_tanh_layer, _dense(k[1], 6, 6)), (_linear, _dense(k[2], 6, 3))]
  return distributed.amp_pipeline_program(stages, _xent)


def _instances(n, seed=1, batch=4):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n * batch, 5)).astype(np.float32)
  y = rng.integers(0, 3, size=n * batch).astype(np.int32)
  return distributed.amp_minibatches(x, y, batch)


def _leaves(params_list):
  return [np.asarray(a) for a in jax.tree.leaves(params_list)]


def _composed_loss(program, params_list, inst):
  return _xent(program.predict(params_list, jnp.asarray(inst["x"])), jnp.asarray(inst["y"]))


# ---- the synchronous limit -------------------------------------------------------------------


def test_mak1_muf1_is_bitwise_the_synchronous_trainer():
  program = _mlp_program(nnx_first=True)
  data = _instances(6)
  order = [3, 0, 5, 1, 4, 2]
  asynchronous = distributed.AMPRuntime(program, optax.adam(1e-2))
  synchronous = distributed.AMPRuntime(program, optax.adam(1e-2))
  for _ in range(2):
    ta = asynchronous.train(data, max_active_keys=1, min_update_frequency=1, order=order)
    ts = synchronous.train_synchronous(data, order=order)
    assert ta.losses == ts.losses
  for a, s in zip(_leaves(asynchronous.params), _leaves(synchronous.params)):
    np.testing.assert_array_equal(a, s)
  assert not np.array_equal(_leaves(asynchronous.params)[0],
                            _leaves([n.params for n in program.nodes])[0])  # it trained


def test_synchronous_trainer_equals_jax_grad_and_optax():
  program = _mlp_program()
  data = _instances(5)
  opt = optax.adam(1e-2)
  runtime = distributed.AMPRuntime(program, opt)
  runtime.train_synchronous(data)
  params = [n.params for n in program.nodes]
  state = opt.init(params)
  for inst in data:
    grads = jax.grad(lambda p: _composed_loss(program, p, inst))(params)
    updates, state = opt.update(grads, state, params)
    params = optax.apply_updates(params, updates)
  for a, b in zip(_leaves(runtime.params), _leaves(params)):
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5)


def test_list_reduction_synchronous_equals_unrolled_rnn_and_async_limit():
  program = distributed.list_reduction_program(jax.random.key(0), hidden=8)
  data = distributed.list_reduction_data(jax.random.key(1), 5, max_length=4)
  opt = optax.sgd(0.1)
  runtime = distributed.AMPRuntime(program, opt)
  trace = runtime.train_synchronous(data)
  params = [n.params for n in program.nodes]
  losses = []
  for inst in data:
    batch = distributed.list_reduction_batch([inst])[:3]

    def loss(p, batch=batch, inst=inst):
      return distributed.list_reduction_loss(program.predict(p, batch)[0], inst.label)

    value, grads = jax.value_and_grad(loss)(params)
    losses.append(float(value))
    params = jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)
  np.testing.assert_allclose([trace.losses[i] for i in range(5)], losses, rtol=1e-5)
  for a, b in zip(_leaves(runtime.params), _leaves(params)):
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5)
  asynchronous = distributed.AMPRuntime(program, opt)
  asynchronous.train(data, max_active_keys=1, min_update_frequency=1)
  for a, s in zip(_leaves(asynchronous.params), _leaves(runtime.params)):
    np.testing.assert_array_equal(a, s)


# ---- asynchrony: staleness, update counts, every instance once --------------------------------


def test_staleness_is_bounded_by_max_active_keys():
  program = _mlp_program()
  data = _instances(12)
  mak = 4
  runtime = distributed.AMPRuntime(program, optax.sgd(0.05))
  trace = runtime.train(data, max_active_keys=mak, min_update_frequency=1)
  staleness = distributed.amp_staleness(trace)
  assert len(staleness) == 3 * 12 and staleness.min() >= 0
  assert staleness.max() <= mak - 1
  # The entry node forwards the first mak instances before any gradient returns, so the
  # last of them is applied exactly mak - 1 updates late.
  first = trace.updates[0][mak - 1]
  assert first.version - first.forward_versions[0] == mak - 1


def test_updates_every_min_update_frequency_gradients():
  program = _mlp_program()
  data = _instances(10)
  runtime = distributed.AMPRuntime(program, optax.sgd(0.05))
  trace = runtime.train(data, max_active_keys=3, min_update_frequency=3)
  for node_updates in trace.updates:
    assert [len(u.instances) for u in node_updates] == [3, 3, 3]
    assert [u.version for u in node_updates] == [0, 1, 2]
    seen = [i for u in node_updates for i in u.instances]
    assert len(set(seen)) == 9
  # The tenth gradient waits for the next epoch (no barrier): two more make an update.
  trace2 = runtime.train(data[:2], max_active_keys=2, min_update_frequency=3)
  assert all(len(u) == 1 and len(u[0].instances) == 3 for u in trace2.updates)


def test_an_update_applies_the_mean_of_min_update_frequency_gradients():
  program = _mlp_program()
  data = _instances(3)
  runtime = distributed.AMPRuntime(program, optax.sgd(0.5))
  runtime.train(data, max_active_keys=1, min_update_frequency=3)
  params = [n.params for n in program.nodes]
  grads = [jax.grad(lambda p, inst=inst: _composed_loss(program, p, inst))(params)
           for inst in data]
  expected = jax.tree.map(lambda p, *g: p - 0.5 * sum(g) / 3, params, *grads)
  for a, b in zip(_leaves(runtime.params), _leaves(expected)):
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5)


def test_every_instance_is_processed_once_per_epoch():
  program = _mlp_program()
  data = _instances(9)
  runtime = distributed.AMPRuntime(program, optax.sgd(0.05))
  for _ in range(2):
    trace = runtime.train(data, max_active_keys=3, min_update_frequency=2,
                          order=np.random.default_rng(0).permutation(9))
    assert sorted(trace.losses) == list(range(9))
    for n, busy in enumerate(trace.busy):
      kinds = [(kind, i) for _, _, kind, i, _ in busy if kind != "U"]
      if n < 2:
        assert sorted(i for k, i in kinds if k == "F") == list(range(9))
      assert sorted(i for k, i in kinds if k == "B") == list(range(9))


def test_list_reduction_loop_runs_one_cell_step_per_element():
  program = distributed.list_reduction_program(jax.random.key(0), hidden=8)
  data = distributed.list_reduction_data(jax.random.key(2), 8, max_length=5)
  runtime = distributed.AMPRuntime(program, optax.adam(1e-2))
  trace = runtime.train(data, max_active_keys=4, min_update_frequency=2)
  cell = trace.busy[1]
  for i, inst in enumerate(data):
    steps = sorted(s for _, _, k, j, s in cell if j == i and k == "F")
    assert steps == list(range(len(inst.digits)))
    assert sum(1 for _, _, k, j, _ in cell if j == i and k == "B") == len(inst.digits)
    assert sum(1 for _, _, k, j, _ in trace.busy[0] if j == i and k == "F") == 1
  # The loop node counts one gradient per instance, summed over its steps.
  assert [len(u.instances) for u in trace.updates[1]] == [2] * 4
  # Instances of different lengths overlap: some instance starts before another ends.
  spans = sorted((min(t0 for t0, _, _, j, _ in cell if j == i),
                  max(t1 for _, t1, _, j, _ in cell if j == i)) for i in range(8))
  assert any(b[0] < a[1] for a, b in zip(spans, spans[1:]))


def test_list_reduction_data_labels():
  data = distributed.list_reduction_data(jax.random.key(3), 200, max_length=6, min_length=2)
  assert {len(i.digits) for i in data} == {2, 3, 4, 5, 6}
  assert {i.op for i in data} == {0, 1, 2}
  for inst in data:
    d = [int(v) for v in inst.digits]
    assert inst.label == {0: max(d), 1: min(d), 2: sum(d) % 10}[inst.op]
  ops, digits, lengths, labels = distributed.list_reduction_batch(data[:3])
  assert digits.shape == (3, max(lengths)) and list(labels) == [i.label for i in data[:3]]


# ---- GPipe and the bubble ----------------------------------------------------------------------


def test_gpipe_step_is_one_full_batch_gradient_step_with_fill_and_drain():
  program = _mlp_program()
  micro = _instances(4)
  runtime = distributed.AMPRuntime(program, optax.sgd(0.5))
  trace = runtime.gpipe_step(micro)
  params = [n.params for n in program.nodes]
  grads = [jax.grad(lambda p, inst=inst: _composed_loss(program, p, inst))(params)
           for inst in micro]
  expected = jax.tree.map(lambda p, *g: p - 0.5 * sum(g) / 4, params, *grads)
  for a, b in zip(_leaves(runtime.params), _leaves(expected)):
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5)
  for n, busy in enumerate(trace.busy):
    ops = [(k, j) for _, _, k, j, _ in busy]
    assert ops == ([("F", j) for j in range(4)] + [("B", j) for j in (3, 2, 1, 0)]
                   + [("U", -1)])
    assert [len(u) for u in trace.updates] == [1, 1, 1]
  # Fill and drain: stage 1 starts its first forward after stage 0 finished it, and the last
  # stage's backward precedes stage 0's.
  assert trace.busy[1][0][0] >= trace.busy[0][0][1]
  assert trace.busy[2][4][1] <= trace.busy[0][7][0]
  assert 0.0 < distributed.amp_idle_fraction(trace) < 1.0


def test_pipeline_bubble_formula_and_idle_fraction():
  assert distributed.gpipe_bubble(4, 4) == pytest.approx(3 / 7)
  assert distributed.gpipe_bubble(1, 8) == 0.0
  # Two nodes over a span of 4 s: busy 4 s and 2 s -> idle 2 of 8.
  trace = distributed.AMPTrace(busy=(((0.0, 2.0, "F", 0, 0), (2.0, 4.0, "B", 0, 0)),
                                     ((1.0, 2.0, "F", 0, 0), (2.0, 3.0, "B", 0, 0),
                                      (3.0, 9.0, "U", 0, 0))),
                               updates=((), ()), losses={}, start=0.0, end=9.0)
  assert distributed.amp_idle_fraction(trace) == pytest.approx(0.25)
  assert distributed.amp_idle_fraction(trace, kinds="FBU") == pytest.approx(1 - 12 / 18)


# ---- bad input and failures --------------------------------------------------------------------


def test_bad_input_raises_value_errors():
  program = _mlp_program()
  data = _instances(2)
  runtime = distributed.AMPRuntime(program, optax.sgd(0.1))
  for kwargs, match in (({"max_active_keys": 0, "min_update_frequency": 1}, "max_active_keys"),
                        ({"max_active_keys": 1.5, "min_update_frequency": 1}, "max_active_keys"),
                        ({"max_active_keys": 1, "min_update_frequency": 0},
                         "min_update_frequency")):
    with pytest.raises(ValueError, match=match):
      runtime.train(data, **kwargs)
  with pytest.raises(ValueError, match="order must be a permutation"):
    runtime.train(data, max_active_keys=1, min_update_frequency=1, order=[0, 0])
  with pytest.raises(ValueError, match="instances must hold"):
    runtime.train_synchronous([])
  with pytest.raises(ValueError, match="3 nodes but only 2 devices"):
    distributed.AMPRuntime(program, optax.sgd(0.1), devices=jax.devices()[:2])
  with pytest.raises(ValueError, match="timeout_s"):
    distributed.AMPRuntime(program, optax.sgd(0.1), timeout_s=0)
  with pytest.raises(ValueError, match="stages must hold"):
    distributed.amp_pipeline_program([], _xent)
  with pytest.raises(ValueError, match=r"stages\[1\] must be an nnx.Module"):
    distributed.amp_pipeline_program([(_linear, {}), "layer"], _xent)
  with pytest.raises(ValueError, match="num_microbatches"):
    distributed.gpipe_bubble(2, 0)
  with pytest.raises(ValueError, match="max_length"):
    distributed.list_reduction_data(jax.random.key(0), 3, max_length=0)
  with pytest.raises(ValueError, match="batch_size"):
    distributed.amp_minibatches(np.zeros((3, 2)), np.zeros(3), 4)
  rnn = distributed.AMPRuntime(distributed.list_reduction_program(jax.random.key(0), hidden=4),
                               optax.sgd(0.1))
  with pytest.raises(ValueError, match="linear pipeline"):
    rnn.gpipe_step(distributed.list_reduction_data(jax.random.key(0), 2))


def test_a_worker_exception_reaches_the_caller():
  base = _mlp_program()

  def bad_label(inst, step):
    if inst["x"][0, 0] == 1000.0:
      raise KeyError("no label for this instance")
    return inst["y"]

  program = base._replace(nodes=base.nodes[:2] + (base.nodes[2]._replace(side=bad_label),))
  data = _instances(4)
  data[2] = {"x": np.full_like(data[2]["x"], 1000.0), "y": data[2]["y"]}
  runtime = distributed.AMPRuntime(program, optax.sgd(0.1), timeout_s=30)
  t0 = time.perf_counter()
  with pytest.raises(RuntimeError, match="worker 2 .*KeyError") as info:
    runtime.train(data, max_active_keys=2, min_update_frequency=1)
  assert isinstance(info.value.__cause__, KeyError)
  assert time.perf_counter() - t0 < 20
  # A route to a node that does not exist is reported the same way.
  looped = base._replace(nodes=(base.nodes[0]._replace(route=lambda inst, step: (7, 0)),)
                         + base.nodes[1:])
  with pytest.raises(RuntimeError, match="routed key"):
    distributed.AMPRuntime(looped, optax.sgd(0.1)).train(data, max_active_keys=1,
                                                         min_update_frequency=1)


def test_a_silent_worker_times_out_instead_of_hanging():
  base = _mlp_program()
  release = threading.Event()

  def stuck_label(inst, step):
    release.wait(30)
    return inst["y"]

  program = base._replace(nodes=base.nodes[:2] + (base.nodes[2]._replace(side=stuck_label),))
  runtime = distributed.AMPRuntime(program, optax.sgd(0.1), timeout_s=0.3)
  try:
    with pytest.raises(TimeoutError, match="timeout_s=0.3"):
      runtime.train(_instances(2), max_active_keys=1, min_update_frequency=1)
  finally:
    release.set()
  # The stuck worker sees the stop flag once released and ends (no thread outlives the run).
  for t in threading.enumerate():
    if t.name.startswith("amp-worker-"):
      t.join(10)
      assert not t.is_alive()


def test_warm_up_compiles_without_learning():
  program = _mlp_program()
  runtime = distributed.AMPRuntime(program, optax.adam(1e-2))
  before = _leaves(runtime.params)
  runtime.warm_up(_instances(1)[0])
  for a, b in zip(before, _leaves(runtime.params)):
    np.testing.assert_array_equal(a, b)
  trace = runtime.train(_instances(2), max_active_keys=1, min_update_frequency=1)
  assert [u.version for u in trace.updates[0]] == [0, 1]


def test_private_module_is_the_family_api():
  assert distributed.AMPRuntime is _ampnet.AMPRuntime
