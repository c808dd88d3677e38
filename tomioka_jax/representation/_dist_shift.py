"""Exact information quantities, the CMNIST family of joints, and the four criteria optimised.

"An Information-theoretic Approach to Distribution Shifts", Marco Federici, Ryota Tomioka,
Patrick Forré, NeurIPS 2021, arXiv:2106.03783.

The paper asks which representation ``z`` of an observation ``x`` keeps a predictor of ``y``
reliable when the distribution moves from the training environments ``e`` to a test one. It
compares four criteria, each of the form ``-I(y;z) + lambda R`` (Section 3): the information
bottleneck (``R = I(x;z)``), independence (``R = I(e;z)``, the DANN family), sufficiency
(``R = I(e;y|z)``, IRM and VREx) and separation (``R = I(e;z|y)``, conditional DANN), and shows
on three coloured-MNIST processes that each of the last three fails on one of them.

This module provides

* exact information quantities of discrete joints given as probability tables, whose axes are
  named or indexed: :func:`entropy`, :func:`mutual_information` (conditional with ``given``),
  :func:`cross_entropy`, with :func:`marginal` and :func:`conditional`;
* the data-generating processes as tables ``p(e, y, c, d)`` (:func:`cmnist_distribution`) and
  the split into training and test environments (:func:`split_environments`);
* the exact optimisation of each criterion over a stochastic encoder ``q(z|x)`` with a finite
  code space (:func:`fit_discrete_encoder`, one ``jax.jit``, ``vmap``-able over ``lambda`` and
  restarts), the predictor ``q(y|z)`` it induces, and the reference predictors that see the
  whole picture, the colour, the digit or nothing (:func:`feature_cross_entropies`).

Every quantity is in nats.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.typing import ArrayLike

from tomioka_jax import core

__all__ = [
    "CMNIST_AXES",
    "CMNIST_VARIANTS",
    "CRITERIA",
    "ENCODED_AXES",
    "DiscreteEncoderFit",
    "adversarial_cross_entropy",
    "cmnist_distribution",
    "conditional",
    "criterion_loss",
    "criterion_regularizer",
    "cross_entropy",
    "encoded_joint",
    "entropy",
    "environment_risks",
    "feature_cross_entropies",
    "fit_discrete_encoder",
    "irm_penalty",
    "marginal",
    "mutual_information",
    "predictor_cross_entropy",
    "split_environments",
    "vrex_penalty",
]

AxisSpec = int | str | Sequence[int | str] | None

# ----------------------------------------------------------------------------- tables and axes


def _table_tolerance(dtype: np.dtype) -> float:
  return 1e-6 if np.dtype(dtype).itemsize >= 8 else 1e-4


def _check_table(p: ArrayLike, arg: str) -> jax.Array:
  """``p`` as a floating array; when concrete, a probability table or a ValueError."""
  p = jnp.asarray(p)
  if not jnp.issubdtype(p.dtype, jnp.floating):
    p = p.astype(jnp.result_type(float))
  if p.ndim == 0:
    raise ValueError(f"{arg} must be a probability table with at least one axis, got a scalar "
                     f"{p!r}")
  if core.is_concrete(p):
    a = np.asarray(p, dtype=np.float64)
    bad = ~np.isfinite(a)
    if bad.any():
      idx = tuple(int(i) for i in np.argwhere(bad)[0])
      raise ValueError(f"{arg} must be a probability table (finite, non-negative, summing to 1); "
                       f"got {a[idx]:.6g} at index {idx}")
    if (a < 0).any():
      idx = tuple(int(i) for i in np.argwhere(a < 0)[0])
      raise ValueError(f"{arg} must be a probability table (finite, non-negative, summing to 1); "
                       f"got {a[idx]:.6g} at index {idx}")
    total = a.sum()
    if abs(total - 1.0) > _table_tolerance(p.dtype) * max(1.0, np.sqrt(a.size)):
      raise ValueError(f"{arg} must be a probability table (finite, non-negative, summing to 1); "
                       f"its entries sum to {total:.6g}")
  return p


def _check_names(names: Sequence[str] | None, ndim: int) -> tuple[str, ...] | None:
  if names is None:
    return None
  names = tuple(names)
  if len(names) != ndim or len(set(names)) != ndim or not all(isinstance(n, str) for n in names):
    raise ValueError(f"names must be {ndim} distinct strings, one per axis of the table; got "
                     f"{names!r}")
  return names


def _axes(spec: AxisSpec, ndim: int, names: tuple[str, ...] | None, arg: str) -> tuple[int, ...]:
  """The sorted axis indices of ``spec`` (an index, a name, or a sequence of them)."""
  if spec is None:
    return ()
  items = [spec] if isinstance(spec, (int, str)) else list(spec)
  out = []
  for item in items:
    if isinstance(item, str):
      if names is None or item not in names:
        allowed = "no names (pass names=...)" if names is None else f"one of {names}"
        raise ValueError(f"{arg} names an axis {item!r} that the table does not have; allowed: "
                         f"{allowed}")
      out.append(names.index(item))
    elif isinstance(item, (int, np.integer)) and not isinstance(item, bool):
      if not -ndim <= item < ndim:
        raise ValueError(f"{arg} has axis {item}, out of range for a table with {ndim} axes "
                         f"(allowed: -{ndim}..{ndim - 1})")
      out.append(int(item) % ndim)
    else:
      raise ValueError(f"{arg} must be an axis index, an axis name or a sequence of them; got "
                       f"{item!r}")
  if len(set(out)) != len(out):
    raise ValueError(f"{arg} lists an axis twice: {spec!r}")
  return tuple(sorted(out))


def _disjoint(**groups: tuple[int, ...]) -> None:
  seen: dict[int, str] = {}
  for arg, axes in groups.items():
    for ax in axes:
      if ax in seen:
        raise ValueError(f"{seen[ax]} and {arg} share axis {ax}; the variables of an information "
                         "quantity must be disjoint")
      seen[ax] = arg


def _keep(p: jax.Array, axes: Sequence[int]) -> jax.Array:
  """The marginal over ``axes``, other axes summed out but kept with size 1 (broadcastable)."""
  drop = tuple(i for i in range(p.ndim) if i not in axes)
  return jnp.sum(p, axis=drop, keepdims=True) if drop else p


def _log_where(mask: jax.Array, q: jax.Array) -> jax.Array:
  """``log q`` where ``mask``, 0 elsewhere; the masked branch contributes no gradient."""
  q = jnp.broadcast_to(q, mask.shape)
  return jnp.where(mask, jnp.log(jnp.where(mask, q, 1.0)), 0.0)


def marginal(p: ArrayLike, keep: AxisSpec, *, names: Sequence[str] | None = None) -> jax.Array:
  """The marginal table of the variables ``keep``: every other axis summed out.

  ``p(a) = sum_b p(a, b)``.

  Args:
    p: a probability table, one axis per variable.
    keep: the axes to keep (indices or, with ``names``, names).
    names: optional names of the axes of ``p``.

  Returns:
    The marginal, its axes in the order they have in ``p``.

  Example:
    >>> import jax.numpy as jnp
    >>> p = jnp.array([[0.1, 0.3], [0.2, 0.4]])
    >>> np.asarray(marginal(p, "y", names=("x", "y")), float).round(4).tolist()
    [0.3, 0.7]
  """
  p = _check_table(p, "p")
  names = _check_names(names, p.ndim)
  axes = _axes(keep, p.ndim, names, "keep")
  drop = tuple(i for i in range(p.ndim) if i not in axes)
  return jnp.sum(p, axis=drop) if drop else p


def conditional(p: ArrayLike, of: AxisSpec, given: AxisSpec, *,
                names: Sequence[str] | None = None) -> jax.Array:
  """The conditional table ``p(of | given) = p(of, given) / p(given)``.

  Where ``p(given) = 0`` the conditional is undefined and set to 0.

  Args:
    p: a probability table, one axis per variable.
    of: the variables on the left of the bar.
    given: the conditioning variables (disjoint from ``of``).
    names: optional names of the axes of ``p``.

  Returns:
    A table over the axes of ``of`` and ``given`` in the order they have in ``p``; it sums to 1
    over the ``of`` axes for every value of ``given`` with positive probability.

  Example:
    >>> import jax.numpy as jnp
    >>> p = jnp.array([[0.1, 0.3], [0.2, 0.4]])
    >>> np.asarray(conditional(p, "x", "y", names=("x", "y")), float).round(4).tolist()
    [[0.3333, 0.4286], [0.6667, 0.5714]]
  """
  p = _check_table(p, "p")
  names = _check_names(names, p.ndim)
  a = _axes(of, p.ndim, names, "of")
  c = _axes(given, p.ndim, names, "given")
  _disjoint(of=a, given=c)
  ac = tuple(sorted(a + c))
  p_ac, p_c = _keep(p, ac), _keep(p, c)
  p_c = jnp.broadcast_to(p_c, p_ac.shape)
  cond = jnp.where(p_c > 0, p_ac / jnp.where(p_c > 0, p_c, 1.0), 0.0)
  drop = tuple(i for i in range(p.ndim) if i not in ac)
  return jnp.squeeze(cond, axis=drop) if drop else cond


def entropy(p: ArrayLike, of: AxisSpec = None, given: AxisSpec = None, *,
            names: Sequence[str] | None = None) -> jax.Array:
  """The (conditional) Shannon entropy ``H(of | given)`` of a discrete joint, in nats.

  ``H(A|C) = -sum_{a,c} p(a,c) log p(a|c)``, with ``0 log 0 = 0``.

  Table checks (finite, non-negative, summing to 1) run when ``p`` is concrete and are skipped
  under ``jit``. Gradients are those of the formula on the support of ``p``.

  Args:
    p: a probability table, one axis per variable.
    of: the variables whose entropy is taken; ``None``: every axis not in ``given``.
    given: the conditioning variables; ``None``: none.
    names: optional names of the axes of ``p``, so that ``of`` and ``given`` can name them.

  Returns:
    A scalar in the dtype of ``p``.

  Example:
    >>> import jax.numpy as jnp
    >>> p = jnp.array([[0.25, 0.25], [0.5, 0.0]])
    >>> print(f"{entropy(p):.4f} {entropy(p, 'x', names=('x', 'y')):.4f}")
    1.0397 0.6931
  """
  p = _check_table(p, "p")
  names = _check_names(names, p.ndim)
  c = _axes(given, p.ndim, names, "given")
  a = (tuple(i for i in range(p.ndim) if i not in c) if of is None
       else _axes(of, p.ndim, names, "of"))
  _disjoint(of=a, given=c)
  p_ac = _keep(p, tuple(sorted(a + c)))
  mask = p_ac > 0
  log_cond = _log_where(mask, p_ac) - _log_where(mask, _keep(p_ac, c))
  return -jnp.sum(jnp.where(mask, p_ac * log_cond, 0.0))


def mutual_information(p: ArrayLike, a: AxisSpec, b: AxisSpec, given: AxisSpec = None, *,
                       names: Sequence[str] | None = None) -> jax.Array:
  """The (conditional) mutual information ``I(a; b | given)`` of a discrete joint, in nats.

  ``I(A;B|C) = sum_{a,b,c} p(a,b,c) log [p(a,b,c) p(c) / (p(a,c) p(b,c))]``, summed term by
  term over the support (not as a difference of entropies, which cancels catastrophically in
  float32 when the information is small and is multiplied by a large ``lambda``).

  Table checks run when ``p`` is concrete and are skipped under ``jit``.

  Args:
    p: a probability table, one axis per variable.
    a: the first group of variables.
    b: the second group (disjoint from ``a``).
    given: the conditioning variables (disjoint from both); ``None``: none.
    names: optional names of the axes of ``p``.

  Returns:
    A scalar in the dtype of ``p`` (non-negative up to rounding).

  Example:
    >>> import jax.numpy as jnp
    >>> p = jnp.array([[0.5, 0.0], [0.0, 0.5]])    # y = x
    >>> print(f"{mutual_information(p, 'x', 'y', names=('x', 'y')):.4f}")
    0.6931
  """
  p = _check_table(p, "p")
  names = _check_names(names, p.ndim)
  ia = _axes(a, p.ndim, names, "a")
  ib = _axes(b, p.ndim, names, "b")
  ic = _axes(given, p.ndim, names, "given")
  if not ia or not ib:
    raise ValueError(f"a and b must each name at least one axis; got a={a!r}, b={b!r}")
  _disjoint(a=ia, b=ib, given=ic)
  p_abc = _keep(p, tuple(sorted(ia + ib + ic)))
  mask = p_abc > 0
  log_ratio = (_log_where(mask, p_abc) + _log_where(mask, _keep(p_abc, ic))
               - _log_where(mask, _keep(p_abc, tuple(sorted(ia + ic))))
               - _log_where(mask, _keep(p_abc, tuple(sorted(ib + ic)))))
  return jnp.sum(jnp.where(mask, p_abc * log_ratio, 0.0))


def cross_entropy(p: ArrayLike, q: ArrayLike, of: AxisSpec = None, given: AxisSpec = None, *,
                  names: Sequence[str] | None = None) -> jax.Array:
  """The (conditional) cross-entropy of ``q(of | given)`` under ``p``, in nats.

  ``CE = -sum_{a,c} p(a,c) log q(a|c)`` with ``q(a|c) = q(a,c) / q(c)``: the expected log loss
  of the predictor ``q(a|c)`` on data from ``p``. Both tables are marginalised to the axes of
  ``of`` and ``given`` first, so they need to agree in size only there (a training joint
  over two environments can predict on a test joint over one). It is ``+inf`` where ``p``
  puts mass on an event ``q`` calls impossible; with ``q = p`` it is ``H(of | given)``.

  Table checks run when ``p`` and ``q`` are concrete and are skipped under ``jit``.

  Args:
    p: the table the expectation is taken under.
    q: the table whose conditional is the predictor (the same axes as ``p``).
    of: the predicted variables; ``None``: every axis not in ``given``.
    given: the variables the predictor sees; ``None``: none.
    names: optional names of the axes of both tables.

  Returns:
    A scalar.

  Example:
    >>> import jax.numpy as jnp
    >>> p = jnp.array([[0.4, 0.1], [0.1, 0.4]])
    >>> q = jnp.full((2, 2), 0.25)
    >>> print(f"{cross_entropy(p, q, 'y', 'x', names=('x', 'y')):.4f}")
    0.6931
  """
  p = _check_table(p, "p")
  q = _check_table(q, "q")
  if p.ndim != q.ndim:
    raise ValueError(f"p and q must have the same axes; got shapes {p.shape} and {q.shape}")
  names = _check_names(names, p.ndim)
  c = _axes(given, p.ndim, names, "given")
  a = (tuple(i for i in range(p.ndim) if i not in c) if of is None
       else _axes(of, p.ndim, names, "of"))
  _disjoint(of=a, given=c)
  ac = tuple(sorted(a + c))
  for i in ac:
    if p.shape[i] != q.shape[i]:
      raise ValueError(f"p and q must agree in size on the axes of of and given; axis {i} has "
                       f"{p.shape[i]} in p and {q.shape[i]} in q")
  p_ac, q_ac = _keep(p, ac), _keep(q, ac)
  mask = p_ac > 0
  log_cond = _log_where(mask, q_ac) - _log_where(mask, _keep(q_ac, c))
  return -jnp.sum(jnp.where(mask, p_ac * log_cond, 0.0))


# ----------------------------------------------------------------------------- the CMNIST family

CMNIST_AXES = ("e", "y", "c", "d")
"""Axis names of :func:`cmnist_distribution`: environment, label, colour, digit."""

CMNIST_VARIANTS = ("CMNIST", "d-CMNIST", "y-CMNIST")
"""The three processes of the paper (Section 5.1, Figure 3)."""

# p(c = y | y, e) for the environments e = 0, 1 (training) and 2 (test, colours flipped).
_COLOUR_MATCHES_LABEL = (0.9, 0.8, 0.1)


def cmnist_distribution(variant: str = "CMNIST", dtype: jnp.dtype = jnp.float32) -> jax.Array:
  """The joint ``p(e, y, c, d)`` of one of the paper's coloured-MNIST processes.

  ``e`` in {0, 1, 2} is the environment (0 and 1 train, 2 is the test environment), ``y`` the
  binary label, ``c`` the colour, ``d`` in {0..9} the digit; the observation is ``x = (c, d)``.
  Shared by all three: ``p(c = y | y, e) = 0.9, 0.8, 0.1`` for ``e = 0, 1, 2``, and the label is
  the digit's class (``d < 5`` means ``y = 0``) with 25% label noise.

  * ``"CMNIST"``: ``p(e) = 1/3`` each, ``p(d) = 1/10``, ``p(y = 0 | d < 5) = p(y = 1 | d >= 5) =
    3/4``. Only the colour mechanism changes with the environment.
  * ``"d-CMNIST"``: ``p(e) = (1/2, 1/6, 1/3)`` and the digits shift,
    ``p(d < 5 | e) = 0.6, 0.2, 0.5`` (uniform within each half); ``p(y | d)`` as in CMNIST.
  * ``"y-CMNIST"``: ``p(e) = (1/2, 1/6, 1/3)`` and the labels shift, ``p(y = 0 | e) = 0.6, 0.2,
    0.5``, with ``p(d < 5 | y = 0) = p(d >= 5 | y = 1) = 3/4`` (uniform within each half).

  Args:
    variant: one of :data:`CMNIST_VARIANTS`.
    dtype: floating dtype of the table.

  Returns:
    An array of shape ``(3, 2, 2, 10)`` with axes :data:`CMNIST_AXES` that sums to 1.

  Example:
    >>> p = cmnist_distribution("d-CMNIST")
    >>> p.shape, np.asarray(marginal(p, "e", names=CMNIST_AXES), float).round(4).tolist()
    ((3, 2, 2, 10), [0.5, 0.1667, 0.3333])
  """
  if variant not in CMNIST_VARIANTS:
    raise ValueError(f"variant must be one of {CMNIST_VARIANTS}, got {variant!r}")
  low = np.arange(10) < 5                                   # the digit's class, d < 5
  d_given_class = np.where(low, 1.0, 0.0) / 5, np.where(low, 0.0, 1.0) / 5
  if variant == "y-CMNIST":
    p_e = np.array([1 / 2, 1 / 6, 1 / 3])
    p_y_e = np.array([[0.6, 0.4], [0.2, 0.8], [0.5, 0.5]])            # [e, y]
    p_d_y = np.stack([0.75 * d_given_class[0] + 0.25 * d_given_class[1],
                      0.25 * d_given_class[0] + 0.75 * d_given_class[1]])  # [y, d]
    p_eyd = p_e[:, None, None] * p_y_e[:, :, None] * p_d_y[None]
  else:
    if variant == "CMNIST":
      p_e = np.full(3, 1 / 3)
      p_d_e = np.full((3, 10), 0.1)
    else:
      p_e = np.array([1 / 2, 1 / 6, 1 / 3])
      p_low = np.array([0.6, 0.2, 0.5])
      p_d_e = (p_low[:, None] * d_given_class[0][None]
               + (1 - p_low)[:, None] * d_given_class[1][None])       # [e, d]
    p_y_d = np.stack([np.where(low, 0.75, 0.25), np.where(low, 0.25, 0.75)])  # [y, d]
    p_eyd = p_e[:, None, None] * p_d_e[:, None, :] * p_y_d[None]
  match = np.array(_COLOUR_MATCHES_LABEL)
  p_c_ye = np.empty((3, 2, 2))                                          # [e, y, c]
  p_c_ye[:, 0, 0] = p_c_ye[:, 1, 1] = match
  p_c_ye[:, 0, 1] = p_c_ye[:, 1, 0] = 1 - match
  joint = p_eyd[:, :, None, :] * p_c_ye[:, :, :, None]
  return jnp.asarray(joint / joint.sum(), dtype=dtype)


def split_environments(p: ArrayLike, test_environments: Sequence[int] = (2,)
                       ) -> tuple[jax.Array, jax.Array]:
  """Splits a joint over environments (axis 0) into the training and the test joint.

  Each part is conditioned on its environments: ``p(e, ... | e in E_train)`` and
  ``p(e, ... | e in E_test)``. For the CMNIST family the training environments are 0 and 1 and
  the test environment is 2 (the reference's ``t = 1`` and ``t = 0``).

  Args:
    p: a probability table whose first axis is the environment.
    test_environments: the environments held out for testing; the rest train.

  Returns:
    ``(train, test)``: the two conditioned tables, each keeping its own environments on axis 0.

  Example:
    >>> train, test = split_environments(cmnist_distribution())
    >>> train.shape, test.shape, round(float(train.sum()), 4)
    ((2, 2, 2, 10), (1, 2, 2, 10), 1.0)
  """
  p = _check_table(p, "p")
  num_env = p.shape[0]
  test = sorted({int(t) for t in test_environments})
  if not test or any(not 0 <= t < num_env for t in test) or len(test) == num_env:
    raise ValueError(f"test_environments must be a non-empty proper subset of 0..{num_env - 1}; "
                     f"got {tuple(test_environments)!r}")
  train = [e for e in range(num_env) if e not in test]
  p_train, p_test = p[np.array(train)], p[np.array(test)]
  return p_train / jnp.sum(p_train), p_test / jnp.sum(p_test)


def feature_cross_entropies(train: ArrayLike, test: ArrayLike, features: AxisSpec, *,
                            label: AxisSpec = "y", names: Sequence[str] | None = CMNIST_AXES
                            ) -> tuple[jax.Array, jax.Array]:
  """Train and test cross-entropy of the Bayes predictor of ``y`` from some features.

  The predictor is the training conditional ``q(y | f) = p_train(y | f)``; its training
  cross-entropy is ``H_train(y | f)`` and its test cross-entropy ``-E_test log q(y | f)``. The
  paper's reference predictors are ``f = (c, d)`` (the picture), ``c`` (the colour), ``d``
  (the digit) and nothing (the prior, ``features=()``).

  Args:
    train: the training joint.
    test: the test joint (the same axes; it may have other environments).
    features: the variables the predictor sees (names or indices; ``()`` for none).
    label: the predicted variable.
    names: the names of the axes (default :data:`CMNIST_AXES`).

  Returns:
    ``(train_ce, test_ce)`` in nats.

  Example:
    >>> train, test = split_environments(cmnist_distribution("CMNIST"))
    >>> [round(float(v), 4) for v in feature_cross_entropies(train, test, "d")]
    [0.5623, 0.5623]
  """
  given = None if features == () else features
  return (cross_entropy(train, train, label, given, names=names),
          cross_entropy(test, train, label, given, names=names))


# ----------------------------------------------------------------------------- criteria

ENCODED_AXES = ("e", "y", "x", "z")
"""Axis names of :func:`encoded_joint`: environment, label, observation, code."""

CRITERIA = ("information_bottleneck", "independence", "sufficiency", "separation")
"""The regularisers of the paper's criteria: ``I(x;z)``, ``I(e;z)``, ``I(e;y|z)``, ``I(e;z|y)``."""

_REGULARIZERS = {
    "information_bottleneck": ("x", "z", None),
    "independence": ("e", "z", None),
    "sufficiency": ("e", "y", "z"),
    "separation": ("e", "z", "y"),
}


def _check_criterion(criterion: str) -> None:
  if criterion not in CRITERIA:
    raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")


def _observations(p: jax.Array) -> jax.Array:
  """``p(e, y, x...)`` with the observation axes (all after the second) flattened into one."""
  if p.ndim < 3:
    raise ValueError(f"the joint must have axes (e, y, x...), at least 3; got shape {p.shape}")
  return p.reshape(p.shape[:2] + (-1,))


def encoded_joint(p: ArrayLike, logits: ArrayLike) -> jax.Array:
  """The joint ``p(e, y, x, z) = p(e, y, x) q(z | x)`` of data and a stochastic encoder.

  The encoder is ``q(z | x) = softmax_z(logits[z, x])``, a free conditional table over a
  finite code space (the reference's parameterisation). Observation axes after ``(e, y)`` are
  flattened in C order, so ``x = c * 10 + d`` for :data:`CMNIST_AXES`.

  Args:
    p: a table ``p(e, y, x...)``.
    logits: an array ``(num_codes, num_observations)``.

  Returns:
    A table of shape ``(E, Y, X, num_codes)`` with axes :data:`ENCODED_AXES`.

  Example:
    >>> import jax.numpy as jnp
    >>> q = encoded_joint(cmnist_distribution(), jnp.zeros((4, 20)))
    >>> q.shape, round(float(q.sum()), 4)
    ((3, 2, 20, 4), 1.0)
  """
  p = _observations(_check_table(p, "p"))
  logits = jnp.asarray(logits)
  if logits.ndim != 2 or logits.shape[1] != p.shape[2]:
    raise ValueError(f"logits must have shape (num_codes, {p.shape[2]}) for this joint; got "
                     f"{logits.shape}")
  q_z_x = jax.nn.softmax(logits.astype(p.dtype), axis=0).T                # [x, z]
  return p[..., None] * q_z_x[None, None]


def criterion_regularizer(p_eyxz: ArrayLike, criterion: str) -> jax.Array:
  """The regulariser ``R`` of a criterion on a joint ``p(e, y, x, z)``.

  ``information_bottleneck``: ``I(x;z)``; ``independence``: ``I(e;z)``; ``sufficiency``:
  ``I(e;y|z)``; ``separation``: ``I(e;z|y)`` (the paper's Section 3).

  Args:
    p_eyxz: a table with axes :data:`ENCODED_AXES` (from :func:`encoded_joint`).
    criterion: one of :data:`CRITERIA`.

  Returns:
    A scalar, in nats.

  Example:
    >>> import jax.numpy as jnp
    >>> q = encoded_joint(split_environments(cmnist_distribution())[0], jnp.zeros((4, 20)))
    >>> print(f"{criterion_regularizer(q, 'independence'):.4f}")    # z ignores x
    0.0000
  """
  _check_criterion(criterion)
  a, b, c = _REGULARIZERS[criterion]
  return mutual_information(p_eyxz, a, b, c, names=ENCODED_AXES)


def criterion_loss(logits: ArrayLike, p: ArrayLike, criterion: str,
                   lam: ArrayLike) -> jax.Array:
  """The criterion ``-I(y;z) + lambda R`` of the encoder ``softmax_z(logits)`` on ``p(e, y, x)``.

  Args:
    logits: encoder logits ``(num_codes, num_observations)``.
    p: the training joint ``p(e, y, x...)``.
    criterion: one of :data:`CRITERIA`.
    lam: the regularisation strength ``lambda >= 0`` (checked when concrete).

  Returns:
    A scalar, in nats.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> train, _ = split_environments(cmnist_distribution())
    >>> g = jax.grad(criterion_loss)(jnp.zeros((4, 20)), train, "separation", 10.0)
    >>> g.shape
    (4, 20)
  """
  _check_criterion(criterion)
  if core.is_concrete(lam) and not float(lam) >= 0:
    raise ValueError(f"lam must be a non-negative number, got {lam!r}")
  joint = encoded_joint(p, logits)
  return (-mutual_information(joint, "y", "z", names=ENCODED_AXES)
          + lam * criterion_regularizer(joint, criterion))


def predictor_cross_entropy(logits: ArrayLike, train: ArrayLike, test: ArrayLike
                            ) -> tuple[jax.Array, jax.Array]:
  """Train and test cross-entropy of the predictor ``q(y|z)`` an encoder induces on ``train``.

  ``q(y | z) = sum_{e,x} p_train(e, y, x) q(z|x) / q_train(z)``; the train value is
  ``H_train(y|z)`` and the test value ``-E_{p_test(y,x) q(z|x)} log q(y|z)``.

  Args:
    logits: encoder logits ``(num_codes, num_observations)``.
    train: the training joint ``p(e, y, x...)``.
    test: the test joint ``p(e, y, x...)`` (any number of environments).

  Returns:
    ``(train_ce, test_ce)`` in nats.

  Example:
    >>> import jax.numpy as jnp
    >>> train, test = split_environments(cmnist_distribution())
    >>> [round(float(v), 4) for v in predictor_cross_entropy(jnp.zeros((4, 20)), train, test)]
    [0.6931, 0.6931]
  """
  q_train, q_test = encoded_joint(train, logits), encoded_joint(test, logits)
  return (cross_entropy(q_train, q_train, "y", "z", names=ENCODED_AXES),
          cross_entropy(q_test, q_train, "y", "z", names=ENCODED_AXES))


# ----------------------------------------------------------------------------- optimisation


class DiscreteEncoderFit(NamedTuple):
  """The result of :func:`fit_discrete_encoder`.

  Attributes:
    logits: the encoder's logits ``(num_codes, num_observations)``.
    loss: the criterion ``-I(y;z) + lambda R`` at the end.
    regularizer: ``R`` at the end.
    train_cross_entropy: ``H_train(y|z)`` of the induced predictor.
    test_cross_entropy: its cross-entropy on the test joint.
    iterations: Adam steps taken.
    converged: whether the stopping rule fired before ``max_iterations``.
  """

  logits: jax.Array
  loss: jax.Array
  regularizer: jax.Array
  train_cross_entropy: jax.Array
  test_cross_entropy: jax.Array
  iterations: jax.Array
  converged: jax.Array


def fit_discrete_encoder(key: jax.Array, train: ArrayLike, test: ArrayLike, criterion: str,
                         lam: ArrayLike, *, num_codes: int = 64, learning_rate: float = 1e-3,
                         initial_iterations: int = 5000, check_every: int = 1000,
                         tolerance: float = 1e-4, max_iterations: int = 100_000
                         ) -> DiscreteEncoderFit:
  """Minimises ``-I(y;z) + lambda R`` exactly over a stochastic encoder with ``num_codes`` codes.

  The reference's procedure (``mfederici/dsit``, ``src/discrete``): logits drawn from a
  standard normal, Adam at ``learning_rate`` on the exact criterion of the training joint;
  after ``initial_iterations`` steps and then every ``check_every`` steps the train and test
  cross-entropies of the induced predictor are computed, and the run stops when they moved
  (Euclidean distance of the pair) by at most ``tolerance`` since the last check, or after
  ``max_iterations``. The whole solve is one ``lax.while_loop``; ``vmap`` over ``key`` (restarts)
  and ``lam`` runs many in one compiled program (finished ones stay put while others run).

  The criterion is non-convex in the encoder: different keys can end in different local
  optima, which is what restarts are for.

  Argument checks on ``lam`` and the tables run when they are concrete (skipped under
  ``vmap``/``jit`` tracing); the integer options are always checked.

  Args:
    key: a ``jax.random`` key for the initial logits.
    train: the training joint ``p(e, y, x...)`` (the regulariser sees its environments).
    test: the test joint ``p(e, y, x...)`` (for the reported cross-entropy and the stopping
      rule only).
    criterion: one of :data:`CRITERIA`.
    lam: the strength ``lambda >= 0``.
    num_codes: the size of the code space (the reference uses 64).
    learning_rate: Adam's step size.
    initial_iterations: steps before the first check.
    check_every: steps between checks.
    tolerance: the stopping threshold on the change of (train CE, test CE).
    max_iterations: the cap on the number of steps.

  Returns:
    A :class:`DiscreteEncoderFit`.

  Example:
    >>> import jax
    >>> train, test = split_environments(cmnist_distribution())
    >>> fit = fit_discrete_encoder(jax.random.key(0), train, test, "independence", 100.0,
    ...                            num_codes=8, initial_iterations=2000, check_every=500)
    >>> print(f"{fit.train_cross_entropy:.2f} {fit.test_cross_entropy:.2f}")  # the colour
    0.42 1.72
  """
  _check_criterion(criterion)
  for arg, value in (("num_codes", num_codes), ("initial_iterations", initial_iterations),
                     ("check_every", check_every), ("max_iterations", max_iterations)):
    if not isinstance(value, (int, np.integer)) or value < 1:
      raise ValueError(f"{arg} must be a positive integer, got {value!r}")
  if max_iterations < initial_iterations:
    raise ValueError(f"max_iterations must be >= initial_iterations ({initial_iterations}), got "
                     f"{max_iterations!r}")
  for arg, value in (("learning_rate", learning_rate), ("tolerance", tolerance)):
    if not float(value) > 0:
      raise ValueError(f"{arg} must be a positive number, got {value!r}")
  if core.is_concrete(lam) and not float(lam) >= 0:
    raise ValueError(f"lam must be a non-negative number, got {lam!r}")
  train = _observations(_check_table(train, "train"))
  test = _observations(_check_table(test, "test"))
  if train.shape[1:] != test.shape[1:]:
    raise ValueError(f"train and test must agree on the (y, x) axes; got shapes {train.shape} "
                     f"and {test.shape}")
  return _fit(key, train, test, jnp.asarray(lam, train.dtype), criterion, int(num_codes),
              float(learning_rate), int(initial_iterations), int(check_every), float(tolerance),
              int(max_iterations))


class _FitState(NamedTuple):
  logits: jax.Array
  opt_state: optax.OptState
  iterations: jax.Array
  train_ce: jax.Array
  test_ce: jax.Array
  converged: jax.Array


@functools.partial(jax.jit, static_argnames=("criterion", "num_codes", "learning_rate",
                                             "initial_iterations", "check_every", "tolerance",
                                             "max_iterations"))
def _fit(key, train, test, lam, criterion, num_codes, learning_rate, initial_iterations,
         check_every, tolerance, max_iterations):
  optimizer = optax.adam(learning_rate)
  loss_and_grad = jax.value_and_grad(criterion_loss)

  def steps(n, logits, opt_state):
    def body(_, carry):
      logits, opt_state = carry
      _, grads = loss_and_grad(logits, train, criterion, lam)
      updates, opt_state = optimizer.update(grads, opt_state, logits)
      return optax.apply_updates(logits, updates), opt_state
    return lax.fori_loop(0, n, body, (logits, opt_state))

  # One compiled block of check_every steps serves both phases (half the compile time of a
  # separate initial loop): the first initial_iterations steps are blocks whose checks do not
  # stop, preceded by the remainder when initial_iterations is not a multiple of check_every.
  logits = core.flat_normal(key, (num_codes, train.shape[2]), train.dtype)
  opt_state = optimizer.init(logits)
  head = initial_iterations % check_every
  if head:
    logits, opt_state = steps(head, logits, opt_state)
  nan = jnp.asarray(jnp.nan, train.dtype)
  state = _FitState(logits, opt_state, jnp.asarray(head), nan, nan, jnp.asarray(False))

  def cond(s):
    return ~s.converged & (s.iterations + check_every <= max_iterations)

  def body(s):
    logits, opt_state = steps(check_every, s.logits, s.opt_state)
    iterations = s.iterations + check_every
    train_ce, test_ce = predictor_cross_entropy(logits, train, test)
    moved = jnp.sqrt((train_ce - s.train_ce) ** 2 + (test_ce - s.test_ce) ** 2)
    return _FitState(logits, opt_state, iterations, train_ce, test_ce,
                     (iterations > initial_iterations) & (moved <= tolerance))

  state = lax.while_loop(cond, body, state)
  joint = encoded_joint(train, state.logits)
  reg = criterion_regularizer(joint, criterion)
  loss = -mutual_information(joint, "y", "z", names=ENCODED_AXES) + lam * reg
  return DiscreteEncoderFit(state.logits, loss, reg, state.train_ce, state.test_ce,
                            state.iterations, state.converged)


# ----------------------------------------------------------------------------- neural penalties
#
# The neural stand-ins of the criteria (the paper's Section 4) as pure functions on a batch with
# environment labels: per-environment risks, the IRMv1 penalty (sufficiency), the VREx penalty
# (sufficiency) and the adversarial cross-entropy of DANN / CDANN (independence / separation).


def _environment_masks(environments: ArrayLike, num_environments: int) -> jax.Array:
  if not isinstance(num_environments, (int, np.integer)) or num_environments < 1:
    raise ValueError(f"num_environments must be a positive integer, got {num_environments!r}")
  environments = jnp.asarray(environments)
  if core.is_concrete(environments):
    bad = np.asarray((environments < 0) | (environments >= num_environments))
    if bad.any():
      raise ValueError(f"environments must lie in 0..{num_environments - 1}; got "
                       f"{int(np.asarray(environments)[bad][0])}")
  return jax.nn.one_hot(environments, num_environments)


def environment_risks(logits: ArrayLike, labels: ArrayLike, environments: ArrayLike,
                      num_environments: int, scale: ArrayLike = 1.0) -> jax.Array:
  """The mean cross-entropy of ``softmax(scale * logits)`` in each environment of a batch.

  ``R_e(w) = sum_i [e_i = e] CE(w f_i, y_i) / sum_i [e_i = e]``; an environment absent from
  the batch gets risk 0.

  Args:
    logits: predictor outputs ``(batch, num_classes)``.
    labels: integer labels ``(batch,)``.
    environments: integer environment labels ``(batch,)`` in ``0..num_environments - 1``
      (checked when concrete).
    num_environments: the number of environments.
    scale: the IRMv1 dummy classifier ``w`` (a scalar) multiplying the logits.

  Returns:
    ``(num_environments,)`` risks in nats.

  Example:
    >>> import jax.numpy as jnp
    >>> r = environment_risks(jnp.zeros((4, 2)), jnp.array([0, 1, 0, 1]),
    ...                       jnp.array([0, 0, 1, 1]), 2)
    >>> np.asarray(r, float).round(4).tolist()
    [0.6931, 0.6931]
  """
  masks = _environment_masks(environments, num_environments)
  return _masked_risks(logits, labels, masks, scale)


def irm_penalty(logits: ArrayLike, labels: ArrayLike, environments: ArrayLike,
                num_environments: int, *, unbiased: bool = False) -> jax.Array:
  """The IRMv1 penalty: ``sum_e (d R_e(w) / d w at w = 1)^2``.

  Arjovsky et al.'s relaxation of invariance (the paper's sufficiency family): the squared
  gradient of each environment's risk with respect to a dummy scalar classifier ``w`` that
  multiplies the logits, at ``w = 1``. Zero iff no environment's predictor would improve by
  rescaling, which a sufficient representation's Bayes predictor satisfies in every environment.

  The plug-in square of a minibatch gradient is biased upwards by the gradient's variance.
  ``unbiased=True`` gives the estimator of Arjovsky et al.'s code and of dsit
  (``src/models/IRM.py``): each environment's examples, in batch order, are split into the
  even-ranked and the odd-ranked half, and the penalty is ``sum_e g_e^even g_e^odd``, the
  product of the two halves' dummy-scale gradients. The halves are independent given the
  model, so its expectation is ``sum_e (E g_e)^2``; it may be negative on a batch. An
  environment with fewer than two examples in the batch contributes 0.

  Args:
    logits: predictor outputs ``(batch, num_classes)``.
    labels: integer labels ``(batch,)``.
    environments: integer environment labels ``(batch,)``.
    num_environments: the number of environments.
    unbiased: the even/odd half-batch product instead of the square.

  Returns:
    A scalar (non-negative unless ``unbiased``).

  Example:
    >>> import jax.numpy as jnp
    >>> logits = jnp.array([[0.0, 1.0], [1.0, 0.0], [0.5, 0.0], [0.0, 0.5]])
    >>> penalty = irm_penalty(logits, jnp.array([1, 0, 1, 0]), jnp.array([0, 0, 1, 1]), 2)
    >>> print(f"{penalty:.4f}")
    0.1692
  """
  if not unbiased:
    grads = jax.jacfwd(lambda w: environment_risks(logits, labels, environments,
                                                   num_environments, w))(1.0)
    return jnp.sum(grads ** 2)
  masks = _environment_masks(environments, num_environments)
  rank = jnp.cumsum(masks, axis=0) - 1.0          # each example's rank within its environment
  even = masks * (jnp.mod(rank, 2.0) == 0.0)
  odd = masks - even

  def half_grads(half):
    return jax.jacfwd(lambda w: _masked_risks(logits, labels, half, w))(1.0)

  return jnp.sum(half_grads(even) * half_grads(odd))


def _masked_risks(logits: ArrayLike, labels: ArrayLike, masks: jax.Array,
                  scale: ArrayLike) -> jax.Array:
  """Mean cross-entropy of ``softmax(scale * logits)`` over each column of 0/1 ``masks``."""
  logits = jnp.asarray(logits)
  losses = -jnp.take_along_axis(jax.nn.log_softmax(scale * logits, axis=-1),
                                jnp.asarray(labels)[:, None], axis=-1)[:, 0]
  counts = jnp.sum(masks, axis=0)
  return jnp.sum(masks * losses[:, None], axis=0) / jnp.maximum(counts, 1.0)


def vrex_penalty(logits: ArrayLike, labels: ArrayLike, environments: ArrayLike,
                 num_environments: int, *, batch_std: bool = False) -> jax.Array:
  """The V-REx penalty: the variance of the per-environment risks.

  ``Var_e R_e = mean_e (R_e - mean_e R_e)^2`` over the environments present in the batch
  (Krueger et al.; the paper's sufficiency family). ``batch_std=True`` gives dsit's default
  scaling (``src/models/VREx.py``, ``use_std`` and ``sum_batch_penalty``):
  ``sqrt(batch size * Var_e R_e)``, whose gradient is taken as 0 where the variance is 0.

  Args:
    logits: predictor outputs ``(batch, num_classes)``.
    labels: integer labels ``(batch,)``.
    environments: integer environment labels ``(batch,)``.
    num_environments: the number of environments.
    batch_std: return ``sqrt(batch * variance)`` instead of the variance.

  Returns:
    A non-negative scalar.

  Example:
    >>> import jax.numpy as jnp
    >>> logits = jnp.array([[0.0, 2.0], [0.0, 2.0]])
    >>> print(f"{vrex_penalty(logits, jnp.array([1, 0]), jnp.array([0, 1]), 2):.4f}")
    1.0000
  """
  masks = _environment_masks(environments, num_environments)
  risks = _masked_risks(logits, labels, masks, 1.0)
  present = (jnp.sum(masks, axis=0) > 0).astype(risks.dtype)
  num_present = jnp.maximum(jnp.sum(present), 1.0)
  mean = jnp.sum(present * risks) / num_present
  variance = jnp.sum(present * (risks - mean) ** 2) / num_present
  if not batch_std:
    return variance
  scaled = masks.shape[0] * variance
  positive = scaled > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, scaled, 1.0)), 0.0)


