"""The neural distribution-shift objectives on coloured images: ERM, VIB, DANN, CDANN, IRM, VREx.

"An Information-theoretic Approach to Distribution Shifts", Marco Federici, Ryota Tomioka,
Patrick Forré, NeurIPS 2021, arXiv:2106.03783, Section 5.2 (the neural experiments).

The discrete module (``_dist_shift``) optimises the paper's criteria exactly over a finite code
space. Here the same data-generating processes are applied to real images and each criterion
is replaced by the neural objective of its family, ``CE(y | z) + beta R`` (dsit,
``src/models/*.py``):

* ``"ERM"``: no regulariser;
* ``"VIB"`` (information bottleneck): a Gaussian encoder ``q(z|x) = N(mu(x), diag sigma^2(x))``
  and ``R = KL(q(z|x) || N(0, I))`` (the analytic KL; dsit's one-sample estimate has the same
  expectation);
* ``"DANN"`` (independence): ``R = -CE(e | z)`` of a discriminator ``q(e|z)`` that itself
  minimises ``CE(e | z)``; its optimum is ``H(e|z)``, so the encoder minimises ``-H(e|z) =
  I(e;z) - H(e)``;
* ``"CDANN"`` (separation): the same with a discriminator on ``(z, y)``, bounding ``I(e;z|y)``;
* ``"IRM"`` (sufficiency): the IRMv1 penalty, the unbiased even/odd half-batch product of the
  dummy-scale gradients (:func:`irm_penalty` with ``unbiased=True``);
* ``"VREx"`` (sufficiency): ``sqrt(batch * Var_e R_e)`` (:func:`vrex_penalty` with
  ``batch_std=True``).

The adversarial objectives share one loss, ``CE(y|z) + CE(e | rev_beta(z)[, y])``, whose
reversal layer (:func:`gradient_reversal`) is the identity forward and multiplies the encoder's
gradient by ``-beta`` backward: its gradient is ``CE(e|.)``'s for the discriminator and
``CE(y|z) - beta CE(e|.)``'s for the encoder and predictor. :func:`train_dist_shift` runs it
in one of two ways:

* ``discriminator_steps=k > 0`` (default 64, dsit's ``n_adversarial_steps``): **alternating**
  updates as dsit does, ``k`` Adam steps of the discriminator alone on fresh batches (the
  representation held fixed), then one step of the encoder and predictor against the updated,
  frozen discriminator. The encoder then climbs a cross-entropy that bounds ``H(e|z)`` from
  above, which is what makes ``-CE`` a surrogate of ``I(e;z)``. This is a custom step (one
  ``lax.scan`` under the same ``jit``), since the core trainers take one gradient per step.
* ``discriminator_steps=0``: **simultaneous** gradient reversal (Ganin and Lempitsky), one
  gradient step of everything on the loss above, run by
  :func:`tomioka_jax.core.make_sampler_trainer` like the other objectives. It is ``k + 1``
  times cheaper; alternating is the default because it is dsit's.

Neither form is a reliable eraser of information: on a toy check (two input features, one a
noisy copy of ``e``, ``y`` independent of ``e``) a discriminator trained with the encoder still
read ``e`` off ``z`` (cross-entropy ~0.1 nats, against ``log 2`` for none) after a few hundred
steps at ``beta`` up to 10, with 4 or 16 discriminator steps: against a fixed discriminator
the encoder raises the cross-entropy fastest by *flipping* the environment's code (its
cross-entropy climbs far past ``log 2``), not by erasing it, and the discriminator follows. This
is a known weakness of the ``max CE`` game. dsit runs 64 discriminator steps at a small
learning rate and spectrally normalises the discriminator, which may be what keeps its game
stable; we have not tested that (no spectral normalisation here).

``beta`` follows dsit's schedule, a pure function of the step (:func:`beta_schedule`): ``1e-5``
during a warm-up, then rising linearly; evaluating along one run therefore traces the whole
curve of cross-entropy against the regularisation strength, as the paper's figure does.

The data (:func:`colored_digits`) follow the discrete process :func:`cmnist_distribution`
exactly: ``(e, y, c, d)`` is drawn from its table, and the picture is a random image of class
``d`` placed in colour channel ``c`` of a two-channel image (scikit-learn's 8x8 digits, or
Fashion-MNIST when Debian's ``dataset-fashion-mnist`` files are installed).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax import lax

from tomioka_jax import core
from tomioka_jax import data as data_lib
from tomioka_jax.representation import _dist_shift as ds

__all__ = [
    "ADVERSARIAL_OBJECTIVES",
    "DIST_SHIFT_OBJECTIVES",
    "IMAGE_SOURCES",
    "ColoredDigits",
    "ColoredDigitsSplit",
    "DistShiftFit",
    "DistShiftModel",
    "beta_schedule",
    "colored_digits",
    "default_beta_increment",
    "dist_shift_cross_entropies",
    "gradient_reversal",
    "make_dist_shift_loss",
    "train_dist_shift",
]

DIST_SHIFT_OBJECTIVES = ("ERM", "VIB", "DANN", "CDANN", "IRM", "VREx")
"""The neural objectives: no regulariser, and one per criterion family of the paper."""

ADVERSARIAL_OBJECTIVES = ("DANN", "CDANN")
"""The objectives with an environment discriminator."""

IMAGE_SOURCES = ("digits", "fashion_mnist")
"""Images for :func:`colored_digits`: scikit-learn's 8x8 digits or Fashion-MNIST."""

