"""The reference's certifier re-implemented in NumPy: the speed baseline of ``nonuniform``.

Liu, Tomioka, Cevher, "On Certifying Non-uniform Bound against Adversarial Attacks", ICML 2019
(arXiv 1903.06603); reference code liuchen11/CertifyNonuniformBounds (``run/certify.py``,
``util/models.py``, ``util/modules.py``, ``util/utility.py``). PyTorch does not install here,
so this module does what the reference's PyTorch code does, written the way one would without
an autodiff framework: the bound is propagated **forward** (the reference's scheme) and its
gradient with respect to the half-widths is a hand-written reverse pass through the stored
forward quantities. The schedule and defaults are those of
:data:`tomioka_jax.robust.REFERENCE_OPTIONS`, so on the same network, point and options the
result equals :func:`tomioka_jax.robust.certify_nonuniform` (``method="logits"``) up to
floating-point rounding (tested to 1e-5 in float64 in ``tests/robust/test_nonuniform_numpy.py``).

**Forward bound (the reference's ``MLP.bound``), one point or a batch.** A ReLU MLP ``z_k =
W_k^T a_{k-1} + b_k``, ``a_k = relu(z_k)``, with the box ``|x - x_0| <= eps``. The reference
keeps, after each dense layer ``k``, one coefficient matrix per *source* of the linear bound:
``P_k[0]`` (n_k x d) maps the input, and ``P_k[i]`` (n_k x n_{i-1}, ``1 <= i <= k``) maps the
relaxation intercepts of hidden layer ``i - 1``, whose lower / upper intercepts are

    m^L_i = D_{i-1} b_{i-1},    m^U_i = D_{i-1} b_{i-1} + m^relu_{i-1}

(the layer's bias pushed through the slope ``D`` and merged with the ReLU line's intercept).
The matrices are carried forward, ``P_k[i] = W_k^T diag(D_{k-1}) P_{k-1}[i]`` and ``P_k[k] =
W_k^T``, and the pre-activation bounds of layer ``k`` are (``|.|_1`` the dual of l_inf)

    l_k = max( P_k[0] x_0 - |P_k[0]| eps + sum_i [ (P_k[i])_+ m^L_i + (P_k[i])_- m^U_i ] + b_k,
               (W_k)_+^T relu(l_{k-1}) + (W_k)_-^T relu(u_{k-1}) + b_k ),

(``u_k`` symmetrically), the second term being the interval step from the previous layer's
bounds. ReLU's lines on ``[l, u]`` widened by 1e-6: ``D = (relu(u) - relu(l)) / (u - l)``,
``m^relu = relu(l) - l D`` above, 0 below. Like the reference, the post-activation bounds are
``max(linear bound of a_k, relu(l_k))`` (and ``min`` above); the linear one is computed (it is
part of the reference's cost) but never wins (``D <= 1`` and ``D l <= relu(l)``), so the
reverse pass follows ``relu(l_k), relu(u_k)``. The certified margin is the reference's
separate-logit bound ``L_y - U_j``.

**Reverse pass.** The loss of one point, ``-sum_i log eps_i + sum_{j != y} [lambda_j e_j + beta /
2 e_j^2]`` with ``e_j = min(L_y - U_j - delta, -lambda_j / beta)``, is differentiated by hand:
adjoints of ``(l_k, u_k)`` split over the ``max`` / ``min`` (half each on ties, as PyTorch and
JAX do), the adjoints of ``P_k[i]`` pulled back through ``P_k[i] = W_k^T diag(D_{k-1})
P_{k-1}[i]`` to ``P_{k-1}[i]`` and ``D_{k-1}``, those of ``D`` and ``m^relu`` through the ReLU
line to ``(l, u)``, and ``eps`` collects ``|P_k[0]|^T (g_u - g_l)`` from every layer. The
descent variable is ``v`` with ``eps = v * v`` (the reference's), so ``dL/dv = 2 v dL/deps``.

**Loop** (the reference's ``run/certify.py`` as :func:`tomioka_jax.robust.certify_nonuniform`
runs it): SGD steps of ``lr / batch_size`` per point, ``lambda <- lambda + beta e`` every
``dual_every`` steps, ``beta <- beta_growth beta`` every ``beta_every`` steps after
``beta_start``, from ``eps = eps_init``; then ``eps <- shrink eps`` until certified (at most
``max_shrink`` times), restarting from ``eps_init`` if the loop diverged. Only ReLU hidden
layers, an identity output layer and the ``"logits"`` bound are supported (the reference's
default network and bound; the benchmark's).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

_WIDEN = 1e-6  # the reference's widening of the relaxation interval


class Layer(NamedTuple):
  """A dense layer with the constant matrices the bound reuses (``W^T`` contiguous, its
  positive and negative parts and absolute value), computed once per network."""

  w: np.ndarray
  b: np.ndarray
  act: str
  wt: np.ndarray
  wt_pos: np.ndarray
  wt_neg: np.ndarray
  wt_abs: np.ndarray


class Tape(NamedTuple):
  """What the reverse pass needs from the forward bound (leading axis: the points).

  Attributes:
    p0: per dense layer k >= 1, ``P_k[0]`` (n, n_k, d) (``P_0[0] = W_0^T`` is constant).
    pm: per dense layer k, ``[P_k[1], ..., P_k[k]]`` (n, n_k, n_{i-1}).
    m1, m2: per hidden layer i, the merged intercepts ``m^L_{i+1}``, ``m^U_{i+1}`` (n, n_i).
    pre: per dense layer, ``(l_k, u_k)`` (n, n_k) after the intersection.
    quad_wins: per dense layer k >= 1, ``(low, up)`` weights of the linear bound in the
      intersection (1 where it is the tighter, 1/2 on ties, 0 where the interval step is).
    relu: per hidden layer, ``(D, m^relu)`` (n, n_k).
  """

  p0: list
  pm: list
  m1: list
  m2: list
  pre: list
  quad_wins: list
  relu: list


def as_numpy_layers(layers: Any, dtype: Any = None) -> list[Layer]:
  """The network as :class:`Layer` s from ``(W, b, act)`` tuples or ``robust.DenseLayer`` s.

  Raises:
    ValueError: an activation other than relu in a hidden layer or identity at the output
      (this baseline implements the reference's default network only).
  """
  out = []
  for k, layer in enumerate(layers):
    if isinstance(layer, Layer):
      w, b, act = layer.w, layer.b, layer.act
    elif hasattr(layer, "weight"):
      w, b, act = layer.weight, layer.bias, layer.activation
    else:
      w, b, act = layer
    want = "identity" if k == len(layers) - 1 else "relu"
    if act != want:
      raise ValueError(f"layers[{k}] has activation={act!r}; this baseline supports relu hidden "
                       f"layers and an identity output layer only")
    w = np.asarray(w, dtype)
    b = np.zeros(w.shape[1], w.dtype) if b is None else np.asarray(b, w.dtype)
    wt = np.ascontiguousarray(w.T)
    out.append(Layer(w, b, act, wt, np.maximum(wt, 0.0), np.minimum(wt, 0.0), np.abs(wt)))
  return out


def _relu_lines(l, u):
  lp, up = l - _WIDEN, u + _WIDEN
  d = (np.maximum(up, 0.0) - np.maximum(lp, 0.0)) / (up - lp)
  return d, np.maximum(lp, 0.0) - lp * d


def _relu_lines_vjp(l, u, d, g_d, g_m):
  """Adjoints of ``(l, u)`` from those of the ReLU line's slope ``D`` and intercept."""
  lp, up = l - _WIDEN, u + _WIDEN
  w = up - lp
  s_l, s_u = (lp > 0).astype(l.dtype), (up > 0).astype(l.dtype)
  dd_dl, dd_du = (d - s_l) / w, (s_u - d) / w
  dm_dl, dm_du = s_l - d - lp * dd_dl, -lp * dd_du
  return g_d * dd_dl + g_m * dm_dl, g_d * dd_du + g_m * dm_du


def _mv(a, v):
  """Matrix-vector products per point, ``a[i] @ v[i]``: (n, k, j), (n, j) -> (n, k)."""
  return np.stack([a[i] @ v[i] for i in range(v.shape[0])])


def _vm(g, a):
  """Vector-matrix products per point, ``g[i] @ a[i]``: (n, k), (n, k, j) -> (n, j)."""
  return np.stack([g[i] @ a[i] for i in range(g.shape[0])])


def _quad(p0, pm, m1s, m2s, x, eps, bias):
  """The reference's ``quad_bound_calc``: the linear bounds from the coefficient matrices."""
  norm = _mv(np.abs(p0), eps)
  centre = _mv(p0, x)  # (P)_+ x + (P)_- x: the input is both "intercepts"
  low, up = centre - norm + bias, centre + norm + bias
  for p, m1, m2 in zip(pm, m1s, m2s):
    pos, neg = np.maximum(p, 0.0), np.minimum(p, 0.0)
    up = up + _mv(pos, m2) + _mv(neg, m1)
    low = low + _mv(pos, m1) + _mv(neg, m2)
  return low, up


def _wins(a, b):
  """d max(a, b) / d a: 1 where a > b, 1/2 on ties, 0 elsewhere."""
  return np.where(a > b, 1.0, np.where(a == b, 0.5, 0.0)).astype(a.dtype)


def bound(layers: list[Layer], x: np.ndarray, eps: np.ndarray
          ) -> tuple[np.ndarray, np.ndarray, Tape]:
  """The reference's forward bound on the logits over ``|x - x_0| <= eps``.

  On the first layer the linear bound and the interval step are the same,
  ``W_0^T x_0 + b_0 -/+ |W_0|^T eps`` (computed once). The post-activation linear bound of the
  reference is skipped: it never wins its intersection with ``relu(l), relu(u)`` (module
  docstring), so the bounds are the same without its cost (the baseline is the faster for it).

  Args:
    layers: from :func:`as_numpy_layers`.
    x, eps: (n, d) centres and half-widths.

  Returns:
    ``(lower, upper, tape)``: (n, classes) bounds and what :func:`bound_vjp` needs.
  """
  n = x.shape[0]
  tape = Tape([], [], [], [], [], [], [])
  post_l = post_u = None
  p0, pm = None, []
  for k, layer in enumerate(layers):
    if k == 0:
      centre, norm = x @ layer.w + layer.b, eps @ layer.wt_abs.T
      low, up = centre - norm, centre + norm
      tape.p0.append(None)
      tape.quad_wins.append(None)
    else:
      d_prev = tape.relu[-1][0][:, :, None]
      p0 = np.matmul(layer.wt, d_prev * (layers[0].wt if k == 1 else p0))
      pm = [np.matmul(layer.wt, d_prev * p) for p in pm] + [
          np.broadcast_to(layer.wt, (n,) + layer.wt.shape)]
      q_l, q_u = _quad(p0, pm, tape.m1, tape.m2, x, eps, layer.b)
      # The interval step from the previous layer's post-activation bounds.
      simp_l = post_l @ layer.wt_pos.T + post_u @ layer.wt_neg.T + layer.b
      simp_u = post_l @ layer.wt_neg.T + post_u @ layer.wt_pos.T + layer.b
      tape.quad_wins.append((_wins(q_l, simp_l), _wins(simp_u, q_u)))
      low, up = np.maximum(q_l, simp_l), np.minimum(q_u, simp_u)
      tape.p0.append(p0)
    tape.pm.append(pm)
    tape.pre.append((low, up))
    if layer.act == "identity":
      return low, up, tape
    d, m_relu = _relu_lines(low, up)
    tape.relu.append((d, m_relu))
    tape.m1.append(layer.b * d)
    tape.m2.append(layer.b * d + m_relu)
    post_l, post_u = np.maximum(low, 0.0), np.maximum(up, 0.0)
  raise ValueError("the last layer must be the identity")


def bound_vjp(layers: list[Layer], x: np.ndarray, eps: np.ndarray, tape: Tape,
              g_low: np.ndarray, g_up: np.ndarray) -> np.ndarray:
  """``d/d eps`` of ``sum(g_low * lower + g_up * upper)`` (the hand-written reverse pass)."""
  num = len(layers)
  g_eps = np.zeros_like(eps)
  g_pre = [None] * num
  g_pre[-1] = (g_low, g_up)
  g_m1 = [np.zeros_like(m) for m in tape.m1]
  g_m2 = [np.zeros_like(m) for m in tape.m2]
  g_p0 = None  # adjoint of P_k[0] coming down from layer k + 1
  g_pm = []
  for k in range(num - 1, 0, -1):
    layer = layers[k]
    gl, gu = g_pre[k]
    win_l, win_u = tape.quad_wins[k]
    ql, qu = gl * win_l, gu * win_u  # through the linear (quad) bound
    sl, su = gl - ql, gu - qu  # through the interval step
    p0, pm = tape.p0[k], tape.pm[k]
    g_eps += _vm(qu - ql, np.abs(p0))
    # d(quad)/dP_k[0]: x (both bounds) and -/+ sign(P) eps.
    gp0 = (ql + qu)[:, :, None] * x[:, None, :] + np.sign(p0) * ((qu - ql)[:, :, None]
                                                                  * eps[:, None, :])
    if g_p0 is not None:
      gp0 = gp0 + g_p0
    gpm = []
    for i, p in enumerate(pm):
      m1, m2 = tape.m1[i], tape.m2[i]
      positive = p > 0
      pos, neg = np.maximum(p, 0.0), np.minimum(p, 0.0)
      g_m1[i] += _vm(ql, pos) + _vm(qu, neg)
      g_m2[i] += _vm(ql, neg) + _vm(qu, pos)
      if i < k - 1:  # P_k[k] = W_k^T is constant
        gp = (ql[:, :, None] * np.where(positive, m1[:, None, :], m2[:, None, :])
              + qu[:, :, None] * np.where(positive, m2[:, None, :], m1[:, None, :]))
        gpm.append(gp + g_pm[i] if i < len(g_pm) else gp)
    # P_k[i] = W_k^T diag(D_{k-1}) P_{k-1}[i] for i < k, with P_0[0] = W_0^T constant.
    d, _ = tape.relu[k - 1]
    t0 = np.matmul(layer.w, gp0)
    g_d = np.sum(t0 * (layers[0].wt if k == 1 else tape.p0[k - 1]), -1)
    g_p0 = d[:, :, None] * t0 if k > 1 else None
    g_pm = []
    for i in range(k - 1):
      t = np.matmul(layer.w, gpm[i])
      g_d += np.sum(t * tape.pm[k - 1][i], -1)
      g_pm.append(d[:, :, None] * t)
    # m^L_k = D b, m^U_k = D b + m^relu (entry k - 1 of the lists): complete at this point.
    g_d += layers[k - 1].b * (g_m1[k - 1] + g_m2[k - 1])
    l_prev, u_prev = tape.pre[k - 1]
    g_l, g_u = _relu_lines_vjp(l_prev, u_prev, d, g_d, g_m2[k - 1])
    # The interval step from relu(l_{k-1}), relu(u_{k-1}).
    g_rl = sl @ layer.wt_pos + su @ layer.wt_neg
    g_ru = sl @ layer.wt_neg + su @ layer.wt_pos
    g_l += g_rl * (l_prev > 0)
    g_u += g_ru * (u_prev > 0)
    g_pre[k - 1] = (g_l, g_u)
  gl, gu = g_pre[0]
  return g_eps + (gu - gl) @ layers[0].wt_abs


def _margin_error(low, up, label, delta):
  n = low.shape[0]
  rows = np.arange(n)
  err = low[rows, label][:, None] - up - delta
  mask = np.ones_like(err)
  mask[rows, label] = 0.0
  return err, mask


def loss_and_grad(layers: list, x: np.ndarray, label: np.ndarray, eps: np.ndarray,
                  lam: np.ndarray, beta: float, delta: float
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The augmented Lagrangian of each point and its gradient in ``eps``.

  Returns:
    ``(loss (n,), e (n, classes), dloss/deps (n, d))``; ``e`` is the masked constraint term
    ``min(L_y - U_j - delta, -lambda_j / beta)`` (0 at ``j = y``). The gradient in the log
    half-widths is ``eps * dloss/deps``; in the reference's ``v`` (``eps = v v``) ``2 v
    dloss/deps``.
  """
  low, up, tape = bound(layers, x, eps)
  err, mask = _margin_error(low, up, label, delta)
  cap = -lam / beta
  e = np.minimum(err, cap) * mask
  loss = -np.sum(np.log(eps), -1) + np.sum(lam * e, -1) + beta / 2 * np.sum(e * e, -1)
  g_e = (lam + beta * e) * mask
  g_err = g_e * _wins(cap, err)  # d min(err, cap) / d err
  g_up = -g_err
  g_low = np.zeros_like(low)
  g_low[np.arange(len(label)), label] = np.sum(g_err, -1)
  g_eps = -1.0 / eps + bound_vjp(layers, x, eps, tape, g_low, g_up)
  return loss, e, g_eps


def certified_margin(layers: list, x: np.ndarray, label: np.ndarray, eps: np.ndarray
                     ) -> np.ndarray:
  """``min_{j != y} (L_y - U_j)`` over the box ``x +- eps`` (n,)."""
  low, up, _ = bound(layers, x, eps)
  err, mask = _margin_error(low, up, label, 0.0)
  return np.min(np.where(mask > 0, err, np.inf), -1)


class NumpyCertificate(NamedTuple):
  """Per point: the half-widths (n, d), the certified margin, the shrink steps, sum log eps."""

  eps: np.ndarray
  margin: np.ndarray
  shrink_steps: np.ndarray
  log_volume: np.ndarray


def certify_nonuniform(layers: Any, x: np.ndarray, label: np.ndarray, options: Any,
                       dtype: Any = None) -> NumpyCertificate:
  """The reference's augmented Lagrangian and final shrink on a batch of points (a point is a
  batch of one; the reference runs batches of 10).

  Args:
    layers: the network (tuples or ``robust.DenseLayer`` s; relu hidden, identity output).
    x: (n, d) correctly classified points; label: (n,) their labels.
    options: a ``robust.CertifyOptions`` with ``method="logits"``.
    dtype: the arithmetic's dtype (default: ``x``'s).

  Returns:
    A :class:`NumpyCertificate` with ``eps`` (n, d), the certified ``margin``, the number of
    shrink steps and ``sum log eps`` per point.

  Raises:
    ValueError: ``options.method`` is not ``"logits"``; unsupported activations.
  """
  if options.method != "logits":
    raise ValueError(f"options.method must be 'logits' (the reference's bound), got "
                     f"{options.method!r}")
  x = np.asarray(x, dtype)
  layers = as_numpy_layers(layers, x.dtype)
  label = np.asarray(label, np.int64)
  n, classes = x.shape[0], layers[-1][0].shape[1]
  step = options.learning_rate / options.batch_size
  v = np.full(x.shape, np.sqrt(options.eps_init), x.dtype)
  lam = np.zeros((n, classes), x.dtype)
  beta = options.beta
  for it in range(options.iterations):
    _, e, g_eps = loss_and_grad(layers, x, label, v * v, lam, beta, options.delta)
    v = v - step * (2.0 * v * g_eps)
    t = it + 1
    if t % options.dual_every == 0:
      lam = lam + beta * e
    if t > options.beta_start and (t - options.beta_start) % options.beta_every == 0:
      beta = beta * options.beta_growth
  eps = v * v
  diverged = ~np.all(np.isfinite(eps), -1)
  eps[diverged] = options.eps_init
  margin = certified_margin(layers, x, label, eps)
  steps = np.zeros(n, np.int64)
  for _ in range(options.max_shrink):
    bad = margin < options.delta
    if not np.any(bad):
      break
    eps = np.where(bad[:, None], eps * options.shrink, eps)
    steps += bad
    margin = certified_margin(layers, x, label, eps)
  return NumpyCertificate(eps, margin, steps, np.sum(np.log(eps), -1))
