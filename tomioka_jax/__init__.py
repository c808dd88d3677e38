"""tomioka_jax: functional JAX building blocks for the research of Ryota Tomioka and co-authors.

Subpackages (see the README's paper -> module table for what each provides):

* :mod:`tomioka_jax.core` -- train state, pure train/eval steps, data parallelism, the ``fit`` loop.
* :mod:`tomioka_jax.data` -- TFDS loaders with offline fallbacks, batch iterators.
* :mod:`tomioka_jax.tensor` -- convex low-rank tensor estimation.
* :mod:`tomioka_jax.matrix` -- algebraic-combinatorial matrix completion.
* :mod:`tomioka_jax.distributed` -- QSGD and distributed-training simulation.
* :mod:`tomioka_jax.optim` -- Path-SGD, data-dependent path normalization, norm-based capacity.
* :mod:`tomioka_jax.generative` -- f-GANs, Poincaré-ball VAEs, the multi-level VAE.
* :mod:`tomioka_jax.representation` -- distribution shift, triplet similarities, Gaussian
  attention for knowledge bases and question answering.
* :mod:`tomioka_jax.robust` -- bound propagation, certified non-uniform boxes, PGD/APGD,
  periodic adversarial scheduling and loss-landscape diagnostics.
* :mod:`tomioka_jax.rl` -- reward robustness of regularized policies, DQN exploration, batch
  policy gradient.
* :mod:`tomioka_jax.science` -- Timewarp's learned MCMC for molecular dynamics and MatterGen's
  crystal diffusion.

Subpackages are imported on demand (``import tomioka_jax.tensor``) so that importing one
family never pays for another.
"""

__version__ = "0.1.0"