NUM_TRAIN_ENVIRONMENTS = 2
_NUM_LABELS = 2

# dsit's configs (config/model/*.yaml): beta = 1e-5 until iteration 5000, then + increment per
# iteration (LinearIncrementScheduler).
BETA_START = 1e-5
BETA_WARMUP = 5000
_BETA_INCREMENT = {"ERM": 0.0, "VIB": 5e-5, "DANN": 0.02, "CDANN": 0.02, "IRM": 0.02,
                   "VREx": 1e-4}


def _check_objective(objective: str) -> None:
  if objective not in DIST_SHIFT_OBJECTIVES:
    raise ValueError(f"objective must be one of {DIST_SHIFT_OBJECTIVES}, got {objective!r}")


def default_beta_increment(objective: str) -> float:
  """dsit's per-iteration increment of ``beta`` after the warm-up (0 for ERM).

  Example:
    >>> default_beta_increment("IRM"), default_beta_increment("VIB")
    (0.02, 5e-05)
  """
  _check_objective(objective)
  return _BETA_INCREMENT[objective]


def _check_nonnegative(**values: Any) -> None:
  for name, value in values.items():
    if core.is_concrete(value) and not np.all(np.asarray(value) >= 0):
      raise ValueError(f"{name} must be >= 0, got {name}={value!r}")


def beta_schedule(step: jax.Array | int, *, start: float = BETA_START, warmup: int = BETA_WARMUP,
                  increment: float = 0.0) -> jax.Array:
  """dsit's regularisation strength at a step: ``start`` until ``warmup``, then linear.

  ``beta(t) = start`` for ``t <= warmup`` and ``start + (t - warmup) * increment`` after
  (dsit's ``LinearIncrementScheduler``). Checks (``start``, ``warmup``, ``increment`` >= 0) run
  when the values are concrete.

  Args:
    step: the iteration (from 0), an integer or an integer array.
    start: ``beta`` during the warm-up (dsit: 1e-5).
    warmup: the last step at ``start`` (dsit: 5000).
    increment: the increase per step after the warm-up (see :func:`default_beta_increment`).

  Returns:
    ``beta`` as a float32 array of the shape of ``step``.

  Example:
    >>> [float(beta_schedule(t, start=0.5, warmup=2, increment=1.0)) for t in range(5)]
    [0.5, 0.5, 0.5, 1.5, 2.5]
  """
  _check_nonnegative(start=start, warmup=warmup, increment=increment)
  step = jnp.asarray(step)
  after = jnp.maximum(step - warmup, 0).astype(jnp.float32)
  return jnp.asarray(start, jnp.float32) + after * jnp.asarray(increment, jnp.float32)


# ----------------------------------------------------------------------------- data


class ColoredDigits(NamedTuple):
  """Coloured images with their environment and the latent factors of the process.

  Attributes:
    x: images ``(n, 2, height, width)``, float32; the picture sits in channel ``c``, the other
      channel is 0.
    y: binary labels ``(n,)``.
    e: environments ``(n,)``: 0 and 1 train, 2 is the test environment.
    c: colours ``(n,)`` (the channel).
    d: the image's class ``(n,)`` (the digit, or the Fashion-MNIST class).
  """

  x: np.ndarray
  y: np.ndarray
  e: np.ndarray
  c: np.ndarray
  d: np.ndarray


class ColoredDigitsSplit(NamedTuple):
  """Training environments (0, 1) and the test environment (2), from disjoint image pools.

  Attributes:
    train: the training examples (environments 0 and 1).
    valid: fresh draws from the training environments (the training image pool, new labels
      and colours): the training distribution's cross-entropy without the memorised noise.
    test: the test environment (2), on the source's test images.
    source: where the images came from (``tomioka_jax.data``'s ``source``).
  """

  train: ColoredDigits
  valid: ColoredDigits
  test: ColoredDigits
  source: str


