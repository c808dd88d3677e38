"""Batch policy gradient from a fixed batch of noisy rewards vs on-policy learning.

Paper: Kandasamy, Bachrach, Tomioka, Tarlow, Carter, "Batch Policy Gradient Methods for
Improving Neural Conversation Models" (ICLR 2017, arXiv 1702.03334). A chatbot's responses are
scored by people: rewards are noisy and expensive, so the paper learns off-policy from one
fixed batch of responses of the maximum-likelihood model ``q``, each scored once, with the
importance-weighted lambda-return and a constant (BPG-C) or GTD(lambda) baseline, and finds
this better than on-policy REINFORCE and online actor-critic at the same number of scored
responses.

We reproduce the mechanism on a synthetic token MDP where everything is exact: an LSTM
policy emits up to ``T`` tokens from a vocabulary of ``V`` (token 0 ends the sequence), the
reward is the fraction of target tokens (token 1) plus Gaussian noise, and every sequence can
be enumerated, so the true objective ``J = E_pi[R]``, its gradient and the estimators' bias
and variance are computed exactly. The behaviour policy ``q`` is a fixed random LSTM policy
(standing in for the MLE model) and every learner starts from it.

1. Bias and variance of the per-sequence estimator against the exact gradient, at ``pi = q``
   and at a policy moved away from ``q``: no baseline, constant, GTD(lambda); lambda in
   {0, 0.5, 1}.
2. Expected reward after learning vs the reward budget (scored sequences): BPG-C and
   BPG-GTD (many passes over one batch of ``q``'s samples) vs on-policy REINFORCE and online
   actor-critic (fresh samples each step), vmapped over seeds and budgets.
3. Speed: the estimator's weights and a GTD(lambda) pass in one jit against NumPy loops over
   sequences.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.flatten_util import ravel_pytree

from benchmarks import _harness
from tomioka_jax import core
from tomioka_jax import rl

PAPER = ("Kandasamy, Bachrach, Tomioka, Tarlow, Carter 2017, Batch Policy Gradient Methods "
         "for Improving Neural Conversation Models (ICLR, arXiv 1702.03334)")
NAME = "batch_pg"

CONFIGS = {
    # vocab/length/hidden: the token MDP and the LSTM; noise: reward noise sd (the clean
    # reward lies in [0, 1]); budgets: scored sequences; seeds: runs per budget; methods: the
    # learners compared; bpg_steps x bpg_batch: BPG's minibatch steps over its fixed batch;
    # pg_batch: REINFORCE / actor-critic batch; lrs: Adam step sizes (each method is reported
    # at its best per budget); bpg_c_lam: BPG-C's lambda; lam: BPG-GTD's and actor-critic's;
    # gtd_step: GTD(lambda)'s alpha = beta; gtd_fit: q-samples that fit the critic of the
    # bias/variance table; ascent_*: exact-gradient ascent that moves the second evaluation
    # point away from q until J gains ascent_gain; speed_*: sizes of the timings.
    "smoke": {"vocab": 3, "length": 3, "hidden": 4, "noise": 1.0, "budgets": (32, 128),
              "seeds": 2, "methods": ("BPG-C", "REINFORCE", "actor-critic"), "bpg_steps": 5,
              "bpg_batch": 16, "pg_batch": 16, "lrs": (0.05,), "bpg_c_lam": 1.0, "lam": 0.5,
              "gtd_step": 0.005, "gtd_fit": 128, "ascent_lr": 0.05, "ascent_gain": 0.05,
              "speed_n": 256, "speed_t": 10, "speed_gtd_n": 16},
    "quick": {"vocab": 4, "length": 4, "hidden": 16, "noise": 1.0,
              "budgets": (32, 64, 128, 256, 512), "seeds": 8,
              "methods": ("BPG-C", "BPG-GTD", "REINFORCE", "actor-critic"), "bpg_steps": 150,
              "bpg_batch": 32, "pg_batch": 16, "lrs": (0.02, 0.05, 0.2), "bpg_c_lam": 1.0,
              "lam": 0.5, "gtd_step": 0.005, "gtd_fit": 2048, "ascent_lr": 0.01,
              "ascent_gain": 0.25, "speed_n": 2048, "speed_t": 20, "speed_gtd_n": 128},
    "full": {"vocab": 4, "length": 4, "hidden": 16, "noise": 1.0,
             "budgets": (32, 64, 128, 256, 512, 1024), "seeds": 24,
             "methods": ("BPG-C", "BPG-GTD", "REINFORCE", "actor-critic"), "bpg_steps": 300,
             "bpg_batch": 32, "pg_batch": 16, "lrs": (0.02, 0.05, 0.2), "bpg_c_lam": 1.0,
             "lam": 0.5, "gtd_step": 0.005, "gtd_fit": 4096, "ascent_lr": 0.01,
             "ascent_gain": 0.25, "speed_n": 4096, "speed_t": 20, "speed_gtd_n": 256},
}

LAMBDAS = (0.0, 0.5, 1.0)
BASELINES = ("none", "constant", "GTD")
SCARCE = 128  # budgets up to this are "scarce"

HEADLINE = (
    "({mode}): on a token MDP with exact gradients by enumeration and reward noise sd "
    "{noise} (clean reward in [0, 1]; J(q) = {j_q:.3f}, best 1), {best_bpg} learning from one "
    "batch of N scored samples of q reaches J = {bpg_small:.3f} / {bpg_scarce:.3f} at N = "
    "{small} / {scarce} against on-policy REINFORCE's {rf_small:.3f} / {rf_scarce:.3f} and "
    "actor-critic's {ac_small:.3f} / {ac_scarce:.3f} with the same budget ({crossover}); the "
    "lambda = 1 estimator is unbiased for the off-policy gradient (bias {bias1:.1e}), "
    "lambda = 0 cuts its variance {var_ratio:.1f}x at a relative bias of {bias0:.2f}; the "
    "estimator's weights in one jit {speedup:.0f}x a NumPy loop")

NOTES = """\
Setup (reconstructed; the paper's synthetic tasks, step sizes and lambda are not available
offline): V = {vocab} tokens (token 0 ends a sequence), T = {length}, {num_seqs} distinct
sequences; LSTM policies with {hidden} hidden units; reward = fraction of the T positions
holding token 1, plus N(0, {noise}^2) noise on every scored sequence. q is a fixed random LSTM
policy (J(q) = {j_q:.3f}, best possible 1); every learner starts at q. Adam; every method is
run at each step size in {lrs} and reported at its best per budget (the step size is shown).
BPG-C (lambda = {bpg_c_lam}, its constant the batch's mean noisy reward) and BPG-GTD (lambda =
{lam}, a critic linear in the LSTM hidden state learned by GTD(lambda) with the current ratios,
alpha = beta = {gtd_step}) take {bpg_steps} minibatch steps of {bpg_batch} sequences drawn from
the first N samples of one batch of q's samples. REINFORCE (leave-one-out mean baseline) and
the online actor-critic (GTD({lam}) critic, on-policy) draw {pg_batch} fresh sequences per step
and stop after N / {pg_batch} steps, so every method scores N sequences. Means over {seeds}
seeds +- standard error; J is computed exactly by enumeration.