def adversarial_cross_entropy(discriminator_logits: ArrayLike, environments: ArrayLike
                              ) -> jax.Array:
  """The discriminator's cross-entropy ``-mean_i log q(e_i | z_i)`` of DANN / CDANN.

  The discriminator predicts the environment from ``z`` (DANN, independence) or from
  ``(z, y)`` (CDANN, separation). Its minimum over discriminators is ``H(e | z)`` (or
  ``H(e | z, y)``), so ``H(e) - min CE = I(e; z)`` (or ``I(e; z | y)`` with the conditional
  prior ``H(e | y)``): the encoder maximises the discriminator's cross-entropy to drive the
  regulariser of :data:`CRITERIA` to zero.

  Args:
    discriminator_logits: ``(batch, num_environments)``.
    environments: integer environment labels ``(batch,)``.

  Returns:
    A scalar in nats.

  Example:
    >>> import jax.numpy as jnp
    >>> print(f"{adversarial_cross_entropy(jnp.zeros((2, 2)), jnp.array([0, 1])):.4f}")
    0.6931
  """
  log_q = jax.nn.log_softmax(jnp.asarray(discriminator_logits), axis=-1)
  return -jnp.mean(jnp.take_along_axis(log_q, jnp.asarray(environments)[:, None], axis=-1))