def _check_positive_int(**values: Any) -> None:
  for name, value in values.items():
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
      raise ValueError(f"{name} must be a positive integer, got {name}={value!r}")


def _image_pool(source: str, split: str, pool: int) -> tuple[np.ndarray, np.ndarray, str]:
  if source == "digits":
    ds_ = data_lib.load_digits(split)
  else:
    ds_ = data_lib.load(source, split, download=False, fallback=False)
  images = ds_.x[..., 0]
  if pool > 1:
    n, h, w = images.shape
    if h % pool or w % pool:
      raise ValueError(f"pool must divide the image size {h}x{w}, got pool={pool}")
    images = images.reshape(n, h // pool, pool, w // pool, pool).mean(axis=(2, 4))
  return images.astype(np.float32), ds_.y.astype(np.int64), ds_.source


def _draw(table: np.ndarray, n: int, images: np.ndarray, classes: np.ndarray,
          rng: np.random.Generator, env_offset: int) -> ColoredDigits:
  flat = table.ravel() / table.sum()
  cells = rng.choice(flat.size, size=n, p=flat)
  e, y, c, d = np.unravel_index(cells, table.shape)
  pick = np.empty(n, np.int64)
  for k in range(10):
    where = np.flatnonzero(d == k)
    members = np.flatnonzero(classes == k)
    pick[where] = members[rng.integers(0, len(members), len(where))]
  x = np.zeros((n, 2, *images.shape[1:]), np.float32)
  x[np.arange(n), c] = images[pick]
  as32 = lambda a: np.asarray(a, np.int32)
  return ColoredDigits(x=x, y=as32(y), e=as32(e + env_offset), c=as32(c), d=as32(d))


def colored_digits(variant: str = "CMNIST", seed: int = 0, *, source: str = "digits",
                   num_train: int = 4000, num_valid: int = 2000, num_test: int = 2000,
                   pool: int | None = None) -> ColoredDigitsSplit:
  """The paper's coloured-image processes (CMNIST, d-CMNIST, y-CMNIST) on real images.

  Each example draws ``(e, y, c, d)`` from :func:`cmnist_distribution` (``variant``)
  conditioned on the training environments (``e`` in {0, 1}) or on the test one (``e = 2``),
  then a uniformly random image of class ``d`` (training images from the source's training
  split, test images from its test split), and places it in channel ``c`` of a two-channel
  image. Hence ``p(c = y | e) = 0.9, 0.8, 0.1``, 25% label noise on ``y = [d >= 5]``, and the
  variants' environment-dependent digit or label distributions, exactly as in the table.

  Args:
    variant: one of :data:`CMNIST_VARIANTS`.
    seed: seeds the draw (NumPy).
    source: ``"digits"`` (scikit-learn's 8x8 digits, always available) or
      ``"fashion_mnist"`` (28x28; needs the Debian ``dataset-fashion-mnist`` files or a prepared
      TFDS copy; ``tomioka_jax.data.DatasetUnavailableError`` otherwise).
    num_train: examples from the training environments.
    num_valid: further examples from the training environments (the ``valid`` part).
    num_test: examples from the test environment.
    pool: average-pool the images by this factor (default: 1 for digits, 2 for Fashion-MNIST,
      giving 14x14).

  Returns:
    A :class:`ColoredDigitsSplit`.

  Example:
    >>> split = colored_digits("CMNIST", 0, num_train=100, num_test=50)
    >>> split.train.x.shape, sorted(set(split.train.e.tolist())), set(split.test.e.tolist())
    ((100, 2, 8, 8), [0, 1], {2})
  """
  if variant not in ds.CMNIST_VARIANTS:
    raise ValueError(f"variant must be one of {ds.CMNIST_VARIANTS}, got {variant!r}")
  if source not in IMAGE_SOURCES:
    raise ValueError(f"source must be one of {IMAGE_SOURCES}, got {source!r}")
  _check_positive_int(num_train=num_train, num_valid=num_valid, num_test=num_test)
  pool = (1 if source == "digits" else 2) if pool is None else pool
  _check_positive_int(pool=pool)
  joint = np.asarray(ds.cmnist_distribution(variant, jnp.float32), np.float64)
  joint = joint / joint.sum()
  train_table, test_table = joint[:2], joint[2:]
  rng = np.random.default_rng(seed)
  train_images, train_classes, origin = _image_pool(source, "train", pool)
  test_images, test_classes, _ = _image_pool(source, "test", pool)
  train = _draw(train_table, num_train, train_images, train_classes, rng, 0)
  valid = _draw(train_table, num_valid, train_images, train_classes, rng, 0)
  test = _draw(test_table, num_test, test_images, test_classes, rng, 2)
  return ColoredDigitsSplit(train=train, valid=valid, test=test, source=origin)


# ----------------------------------------------------------------------------- model


@jax.custom_vjp
def gradient_reversal(x: jax.Array, scale: jax.Array) -> jax.Array:
  """The identity forward; backward, the cotangent times ``-scale`` (Ganin and Lempitsky).

  ``scale`` gets no gradient.

  Example:
    >>> import jax
    >>> float(jax.grad(lambda x: 3.0 * gradient_reversal(x, 2.0))(1.0))
    -6.0
  """
  del scale
  return x


def _reversal_fwd(x, scale):
  return x, scale


def _reversal_bwd(scale, g):
  return -scale * g, jnp.zeros_like(scale)


gradient_reversal.defvjp(_reversal_fwd, _reversal_bwd)


class _StepCount(nnx.Variable):
  """The number of training steps taken (non-parameter state, read by the beta schedule)."""


def _dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
  if key is None or rate == 0.0:
    return x
  keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), 0.0)


