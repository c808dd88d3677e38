"""DistIR's IR, jaxpr importer, printer, reference execution and type inference."""

from __future__ import annotations

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tomioka_jax.distributed import distir
from tomioka_jax.distributed.distir import _ir as ir


def _mlp_loss(params, x, y):
  h = jax.nn.relu(x @ params["w1"] + params["b1"][None, :])
  logits = h @ params["w2"]
  return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))


def _mlp_data(batch=8, d_in=6, hidden=5, classes=3, seed=0):
  rng = np.random.default_rng(seed)
  params = {"w1": rng.normal(size=(d_in, hidden)).astype(np.float32),
            "b1": rng.normal(size=(hidden,)).astype(np.float32),
            "w2": rng.normal(size=(hidden, classes)).astype(np.float32)}
  x = rng.normal(size=(batch, d_in)).astype(np.float32)
  y = rng.integers(0, classes, size=batch).astype(np.int32)
  return params, x, y


def _run(fn, f, *args):
  """distir.execute of the traced ``fn`` and ``f(*args)``, both flattened."""
  got = distir.execute(fn, *jax.tree.leaves(args))
  want = jax.tree.leaves(f(*args))
  return got, want


def test_execute_equals_running_the_jaxpr_for_an_mlp_training_step():
  step = jax.value_and_grad(_mlp_loss)
  args = _mlp_data()
  fn = distir.trace(step, *args)
  got, want = _run(fn, step, *args)
  assert len(got) == len(want) == 4
  for a, b in zip(got, want):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  # Every value lives on device 0 and the declared types check.
  assert fn.devices == (0,)
  assert distir.infer_types(fn) == tuple(v.type for v in fn.outputs)


def test_importer_inlines_calls_and_keeps_control_flow():
  @jax.custom_vjp
  def scaled(x):
    return 2.0 * x

  scaled.defvjp(lambda x: (2.0 * x, None), lambda _, g: (2.0 * g,))

  def f(x, h0):
    def cell(h, xt):
      h = jnp.tanh(h * 0.5 + xt)
      return h, h.sum()

    h, ys = jax.lax.scan(cell, h0, x)
    z = jax.checkpoint(lambda v: jnp.sin(v) * 3.0)(h)
    return jax.jit(lambda a, b: scaled(a) + b.sum())(z, ys)

  x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3)
  h0 = np.ones(3, np.float32)
  fn = distir.trace(f, x, h0)
  names = {op.name for op in fn.ops}
  assert "scan" in names
  assert not names & set(ir.INLINED_PRIMITIVES)
  got, want = _run(fn, f, x, h0)
  np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
  grad_fn = distir.trace(jax.grad(lambda x, h: f(x, h).sum()), x, h0)
  got, want = _run(grad_fn, jax.grad(lambda x, h: f(x, h).sum()), x, h0)
  np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-6)


def test_a_conv_net_adam_step_from_nnx_imports_and_matches():
  class Net(nnx.Module):
    def __init__(self, rngs):
      self.conv = nnx.Conv(1, 4, (3, 3), rngs=rngs)
      self.dense = nnx.Linear(4 * 6 * 6, 3, rngs=rngs)

    def __call__(self, x):
      h = nnx.relu(self.conv(x))
      return self.dense(h.reshape(h.shape[0], -1))

  model = Net(nnx.Rngs(0))
  graphdef, params = nnx.split(model)
  tx = optax.adam(1e-2)
  opt_state = tx.init(params)

  def step(params, opt_state, x, y):
    def loss(p):
      logits = nnx.merge(graphdef, p)(x)
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    value, grads = jax.value_and_grad(loss)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return value, optax.apply_updates(params, updates), opt_state

  rng = np.random.default_rng(1)
  x = rng.normal(size=(2, 6, 6, 1)).astype(np.float32)
  y = np.array([0, 2], np.int32)
  fn = distir.trace(step, params, opt_state, x, y)
  assert "conv_general_dilated" in {op.name for op in fn.ops}
  got, want = _run(fn, step, params, opt_state, x, y)
  assert len(got) == len(want)
  for a, b in zip(got, want):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_unknown_primitive_is_named():
  def f(x):
    return jax.lax.while_loop(lambda c: c[0] < 3, lambda c: (c[0] + 1, c[1] * 2.0), (0, x))

  with pytest.raises(ValueError, match="unsupported primitive 'while'"):
    distir.trace(f, np.float32(1.0))


