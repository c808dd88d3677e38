"""f-GAN Table 3: a Gaussian fitted to a two-Gaussian mixture by five f-divergences.

For each divergence D_f (KL, reverse KL, Jensen-Shannon, Jeffrey, Pearson chi^2) the exact
minimiser theta* = (mu*, sigma*) of D_f(P || N(mu, sigma^2)) is found by quadrature (float64,
trapezoid rule on a fine grid, BFGS with JAX gradients) and set beside the variational
divergence minimisation estimate theta-hat: a Gaussian sampler and a 2x64 tanh MLP critic trained
by the single-step gradient method (Algorithm 1), all five divergences at once (``vmap`` over a
``lax.switch`` on the divergence), the whole run one ``lax.scan`` under one ``jit``. The bound
F(omega-hat, theta-hat) is evaluated by quadrature with the trained critic. The cross table
evaluates every fitted Gaussian under every divergence.

The mixture is not in our notes; P = 0.33 N(-1, 0.065) + 0.67 N(2, 2) (variances) is recovered
by inverting the paper's Table 3: with it, all fifteen published theta* and D_f values are
reproduced to within 3e-4 (the claims table checks it).

Speed is compared with the loop users would otherwise write: one jitted step per divergence,
called from Python once per step.
"""

from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.optimize

from benchmarks import _harness
from tomioka_jax.generative import _fgan as fgan

PAPER = ("Nowozin, Cseke, Tomioka 2016, f-GAN: Training Generative Neural Samplers using "
         "Variational Divergence Minimization, arXiv:1606.00709")

NAMES = ("kl", "reverse_kl", "jensen_shannon", "jeffrey", "pearson")
LABELS = ("KL", "KL-rev", "JS", "Jeffrey", "Pearson")
# Table 3 of the paper: D_f(P || Q_theta*), F(omega-hat, theta-hat), mu*, mu-hat, sigma*, sigma-hat.
PAPER_TABLE = {
    "D_f": (0.2831, 0.2480, 0.1280, 0.5705, 0.6457),
    "F": (0.2801, 0.2415, 0.1226, 0.5151, 0.6379),
    "mu*": (1.0100, 1.5782, 1.3070, 1.3218, 0.5737),
    "mu_hat": (1.0335, 1.5624, 1.2854, 1.2295, 0.6157),
    "sigma*": (1.8308, 1.6319, 1.7542, 1.7034, 1.9274),
    "sigma_hat": (1.8236, 1.6403, 1.7659, 1.8087, 1.9031),
}
MIXTURE = ((0.33, -1.0, math.sqrt(0.065)), (0.67, 2.0, math.sqrt(2.0)))  # (weight, mean, std)
GRID = (-12.0, 14.0, 8001)

CONFIGS = {
    # VDM training: steps, batch, Adam's initial rate, seeds per divergence; base_steps: the
    # Python-loop baseline's timed steps.
    "smoke": {"num_steps": 50, "batch": 32, "learning_rate": 5e-3, "seeds": 1, "base_steps": 5},
    "quick": {"num_steps": 2500, "batch": 256, "learning_rate": 5e-3, "seeds": 1,
              "base_steps": 100},
    "full": {"num_steps": 20000, "batch": 1024, "learning_rate": 2e-3, "seeds": 3,
             "base_steps": 500},
}

HEADLINE = (
    "(Table 3, {mode}): exact D_f and mu* within {paper_dev:.1e} of all 15 published numbers; "
    "trained fits within {dmu:.3f} (mu) / {dsig:.3f} (sigma) of the optimum, F within "
    "{rel_f:.1%} of D_f; the trained-with-A / evaluated-with-B table is {diagonal} (the "
    "paper's own estimates have a {paper_miss:.1%} one); MNIST experiment planned")