class _Stack(nnx.Module):
  """ReLU layers with dropout after each hidden layer, and a linear output layer."""

  def __init__(self, sizes: Sequence[int], dropout: float, *, rngs: nnx.Rngs):
    self.dropout = dropout
    self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])

  def __call__(self, x: jax.Array, key: jax.Array | None = None) -> jax.Array:
    keys = [None] * len(self.layers) if key is None else list(jax.random.split(key,
                                                                               len(self.layers)))
    for layer, k in zip(self.layers[:-1], keys):
      x = _dropout(jax.nn.relu(layer(x)), self.dropout, k)
    return self.layers[-1](x)


class DistShiftModel(nnx.Module):
  """Encoder ``x -> z``, predictor ``z -> y`` and (optionally) a discriminator ``z[, y] -> e``.

  dsit's MLP architecture scaled down: an encoder MLP on the flattened image with dropout
  after each hidden layer (deterministic, or Gaussian with mean and log-variance heads for
  VIB), a one-hidden-layer predictor, and for DANN (``discriminator="z"``) or CDANN
  (``discriminator="zy"``, the one-hot label appended to ``z``) an MLP discriminator over the
  training environments. It also counts its training steps (for :func:`beta_schedule`).

  Args:
    in_features: the flattened image size.
    z_dim: the representation's size.
    encoder_hidden, predictor_hidden, discriminator_hidden: hidden layer widths.
    dropout: the encoder's dropout rate, in [0, 1).
    stochastic: a Gaussian encoder (VIB).
    discriminator: ``None``, ``"z"`` or ``"zy"``.
    num_environments: the discriminator's classes (the training environments).
    rngs: initialisation.
  """

  def __init__(self, in_features: int, *, z_dim: int = 16, encoder_hidden: Sequence[int] = (256,),
               predictor_hidden: Sequence[int] = (64,),
               discriminator_hidden: Sequence[int] = (128,), dropout: float = 0.25,
               stochastic: bool = False, discriminator: str | None = None,
               num_environments: int = NUM_TRAIN_ENVIRONMENTS, rngs: nnx.Rngs):
    _check_positive_int(in_features=in_features, z_dim=z_dim,
                        num_environments=num_environments)
    if not 0.0 <= dropout < 1.0:
      raise ValueError(f"dropout must be in [0, 1), got dropout={dropout!r}")
    if discriminator not in (None, "z", "zy"):
      raise ValueError(f"discriminator must be None, 'z' or 'zy', got {discriminator!r}")
    self.in_features = in_features
    self.z_dim = z_dim
    self.stochastic = stochastic
    self.encoder = _Stack([in_features, *encoder_hidden, (2 if stochastic else 1) * z_dim],
                          dropout, rngs=rngs)
    self.predictor = _Stack([z_dim, *predictor_hidden, _NUM_LABELS], 0.0, rngs=rngs)
    self.discriminator_input = discriminator
    if discriminator is not None:
      extra = _NUM_LABELS if discriminator == "zy" else 0
      self.discriminator = _Stack([z_dim + extra, *discriminator_hidden, num_environments], 0.0,
                                  rngs=rngs)
    self.steps_taken = _StepCount(jnp.zeros((), jnp.int32))

  def encode(self, x: jax.Array, key: jax.Array | None = None
             ) -> tuple[jax.Array, jax.Array | None]:
    """``(mean, log_var)`` of ``q(z|x)`` (``log_var`` is None for a deterministic encoder);
    dropout is applied when ``key`` is given."""
    h = self.encoder(jnp.reshape(x, (x.shape[0], -1)), key)
    if self.stochastic:
      return h[:, :self.z_dim], h[:, self.z_dim:]
    return h, None

  def discriminate(self, z: jax.Array, y: jax.Array) -> jax.Array:
    """The discriminator's logits over the training environments."""
    if self.discriminator_input == "zy":
      z = jnp.concatenate([z, jax.nn.one_hot(y, _NUM_LABELS, dtype=z.dtype)], axis=-1)
    return self.discriminator(z)

  def __call__(self, x: jax.Array) -> jax.Array:
    """The label logits at the posterior mean, without dropout (prediction)."""
    mean, _ = self.encode(x)
    return self.predictor(mean)