Choices made after probes: BPG-GTD uses lambda = 0.5 because GTD(1) with untruncated ratio
products in its trace diverged (NaN) once pi left q; BPG-C uses lambda = 1 because at lambda =
0.5 its constant bootstrap V = mean reward is badly biased once pi improves (a probe stalled at
J = 0.47-0.60). GTD step sizes 0.05 diverged; 0.005 did not. NaN runs this time: {nan_runs}.

Bias/variance table: exact, by enumeration over all sequences weighted by q (no Monte Carlo).
The reward noise enters the variance exactly (the estimator is linear in the reward for fixed
values). Relative to ||grad J||: "bias vs grad J" = ||E_q[g] - grad J|| / ||grad J||; "bias
vs off-policy" is against the excursion gradient sum_t E_{{s_t ~ q}} sum_a grad pi(a|s_t)
Q^pi(s_t, a), which the per-step ratios target: at pi = q the two gradients coincide; away from
q the prefix keeps q's distribution and the lambda = 1 estimator is unbiased for the excursion
gradient only (at the second point, J = {j_pi1:.3f} after {ascent_steps} exact ascent steps, the
two differ by {exc_gap:.2f} ||grad J||). "variance" = E||g - E g||^2 / ||grad J||^2 for one
sequence; most of it is the reward noise, which no state baseline removes. GTD's critic is
fitted on {gtd_fit} noisy samples of q (5 passes). Without a baseline and with lambda < 1 the
return bootstraps from V = 0, hence its large bias.

