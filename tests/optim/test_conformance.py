"""The shared conformance test every optimizer of tomioka_jax registers in.

Each entry builds an optax transformation for a given network; the test checks that it
converges on a toy teacher-student regression, that a jitted update does not recompile on its
second call, and that parameter dtypes are preserved (float32 and bfloat16).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from tomioka_jax import core
from tomioka_jax import optim
from tomioka_jax.optim import _ddp as ddp


def _reference_inputs(shape):
  """Inputs for DDP-SGD's data-dependent scaling when update() is called without a batch."""
  return jax.random.normal(jax.random.key(3), (32, *shape))


# name -> factory(network, input_shape) -> optax.GradientTransformation
OPTIMIZERS = {
    "path_sgd": lambda network, shape: optim.path_sgd(0.05, network, shape),
    "path_sgd_momentum": lambda network, shape: optim.path_sgd(0.02, network, shape,
                                                               momentum=0.9),
    "ddp_sgd": lambda network, shape: ddp.ddp_sgd(
        0.05, 0.5, reference_inputs=_reference_inputs(shape)),
}


def _problem(dtype=jnp.float32):
  teacher = core.MLP(4, (8,), 1, rngs=nnx.Rngs(10))
  x = jax.random.normal(jax.random.key(0), (64, 4))
  y = teacher(x)
  student = core.MLP(4, (16,), 1, rngs=nnx.Rngs(0), dtype=dtype)
  network, params = optim.nnx_network(student)

  def loss(p):
    return jnp.mean((network(p, x.astype(dtype)).astype(jnp.float32) - y) ** 2)

  return network, params, loss


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_converges_on_toy_objective(name):
  network, params, loss = _problem()
  opt = OPTIMIZERS[name](network, (4,))

  @jax.jit
  def step(params, state):
    l, g = jax.value_and_grad(loss)(params)
    updates, state = opt.update(g, state, params)
    return optax.apply_updates(params, updates), state, l

  state = opt.init(params)
  initial = float(loss(params))
  for _ in range(400):
    params, state, _ = step(params, state)
  assert float(loss(params)) < 0.1 * initial


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_no_recompilation_on_second_call(name):
  network, params, loss = _problem()
  opt = OPTIMIZERS[name](network, (4,))
  update = jax.jit(opt.update)
  state = opt.init(params)
  grads = jax.grad(loss)(params)
  updates, state = update(grads, state, params)
  updates, state = update(grads, state, params)
  assert update._cache_size() == 1  # pylint: disable=protected-access


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_dtype_preserved(name, dtype):
  network, params, loss = _problem(dtype)
  opt = OPTIMIZERS[name](network, (4,))
  state = opt.init(params)
  grads = jax.grad(loss)(params)
  updates, state = opt.update(grads, state, params)
  new = optax.apply_updates(params, updates)
  for leaf in jax.tree.leaves(new) + jax.tree.leaves(updates):
    assert leaf.dtype == dtype
  assert all(np.isfinite(np.asarray(l, np.float32)).all() for l in jax.tree.leaves(new))