def _model_kind(objective: str) -> dict[str, Any]:
  return {"stochastic": objective == "VIB",
          "discriminator": {"DANN": "z", "CDANN": "zy"}.get(objective)}


# ----------------------------------------------------------------------------- objectives


def make_dist_shift_loss(objective: str, *, beta_start: float = BETA_START,
                         beta_warmup: int = BETA_WARMUP, beta_increment: float | None = None,
                         num_environments: int = NUM_TRAIN_ENVIRONMENTS):
  """The training loss of one objective, ``loss_fn(model, batch, rng) -> (loss, metrics)``.

  ``batch = {"x", "y", "e"}`` (training environments only). ``beta`` is
  :func:`beta_schedule` at the model's step count, which the loss advances by one. The
  minimised loss is

  * ERM: ``CE``; VIB: ``CE(y | z ~ q(z|x)) + beta KL(q(z|x) || N(0, I))``;
  * IRM: ``CE + beta sum_e g_e^even g_e^odd``; VREx: ``CE + beta sqrt(batch Var_e R_e)``;
  * DANN / CDANN: ``CE(y|z) + CE(e | rev_beta(z)[, y])``, whose gradient is that of
    ``CE(e|.)`` for the discriminator and that of ``CE(y|z) - beta CE(e|z[, y])`` for the
    encoder and predictor (see :func:`gradient_reversal`).

  Metrics: ``cross_entropy`` (label CE), ``accuracy``, ``beta``, ``regularization`` (dsit's:
  the KL, the IRM or VREx penalty, or ``-CE(e|.)`` for the adversarial objectives, 0 for ERM)
  and ``objective = cross_entropy + beta * regularization``, the encoder's objective.

  Args:
    objective: one of :data:`DIST_SHIFT_OBJECTIVES`.
    beta_start, beta_warmup: the schedule's start value and warm-up (dsit: 1e-5, 5000).
    beta_increment: the increase per step after the warm-up (default: dsit's,
      :func:`default_beta_increment`).
    num_environments: the number of training environments.

  Returns:
    The loss function, for the core trainers.
  """
  _check_objective(objective)
  increment = default_beta_increment(objective) if beta_increment is None else beta_increment
  _check_nonnegative(beta_start=beta_start, beta_warmup=beta_warmup, beta_increment=increment)
  _check_positive_int(num_environments=num_environments)
  schedule = functools.partial(beta_schedule, start=beta_start, warmup=beta_warmup,
                               increment=increment)

  def loss_fn(model: DistShiftModel, batch: dict[str, jax.Array], rng: jax.Array):
    x, y, e = batch["x"], batch["y"], batch["e"]
    beta = schedule(model.steps_taken[...])
    model.steps_taken[...] = model.steps_taken[...] + 1
    drop_key, noise_key = jax.random.split(rng)
    mean, log_var = model.encode(x, drop_key)
    z = mean if log_var is None else core.reparameterized_sample(noise_key, mean, log_var)
    logits = model.predictor(z)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    loss = ce
    reg = jnp.zeros((), ce.dtype)
    if objective == "VIB":
      reg = jnp.mean(core.kl_to_standard_normal(mean, log_var))
      loss = ce + beta * reg
    elif objective == "IRM":
      reg = ds.irm_penalty(logits, y, e, num_environments, unbiased=True)
      loss = ce + beta * reg
    elif objective == "VREx":
      reg = ds.vrex_penalty(logits, y, e, num_environments, batch_std=True)
      loss = ce + beta * reg
    elif objective in ADVERSARIAL_OBJECTIVES:
      d_logits = model.discriminate(gradient_reversal(z, lax.stop_gradient(beta)), y)
      d_ce = ds.adversarial_cross_entropy(d_logits, e)
      reg = -d_ce
      loss = ce + d_ce
    accuracy = jnp.mean(jnp.argmax(logits, -1) == y)
    return loss, {"cross_entropy": ce, "accuracy": accuracy, "beta": beta,
                  "regularization": reg, "objective": ce + beta * reg}

  return loss_fn


