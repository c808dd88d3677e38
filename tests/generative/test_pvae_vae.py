"""Tests of the N-VAE / P-VAE models, the ELBO and IWAE bounds, and the tree data generator."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tomioka_jax import core
from tomioka_jax.generative.pvae import _data as data
from tomioka_jax.generative.pvae import _manifold as manifold
from tomioka_jax.generative.pvae import _vae as vae

# Each family, each decoder and each likelihood at least once (compiling a variant is slow).
VARIANTS = [("normal", "linear", "gaussian"), ("wrapped", "gyroplane", "bernoulli"),
            ("riemannian", "wrapped", "gaussian")]


# ---------------------------------------------------------------- a linear-Gaussian N-VAE
D, L, PRIOR = 4, 2, 1.3


def _linear_gaussian(perturb: float = 0.0):
  """An N-VAE with affine encoder/decoder, x | z ~ N(W z + b, I), z ~ N(0, s^2 I).

  W has orthogonal columns, so the exact posterior is a diagonal Gaussian; the encoder is set
  to it (plus ``perturb`` times a fixed offset of its mean and log-scale). Returns the model and
  the exact ``log p(x)`` as a function.
  """
  cfg = vae.VAEConfig(data_dim=D, latent_dim=L, num_hidden_layers=0, distribution="normal",
                      decoder="linear", likelihood="gaussian", prior_scale=PRIOR)
  model = vae.make_vae(cfg, rngs=nnx.Rngs(0))
  q_mat, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(D, L)))
  w = q_mat * np.array([1.5, 0.7])  # (D, L), orthogonal columns
  b = np.array([0.3, -0.2, 0.1, 0.5])
  precision = 1.0 / PRIOR**2 + np.sum(w * w, axis=0)  # diagonal of I/s^2 + W^T W
  gain = (w / precision).T  # posterior mean = gain (x - b)
  sd = 1.0 / np.sqrt(precision)
  model.output.kernel[...] = jnp.asarray(w.T, jnp.float32)
  model.output.bias[...] = jnp.asarray(b, jnp.float32)
  model.loc_head.kernel[...] = jnp.asarray(gain.T, jnp.float32)
  model.loc_head.bias[...] = jnp.asarray(-gain @ b + perturb * np.array([0.4, -0.3]), jnp.float32)
  model.scale_head.kernel[...] = jnp.zeros((D, L), jnp.float32)
  target = sd * np.exp(perturb * np.array([0.5, -0.4])) - 1e-5
  model.scale_head.bias[...] = jnp.asarray(np.log(np.expm1(target)), jnp.float32)
  cov = PRIOR**2 * w @ w.T + np.eye(D)

  def log_px(x):
    r = np.asarray(x, np.float64) - b
    _, logdet = np.linalg.slogdet(cov)
    return -0.5 * (r @ np.linalg.solve(cov, r) + logdet + D * math.log(2 * math.pi))

  return model, log_px


X0 = jnp.array([0.8, -1.1, 0.4, 1.6])


def test_exact_posterior_makes_every_weight_log_px():
  model, log_px = _linear_gaussian()

  @nnx.jit
  def both(model):
    return (vae.log_importance_weights(model, jax.random.key(0), X0, 16),
            vae.elbo(model, jax.random.key(1), X0))

  log_w, terms = both(model)
  np.testing.assert_allclose(log_w, log_px(X0), rtol=0, atol=2e-4)
  np.testing.assert_allclose(terms.elbo, log_px(X0), atol=2e-4)
  np.testing.assert_allclose(terms.elbo, terms.log_likelihood - terms.kl, atol=1e-5)


def test_iwae_increases_with_k_and_stays_below_log_px():
  model, log_px = _linear_gaussian(perturb=1.0)
  exact = log_px(X0)
  keys = jax.random.split(jax.random.key(2), 400)

  @jax.jit
  def bounds(keys):
    return {k: jax.vmap(lambda key: vae.iwae_bound(model, key, X0, k))(keys)
            for k in (1, 4, 32, 512)}

  out = {k: np.asarray(v) for k, v in bounds(keys).items()}
  means = {k: v.mean() for k, v in out.items()}
  sems = {k: v.std() / math.sqrt(v.size) for k, v in out.items()}
  assert means[1] < exact - 0.2  # the perturbed posterior leaves a real gap
  ks = sorted(means)
  for a, b in zip(ks, ks[1:]):
    assert means[b] > means[a] - 2 * (sems[a] + sems[b]), (a, b, means)
  assert means[512] > means[1] + 0.2
  for k in ks:
    assert means[k] <= exact + 3 * sems[k] + 1e-4, (k, means[k], exact)
  assert abs(means[512] - exact) < 0.05


def test_iwae_with_one_sample_is_the_elbo_estimate():
  model, _ = _linear_gaussian(perturb=1.0)
  key = jax.random.key(3)
  iw, terms = nnx.jit(lambda m: (vae.iwae_bound(m, key, X0, 1), vae.elbo(m, key, X0)))(model)
  np.testing.assert_allclose(iw, terms.elbo, rtol=1e-6, atol=1e-5)


# ---------------------------------------------------------------- every variant
@pytest.mark.parametrize("distribution,decoder,likelihood", VARIANTS,
                         ids=["-".join(v) for v in VARIANTS])
def test_variant_shapes_bounds_and_finite_gradients(distribution, decoder, likelihood):
  cfg = vae.VAEConfig(data_dim=6, latent_dim=2, hidden_dim=8, distribution=distribution,
                      decoder=decoder, likelihood=likelihood, c=0.8, prior_scale=1.2,
                      learn_prior_scale=True)
  model = vae.make_vae(cfg, rngs=nnx.Rngs(0))
  x = jax.random.uniform(jax.random.key(1), (3, 6))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  @jax.jit
  def run(params, key):
    m = nnx.merge(graphdef, params, rest)
    (loss, metrics), grads = jax.value_and_grad(
        lambda p: vae.vae_loss(nnx.merge(graphdef, p, rest), {"x": x}, key), has_aux=True)(params)
    one = vae.elbo(m, key, x[0]).elbo
    iw = vae.log_importance_weights(m, key, x[0], 1)
    return loss, metrics, grads, one, iw, m.encode(x)

  loss, metrics, grads, one, iw, (loc, scale) = run(params, jax.random.key(2))
  assert loc.shape == (3, 2) and scale.shape == ((3,) if distribution == "riemannian" else (3, 2))
  if cfg.hyperbolic:
    assert np.all(0.8 * np.sum(np.square(loc), -1) < 1.0)
  assert loss.shape == () and np.isfinite(loss) and iw.shape == (1,)
  np.testing.assert_allclose(one, core.log_mean_exp(iw), rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(-loss, metrics["log_likelihood"] - metrics["kl"], rtol=1e-5,
                             atol=1e-4)
  leaves = jax.tree.leaves(grads)
  assert leaves and all(np.all(np.isfinite(g)) for g in leaves)
  assert np.any(np.abs(grads["prior_raw_scale"][...]) > 0)  # the prior scale is learned


def test_prior_scale_and_curvature_are_state_not_parameters():
  cfg = vae.VAEConfig(data_dim=3, distribution="wrapped", prior_scale=1.7, c=1.2)
  model = vae.make_vae(cfg, rngs=nnx.Rngs(0))
  np.testing.assert_allclose(model.prior_scale(), 1.7, rtol=1e-6)
  params = nnx.state(model, nnx.Param)
  assert "prior_raw_scale" not in params and "c" not in params
  np.testing.assert_allclose(model.c[...], 1.2)


def test_posterior_is_kept_where_samples_are_representable():
  c = 1.2
  cfg = vae.VAEConfig(data_dim=3, latent_dim=2, hidden_dim=4, distribution="riemannian", c=c)
  model = vae.make_vae(cfg, rngs=nnx.Rngs(0))
  model.loc_head.bias[...] = jnp.array([1e3, 0.0])
  model.scale_head.bias[...] = jnp.array([1e4])
  graphdef, state = nnx.split(model)

  @jax.jit
  def encode_and_sample(state):
    m = nnx.merge(graphdef, state)
    z = m.posterior(jnp.zeros(3)).sample(seed=jax.random.key(0), sample_shape=2000)
    return m.encode(jnp.zeros(3)), z

  (loc, scale), z = encode_and_sample(state)
  max_distance, max_scale = vae.posterior_limits("riemannian", 2, c)
  assert float(manifold.distance0(loc, c)) <= float(max_distance) * (1 + 1e-5)
  np.testing.assert_allclose(scale, max_scale, rtol=1e-6)
  # Samples stay inside the representable ball: no clipping at its edge.
  assert float(jnp.max(manifold.distance0(z, c))) < 0.99 * float(vae.representable_radius(c))
  # The Riemannian limit solves (d-1) sqrt(c) s^2 + (3 + sqrt(d-1)) s = R.
  s = float(max_scale)
  np.testing.assert_allclose(math.sqrt(c) * s * s + 4.0 * s, float(max_distance), rtol=1e-5)


def test_train_vmaps_over_seeds_and_curvatures():
  tree = data.branching_diffusion(jax.random.key(0), dim=5, depth=2, num_siblings=3)
  # The gyroplane decoder: its layer's curvature is traced (vmapped) too.
  cfg = vae.VAEConfig(data_dim=5, latent_dim=2, hidden_dim=16, distribution="wrapped",
                      decoder="gyroplane")
  graphdef, train = vae.make_train(cfg, batch_size=7, epochs=30, learning_rate=1e-2)
  cs = jnp.array([0.3, 1.2])
  states, history = jax.vmap(train, (0, 0, None))(jax.random.split(jax.random.key(1), 2), cs,
                                                   tree.x)
  assert history.shape == (2, 30)
  np.testing.assert_allclose(states["c"][...], cs)
  np.testing.assert_allclose(states["gyroplane"]["c"][...], cs)
  assert np.all(history[:, -5:].mean(1) > history[:, :5].mean(1) + 1.0)
  ll = jax.jit(jax.vmap(lambda s: vae.evaluate_iwae(graphdef, s, jax.random.key(2), tree.x[:10],
                                                    2, batch_size=4)))(states)
  assert ll.shape == (2, 10) and np.all(np.isfinite(ll))


# ---------------------------------------------------------------- tree data
def test_tree_counts_and_structure():
  tree = data.branching_diffusion(jax.random.key(0))
  assert tree.x.shape == (635, 50) and tree.nodes.shape == (127, 50)
  np.testing.assert_array_equal(np.bincount(np.asarray(tree.node_depth)), 2 ** np.arange(7))
  np.testing.assert_array_equal(np.bincount(np.asarray(tree.depth)), 5 * 2 ** np.arange(7))
  parent = np.asarray(tree.parent)
  assert parent[0] == -1 and np.all(np.asarray(tree.node_depth)[parent[1:]] ==
                                    np.asarray(tree.node_depth)[1:] - 1)
  np.testing.assert_allclose(tree.x.mean(0), 0.0, atol=1e-5)
  np.testing.assert_allclose(tree.x.std(0), 1.0, rtol=1e-4)
  # Every observation is nearer its own node than any other node.
  d2 = np.sum((np.asarray(tree.x)[:, None] - np.asarray(tree.nodes)[None]) ** 2, -1)
  np.testing.assert_array_equal(np.argmin(d2, 1), np.asarray(tree.node))
  # Children are nearer their parent than the other nodes are, on average.
  nd2 = np.sum((np.asarray(tree.nodes)[:, None] - np.asarray(tree.nodes)[None]) ** 2, -1)
  to_parent = nd2[np.arange(1, 127), parent[1:]]
  others = nd2[1:].sum(1) - to_parent
  assert to_parent.mean() < 0.6 * (others / 125).mean()
  train, test = data.train_test_split(jax.random.key(1), 635)
  assert train.shape == (444,) and test.shape == (191,)
  assert len(np.union1d(np.asarray(train), np.asarray(test))) == 635


def test_tree_noise_variances():
  tree = data.branching_diffusion(jax.random.key(3), param=2.0, standardize=False)
  x, nodes = np.asarray(tree.x, np.float64), np.asarray(tree.nodes, np.float64)
  depth, node_depth, parent = (np.asarray(a) for a in (tree.depth, tree.node_depth, tree.parent))
  obs = x - nodes[np.asarray(tree.node)]
  for level, var in ((0, 1.0 / 5.0), (6, 1.0 / (5.0 * 2**6))):
    np.testing.assert_allclose(obs[depth == level].var(), var, rtol=0.25)
  child = nodes[1:] - nodes[parent[1:]]
  for level in (1, 6):  # children of depth-(l-1) parents: variance 1 / 2^(l-1)
    np.testing.assert_allclose(child[node_depth[1:] == level].var(), 2.0 ** -(level - 1),
                               rtol=0.15 if level == 6 else 0.4)


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("kwargs,match", [
    ({"distribution": "gaussian"}, "unknown distribution='gaussian'; allowed: normal, wrapped"),
    ({"decoder": "mob"}, "unknown decoder='mob'; allowed: linear, wrapped, gyroplane"),
    ({"likelihood": "poisson"}, "unknown likelihood='poisson'; allowed: gaussian, bernoulli"),
    ({"latent_dim": 0}, "latent_dim must be a positive integer, got latent_dim=0"),
    ({"c": 0.0}, "c must be a finite curvature magnitude > 0"),
    ({"c": -1.0}, "c must be a finite curvature magnitude > 0"),
    ({"prior_scale": 0.0}, "prior_scale must be finite and > 0"),
    ({"num_hidden_layers": -1}, "num_hidden_layers must be an integer >= 0"),
    ({"distribution": "normal", "decoder": "wrapped"}, "allowed decoder is 'linear'"),
])
def test_bad_config(kwargs, match):
  with pytest.raises(ValueError, match=match):
    vae.VAEConfig(data_dim=4, **kwargs)


def test_bad_arguments():
  cfg = vae.VAEConfig(data_dim=4, distribution="wrapped")
  model = vae.make_vae(cfg, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="num_samples must be a positive integer, got "
                                       "num_samples=0"):
    vae.iwae_bound(model, jax.random.key(0), jnp.zeros(4), 0)
  with pytest.raises(ValueError, match=r"x must be one observation of shape \(4,\)"):
    vae.elbo(model, jax.random.key(0), jnp.zeros((2, 4)))
  with pytest.raises(ValueError, match="c must be a finite curvature magnitude > 0"):
    vae.make_vae(cfg, rngs=nnx.Rngs(0), c=-0.5)
  with pytest.raises(TypeError, match="config must be a VAEConfig"):
    vae.make_vae({"data_dim": 4}, rngs=nnx.Rngs(0))
  _, train = vae.make_train(cfg, batch_size=9, epochs=1)
  with pytest.raises(ValueError, match="batch_size=9 exceeds the 8 training examples"):
    train(jax.random.key(0), 1.0, jnp.zeros((8, 4)))
  with pytest.raises(ValueError, match=r"x_train must have shape \(n, 4\)"):
    train(jax.random.key(0), 1.0, jnp.zeros((8, 3)))
  with pytest.raises(ValueError, match="epochs must be a positive integer, got epochs=0"):
    vae.make_train(cfg, batch_size=2, epochs=0)
  with pytest.raises(ValueError, match="depth must be an integer >= 0, got depth=-1"):
    data.branching_diffusion(jax.random.key(0), depth=-1)
  with pytest.raises(ValueError, match="factor_sibling must be finite and > 0"):
    data.branching_diffusion(jax.random.key(0), factor_sibling=0.0)
  with pytest.raises(ValueError, match="dim must be a positive integer, got dim=0"):
    data.branching_diffusion(jax.random.key(0), dim=0)
  with pytest.raises(ValueError, match="train_fraction must be in"):
    data.train_test_split(jax.random.key(0), 10, 1.0)
