"""Tests of the multi-level VAE: evidence accumulation, the group ELBO against its Monte Carlo
definition, the IWAE bound, gradients to the content encoder, and bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tomioka_jax import core
from tomioka_jax.generative import _mlvae as mlvae


def _model(seed=0):
  return mlvae.MLVAE((3, 2), style_dim=2, content_dim=3, hidden=16, rngs=nnx.Rngs(seed))


def _groups(g=3, k=4, seed=0):
  return jax.random.uniform(jax.random.key(seed), (g, k, 3, 2))


def test_identical_members_multiply_the_content_precision():
  model = _model()
  x = jnp.broadcast_to(_groups(1, 1)[:, :1], (1, 5, 3, 2))
  post = mlvae.encode_groups(model, x)
  _, _, c_mean, c_log_var = model.encode(x[:, 0])
  np.testing.assert_allclose(post.content_mean, c_mean, rtol=1e-5)
  np.testing.assert_allclose(jnp.exp(-post.content_log_var), 5 * jnp.exp(-c_log_var), rtol=1e-5)


def test_masked_member_is_left_out():
  model = _model()
  x = _groups(2, 4)
  mask = jnp.array([[1, 1, 1, 0], [1, 0, 0, 0]], jnp.float32)
  post = mlvae.encode_groups(model, x, mask)
  for g, size in enumerate((3, 1)):
    ref = mlvae.encode_groups(model, x[g:g + 1, :size])
    np.testing.assert_allclose(post.content_mean[g], ref.content_mean[0], rtol=1e-5)
    np.testing.assert_allclose(post.content_log_var[g], ref.content_log_var[0], rtol=1e-5)


def test_group_elbo_equals_its_monte_carlo_definition():
  """E_q[log p(X, C, S) - log q(C, S | X)] by brute-force sampling equals the ELBO with
  analytic KL terms (Eq. 6)."""
  model = _model()
  x = _groups(2, 3)
  mask = jnp.array([[1, 1, 1], [1, 1, 0]], jnp.float32)
  keys = jax.random.split(jax.random.key(5), 4000)
  analytic = jnp.mean(jax.vmap(lambda k: mlvae.group_elbo(model, k, x, mask).elbo)(keys), 0)
  post = mlvae.encode_groups(model, x, mask)

  def joint_minus_q(key):
    ks, kc = jax.random.split(key)
    s = core.reparameterized_sample(ks, post.style_mean, post.style_log_var)
    c = core.reparameterized_sample(kc, post.content_mean, post.content_log_var)
    p = jax.nn.sigmoid(model.decode(s, jnp.broadcast_to(c[:, None], (2, 3, 3))))
    ll = jnp.sum(x * jnp.log(p) + (1 - x) * jnp.log1p(-p), axis=(-2, -1))
    z = jnp.zeros_like
    per = ll + core.diag_gaussian_log_prob(s, z(s), z(s)) - core.diag_gaussian_log_prob(
        s, post.style_mean, post.style_log_var)
    return (jnp.sum(mask * per, 1) + core.diag_gaussian_log_prob(c, z(c), z(c)) -
            core.diag_gaussian_log_prob(c, post.content_mean, post.content_log_var))

  brute = jnp.mean(jax.vmap(joint_minus_q)(keys), 0)
  # Both are Monte Carlo means over 4000 draws; their standard errors are below 0.1 here.
  np.testing.assert_allclose(brute, analytic, atol=0.15)


def test_iwae_bounds_the_elbo_and_tightens():
  model = _model()
  x = _groups(3, 4)
  keys = jax.random.split(jax.random.key(1), 300)
  elbo = float(jnp.mean(jax.vmap(lambda k: mlvae.group_elbo(model, k, x).elbo)(keys)))
  one = jax.vmap(lambda k: mlvae.group_iwae(model, k, x, num_samples=1).mean())(keys)
  # IWAE with one sample is the ELBO in expectation: within 4 standard errors.
  assert abs(float(one.mean()) - elbo) < 4 * float(one.std()) / np.sqrt(len(keys))
  iwae = [float(jnp.mean(jax.vmap(lambda k: mlvae.group_iwae(model, k, x, num_samples=n))(
      keys[:40]))) for n in (8, 64)]
  assert elbo < iwae[0] < iwae[1]


def test_content_encoder_receives_gradient():
  """Evidence accumulation is differentiable: the content encoder is trained (a public port
  accumulates on detached tensors and never trains it)."""
  model = _model()
  graphdef, params = nnx.split(model, nnx.Param)
  x = _groups()

  def loss(params):
    return mlvae.mlvae_loss(nnx.merge(graphdef, params), {"x": x}, jax.random.key(0))[0]

  grads = jax.grad(loss)(params)
  assert float(jnp.max(jnp.abs(grads["enc_content"]["kernel"][...]))) > 0


def test_swap_uses_the_content_group():
  model = _model()
  xs = _groups(1, 5)[0]
  a = mlvae.swap(model, xs, _groups(1, 3, seed=1)[0])
  b = mlvae.swap(model, xs, _groups(1, 3, seed=2)[0])
  assert a.shape == xs.shape and 0 < float(jnp.min(a)) and float(jnp.max(a)) < 1
  assert float(jnp.max(jnp.abs(a - b))) > 1e-4


def test_group_batches_are_same_label_and_distinct():
  labels = np.repeat(np.arange(5), 7)
  idx = mlvae.group_batches(jax.random.key(0), labels, num_groups=20, group_size=4)
  assert idx.shape == (20, 4)
  for row in idx:
    assert len(set(labels[row])) == 1 and len(set(row)) == 4
  with pytest.raises(ValueError, match="no label has group_size=8 examples"):
    mlvae.group_batches(jax.random.key(0), labels, 2, 8)


def test_group_sampler_is_uniform_and_jittable():
  # Labels 0..2 with 3, 5 and 1 members; groups of 2 can only come from labels 0 and 1.
  labels = np.array([0, 1, 1, 0, 2, 1, 0, 1, 1])
  sample = mlvae.make_group_sampler(labels, num_groups=4, group_size=2)
  keys = jax.random.split(jax.random.key(3), 5000)
  idx = np.asarray(jax.jit(jax.vmap(sample))(keys)).reshape(-1, 2)
  assert np.all(labels[idx[:, 0]] == labels[idx[:, 1]]) and np.all(idx[:, 0] != idx[:, 1])
  n = len(idx)
  # Each eligible label with probability 1/2 (binomial sd ~ 0.004 at n = 20000).
  assert abs(np.mean(labels[idx[:, 0]] == 0) - 0.5) < 0.02
  # Within label 1, every unordered pair of its 5 members equally likely: 1/10 each.
  ones = idx[labels[idx[:, 0]] == 1]
  pairs = np.sort(ones, axis=1)
  _, counts = np.unique(pairs, axis=0, return_counts=True)
  assert len(counts) == 10 and np.all(np.abs(counts / len(ones) - 0.1) < 0.02), counts
  assert n == 20000
  with pytest.raises(ValueError, match="num_groups must be >= 1, got 0"):
    mlvae.make_group_sampler(labels, 0, 2)
  with pytest.raises(ValueError, match="labels must be 1-D"):
    mlvae.make_group_sampler(labels[None], 2, 2)


def test_bad_input():
  model = _model()
  with pytest.raises(ValueError, match="x must have shape"):
    mlvae.group_elbo(model, jax.random.key(0), jnp.zeros((4, 3, 2)))
  with pytest.raises(ValueError, match=r"mask must have shape \(2, 3\)"):
    mlvae.group_elbo(model, jax.random.key(0), jnp.zeros((2, 3, 3, 2)), jnp.ones((2, 4)))
  with pytest.raises(ValueError, match="content_dim must be >= 1, got 0"):
    mlvae.MLVAE((3, 2), content_dim=0, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="num_samples must be >= 1"):
    mlvae.group_iwae(model, jax.random.key(0), jnp.zeros((2, 3, 3, 2)), num_samples=0)