def dist_shift_cross_entropies(model: nnx.Module, x: jax.Array, y: jax.Array, e: jax.Array,
                               num_environments: int) -> dict[str, jax.Array]:
  """Cross-entropy (nats) and accuracy of the model's prediction, overall and per environment.

  Args:
    model: a :class:`DistShiftModel` (or any ``x -> logits`` module).
    x, y, e: images, labels, environments (``0..num_environments - 1``).
    num_environments: the number of environments of ``e``.

  Returns:
    ``{"cross_entropy", "accuracy"}`` (scalars over all examples) and
    ``{"env_cross_entropy", "env_accuracy"}`` (``(num_environments,)``; 0 where absent).
  """
  logits = model(x)
  masks = jax.nn.one_hot(e, num_environments)
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, y)
  correct = (jnp.argmax(logits, -1) == y).astype(losses.dtype)
  counts = jnp.maximum(jnp.sum(masks, axis=0), 1.0)
  return {"cross_entropy": jnp.mean(losses), "accuracy": jnp.mean(correct),
          "env_cross_entropy": jnp.sum(masks * losses[:, None], axis=0) / counts,
          "env_accuracy": jnp.sum(masks * correct[:, None], axis=0) / counts}


# ----------------------------------------------------------------------------- training


class DistShiftFit(NamedTuple):
  """The record of :func:`train_dist_shift`: evaluations along the runs (leading axis: seeds).

  Attributes:
    steps: ``(K,)`` the step after which each evaluation ran.
    beta: ``(K,)`` the regularisation strength of the last step before each evaluation.
    train_cross_entropy, valid_cross_entropy, test_cross_entropy: ``(S, K)`` nats on the
      training examples, on the fresh draws from the training environments (``valid``), and
      on the test environment.
    train_accuracy, valid_accuracy, test_accuracy: ``(S, K)``.
    train_env_cross_entropy: ``(S, K, 2)`` per training environment.
    train_env_accuracy: ``(S, K, 2)``.
    loss: ``(S, K)`` the mean training ``objective`` metric over each evaluation interval.
    regularization: ``(S, K)`` the mean ``regularization`` metric over each interval.
    states: the final model states of every seed (stacked), ``nnx.merge``-d with ``graphdef``
      by :meth:`model`.
    graphdef: the model's graph definition.
  """

  steps: np.ndarray
  beta: np.ndarray
  train_cross_entropy: np.ndarray
  valid_cross_entropy: np.ndarray
  test_cross_entropy: np.ndarray
  train_accuracy: np.ndarray
  valid_accuracy: np.ndarray
  test_accuracy: np.ndarray
  train_env_cross_entropy: np.ndarray
  train_env_accuracy: np.ndarray
  loss: np.ndarray
  regularization: np.ndarray
  states: tuple[Any, ...]
  graphdef: Any

  def model(self, seed_index: int = 0) -> DistShiftModel:
    """The trained model of one seed."""
    return nnx.merge(self.graphdef, *jax.tree.map(lambda a: a[seed_index], self.states))


def _optimizer(objective: str, learning_rate: float, discriminator_learning_rate: float):
  """Adam; for the adversarial objectives, with the discriminator's own step size."""
  if objective not in ADVERSARIAL_OBJECTIVES:
    return optax.adam(learning_rate)

  def labels(params):
    return jax.tree_util.tree_map_with_path(
        lambda path, _: "discriminator" if any(getattr(k, "key", None) == "discriminator"
                                               for k in path) else "model", params)

  return optax.multi_transform({"model": optax.adam(learning_rate),
                                "discriminator": optax.adam(discriminator_learning_rate)},
                               labels)


class _AdversarialState(NamedTuple):
  """The alternating trainer's carry: the model split three ways and two Adam states."""

  discriminator: nnx.State
  params: nnx.State
  rest: nnx.State
  discriminator_opt: optax.OptState
  opt: optax.OptState
  rng: jax.Array


_DISCRIMINATOR = nnx.All(nnx.Param, nnx.PathContains("discriminator"))


