"""The P-VAE's synthetic hierarchical data: noisy observations of a branching diffusion.

"Continuous Hierarchical Representations with Poincaré Variational Auto-Encoders", Emile Mathieu,
Charline Le Lan, Chris J. Maddison, Ryota Tomioka, Yee Whye Teh, 2019, arXiv:1901.06033
(Section 5.1 and Appendix C.4).

A complete tree of depth ``depth`` with ``num_children`` children per node is embedded in
``R^dim`` by a branching diffusion: the root sits at the origin and every child is its parent
plus Gaussian noise of variance ``sigma_children / param^l`` (``l`` the parent's depth). Each node
then emits ``num_siblings`` noisy observations, the node plus noise of variance
``sigma_children / (factor_sibling * param^l)``. The observations (not the nodes) are the data
set, standardised per coordinate. The paper's setting (the reference code's ``--data-params
6 2 1 1 5 5``, dimension 50): 127 nodes, 635 observations, split 70/30 at random.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class TreeData(NamedTuple):
  """Observations of a branching diffusion and the tree they come from.

  Attributes:
    x: observations (num_nodes * num_siblings, dim), standardised per coordinate.
    depth: depth of each observation's node (root = 0), shape (num_observations,).
    node: index of each observation's node into ``nodes``, shape (num_observations,).
    nodes: the tree's nodes (num_nodes, dim), breadth-first, under the same standardisation.
    parent: index of each node's parent (-1 for the root), shape (num_nodes,).
    node_depth: depth of each node, shape (num_nodes,).
  """

  x: jax.Array
  depth: jax.Array
  node: jax.Array
  nodes: jax.Array
  parent: jax.Array
  node_depth: jax.Array


def _check_positive_int(**values) -> None:
  for name, value in values.items():
    if not isinstance(value, (int, np.integer)) or value < 1:
      raise ValueError(f"{name} must be a positive integer, got {name}={value!r}")


def _check_positive(**values) -> None:
  for name, value in values.items():
    if not (np.isfinite(value) and value > 0):
      raise ValueError(f"{name} must be finite and > 0, got {name}={value!r}")


def branching_diffusion(key: jax.Array, *, dim: int = 50, depth: int = 6, num_children: int = 2,
                        num_siblings: int = 5, sigma_children: float = 1.0, param: float = 1.0,
                        factor_sibling: float = 5.0, standardize: bool = True) -> TreeData:
  """Samples the paper's synthetic tree data set.

  .. math::  \\mu_{\\text{child}} = \\mu_{\\text{parent}} + \\varepsilon,\\
     \\varepsilon \\sim \\mathcal N\\big(0, \\tfrac{\\sigma}{p^{l}} I\\big); \\qquad
     x = \\mu_{\\text{node}} + \\eta,\\ \\eta \\sim \\mathcal N\\big(0,
     \\tfrac{\\sigma}{f\\, p^{l}} I\\big)

  with ``l`` the depth of the parent (for children) or of the node (for observations),
  ``sigma = sigma_children``, ``p = param`` and ``f = factor_sibling``. The defaults are the
  paper's: 127 nodes, 635 observations in ``R^50``.

  Args:
    key: PRNG key.
    dim: dimension of the ambient space.
    depth: depth of the tree (the root has depth 0, the leaves ``depth``).
    num_children: children per internal node.
    num_siblings: noisy observations emitted by every node.
    sigma_children: the children's noise variance at the root.
    param: the variances are divided by ``param`` at every level.
    factor_sibling: observations have ``factor_sibling`` times less variance than children.
    standardize: centre and scale every coordinate of the observations to mean 0, variance 1
      (the nodes get the same affine map).

  Returns:
    A :class:`TreeData`.
  """
  _check_positive_int(dim=dim, num_children=num_children, num_siblings=num_siblings)
  if not isinstance(depth, (int, np.integer)) or depth < 0:
    raise ValueError(f"depth must be an integer >= 0, got depth={depth!r}")
  _check_positive(sigma_children=sigma_children, param=param, factor_sibling=factor_sibling)
  return _branching_diffusion(key, int(dim), int(depth), int(num_children), int(num_siblings),
                              float(sigma_children), float(param), float(factor_sibling),
                              bool(standardize))


@functools.partial(jax.jit, static_argnums=tuple(range(1, 9)))
def _branching_diffusion(key, dim, depth, num_children, num_siblings, sigma_children, param,
                         factor_sibling, standardize):
  num_nodes = sum(num_children ** level for level in range(depth + 1))
  # All Gaussian noise in one draw (one random-bits kernel to compile), sliced per use.
  all_noise = jax.random.normal(key, ((num_nodes - 1) + num_nodes * num_siblings, dim))
  levels = [jnp.zeros((1, dim), jnp.float32)]
  parents = [np.array([-1])]
  depths = [np.zeros(1, np.int32)]
  offset = drawn = 0
  for level in range(1, depth + 1):
    prev = levels[-1]
    std = np.sqrt(sigma_children / param ** (level - 1))
    rows = prev.shape[0] * num_children
    noise = std * all_noise[drawn:drawn + rows].reshape(prev.shape[0], num_children, dim)
    drawn += rows
    levels.append((prev[:, None, :] + noise).reshape(-1, dim))
    parents.append(np.repeat(offset + np.arange(prev.shape[0]), num_children))
    depths.append(np.full(prev.shape[0] * num_children, level, np.int32))
    offset += prev.shape[0]
  nodes = jnp.concatenate(levels)
  node_depth = np.concatenate(depths)
  obs_std = np.sqrt(sigma_children / (factor_sibling * param ** node_depth.astype(np.float64)))
  noise = all_noise[num_nodes - 1:].reshape(num_nodes, num_siblings, dim)
  x = (nodes[:, None, :] + jnp.asarray(obs_std, jnp.float32)[:, None, None] * noise).reshape(-1,
                                                                                           dim)
  if standardize:
    mean, std = jnp.mean(x, axis=0, keepdims=True), jnp.std(x, axis=0, keepdims=True)
    x, nodes = (x - mean) / std, (nodes - mean) / std
  node = np.repeat(np.arange(nodes.shape[0]), num_siblings)
  return TreeData(x=x, depth=jnp.asarray(node_depth[node]), node=jnp.asarray(node), nodes=nodes,
                  parent=jnp.asarray(np.concatenate(parents)), node_depth=jnp.asarray(node_depth))


def train_test_split(key: jax.Array, n: int, train_fraction: float = 0.7
                     ) -> tuple[jax.Array, jax.Array]:
  """A random split of ``range(n)``: ``floor(train_fraction * n)`` training indices, the rest test.

  The reference code's 70/30 split (444 / 191 of the 635 tree observations).
  """
  _check_positive_int(n=n)
  if not 0.0 < train_fraction < 1.0:
    raise ValueError(f"train_fraction must be in (0, 1), got train_fraction={train_fraction!r}")
  n_train = int(np.floor(train_fraction * n))
  if n_train < 1 or n_train >= n:
    raise ValueError(f"train_fraction={train_fraction} leaves an empty split of n={n}")
  perm = jax.random.permutation(key, n)
  return perm[:n_train], perm[n_train:]


__all__ = ["TreeData", "branching_diffusion", "train_test_split"]