NOTES = """\
Mixture P = 0.33 N(-1, 0.065) + 0.67 N(2, 2) (variances), recovered from Table 3 (see the first
claim). Quadrature: trapezoid rule on [{grid[0]}, {grid[1]}] with {grid[2]} points, float64.
VDM: Gaussian sampler (mu, log sigma) from (0, 0), critic 1-64-64-1 tanh, Adam (b1 = 0.5,
cosine decay from {learning_rate}), batch {batch}, {num_steps} steps of Algorithm 1 (minimax,
simultaneous updates), theta^ averaged over the last 10% of steps, {seeds} seed(s) per
divergence; F(omega^, theta^) by quadrature with the trained critic. JS is the paper's f (twice
the usual Jensen-Shannon), as in its table. Pearson uses the conjugate of f over u >= 0
(t^2/4 + t for t >= -2, -1 below), which agrees with the paper's at the optimal critic. The
paper's training length is not in our notes; the full mode runs 20k steps at batch 1024 with 3
seeds per divergence. Margin by which the diagonal wins in the exact cross table, per column:
{margins} (JS and Jeffrey fit nearly the same Gaussian, so the JS column is decided by ~5e-4 and
the VDM cross table can swap them when theta^ is off by a few hundredths; the paper's own
estimates, evaluated the same way, swap JS and Jeffrey in the Jeffrey column). Speed (reported,
not judged, so timed inside the experiment): on a shared 2-core CPU a step is compute-bound (two
64x64 tanh layers on the batch), so the single compiled scan is about as fast per step as a
Python loop of jitted steps (measured 0.7x-2.2x across runs under varying load); what it buys
is one compilation for all divergences and seeds and no host round trip per step."""


def _log_normal(x, mu, sigma):
  return -0.5 * jnp.square((x - mu) / sigma) - jnp.log(sigma) - 0.5 * math.log(2 * math.pi)


def log_p(x: jax.Array) -> jax.Array:
  """Log density of the mixture P."""
  return jax.nn.logsumexp(jnp.stack([math.log(w) + _log_normal(x, m, s) for w, m, s in MIXTURE]),
                          axis=0)


def sample_p(key: jax.Array, n: int) -> jax.Array:
  kc, kz = jax.random.split(key)
  weights, means, stds = (jnp.asarray(c) for c in zip(*MIXTURE))
  comp = jax.random.choice(kc, 2, (n,), p=weights)
  return means[comp] + stds[comp] * jax.random.normal(kz, (n,))


def _trapezoid(y: jax.Array, dx: float) -> jax.Array:
  return (jnp.sum(y) - 0.5 * (y[0] + y[-1])) * dx


def _grid():
  lo, hi, n = GRID
  return jnp.linspace(lo, hi, n), (hi - lo) / (n - 1)


def quadrature_divergence(div: fgan.FDivergence, mu, sigma) -> jax.Array:
  """D_f(P || N(mu, sigma^2)) = int q f(p/q) dx by the trapezoid rule."""
  x, dx = _grid()
  lq = _log_normal(x, mu, sigma)
  return _trapezoid(jnp.exp(lq) * div.f(jnp.exp(log_p(x) - lq)), dx)


def exact_fits(divs) -> list[tuple[float, float, float]]:
  """theta* and D_f(P || Q_theta*) per divergence: BFGS on (mu, log sigma), float64."""
  with jax.enable_x64(True):
    @jax.jit
    def value_and_grad(index, params):
      div = fgan.switch_divergence(divs, index)
      return jax.value_and_grad(lambda p: quadrature_divergence(div, p[0], jnp.exp(p[1])))(params)

    fits = []
    for i in range(len(divs)):
      def fun(p, i=i):
        v, g = value_and_grad(i, jnp.asarray(p))
        return float(v), np.asarray(g)
      res = scipy.optimize.minimize(fun, np.array([1.0, math.log(1.8)]), jac=True,
                                    method="BFGS", options={"gtol": 1e-10})
      fits.append((float(res.x[0]), float(math.exp(res.x[1])), float(res.fun)))
  return fits


# --------------------------------------------------------------------------- VDM by Algorithm 1


def init_critic(key: jax.Array, hidden: int = 64) -> dict:
  """A 1 -> hidden -> hidden -> 1 tanh MLP (the paper's critic for this experiment)."""
  k1, k2, k3 = jax.random.split(key, 3)
  glorot = jax.nn.initializers.glorot_normal()
  return {"w1": glorot(k1, (1, hidden)), "b1": jnp.zeros(hidden),
          "w2": glorot(k2, (hidden, hidden)), "b2": jnp.zeros(hidden),
          "w3": glorot(k3, (hidden, 1)), "b3": jnp.zeros(1)}