def _make_alternating_trainer(graphdef, loss_fn, optimizer, discriminator_optimizer, sample,
                              steps: int, discriminator_steps: int, batch_size: int):
  """``train(state, key)``: ``steps`` of [k discriminator steps, one encoder step], one scan.

  ``sample(key)`` returns ``(k + 1) * batch_size`` examples: the first ``batch_size`` for the
  encoder step, the rest as the ``k`` discriminator batches.
  """

  def discriminator_loss(disc, params, rest, batch, key):
    model = nnx.merge(graphdef, disc, params, rest)
    z, _ = model.encode(batch["x"], key)
    logits = model.discriminate(lax.stop_gradient(z), batch["y"])
    return ds.adversarial_cross_entropy(logits, batch["e"])

  def step(state: _AdversarialState, key: jax.Array):
    batch = sample(key)
    first = jax.tree.map(lambda a: a[:batch_size], batch)
    rest_batches = jax.tree.map(
        lambda a: a[batch_size:].reshape(discriminator_steps, batch_size, *a.shape[1:]), batch)
    rng, disc_key, gen_key = jax.random.split(state.rng, 3)

    def disc_step(carry, inputs):
      disc, opt = carry
      b, k = inputs
      loss, grads = jax.value_and_grad(discriminator_loss)(disc, state.params, state.rest, b, k)
      updates, opt = discriminator_optimizer.update(grads, opt, disc)
      return (optax.apply_updates(disc, updates), opt), loss

    (disc, disc_opt), disc_losses = lax.scan(
        disc_step, (state.discriminator, state.discriminator_opt),
        (rest_batches, jax.random.split(disc_key, discriminator_steps)))

    def objective(params):
      model = nnx.merge(graphdef, disc, params, jax.tree.map(lambda a: a, state.rest))
      loss, metrics = loss_fn(model, first, gen_key)
      _, _, _, rest = nnx.split(model, _DISCRIMINATOR, nnx.Param, ...)
      return loss, (metrics, rest)

    (loss, (metrics, rest)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
    updates, opt = optimizer.update(grads, state.opt, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss, **metrics, "discriminator_loss": jnp.mean(disc_losses)}
    return _AdversarialState(disc, params, rest, disc_opt, opt, rng), metrics

  @jax.jit
  def train(state: _AdversarialState, key: jax.Array):
    return lax.scan(lambda s, t: step(s, jax.random.fold_in(key, t)), state, jnp.arange(steps))

  return train


def train_dist_shift(objective: str, data: ColoredDigitsSplit, *, steps: int,
                     seeds: Sequence[int] = (0,), eval_every: int | None = None,
                     batch_size: int = 256, learning_rate: float = 1e-3,
                     discriminator_learning_rate: float | None = None,
                     discriminator_steps: int = 64, beta_start: float = BETA_START,
                     beta_warmup: int = BETA_WARMUP, beta_increment: float | None = None,
                     z_dim: int = 16, encoder_hidden: Sequence[int] = (256,),
                     predictor_hidden: Sequence[int] = (64,),
                     discriminator_hidden: Sequence[int] = (128,), dropout: float = 0.25
                     ) -> DistShiftFit:
  """Trains one objective on coloured images for several seeds, as one compiled program.

  Each seed's run is ``core.make_sampler_trainer`` (each step draws ``batch_size`` training
  examples with replacement, on the device) over segments of ``eval_every`` steps, each followed
  by an evaluation on all training and test examples; the segments are a ``lax.scan`` and the
  seeds a ``jax.vmap`` of it, all under one ``jax.jit``. A seed sets the initialisation, the
  batches, dropout and the VIB noise.

  Args:
    objective: one of :data:`DIST_SHIFT_OBJECTIVES`.
    data: from :func:`colored_digits`.
    steps: the training steps (a multiple of ``eval_every``).
    seeds: integer seeds (one run each).
    eval_every: steps between evaluations (default: ``steps``, one evaluation at the end).
    batch_size: examples per step (dsit: 256; 4096 for IRM and VREx).
    learning_rate: Adam's step size for the encoder and predictor (dsit: 1e-4).
    discriminator_learning_rate: the discriminator's Adam step size (default:
      ``learning_rate``).
    discriminator_steps: DANN/CDANN only: discriminator steps per encoder step (dsit: 64); 0
      runs simultaneous gradient reversal instead (see the module docstring).
    beta_start, beta_warmup, beta_increment: :func:`beta_schedule` (increment default: dsit's
      per objective).
    z_dim, encoder_hidden, predictor_hidden, discriminator_hidden, dropout: the
      :class:`DistShiftModel`.

  Returns:
    A :class:`DistShiftFit`.
  """
  _check_objective(objective)
  _check_positive_int(steps=steps, batch_size=batch_size)
  eval_every = steps if eval_every is None else eval_every
  _check_positive_int(eval_every=eval_every)
  if steps % eval_every:
    raise ValueError(f"eval_every must divide steps; got steps={steps}, eval_every={eval_every}")
  seeds = tuple(seeds)
  if not seeds or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool)
                          for s in seeds):
    raise ValueError(f"seeds must be a non-empty sequence of integers, got {seeds!r}")
  disc_lr = learning_rate if discriminator_learning_rate is None else discriminator_learning_rate
  for name, value in (("learning_rate", learning_rate), ("discriminator_learning_rate", disc_lr)):
    if not value > 0:
      raise ValueError(f"{name} must be > 0, got {name}={value!r}")
  if not isinstance(data, ColoredDigitsSplit):
    raise ValueError(f"data must be a ColoredDigitsSplit (from colored_digits), got "
                     f"{type(data).__name__}")
  if isinstance(discriminator_steps, bool) or not isinstance(discriminator_steps,
                                                             (int, np.integer)) \
      or discriminator_steps < 0:
    raise ValueError(f"discriminator_steps must be a non-negative integer, got "
                     f"discriminator_steps={discriminator_steps!r}")
  loss_fn = make_dist_shift_loss(objective, beta_start=beta_start, beta_warmup=beta_warmup,
                                 beta_increment=beta_increment)
  increment = default_beta_increment(objective) if beta_increment is None else beta_increment
  alternating = objective in ADVERSARIAL_OBJECTIVES and discriminator_steps > 0
  optimizer = (optax.adam(learning_rate) if alternating
               else _optimizer(objective, learning_rate, disc_lr))
  disc_optimizer = optax.adam(disc_lr)
  train, test = data.train, data.test
  in_features = int(np.prod(train.x.shape[1:]))
  states = []
  for seed in seeds:
    model = DistShiftModel(in_features, z_dim=z_dim, encoder_hidden=encoder_hidden,
                           predictor_hidden=predictor_hidden,
                           discriminator_hidden=discriminator_hidden, dropout=dropout,
                           rngs=nnx.Rngs(int(seed)), **_model_kind(objective))
    rng = jax.random.fold_in(jax.random.key(int(seed)), 1)
    if alternating:
      graphdef, disc, params, rest = nnx.split(model, _DISCRIMINATOR, nnx.Param, ...)
      state = _AdversarialState(disc, params, rest, disc_optimizer.init(disc),
                                optimizer.init(params), rng)
    else:
      graphdef, state = core.create_train_state(model, optimizer, rng)
    states.append(state)
  states = jax.tree.map(lambda *a: jnp.stack(a), *states)
  keys = jax.vmap(lambda s: jax.random.fold_in(jax.random.key(s), 2))(jnp.asarray(seeds))

  x_train = jnp.asarray(train.x.reshape(len(train.y), -1))
  y_train, e_train = jnp.asarray(train.y), jnp.asarray(train.e)
  x_test = jnp.asarray(test.x.reshape(len(test.y), -1))
  y_test = jnp.asarray(test.y)
  valid = data.valid
  x_valid = jnp.asarray(valid.x.reshape(len(valid.y), -1))
  y_valid = jnp.asarray(valid.y)
  n = x_train.shape[0]
  draw = batch_size * (discriminator_steps + 1) if alternating else batch_size

  def sample(key):
    idx = jax.random.randint(key, (draw,), 0, n)
    return {"x": x_train[idx], "y": y_train[idx], "e": e_train[idx]}

  if alternating:
    trainer = _make_alternating_trainer(graphdef, loss_fn, optimizer, disc_optimizer, sample,
                                        eval_every, discriminator_steps, batch_size)
    parts = lambda st: (st.discriminator, st.params, st.rest)
  else:
    trainer = core.make_sampler_trainer(graphdef, loss_fn, optimizer, sample=sample,
                                        steps=eval_every)
    parts = lambda st: (st.params, st.model_state)
  num_segments = steps // eval_every

  def evaluate(state):
    model = nnx.merge(graphdef, *parts(state))
    tr = dist_shift_cross_entropies(model, x_train, y_train, e_train, NUM_TRAIN_ENVIRONMENTS)
    te = dist_shift_cross_entropies(model, x_test, y_test, jnp.zeros_like(y_test), 1)
    va = dist_shift_cross_entropies(model, x_valid, y_valid, jnp.zeros_like(y_valid), 1)
    return {"train_cross_entropy": tr["cross_entropy"], "train_accuracy": tr["accuracy"],
            "valid_cross_entropy": va["cross_entropy"], "valid_accuracy": va["accuracy"],
            "train_env_cross_entropy": tr["env_cross_entropy"],
            "train_env_accuracy": tr["env_accuracy"],
            "test_cross_entropy": te["cross_entropy"], "test_accuracy": te["accuracy"]}

  def run(state, key):
    def segment(state, k):
      state, metrics = trainer(state, k)
      out = evaluate(state)
      out["loss"] = jnp.mean(metrics["objective"])
      out["regularization"] = jnp.mean(metrics["regularization"])
      return state, out
    return lax.scan(segment, state, jax.random.split(key, num_segments))

  final, record = jax.jit(jax.vmap(run))(states, keys)
  record = jax.tree.map(np.asarray, record)
  at = np.arange(1, num_segments + 1) * eval_every
  beta = np.asarray(beta_schedule(jnp.asarray(at - 1), start=beta_start, warmup=beta_warmup,
                                  increment=increment))
  return DistShiftFit(steps=at, beta=beta, states=parts(final), graphdef=graphdef, **record)
