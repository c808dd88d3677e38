"""The spectral norm of a tensor by higher-order power iterations with random restarts.

"Spectral norm of random tensors", Ryota Tomioka, Taiji Suzuki, 2014, arXiv:1407.1870.

The spectral (injective) norm ``||X|| = max <X, u_1 o ... o u_K>`` over unit vectors is
NP-hard to compute in general; the paper bounds it for random tensors by
``O(sqrt((sum_k n_k) log K))``. This module estimates it from below with the higher-order
power method (rank-one alternating least squares), run from many random starts at once
(``vmap``) inside one ``jax.jit``, and returns the best value with its rank-one factors.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike


class TensorSpectralNorm(NamedTuple):
  """The result of :func:`tensor_spectral_norm`.

  Attributes:
    value: the best value ``X(u_1, ..., u_K)`` over restarts, a lower bound on ``||X||``.
    factors: the unit vectors ``u_k`` attaining it, shapes ``(n_k,)``.
    restart_values: the value reached by every restart, shape ``(num_restarts,)``.
  """

  value: jax.Array
  factors: tuple[jax.Array, ...]
  restart_values: jax.Array


def contract_except(x: jax.Array, vectors: tuple[jax.Array, ...], mode: int) -> jax.Array:
  """``X(u_1, ..., u_{k-1}, ., u_{k+1}, ..., u_K)``: contracts every mode but ``mode``."""
  for j in reversed(range(x.ndim)):  # from the last mode, so earlier axes keep their index
    if j != mode:
      x = jnp.tensordot(x, vectors[j], axes=(j, 0))
  return x


def _power_method(x, vectors, num_iters):
  def sweep(_, vecs):
    vecs = list(vecs)
    for k in range(x.ndim):
      v = contract_except(x, tuple(vecs), k)
      vecs[k] = v / jnp.maximum(jnp.linalg.norm(v), jnp.finfo(x.dtype).tiny)
    return tuple(vecs)

  vectors = lax.fori_loop(0, num_iters, sweep, vectors)
  value = jnp.vdot(contract_except(x, vectors, 0), vectors[0])
  return value, vectors


@functools.partial(jax.jit, static_argnames=("num_restarts", "num_iters"))
def _spectral_jit(key, x, num_restarts, num_iters):
  keys = jax.random.split(key, x.ndim)
  starts = tuple(jax.random.normal(k, (num_restarts, n), x.dtype) for k, n in zip(keys, x.shape))
  starts = tuple(s / jnp.linalg.norm(s, axis=1, keepdims=True) for s in starts)
  values, vectors = jax.vmap(lambda v: _power_method(x, v, num_iters))(starts)
  best = jnp.argmax(values)
  return TensorSpectralNorm(values[best], tuple(v[best] for v in vectors), values)


def tensor_spectral_norm(key: jax.Array, x: ArrayLike, *, num_restarts: int = 10,
                         num_iters: int = 100) -> TensorSpectralNorm:
  """Estimates the spectral norm of a tensor by the higher-order power method.

  .. math:: \\|X\\| = \\max_{\\|u_k\\|_2 = 1} X(u_1, \\dots, u_K),\\qquad
     u_k \\leftarrow \\frac{X(u_1, .., u_{k-1}, \\cdot, u_{k+1}, .., u_K)}{\\|\\cdot\\|}.

  Each sweep updates every ``u_k`` in turn and never decreases ``X(u_1, ..., u_K)``; the
  value reached is a local maximum, so the result is a lower bound on ``||X||`` (exact for
  matrices and for rank-one or orthogonally decomposable tensors from almost every start).
  ``num_restarts`` Gaussian starts run in parallel (``vmap``) and the best is kept.

  Args:
    key: a ``jax.random`` key for the starting vectors.
    x: a tensor with ``K >= 2`` modes.
    num_restarts: how many random starts.
    num_iters: sweeps per start.

  Returns:
    A :class:`TensorSpectralNorm` ``(value, factors, restart_values)``.

  Example:
    >>> a, b, c = jnp.eye(3)[0], jnp.eye(4)[1], jnp.eye(5)[2]
    >>> x = 2.0 * jnp.einsum("i,j,k->ijk", a, b, c)
    >>> round(float(tensor_spectral_norm(jax.random.key(0), x).value), 5)
    2.0

  References:
    De Lathauwer, De Moor, Vandewalle, "On the best rank-1 and rank-(R1, ..., RN)
    approximation of higher-order tensors", 2000; Tomioka, Suzuki, arXiv:1407.1870.
  """
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    x = x.astype(jnp.zeros(()).dtype)
  if x.ndim < 2:
    raise ValueError(f"x must have at least 2 modes, got shape {x.shape}")
  for name, v in (("num_restarts", num_restarts), ("num_iters", num_iters)):
    if int(v) != v or v < 1:
      raise ValueError(f"{name} must be a positive integer, got {v}")
  return _spectral_jit(key, x, int(num_restarts), int(num_iters))