def critic_apply(omega: dict, x: jax.Array) -> jax.Array:
  h = jnp.tanh(x[:, None] @ omega["w1"] + omega["b1"][None, :])
  h = jnp.tanh(h @ omega["w2"] + omega["b2"][None, :])
  return (h @ omega["w3"])[:, 0] + omega["b3"]


def generator_apply(theta: dict, z: jax.Array) -> jax.Array:
  return theta["mu"] + jnp.exp(theta["log_sigma"]) * z


def make_train(divs, num_steps: int, batch: int, learning_rate: float):
  """``train(index, key) -> (theta-hat, omega-hat, objective trace)`` for ``divs[index]``."""
  schedule = optax.cosine_decay_schedule(learning_rate, num_steps, alpha=0.01)
  optimizer = optax.adam(schedule, b1=0.5)
  average_from = int(0.9 * num_steps)

  def train(index, key):
    div = fgan.switch_divergence(divs, index)
    step = fgan.make_fgan_step(div, generator_apply, critic_apply, optimizer, optimizer)
    k_init, k_run = jax.random.split(key)
    theta = {"mu": jnp.asarray(0.0), "log_sigma": jnp.asarray(0.0)}
    state = fgan.init_fgan_state(theta, init_critic(k_init), optimizer, optimizer)

    def body(carry, key):
      state, theta_sum = carry
      kp, kz = jax.random.split(key)
      state, metrics = step(state, sample_p(kp, batch), jax.random.normal(kz, (batch,)))
      # Polyak average of the last 10% of the generator iterates.
      w = (state.step > average_from).astype(jnp.float32)
      theta_sum = jax.tree.map(lambda s, t: s + w * t, theta_sum, state.generator_params)
      return (state, theta_sum), metrics.objective

    zeros = jax.tree.map(jnp.zeros_like, theta)
    (state, theta_sum), trace = jax.lax.scan(body, (state, zeros),
                                             jax.random.split(k_run, num_steps))
    theta_bar = jax.tree.map(lambda s: s / (num_steps - average_from), theta_sum)
    return theta_bar, state.critic_params, trace

  return train, optimizer


def bound_by_quadrature(div: fgan.FDivergence, omega: dict, theta: dict) -> jax.Array:
  """F(omega, theta) = int p g_f(V) - q f*(g_f(V)) dx with the trained critic V."""
  x, dx = _grid()
  v = critic_apply(omega, x)
  q = jnp.exp(_log_normal(x, theta["mu"], jnp.exp(theta["log_sigma"])))
  return _trapezoid(jnp.exp(log_p(x)) * div.activation(v) - q * div.f_star_of_activation(v), dx)


# --------------------------------------------------------------------------- the benchmark


def _python_loop_timing(div, optimizer, batch: int, num_steps: int) -> _harness.Timing:
  """The baseline: one divergence's jitted step, called from Python once per step."""
  step = jax.jit(fgan.make_fgan_step(div, generator_apply, critic_apply, optimizer, optimizer))
  theta = {"mu": jnp.asarray(0.0), "log_sigma": jnp.asarray(0.0)}
  state0 = fgan.init_fgan_state(theta, jax.jit(init_critic)(jax.random.key(0)), optimizer,
                                optimizer)
  sample = jax.jit(jax.vmap(lambda k: (sample_p(k, batch), jax.random.normal(k, (batch,)))))
  # One device array per step, made without per-step compilations (no unstacking of jax arrays).
  x_all, z_all = map(np.asarray, sample(jax.random.split(jax.random.key(1), num_steps)))
  data = [(jax.device_put(x), jax.device_put(z)) for x, z in zip(x_all, z_all)]

  def run():
    state = state0
    for x_real, z in data:
      state, _ = step(state, x_real, z)
    return state

  return _harness.timeit(run, repeats=3)


