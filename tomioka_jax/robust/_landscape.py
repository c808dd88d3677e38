"""Loss-landscape diagnostics: top Hessian eigenvalues, gradient scatter, loss scans.

The tools of Liu, Salzmann, Lin, Tomioka, Süsstrunk (NeurIPS 2020) ``run/calc_hessian.py`` and
``run/scan_param.py``, on a loss ``loss_fn(params) -> scalar`` of any parameter pytree (for an
adversarial landscape, the loss at adversarial points computed once for the current model).

* Hessian-vector products ``H v = d/dt grad L(theta + t v)|_{t=0}``, forward-over-reverse
  (``jax.jvp`` of ``jax.grad``), without forming ``H``.
* Top eigenvalues by the Lanczos iteration with full reorthogonalization: with ``q_1`` a random
  unit vector, ``w = H q_j - beta_{j-1} q_{j-1}``, ``alpha_j = q_j^T w``, ``w <- w - Q Q^T w``
  (twice, against every previous vector), ``beta_j = ||w||``, ``q_{j+1} = w / beta_j``; the
  eigenvalues of the tridiagonal ``T_m = tridiag(beta, alpha, beta)`` (Ritz values) approximate
  the extreme eigenvalues of ``H``, exactly when ``m`` equals the dimension. The reference
  uses power iteration with deflation instead; Lanczos reaches the same extremes in far fewer
  products. One ``lax.scan`` of ``m`` products.
* Gradient statistics over minibatches: the mean of per-batch gradient norms against the norm
  of their mean, and the mean pairwise cosine similarity (large eps leaves gradients large and
  scattered, the paper's Section 3).
* 1-D and 2-D scans ``L(theta + a d_1 + b d_2)`` along random directions normalized per filter
  (each output unit's slice of ``d`` rescaled to the norm of the same slice of ``theta``; Li et
  al. 2018, as the reference's ``generate_vec(mode='normalized')``, which treats every
  parameter, biases included, by its first axis in PyTorch's layout: the output axis; in
  Flax's layout that is the last axis).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from tomioka_jax import core

Params = Any


def hessian_vector_product(loss_fn: Callable[[Params], jax.Array], params: Params,
                           v: Params) -> Params:
  """``H v`` for the Hessian of ``loss_fn`` at ``params`` (forward-over-reverse)."""
  return jax.jvp(jax.grad(loss_fn), (params,), (v,))[1]


def lanczos_tridiagonal(matvec: Callable[[jax.Array], jax.Array], q0: jax.Array,
                        steps: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """``steps`` Lanczos iterations with full reorthogonalization from the direction ``q0``.

  Returns ``(alpha, beta, Q)``: the diagonal ``(m,)``, the off-diagonal ``(m - 1,)`` of ``T_m``
  and the orthonormal basis ``Q`` of shape ``(m, d)`` (rows). A breakdown (``beta_j = 0``: an
  invariant subspace was found) leaves the remaining rows zero and their ``alpha`` zero.
  """
  check_lanczos_steps(steps, q0.shape[0])
  d = q0.shape[0]
  q = q0 / jnp.linalg.norm(q0)
  basis = jnp.zeros((steps, d), q0.dtype)

  def body(carry, j):
    basis, q, q_prev, beta_prev = carry
    basis = basis.at[j].set(q)
    w = matvec(q) - beta_prev * q_prev
    alpha = jnp.vdot(q, w)
    for _ in range(2):  # full reorthogonalization, twice ("twice is enough")
      w = w - basis.T @ (basis @ w)
    beta = jnp.linalg.norm(w)
    ok = beta > 1e-10 * jnp.maximum(jnp.abs(alpha), 1.0)
    q_next = jnp.where(ok, w / jnp.where(ok, beta, 1.0), jnp.zeros_like(w))
    beta = jnp.where(ok, beta, 0.0)
    return (basis, q_next, q, beta), (alpha, beta)

  init = (basis, q, jnp.zeros_like(q), jnp.zeros((), q0.dtype))
  (basis, _, _, _), (alpha, beta) = jax.lax.scan(body, init, jnp.arange(steps))
  return alpha, beta[:-1], basis


def check_lanczos_steps(steps: Any, dim: int) -> None:
  """``steps`` must be an integer in ``[1, dim]`` (Lanczos cannot run past the dimension)."""
  if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not 1 <= steps <= dim:
    raise ValueError(f"steps must be an integer in [1, {dim}] (the number of parameters), got "
                     f"steps={steps!r}")


def hessian_top_eigenvalues(loss_fn: Callable[[Params], jax.Array], params: Params, k: int,
                            *, key: jax.Array, steps: int | None = None,
                            return_vectors: bool = False):
  """The ``k`` largest eigenvalues of the Hessian of ``loss_fn`` at ``params``, by Lanczos.

  Args:
    loss_fn: ``params -> scalar`` (fix the data, and the adversarial points, in its closure).
    params: a pytree of arrays.
    k: number of eigenvalues (``1 <= k <= steps``).
    key: PRNG key of the starting vector.
    steps: Lanczos iterations ``m`` (Hessian-vector products); default ``min(d, max(4 k,
      30))``. ``m = d`` is exact up to rounding.
    return_vectors: also return the Ritz vectors as parameter pytrees stacked on a leading
      axis of length ``k``.

  Returns:
    Eigenvalues in decreasing order, shape ``(k,)`` (and the vectors if asked).
  """
  flat, unravel = ravel_pytree(params)
  d = flat.shape[0]
  m = min(d, max(4 * k, 30)) if steps is None else steps
  check_lanczos_steps(m, d)
  if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= m:
    raise ValueError(f"k must be an integer in [1, steps={m}], got k={k!r}")

  def matvec(v):
    return ravel_pytree(hessian_vector_product(loss_fn, params, unravel(v)))[0]

  q0 = core.flat_normal(key, (d,), flat.dtype)
  alpha, beta, basis = lanczos_tridiagonal(matvec, q0, m)
  t = jnp.diag(alpha) + jnp.diag(beta, 1) + jnp.diag(beta, -1)
  evals, evecs = jnp.linalg.eigh(t)
  order = jnp.argsort(-evals)[:k]
  top = evals[order]
  if not return_vectors:
    return top
  vecs = (basis.T @ evecs[:, order]).T
  return top, jax.vmap(unravel)(vecs)


def gradient_statistics(loss_fn: Callable[[Params, Any], jax.Array], params: Params,
                        batches: Any) -> dict[str, jax.Array]:
  """Norms and scatter of the per-batch gradients ``g_b = grad loss_fn(params, batch_b)``.

  ``batches`` is a pytree whose leaves share a leading axis of ``B >= 2`` minibatches.

  Returns:
    ``mean_norm`` = mean_b ||g_b||, ``norm_of_mean`` = ||mean_b g_b||, their ratio
    ``coherence = norm_of_mean / mean_norm`` (1 when all gradients agree, ~1/sqrt(B) for
    independent ones), ``mean_cosine`` = the mean of ``cos(g_a, g_b)`` over pairs ``a != b``,
    and ``variance`` = mean_b ||g_b - mean g||^2.
  """
  b = {jnp.shape(x)[0] for x in jax.tree.leaves(batches)}
  if len(b) != 1 or next(iter(b)) < 2:
    raise ValueError(f"batches must share one leading axis of at least 2 minibatches, got "
                     f"shapes {jax.tree.map(jnp.shape, batches)}")
  grads = jax.vmap(lambda batch: ravel_pytree(jax.grad(loss_fn)(params, batch))[0])(batches)
  norms = jnp.linalg.norm(grads, axis=1)
  mean = jnp.mean(grads, axis=0)
  unit = grads / jnp.maximum(norms, 1e-30)[:, None]
  gram = unit @ unit.T
  n = grads.shape[0]
  mean_cos = (jnp.sum(gram) - jnp.trace(gram)) / (n * (n - 1))
  return {"mean_norm": jnp.mean(norms), "norm_of_mean": jnp.linalg.norm(mean),
          "coherence": jnp.linalg.norm(mean) / jnp.mean(norms), "mean_cosine": mean_cos,
          "variance": jnp.mean(jnp.sum((grads - mean[None]) ** 2, axis=1))}


def filter_normalized_direction(key: jax.Array, params: Params) -> Params:
  """A Gaussian direction with each output unit's slice rescaled to the norm of ``params``'s.

  For a leaf of shape ``(..., out)`` the slice ``[..., j]`` of the direction gets the norm of
  ``params[..., j]``; a vector (bias) leaf is treated element by element (``|b_j|`` with a
  random sign), as the reference does.
  """
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(key, len(leaves))
  out = []
  for k, p in zip(keys, leaves):
    p = jnp.asarray(p)
    r = core.flat_normal(k, p.shape, p.dtype)
    if p.ndim == 0:
      out.append(jnp.sign(r) * jnp.abs(p))
      continue
    axes = tuple(range(p.ndim - 1))
    rn = jnp.sqrt(jnp.sum(r * r, axis=axes, keepdims=True)) if axes else jnp.abs(r)
    pn = jnp.sqrt(jnp.sum(p * p, axis=axes, keepdims=True)) if axes else jnp.abs(p)
    out.append(r / jnp.maximum(rn, 1e-30) * pn)
  return jax.tree.unflatten(treedef, out)


def _moved(params, d1, a, d2=None, b=None):
  if d2 is None:
    return jax.tree.map(lambda p, u: p + a * u, params, d1)
  return jax.tree.map(lambda p, u, v: p + a * u + b * v, params, d1, d2)


def loss_scan_1d(loss_fn: Callable[[Params], jax.Array], params: Params, direction: Params,
                 alphas: jax.Array) -> jax.Array:
  """``[L(theta + a d) for a in alphas]``, ``vmap``-ed."""
  return jax.vmap(lambda a: loss_fn(_moved(params, direction, a)))(jnp.asarray(alphas))


def loss_scan_2d(loss_fn: Callable[[Params], jax.Array], params: Params, d1: Params,
                 d2: Params, alphas: jax.Array, betas: jax.Array) -> jax.Array:
  """``L(theta + a d1 + b d2)`` on the grid ``alphas x betas``, shape ``(len(a), len(b))``."""
  betas = jnp.asarray(betas)
  row = lambda a: jax.lax.map(lambda b: loss_fn(_moved(params, d1, a, d2, b)), betas)  # noqa
  return jax.lax.map(row, jnp.asarray(alphas))