def test_hand_built_data_parallel_step_equals_the_full_batch_gradient():
  """scatter the batch, run the per-shard gradient on each device, allreduce."""
  params, x, y = _mlp_data(batch=8)
  n = 4
  shard = distir.trace(jax.grad(_mlp_loss), params, x[: 8 // n], y[: 8 // n])
  b = distir.FunctionBuilder("dp")
  leaves = [b.input(f"p{i}", np.shape(v), np.float32, device=0)
            for i, v in enumerate(jax.tree.leaves(params))]
  xv = b.input("x", x.shape, np.float32, device=0)
  yv = b.input("y", y.shape, np.int32, device=0)
  xs = b.scatter(xv, axis=0, devices=range(n))
  ys = b.scatter(yv, axis=0, devices=range(n))
  replicas = [b.broadcast(leaf, range(1, n)) for leaf in leaves]
  grads = []
  for d in range(n):
    local = [leaf if d == 0 else rep[d - 1] for leaf, rep in zip(leaves, replicas)]
    grads.append(b.inline(shard, local + [xs[d], ys[d]], device=d))
  summed = [b.allreduce([g[k] for g in grads]) for k in range(len(leaves))]
  scale = b.constant(np.float32(1.0 / n))
  outs = [b.primitive(jax.lax.mul_p, [s[0], scale])[0] for s in summed]
  fn = b.finish(outs)
  assert fn.devices == (0, 1, 2, 3)
  assert distir.infer_types(fn) == tuple(v.type for v in fn.outputs)
  got = distir.execute(fn, *jax.tree.leaves(params), x, y)
  want = jax.tree.leaves(jax.grad(_mlp_loss)(params, x, y))
  for a, w in zip(got, want):
    np.testing.assert_allclose(a, w, rtol=1e-5, atol=1e-6)
  text = distir.format_function(fn)
  assert "allreduce" in text and "@d3" in text and "mpi_scatter[axis=0" in text


@pytest.mark.parametrize("op", ["allreduce", "allgather", "reduce_scatter", "mpi_gather"])
def test_communication_ops_execute_and_type(op):
  rng = np.random.default_rng(0)
  parts = [rng.normal(size=(4, 6)).astype(np.float32) for _ in range(3)]
  b = distir.FunctionBuilder(op)
  ins = [b.input(f"a{d}", (4, 6), np.float32, device=d) for d in range(3)]
  if op == "allreduce":
    outs = b.allreduce(ins)
    want = [sum(parts)] * 3
  elif op == "allgather":
    outs = b.allgather(ins, axis=1)
    want = [np.concatenate(parts, axis=1)] * 3
  elif op == "mpi_gather":
    outs = (b.gather(ins, axis=0, device=5),)
    want = [np.concatenate(parts, axis=0)]
  else:
    with pytest.raises(ValueError, match="does not split into 3"):
      b.reduce_scatter(ins, axis=0)
    outs = b.reduce_scatter(ins, axis=1)
    want = np.split(sum(parts), 3, axis=1)
  fn = b.finish(outs)
  got = distir.execute(fn, *parts)
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, rtol=1e-6)
  if op == "mpi_gather":
    assert fn.outputs[0].type.device == 5
  else:
    assert [v.type.device for v in fn.outputs] == [0, 1, 2]


def test_send_broadcast_scatter_types():
  b = distir.FunctionBuilder("moves")
  x = b.input("x", (6, 2), np.float32, device=1)
  y = b.send(x, 3)
  assert y.type == distir.TensorType((6, 2), np.float32, 3)
  with pytest.raises(ValueError, match="other than the target"):
    b.send(y, 3)
  copies = b.broadcast(x, (0, 2))
  assert [c.type.device for c in copies] == [0, 2]
  shards = b.scatter(x, axis=0, devices=(0, 2, 4))
  assert [c.type.shape for c in shards] == [(2, 2)] * 3
  with pytest.raises(ValueError, match="does not split"):
    b.scatter(x, axis=1, devices=(0, 2, 4))
  with pytest.raises(ValueError, match="axis must be in"):
    b.scatter(x, axis=2, devices=(0, 2))
  with pytest.raises(ValueError, match="distinct devices"):
    b.allreduce([x, x])
  fn = b.finish([y, *copies, *shards])
  got = distir.execute(fn, np.arange(12, dtype=np.float32).reshape(6, 2))
  np.testing.assert_array_equal(got[3], [[0, 1], [2, 3]])


def test_compute_op_mixing_devices_and_bad_programs_are_refused():
  b = distir.FunctionBuilder("bad")
  x = b.input("x", (3,), np.float32, device=0)
  y = b.input("y", (3,), np.float32, device=1)
  with pytest.raises(ValueError, match="reads values on devices \\[0, 1\\]"):
    b.primitive(jax.lax.add_p, [x, y])
  orphan = ir.Value("orphan", distir.TensorType((3,), np.float32, 0))
  b.primitive(jax.lax.add_p, [x, x])
  with pytest.raises(ValueError, match="output orphan is never defined"):
    b.finish([orphan])
  b2 = distir.FunctionBuilder("bad2")
  x2 = b2.input("x", (3,), np.float32, device=0)
  (z,) = b2.primitive(jax.lax.neg_p, [x2])
  fn = b2.finish([z])
  with pytest.raises(ValueError, match="input x must be float32\\[3\\]"):
    distir.execute(fn, np.zeros(4, np.float32))
  with pytest.raises(ValueError, match="takes 1 inputs"):
    distir.infer_types(fn, [])


def test_infer_types_retypes_for_new_shapes_and_catches_a_wrong_declaration():
  fn = distir.trace(lambda a, b: jnp.tanh(a @ b).sum(axis=0), np.ones((4, 3), np.float32),
                    np.ones((3, 2), np.float32))
  out = distir.infer_types(fn, [distir.TensorType((7, 3), np.float32, 2),
                                distir.TensorType((3, 5), np.float32, 2)])
  assert out == (distir.TensorType((5,), np.float32, 2),)
  with pytest.raises(TypeError):
    distir.infer_types(fn, [distir.TensorType((7, 4), np.float32, 0),
                            distir.TensorType((3, 5), np.float32, 0)])
  # A transform that declares a wrong type is caught.
  op = fn.ops[0]
  bad_out = ir.Value("bad", distir.TensorType((9, 9), np.float32, 0))
  bad_op = ir.Op(op.name, op.inputs, (bad_out,), op.params, op.primitive)
  bad = ir.Function("bad", fn.inputs, (bad_op,), (bad_out,))
  with pytest.raises(ValueError, match="declares bad"):
    distir.infer_types(bad)


def test_inline_places_a_copy_on_the_device_and_checks_inputs():
  piece = distir.trace(lambda a: jnp.exp(a) * 2.0, np.ones(3, np.float32))
  b = distir.FunctionBuilder("outer")
  x = b.input("x", (3,), np.float32, device=2)
  (y,) = b.inline(piece, [x], device=2)
  assert y.type.device == 2
  with pytest.raises(ValueError, match="is on device 2"):
    b.inline(piece, [x], device=1)
  other = distir.FunctionBuilder("other")
  z = other.input("z", (4,), np.float32, device=2)
  with pytest.raises(ValueError, match="has type"):
    other.inline(piece, [z], device=2)
  fn = b.finish([y])
  np.testing.assert_allclose(distir.execute(fn, np.zeros(3, np.float32))[0], 2.0)


def test_topology_and_device_validation():
  topo = distir.Topology.uniform(4, bandwidth=1e9, latency=1e-6)
  assert topo.num_devices == 4 and topo.bandwidth[0, 1] == 1e9
  with pytest.raises(ValueError, match="flops must be > 0"):
    distir.Device(0, flops=0.0)
  with pytest.raises(ValueError, match="num_devices must be an integer >= 1"):
    distir.Topology.uniform(0)
  with pytest.raises(ValueError, match="bandwidth must have shape"):
    distir.Topology(topo.devices, np.ones((3, 3)), 0.0)
  with pytest.raises(ValueError, match="devices\\[1\\].id must be 1"):
    distir.Topology((distir.Device(0), distir.Device(0)), np.ones((2, 2)), 0.0)
  with pytest.raises(ValueError, match="jaxpr must be a ClosedJaxpr"):
    distir.import_jaxpr(lambda x: x)


def test_random_keys_sorting_and_cond_import():
  def f(key, x):
    k1, k2 = jax.random.split(key)
    y = jnp.where(jax.random.bernoulli(k2, 0.5, x.shape), x + jax.random.normal(k1, x.shape),
                  0.0)
    z = jnp.cumsum(jax.nn.gelu(y), axis=0) + jax.scipy.special.erf(y)
    return (jnp.sort(z, axis=0)[0].max() + jnp.argmax(z).astype(jnp.float32)
            + jax.lax.cond(z[0, 0] > 0, lambda: 1.0, lambda: 2.0))

  key, x = jax.random.key(3), jnp.linspace(-1.0, 1.0, 12).reshape(4, 3)
  fn = distir.trace(f, key, x)
  assert fn.inputs[0].type.nbytes == 8  # a threefry key: two uint32 words
  got, want = _run(fn, f, key, x)
  np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