def experiment(config: dict) -> dict:
  """Exact fits by quadrature, the VDM fits (all divergences in one scan), the cross tables."""
  num_steps, batch, seeds = config["num_steps"], config["batch"], config["seeds"]
  divs = [fgan.divergence(n) for n in NAMES]
  k = len(divs)

  t0 = time.perf_counter()
  exact = exact_fits(divs)
  exact_s = time.perf_counter() - t0

  train, optimizer = make_train(divs, num_steps, batch, config["learning_rate"])
  index = jnp.repeat(jnp.arange(k), seeds)
  keys = jax.random.split(jax.random.key(0), k * seeds)
  # Compiled ahead of time so that the (single) training run is timed apart from compilation.
  t0 = time.perf_counter()
  train_all = jax.jit(jax.vmap(train)).lower(index, keys).compile()
  compile_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  theta_hat, omega_hat, trace = _harness.block(train_all(index, keys))
  train_s = time.perf_counter() - t0
  timing = _harness.Timing(first_call_s=compile_s + train_s, median_s=train_s, runs_s=(train_s,))

  # Per run: F by quadrature with its critic, and D_B of its Gaussian for every B.
  def evaluate(i, theta, omega):
    div = fgan.switch_divergence(divs, i)
    f_hat = bound_by_quadrature(div, omega, theta)
    sigma = jnp.exp(theta["log_sigma"])
    cross = jnp.stack([quadrature_divergence(d, theta["mu"], sigma) for d in divs])
    return f_hat, cross

  with jax.enable_x64(True):
    as64 = lambda tree: jax.tree.map(lambda a: jnp.asarray(np.asarray(a), jnp.float64), tree)
    f_hat, cross_hat = jax.jit(jax.vmap(evaluate))(index, as64(theta_hat), as64(omega_hat))
    cross_at = jax.jit(jax.vmap(  # one compilation, not one per operation
        lambda m, s: jnp.stack([quadrature_divergence(d, m, s) for d in divs])))
    cross_star = np.asarray(cross_at(jnp.asarray([e[0] for e in exact]),
                                     jnp.asarray([e[1] for e in exact])))
    # The same table at the paper's own VDM estimates (Table 3's mu^, sigma^).
    cross_paper = np.asarray(cross_at(jnp.asarray(PAPER_TABLE["mu_hat"]),
                                      jnp.asarray(PAPER_TABLE["sigma_hat"])))

  # Baseline (reported speed): one divergence's jitted step in a Python loop, per step.
  base = _python_loop_timing(divs[0], optimizer, batch, config["base_steps"])
  return {
      "exact": {"mu": np.array([e[0] for e in exact]), "sigma": np.array([e[1] for e in exact]),
                "D_f": np.array([e[2] for e in exact]), "seconds": exact_s},
      "vdm": {"mu": np.asarray(theta_hat["mu"]).reshape(k, seeds),
              "sigma": np.exp(np.asarray(theta_hat["log_sigma"])).reshape(k, seeds),
              "F": np.asarray(f_hat).reshape(k, seeds),
              "objective_trace_every_100": np.asarray(trace)[:, ::100]},
      "cross_exact": cross_star,
      "cross_vdm": np.asarray(cross_hat).reshape(k, seeds, k).mean(axis=1),
      "cross_paper_vdm": cross_paper,
      # How much the diagonal wins by in the exact table: the VDM table can only keep the
      # order where its own error (|F - D_f|, theta^ - theta*) stays below this margin.
      "cross_margins_exact": [float(np.sort(cross_star[:, j])[1] - cross_star[j, j])
                              for j in range(k)],
      "timing": {"ours": timing.as_dict(), "baseline": base.as_dict(),
                 "ours_per_step_s": timing.median_s / (num_steps * k * seeds),
                 "baseline_per_step_s": base.median_s / config["base_steps"]},
      "mixture": MIXTURE, "grid": GRID, "paper": PAPER_TABLE,
  }


def _worst_miss(m: np.ndarray) -> tuple[float, int, int]:
  """How far a diagonal entry lies above its column's minimum (relative), its column, and the
  row of that minimum: with VDM estimates the near-ties of the exact table can flip."""
  k = len(m)
  j = int(np.argmax([m[j, j] / m[:, j].min() for j in range(k)]))
  return float(m[j, j] / m[:, j].min() - 1.0), j, int(np.argmin(m[:, j]))


def _describe(miss: tuple[float, int, int]) -> str:
  rel, j, i = miss
  return ("diagonal smallest" if rel <= 0 else
          f"{LABELS[j]} column: the diagonal is {rel:.2%} above the {LABELS[i]}-trained entry")