Speed: "weights" computes rho_t (G_t - V_t) for {speed_n} sequences of length {speed_t} (the
part of the estimator specific to BPG; the score function is autodiff's); "GTD" is one
GTD(lambda) pass over {speed_gtd_n} episodes with 17 features. NumPy runs the same recursions
sequence by sequence."""


# ---------------------------------------------------------------------------------------------
# The token MDP.


def _score(tokens: jax.Array, mask: jax.Array) -> jax.Array:
  """Fraction of the positions that hold the target token 1 (padding never counts)."""
  return jnp.sum((tokens == 1) * mask, axis=-1) / tokens.shape[-1]


def _behaviour(config: dict) -> rl.TokenPolicy:
  return rl.TokenPolicy(config["vocab"], config["hidden"], 8, logit_scale=2.0,
                        rngs=nnx.Rngs(0))


def _exact_j(policy: rl.TokenPolicy, seqs: jax.Array, scores: jax.Array) -> jax.Array:
  logp, _, _ = rl.token_log_probs(policy, seqs)
  return jnp.sum(jnp.exp(jnp.sum(logp, -1)) * scores)


# ---------------------------------------------------------------------------------------------
# 1. Bias and variance, exactly.


def _bias_variance(config: dict, q: rl.TokenPolicy, seqs, lq, mask, scores) -> dict:
  """Exact mean and variance of the per-sequence estimator at pi = q and at pi1."""
  graphdef, params_q, rest = nnx.split(q, nnx.Param, ...)
  q_prob = jnp.exp(jnp.sum(lq, -1))
  rewards = rl.terminal_rewards(scores, mask)
  sigma = config["noise"]

  exact = jax.jit(lambda p: rl.exact_gradients(nnx.merge(graphdef, p, rest), lq, seqs, scores))

  # The second point: exact gradient ascent on J from q until J has gained ascent_gain.
  opt = optax.adam(config["ascent_lr"])

  @jax.jit
  def ascend(p, s):
    g, _, _ = exact(p)
    u, s = opt.update(jax.tree.map(jnp.negative, g), s, p)
    return optax.apply_updates(p, u), s

  params_1, s = params_q, opt.init(params_q)
  j_start, ascent_steps = float(exact(params_q)[2]), 0
  while float(exact(params_1)[2]) < j_start + config["ascent_gain"] and ascent_steps < 200:
    params_1, s = ascend(params_1, s)
    ascent_steps += 1

  @jax.jit
  def per_sequence(p, values, lam, rew):
    """(M, P) per-sequence estimator gradients for values (M, T) and rewards (M, T)."""
    flat, unravel = ravel_pytree(p)

    def surr(f):
      logp, _, _ = rl.token_log_probs(nnx.merge(graphdef, unravel(f), rest), seqs)
      return rl.batch_policy_gradient_surrogate(logp, lq, rew, values, 1.0, lam, mask)
    return jax.jacrev(surr)(flat)

  @jax.jit
  def fit_gtd(p, key, lam):
    """GTD(lambda) critic of pi on q's samples with noisy rewards (5 passes)."""
    pol = nnx.merge(graphdef, p, rest)
    tokens, lq_s, m = rl.sample_tokens(q, key, config["gtd_fit"], config["length"])
    logp, m, feats = rl.token_log_probs(pol, tokens)
    noisy = _score(tokens, m) + sigma * jax.random.normal(jax.random.fold_in(key, 1),
                                                          (config["gtd_fit"],))
    rho = rl.importance_weights(logp, lq_s, m)
    st = rl.gtd_lambda_init(feats.shape[-1])
    for _ in range(5):
      st = rl.gtd_lambda(st, feats, rl.terminal_rewards(noisy, m), rho, 1.0, lam,
                         config["gtd_step"], config["gtd_step"], m)
    return st.w

  rows, points = [], {}
  for point, params in (("pi = q", params_q), ("pi away from q", params_1)):
    pol = nnx.merge(graphdef, params, rest)
    grad_j, grad_exc, j_val = exact(params)
    grad_j, grad_exc = ravel_pytree(grad_j)[0], ravel_pytree(grad_exc)[0]
    norm = float(jnp.linalg.norm(grad_j))
    _, _, feats = rl.token_log_probs(pol, seqs)
    const = float(jnp.sum(q_prob * scores))
    points[point] = {"J": float(j_val), "grad_norm": norm,
                     "excursion_gap": float(jnp.linalg.norm(grad_exc - grad_j)) / norm}
    for baseline in BASELINES:
      for lam in LAMBDAS:
        if baseline == "none":
          values = jnp.zeros_like(mask)
        elif baseline == "constant":
          values = const * mask
        else:
          w = fit_gtd(params, jax.random.key(11), lam)
          values = (feats @ w) * mask
        g0 = per_sequence(params, values, lam, rewards)
        d = per_sequence(params, values, lam, rewards + rl.terminal_rewards(
            jnp.ones_like(scores), mask)) - g0
        mean = q_prob @ g0
        var = (float(q_prob @ jnp.sum((g0 - mean[None, :]) ** 2, -1))
               + sigma**2 * float(q_prob @ jnp.sum(d**2, -1)))
        rows.append({"point": point, "baseline": baseline, "lam": lam,
                     "bias_j": float(jnp.linalg.norm(mean - grad_j)) / norm,
                     "bias_exc": float(jnp.linalg.norm(mean - grad_exc)) / norm,
                     "variance": var / norm**2})
  return {"rows": rows, "points": points, "ascent_steps": ascent_steps}


# ---------------------------------------------------------------------------------------------
# 2. Learning curves against the reward budget.


def _run_method(config: dict, method: str, q: rl.TokenPolicy, seqs, scores):
  """A jitted ``(keys, budgets, lrs) -> exact J`` for ``method``, vmapped over runs."""
  graphdef_q, params_q, rest_q = nnx.split(q, nnx.Param, ...)
  template = rl.ActorCritic(_behaviour(config))
  graphdef, params0, rest0 = nnx.split(template, nnx.Param, ...)
  length, noise, lam = config["length"], config["noise"], config["lam"]
  step = config["gtd_step"]
  n_max = max(config["budgets"])

  def one(key, budget, lr):
    data_key, train_key = jax.random.split(key)
    model = nnx.merge(graphdef, params0, rest0)
    if method.startswith("BPG"):
      b = config["bpg_batch"]
      tokens, lq, mask = rl.sample_tokens(nnx.merge(graphdef_q, params_q, rest_q), data_key,
                                          n_max, length)
      reward = _score(tokens, mask) + noise * jax.random.normal(
          jax.random.fold_in(data_key, 1), (n_max,))
      seen = jnp.arange(n_max) < budget
      constant = jnp.sum(reward * seen) / budget

      def sample(k):
        idx = jax.random.randint(k, (b,), 0, budget)
        return {"tokens": tokens[idx], "behaviour_log_probs": lq[idx], "reward": reward[idx]}

      if method == "BPG-GTD":
        loss = rl.make_batch_pg_loss(baseline="gtd", lam=lam, alpha=step, beta=step)
      else:
        loss = rl.make_batch_pg_loss(baseline="constant", lam=config["bpg_c_lam"],
                                     constant=constant)
      opt, steps = optax.adam(lr), config["bpg_steps"]
    else:
      b = config["pg_batch"]
      n_steps = budget // b
      opt = optax.adam(lambda count: jnp.where(count < n_steps, lr, 0.0))
      steps = n_max // b

      def sample(k):
        return {"noise": jax.random.normal(k, (b,))}

      if method == "REINFORCE":
        loss = rl.make_reinforce_loss(_score, batch_size=b, length=length, noise=noise)
      else:
        loss = rl.make_actor_critic_loss(_score, batch_size=b, length=length, noise=noise,
                                         lam=lam, alpha=step, beta=step)
    gd, state = core.create_train_state(model, opt, train_key)
    train = core.make_sampler_trainer(gd, loss, opt, sample=sample, steps=steps)
    state, _ = train(state, train_key)
    trained = nnx.merge(gd, state.params, state.model_state)
    return _exact_j(trained.policy, seqs, scores)

  return jax.jit(jax.vmap(one))


def experiment(config: dict) -> dict:
  q = _behaviour(config)
  seqs = jnp.asarray(rl.enumerate_token_sequences(config["vocab"], config["length"]))
  lq, mask, _ = rl.token_log_probs(q, seqs)
  scores = _score(seqs, mask)
  j_q = float(_exact_j(q, seqs, scores))
  bv = _bias_variance(config, q, seqs, lq, mask, scores)

  budgets = np.array(config["budgets"], np.int32)
  lrs = np.array(config["lrs"], np.float32)
  seeds = config["seeds"]
  keys = jax.random.split(jax.random.key(2017), seeds)
  # the grid (seed, budget, lr), flattened in that order
  grid_keys = jnp.repeat(keys, len(budgets) * len(lrs), axis=0)
  grid_budgets = jnp.asarray(np.tile(np.repeat(budgets, len(lrs)), seeds))
  grid_lrs = jnp.asarray(np.tile(lrs, seeds * len(budgets)))
  curves = {}
  for method in config["methods"]:
    j = np.asarray(_run_method(config, method, q, seqs, scores)(grid_keys, grid_budgets,
                                                                 grid_lrs))
    j = j.reshape(seeds, len(budgets), len(lrs))
    best = np.argmax(np.nan_to_num(j.mean(0), nan=-np.inf), axis=1)  # per budget
    chosen = j[:, np.arange(len(budgets)), best]
    curves[method] = {"mean": chosen.mean(0), "se": chosen.std(0, ddof=1) / np.sqrt(seeds),
                      "all": chosen, "lr": lrs[best], "by_lr": j.mean(0),
                      "nan_runs": int(np.isnan(j).sum())}
  return {"j_q": j_q, "num_seqs": int(len(seqs)), "bias_variance": bv, "curves": curves,
          "budgets": budgets}


# ---------------------------------------------------------------------------------------------
# 3. Speed.


def _numpy_weights(logp, lq, rewards, values, mask, gamma, lam):
  """rho_t (G_t - V_t), sequence by sequence, step by step (the paper's backward loop)."""
  out = np.zeros_like(rewards)
  for i in range(rewards.shape[0]):
    rho = np.exp(logp[i] - lq[i])
    last = int(mask[i].sum()) - 1
    g_next = 0.0
    for t in range(last, -1, -1):
      if t == last:
        g = rewards[i, t]
      else:
        g = rewards[i, t] + gamma * ((1 - lam) * values[i, t + 1] + lam * rho[t + 1] * g_next)
      out[i, t] = rho[t] * (g - values[i, t])
      g_next = g
  return out


def _numpy_gtd(w, h, feats, rewards, rho, mask, gamma, lam, alpha, beta):
  w, h = w.copy(), h.copy()
  for i in range(feats.shape[0]):
    e = np.zeros_like(w)
    n = int(mask[i].sum())
    for t in range(n):
      phi = feats[i, t]
      phi1 = feats[i, t + 1] if t + 1 < n else np.zeros_like(phi)
      delta = rewards[i, t] + gamma * phi1 @ w - phi @ w
      e = rho[i, t] * (phi + gamma * lam * e)
      w_new = w + alpha * (delta * e - gamma * (1 - lam) * (e @ h) * phi1)
      h = h + beta * (delta * e - (h @ phi) * phi)
      w = w_new
  return w, h


def _speed_data(n, t_len, d=None, seed=0):
  rng = np.random.default_rng(seed)
  lengths = rng.integers(t_len // 2, t_len + 1, size=n)
  mask = (np.arange(t_len)[None] < lengths[:, None]).astype(np.float32)
  logp = (np.log(rng.uniform(0.1, 1.0, (n, t_len))) * mask).astype(np.float32)
  lq = (np.log(rng.uniform(0.1, 1.0, (n, t_len))) * mask).astype(np.float32)
  rewards = (rng.normal(size=(n, t_len)) * mask).astype(np.float32)
  values = (rng.normal(size=(n, t_len)) * mask).astype(np.float32)
  feats = None if d is None else rng.normal(size=(n, t_len, d)).astype(np.float32) / d**0.5
  return logp, lq, rewards, values, mask, feats


def timings(config: dict) -> dict:
  gamma, lam = 1.0, 0.5
  logp, lq, rewards, values, mask, _ = _speed_data(config["speed_n"], config["speed_t"])

  @jax.jit
  def weights(logp, lq, rewards, values, mask):
    rho = rl.importance_weights(logp, lq, mask)
    g = rl.lambda_returns(rewards, values, rho, gamma, lam, mask)
    return rho * (g - values) * mask

  args = (logp, lq, rewards, values, mask)
  ours = _harness.timeit(weights, *args, repeats=5)
  base = _harness.timeit(_numpy_weights, *args, gamma, lam, repeats=1, warmup=False)
  err = float(np.max(np.abs(np.asarray(weights(*args)) - _numpy_weights(*args, gamma, lam))))

  lp2, lq2, r2, _, m2, f2 = _speed_data(config["speed_gtd_n"], config["speed_t"], d=17, seed=1)
  rho2 = np.exp(lp2 - lq2) * m2 + (1 - m2)
  st0 = rl.gtd_lambda_init(17)
  gtd = jax.jit(lambda f, r, p, m: rl.gtd_lambda(st0, f, r, p, gamma, lam, 0.05, 0.05, m))
  ours_gtd = _harness.timeit(gtd, f2, r2, rho2, m2, repeats=5)
  z = np.zeros(17, np.float32)
  base_gtd = _harness.timeit(_numpy_gtd, z, z, f2, r2, rho2, m2, gamma, lam, 0.05, 0.05,
                             repeats=1, warmup=False)
  err_gtd = float(np.max(np.abs(np.asarray(gtd(f2, r2, rho2, m2).w)
                                - _numpy_gtd(z, z, f2, r2, rho2, m2, gamma, lam, 0.05,
                                             0.05)[0])))
  return {"weights": {"ours": ours.as_dict(), "numpy": base.as_dict(), "max_abs_diff": err},
          "gtd": {"ours": ours_gtd.as_dict(), "numpy": base_gtd.as_dict(),
                  "max_abs_diff": err_gtd}}


# ---------------------------------------------------------------------------------------------
# Claims and report.


def _row(exp: dict, point: str, baseline: str, lam: float) -> dict:
  (r,) = [r for r in exp["bias_variance"]["rows"]
          if r["point"] == point and r["baseline"] == baseline and r["lam"] == lam]
  return r


def _scarce_index(config: dict) -> int:
  budgets = list(config["budgets"])
  return max(i for i, b in enumerate(budgets) if b <= SCARCE)


def _ratio(times: dict, key: str) -> float:
  return times[key]["numpy"]["median_s"] / times[key]["ours"]["median_s"]


def claims(config: dict, exp: dict, times: dict) -> list[_harness.Claim]:
  on = _row(exp, "pi = q", "constant", 1.0)
  off = _row(exp, "pi away from q", "constant", 1.0)
  unbiased = on["bias_j"] < 1e-3 and off["bias_exc"] < 1e-3
  g0, g1 = _row(exp, "pi = q", "GTD", 0.0), _row(exp, "pi = q", "GTD", 1.0)
  tradeoff = g0["variance"] < g1["variance"] and g0["bias_j"] > g1["bias_j"]
  c1, n1 = _row(exp, "pi = q", "constant", 1.0), _row(exp, "pi = q", "none", 1.0)
  gt1 = _row(exp, "pi = q", "GTD", 1.0)
  base_helps = c1["variance"] < n1["variance"]
  gtd_helps = gt1["variance"] < c1["variance"]
  curves = exp["curves"]
  small = [i for i, b in enumerate(config["budgets"]) if b <= SCARCE]

  def wins(method, other):
    diff = curves[method]["all"][:, small] - curves[other]["all"][:, small]
    mean = diff.mean(0)
    se = diff.std(0, ddof=1) / np.sqrt(diff.shape[0])
    return bool(np.all(mean > 2 * se)), mean, se

  bpgs = [m for m in config["methods"] if m.startswith("BPG")]
  best_bpg = max(bpgs, key=lambda m: curves[m]["mean"][small].mean())
  win_rf, d_rf, se_rf = wins(best_bpg, "REINFORCE")
  win_ac, d_ac, se_ac = wins(best_bpg, "actor-critic")
  fmt = lambda d, s: ", ".join(f"N={config['budgets'][i]}: {a:+.3f}+-{b:.3f}"
                               for i, a, b in zip(small, d, s))
  return [
      _harness.Claim(
          "with lambda = 1 the BPG estimator is unbiased: for grad J at pi = q, for the "
          "off-policy (excursion) gradient away from q", "unbiased (off-policy PG theorem)",
          f"relative bias {on['bias_j']:.1e} at pi = q; {off['bias_exc']:.1e} vs the "
          f"excursion gradient away from q ({off['bias_j']:.2f} vs grad J there)", unbiased,
          reason="" if unbiased else "bias above 1e-3"),
      _harness.Claim(
          "lambda < 1 trades bias for variance (GTD(lambda) baseline, pi = q)",
          "lambda trades bias for variance",
          f"lambda 0 / 1: variance {g0['variance']:.2f} / {g1['variance']:.2f}, bias "
          f"{g0['bias_j']:.2f} / {g1['bias_j']:.1e}", tradeoff,
          reason="" if tradeoff else "variance does not fall or bias does not rise"),
      _harness.Claim(
          "a baseline reduces the estimator's variance: constant vs none, GTD vs constant "
          "(lambda = 1, pi = q)", "baselines reduce variance",
          f"none {n1['variance']:.2f}, constant {c1['variance']:.2f}, GTD "
          f"{gt1['variance']:.2f}", base_helps and gtd_helps,
          reason="" if base_helps and gtd_helps else
          ("the GTD critic, fitted on noisy rewards, does not beat the constant"
           if base_helps else "the constant baseline does not reduce variance")),
      _harness.Claim(
          f"batch PG beats on-policy REINFORCE at the same scarce, noisy reward budget "
          f"(N <= {SCARCE}, noise sd {config['noise']})", "BPG better (synthetic, AMT)",
          f"{best_bpg} - REINFORCE, J: {fmt(d_rf, se_rf)}", win_rf,
          reason="" if win_rf else "difference not above 2 standard errors at every scarce "
          "budget"),
      _harness.Claim(
          f"batch PG beats online actor-critic at the same scarce, noisy reward budget "
          f"(N <= {SCARCE})", "BPG better",
          f"{best_bpg} - actor-critic, J: {fmt(d_ac, se_ac)}", win_ac,
          reason="" if win_ac else "difference not above 2 standard errors at every scarce "
          "budget"),
      _harness.Claim(
          "the estimator's weights and GTD(lambda) in one jit vs NumPy loops over sequences",
          "reported",
          f"weights {_ratio(times, 'weights'):.0f}x ({times['weights']['ours']['median_s']*1e3:.2f}"
          f" ms vs {times['weights']['numpy']['median_s']*1e3:.0f} ms), GTD "
          f"{_ratio(times, 'gtd'):.0f}x; max |diff| {times['weights']['max_abs_diff']:.1e} / "
          f"{times['gtd']['max_abs_diff']:.1e}", None),
  ]


def report(config: dict, exp: dict, times: dict) -> _harness.Report:
  bv = exp["bias_variance"]
  rows = [(r["point"], r["baseline"], r["lam"], r["bias_j"], r["bias_exc"], r["variance"])
          for r in bv["rows"]]
  pts = [(k, v["J"], v["grad_norm"], v["excursion_gap"]) for k, v in bv["points"].items()]
  curve_rows = []
  for i, n in enumerate(exp["budgets"]):
    curve_rows.append((int(n), *[f"{exp['curves'][m]['mean'][i]:.3f} +- "
                                 f"{exp['curves'][m]['se'][i]:.3f} (lr "
                                 f"{exp['curves'][m]['lr'][i]:g})" for m in config["methods"]]))
  speed = [(k, times[k]["ours"]["median_s"], times[k]["ours"]["compile_s"],
            times[k]["numpy"]["median_s"], _ratio(times, k)) for k in ("weights", "gtd")]
  tables = [
      "## Exact bias and variance of the per-sequence estimator (relative to ||grad J||)\n\n"
      + _harness.markdown_table(["point", "baseline", "lambda", "bias vs grad J",
                                 "bias vs off-policy gradient", "variance"], rows)
      + "\n\n" + _harness.markdown_table(["point", "J", "||grad J||",
                                          "||g_off - grad J|| / ||grad J||"], pts),
      f"## Expected reward J after learning vs reward budget N (J(q) = {exp['j_q']:.3f})\n\n"
      + _harness.markdown_table(["N", *config["methods"]], curve_rows),
      "## Speed\n\n" + _harness.markdown_table(
          ["part", "jit median s", "compile s", "NumPy s", "ratio"], speed),
  ]
  s = _scarce_index(config)
  c = exp["curves"]
  g0, g1 = _row(exp, "pi = q", "GTD", 0.0), _row(exp, "pi = q", "GTD", 1.0)
  p1 = bv["points"]["pi away from q"]
  bpgs = [m for m in config["methods"] if m.startswith("BPG")]
  best_bpg = max(bpgs, key=lambda m: c[m]["mean"][:s + 1].mean())
  wins = [c[best_bpg]["mean"][i] > c["REINFORCE"]["mean"][i]
          for i in range(len(exp["budgets"]))]
  crossover = (f"REINFORCE catches up from N = {exp['budgets'][wins.index(False)]}"
               if False in wins else "ahead at every budget")
  fill = {**config, "j_q": exp["j_q"], "num_seqs": exp["num_seqs"], "j_pi1": p1["J"],
          "exc_gap": p1["excursion_gap"], "ascent_steps": bv["ascent_steps"],
          "nan_runs": sum(c[m]["nan_runs"] for m in c)}
  headline = HEADLINE.format(
      mode=config["mode"], noise=config["noise"], best_bpg=best_bpg,
      small=config["budgets"][0], scarce=config["budgets"][s],
      bpg_small=c[best_bpg]["mean"][0], bpg_scarce=c[best_bpg]["mean"][s],
      rf_small=c["REINFORCE"]["mean"][0], rf_scarce=c["REINFORCE"]["mean"][s],
      ac_small=c["actor-critic"]["mean"][0], ac_scarce=c["actor-critic"]["mean"][s],
      crossover=crossover, j_q=exp["j_q"],
      bias1=_row(exp, "pi = q", "constant", 1.0)["bias_j"],
      var_ratio=g1["variance"] / g0["variance"], bias0=g0["bias_j"],
      speedup=_ratio(times, "weights"))
  return _harness.Report(tables=tables, figure=_figure(config, exp),
                         notes=NOTES.format(**fill), headline=headline)


def _figure(config: dict, exp: dict):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
  budgets = exp["budgets"]
  styles = {"BPG-C": "o-", "BPG-GTD": "s-", "REINFORCE": "^--", "actor-critic": "v--"}
  for m in config["methods"]:
    style = styles[m]
    mean, se = exp["curves"][m]["mean"], exp["curves"][m]["se"]
    axes[0].errorbar(budgets, mean, yerr=se, fmt=style, capsize=3, label=m)
  axes[0].axhline(exp["j_q"], color="gray", ls=":", label="q (start)")
  axes[0].set(xscale="log", xticks=budgets, xticklabels=[str(int(b)) for b in budgets],
              xlabel="reward budget N (scored sequences)",
              ylabel="expected reward J (exact)",
              title=f"learning from noisy rewards (sd {config['noise']})")
  axes[0].minorticks_off()
  axes[0].legend(fontsize=8)
  rows = exp["bias_variance"]["rows"]
  x = np.arange(len(LAMBDAS))
  width = 0.27
  for k, (ax, qty, title) in enumerate(((axes[1], "bias_j", "bias vs grad J (pi = q)"),
                                        (axes[2], "variance", "variance (pi = q)"))):
    for j, b in enumerate(BASELINES):
      vals = [next(r[qty] for r in rows if r["point"] == "pi = q" and r["baseline"] == b
                   and r["lam"] == lam) for lam in LAMBDAS]
      ax.bar(x + (j - 1) * width, vals, width, label=b)
    ax.set(xticks=x, xticklabels=[f"lambda={lam}" for lam in LAMBDAS], yscale="log",
           ylabel="relative to ||grad J||" + ("^2" if k else ""), title=title)
    ax.legend(fontsize=8, title="baseline")
  fig.tight_layout()
  return fig