def _fit_errors(exp: dict) -> list[tuple[float, float, float]]:
  """Per divergence: max |mu^ - mu*|, max |sigma^ - sigma*| over seeds, max |F - D_f| / D_f."""
  ex, vdm = exp["exact"], exp["vdm"]
  return [(float(np.max(np.abs(vdm["mu"][i] - ex["mu"][i]))),
           float(np.max(np.abs(vdm["sigma"][i] - ex["sigma"][i]))),
           float(np.max(np.abs(vdm["F"][i] - ex["D_f"][i])) / ex["D_f"][i]))
          for i in range(len(LABELS))]


def _paper_deviation(exp: dict) -> float:
  ex = exp["exact"]
  return float(max(np.max(np.abs(ex["mu"] - PAPER_TABLE["mu*"])),
                   np.max(np.abs(ex["sigma"] - PAPER_TABLE["sigma*"])),
                   np.max(np.abs(ex["D_f"] - PAPER_TABLE["D_f"]))))


def claims(config: dict, exp: dict, times: dict) -> list[_harness.Claim]:
  del times  # the speed is reported, not judged: measured in the experiment
  paper_dev = _paper_deviation(exp)
  out = [_harness.Claim(
      "quadrature theta*, D_f(P||Q_theta*) reproduce Table 3 (max abs deviation, 15 numbers)",
      "Table 3", f"{paper_dev:.1e}", bool(paper_dev < 2e-3),
      reason="" if paper_dev < 2e-3 else "the exact fits miss the published numbers")]
  for i, (label, (dmu, dsig, rel_f)) in enumerate(zip(LABELS, _fit_errors(exp))):
    ok = dmu <= 0.1 and dsig <= 0.1 and rel_f <= 0.1
    out.append(_harness.Claim(
        f"{label}: VDM |mu^-mu*|, |sigma^-sigma*| <= 0.1, |F-D_f|/D_f <= 10%",
        f"{abs(PAPER_TABLE['mu_hat'][i] - PAPER_TABLE['mu*'][i]):.3f}, "
        f"{abs(PAPER_TABLE['sigma_hat'][i] - PAPER_TABLE['sigma*'][i]):.3f}, "
        f"{abs(PAPER_TABLE['F'][i] - PAPER_TABLE['D_f'][i]) / PAPER_TABLE['D_f'][i]:.1%}",
        f"{dmu:.3f}, {dsig:.3f}, {rel_f:.1%}", bool(ok),
        reason="" if ok else "the trained fit is too far from the exact one"))
  k = len(LABELS)
  diag_star = all(np.argmin(exp["cross_exact"][:, j]) == j for j in range(k))
  out.append(_harness.Claim("cross table: trained with B is best under B (exact theta*)",
                            "diagonal smallest", "yes" if diag_star else "no", diag_star,
                            reason="" if diag_star else "an off-diagonal entry is smallest"))
  miss_hat, miss_paper = _worst_miss(exp["cross_vdm"]), _worst_miss(exp["cross_paper_vdm"])
  ok = miss_hat[0] <= max(miss_paper[0], 0.0)
  out.append(_harness.Claim(
      "cross table at VDM theta-hat: trained with B is best under B, up to near-ties no larger "
      "than those of the paper's own estimates (D_B at Table 3's mu^, sigma^)",
      _describe(miss_paper), _describe(miss_hat), bool(ok),
      reason="" if ok else "a larger near-tie than the paper's own estimates"))
  t = exp["timing"]
  out.append(_harness.Claim(
      "speed: one scan over 5 vmapped divergences vs a Python loop of jitted steps",
      "-", f"{t['baseline_per_step_s'] / t['ours_per_step_s']:.1f}x per (step x divergence); "
      f"compile {t['ours']['compile_s']:.0f} s once vs {t['baseline']['compile_s']:.0f} s per "
      "divergence", None))
  return out


def report(config: dict, exp: dict, times: dict) -> _harness.Report:
  del times
  k = len(LABELS)
  ex, vdm = exp["exact"], exp["vdm"]
  mu_hat, sigma_hat = vdm["mu"].mean(axis=1), vdm["sigma"].mean(axis=1)
  rows = [("D_f(P||Q_theta*)", *PAPER_TABLE["D_f"], *ex["D_f"]),
          ("F(omega^, theta^)", *PAPER_TABLE["F"], *vdm["F"].mean(axis=1)),
          ("mu*", *PAPER_TABLE["mu*"], *ex["mu"]),
          ("mu^", *PAPER_TABLE["mu_hat"], *mu_hat),
          ("sigma*", *PAPER_TABLE["sigma*"], *ex["sigma"]),
          ("sigma^", *PAPER_TABLE["sigma_hat"], *sigma_hat)]
  header = ["quantity", *(f"paper {l}" for l in LABELS), *(f"ours {l}" for l in LABELS)]
  table3 = "### Table 3 (paper beside ours)\n\n" + _harness.markdown_table(header, rows)

  def cross_table(title, m):
    return (f"### {title}\n\nRows: trained with; columns: D_B(P || Q) evaluated with.\n\n"
            + _harness.markdown_table(["trained \\ evaluated", *LABELS],
                                      [(LABELS[i], *m[i]) for i in range(k)]))

  t = exp["timing"]
  timing_table = "### Speed\n\n" + _harness.markdown_table(
      ["implementation", "time per (step x divergence)", "compile (s)"],
      [("ours: vmap over divergences and seeds, one lax.scan, one jit",
        f"{t['ours_per_step_s'] * 1e3:.3f} ms", t["ours"]["compile_s"]),
       ("baseline: jitted step of one divergence (KL), Python loop",
        f"{t['baseline_per_step_s'] * 1e3:.3f} ms", t["baseline"]["compile_s"]),
       ("exact fits by quadrature (5 x BFGS, total)", f"{ex['seconds']:.2f} s", "-")])
  errors = np.array(_fit_errors(exp))
  miss_hat, miss_paper = _worst_miss(exp["cross_vdm"]), _worst_miss(exp["cross_paper_vdm"])
  margins = ", ".join(f"{l} {m:.1e}" for l, m in zip(LABELS, exp["cross_margins_exact"]))
  return _harness.Report(
      tables=[table3, cross_table("Cross table, exact theta*", exp["cross_exact"]),
              cross_table("Cross table, VDM theta^", exp["cross_vdm"]),
              cross_table("Cross table at the paper's VDM theta^ (Table 3's mu^, sigma^)",
                          exp["cross_paper_vdm"]), timing_table],
      figure=_figure(ex["mu"], ex["sigma"], mu_hat, sigma_hat),
      notes=NOTES.format(grid=GRID, margins=margins, **config),
      headline=HEADLINE.format(
          mode=config["mode"], paper_dev=_paper_deviation(exp), dmu=errors[:, 0].max(),
          dsig=errors[:, 1].max(), rel_f=errors[:, 2].max(), paper_miss=max(miss_paper[0], 0.0),
          diagonal=("diagonal" if miss_hat[0] <= 0 else
                    f"diagonal up to a {miss_hat[0]:.2%} near-tie")))


def _figure(mu_s, sigma_s, mu_hat, sigma_hat):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  x = np.linspace(-4.0, 7.0, 600)
  p = np.exp(np.asarray(log_p(jnp.asarray(x))))
  fig, axes = plt.subplots(1, len(LABELS), figsize=(3.2 * len(LABELS), 2.8), sharey=True)
  for i, (ax, label) in enumerate(zip(axes, LABELS)):
    ax.fill_between(x, p, color="0.85", label="P (mixture)")
    for m, s, style, name in ((mu_s[i], sigma_s[i], "--", "exact theta*"),
                              (mu_hat[i], sigma_hat[i], "-", "VDM theta^")):
      ax.plot(x, np.exp(-0.5 * ((x - m) / s) ** 2) / (s * math.sqrt(2 * math.pi)), style,
              label=name)
    ax.set_title(label)
    ax.set_xlabel("x")
  axes[0].set_ylabel("density")
  axes[0].legend(fontsize=7, loc="upper right")
  fig.suptitle("Gaussian fits to a two-Gaussian mixture (f-GAN Table 3)")
  fig.tight_layout()
  return fig
