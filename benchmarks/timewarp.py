"""Timewarp: a learned time-coarsened proposal for Metropolis-Hastings against molecular dynamics.

Paper: Klein, Foong, Fjelde, Mlodozeniec, Brockschmidt, Nowozin, Noé, Tomioka, "Timewarp:
Transferable Acceleration of Molecular Dynamics by Learning Time-Coarsened Dynamics" (NeurIPS
2023); reference code microsoft/timewarp. A conditional normalizing flow ``p(x_{t+tau} | x_t)``
over positions and auxiliary velocities, trained by likelihood on MD pairs, proposes large
steps that Metropolis-Hastings accepts with the Boltzmann target, so the chain samples the exact
equilibrium law; the exploration mode drops the MH test (rejecting only energy jumps) to find
metastable states fast. The paper's headline: effective samples per second of wall-clock time
on the slowest TICA component, Timewarp over MD, about 33x on an unseen dipeptide; the README's
FAQ adds that for many peptides there is no wall-clock speed-up.

Ours, at CPU scale:

* (a) a double-well toy (the JAX toy of ``science.timewarp``): train the flow on Langevin
  pairs, run the MH chain, KL of its histogram to the exact Boltzmann density, acceptance;
* (b) alanine dipeptide in implicit solvent (AMBER99SB-ILDN + OBC1 GBSA, 310 K, the
  reference's MD protocol, OpenMM ``Reference`` platform, one thread): a long MD ground truth
  (cached under ``~/.cache/tomioka_jax/timewarp_md``), pairs at lag ``tau`` from its first
  half, a small flow, MH chains with OpenMM energies through ``jax.pure_callback`` and the
  exploration mode; acceptance, JS divergence of the phi/psi histograms to the whole MD, and
  ESS per second on TIC0 (heavy-atom distances + sin/cos of phi, psi, omega) for both.

The ESS per second is split as the harness asks: ESS per frame / per chain step from the
experiment, seconds per MD frame and per sampler step from ``timings`` (a short MD run, and the
sampler at the same sizes with an untrained flow: its cost does not depend on the weights).
"""

from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks import _harness
from tomioka_jax.representation import tib
from tomioka_jax.science import timewarp

PAPER = ("Klein, Foong, Fjelde, Mlodozeniec, Brockschmidt, Nowozin, Noé, Tomioka 2023, "
         "Timewarp: Transferable Acceleration of Molecular Dynamics by Learning "
         "Time-Coarsened Dynamics (NeurIPS)")
NAME = "timewarp"

CONFIGS = {
    # toy: the double well (training pairs, flow steps, chain steps, histogram bins);
    # ad: alanine dipeptide (None: not run). md_frames of the cached implicit-solvent MD
    # (frame = spacing steps of 0.5 fs), the TICA lag and Timewarp's lag tau in frames, the
    # fraction of the MD whose pairs train the flow, flow steps and batch, chains x steps of MH
    # and of exploration, Ramachandran bins; timing_*: the short runs that time MD and sampler.
    "smoke": {"toy": {"pairs": 2000, "train_steps": 60, "batch": 128, "chain_steps": 300,
                      "bins": 30},
              "ad": None, "seed": 0},
    "quick": {"toy": {"pairs": 20000, "train_steps": 1500, "batch": 256, "chain_steps": 5000,
                      "bins": 40},
              "ad": {"md_frames": 8000, "spacing": 1000, "tica_lag": 10, "lag": 10,
                     "train_frac": 0.5, "train_steps": 3000, "batch": 64, "chains": 4,
                     "chain_steps": 400, "explore_steps": 200, "bins": 36,
                     "timing_md_frames": 20, "timing_steps": 20},
              "seed": 0},
    "full": {"toy": {"pairs": 50000, "train_steps": 5000, "batch": 256, "chain_steps": 20000,
                     "bins": 40},
             "ad": {"md_frames": 20000, "spacing": 1000, "tica_lag": 10, "lag": 10,
                    "train_frac": 0.5, "train_steps": 6000, "batch": 64, "chains": 8,
                    "chain_steps": 1500, "explore_steps": 1000, "bins": 36,
                    "timing_md_frames": 40, "timing_steps": 40},
             "seed": 0},
}
SOLVENT = "implicit"
TEMPERATURE = 310.0


def _ad_molecule():
  return timewarp.alanine_dipeptide(SOLVENT)


def _md(molecule, cfg: dict):
  """The cached MD ground truth (the first call runs it: ~40 s per 1000 frames)."""
  return timewarp.simulate_md(molecule, cfg["md_frames"], spacing=cfg["spacing"],
                               burn_in_steps=20_000, seed=0, cache_dir="default",
                               chunk_frames=1000)


def _dihedral_quads(molecule) -> np.ndarray:
  return np.array([molecule.phi_atoms, molecule.psi_atoms, *molecule.omega_atoms])


def _features(molecule, positions) -> np.ndarray:
  return np.asarray(timewarp.tica_features(positions, molecule.heavy_atoms,
                                           _dihedral_quads(molecule)))


def _angles(molecule, positions) -> np.ndarray:
  return np.asarray(timewarp.backbone_dihedrals(positions, molecule.phi_atoms,
                                                molecule.psi_atoms))


def _ess_fraction(series: np.ndarray) -> float:
  """ESS per sample of one or several ``(m, N)`` series (ESS summed over series)."""
  s = np.atleast_2d(np.asarray(series, np.float64))
  return float(np.sum(np.asarray(timewarp.effective_sample_size(s)))) / s.size


# ---- (a) the double-well dimer ------------------------------------------------------------------

TOY_LAG, TOY_SPACING, TOY_DT, TOY_FRICTION, TOY_CHAINS = 5, 50, 0.002, 5.0, 32
TOY_EDGES = np.linspace(0.05, 1.05, 41)


def _toy_flow(num_atom_types: int, scale: float, seed: int):
  return timewarp.TimewarpFlow(num_atom_types, init_log_scale=math.log(scale),
                               lengthscales=(0.1, 0.3, 0.6, 1.2), rngs=nnx.Rngs(seed))


def _bond_hist(d: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
  h, _ = np.histogram(d, bins=TOY_EDGES, weights=weights)
  return h / max(h.sum(), 1e-300)


def _toy(cfg: dict, seed: int) -> dict:
  system = timewarp.double_well_dimer()
  frames = cfg["pairs"] // TOY_CHAINS + TOY_LAG
  starts = np.broadcast_to(system.positions, (TOY_CHAINS, 2, 3))
  traj = np.asarray(timewarp.simulate_langevin(
      system.energy, starts, jax.random.key(seed), masses=system.masses, kT=system.kT,
      friction=TOY_FRICTION, timestep=TOY_DT, num_frames=frames, spacing=TOY_SPACING,
      burn_in=500))
  x0, x1 = timewarp.training_pairs(traj, TOY_LAG)
  t0 = time.perf_counter()
  flow, metrics = timewarp.train_flow(_toy_flow(1, 0.1, seed), x0, x1, jax.random.key(seed + 1),
                                      atom_types=system.atom_types, steps=cfg["train_steps"],
                                      batch_size=cfg["batch"])
  train_s = time.perf_counter() - t0
  chains = 8
  sample = timewarp.make_chain_sampler(flow, system.energy, atom_types=system.atom_types,
                                          num_steps=cfg["chain_steps"] // chains, kT=system.kT,
                                          num_proposals=4)
  res = sample(traj[:chains, -1], jax.random.key(seed + 2))
  d_chain = np.asarray(timewarp.dimer_distance(res.positions)).ravel()
  w = np.asarray(res.weights).ravel().astype(np.float64)
  exact = timewarp.dimer_distance_density(system, TOY_EDGES)
  exact = exact / exact.sum()
  p_chain = _bond_hist(d_chain, w)
  d_md = np.asarray(timewarp.dimer_distance(traj)).ravel()
  p_md = _bond_hist(d_md)
  kl = float(tib.kl_divergence_discrete(p_chain, exact))
  kl_md = float(tib.kl_divergence_discrete(p_md, exact))
  return {"kl_chain": kl, "kl_langevin": kl_md, "acceptance": float(np.mean(res.acceptance_rate)),
          "mh_steps": int(w.sum()), "langevin_frames": int(d_md.size),
          "p_chain": p_chain, "p_langevin": p_md, "p_exact": exact,
          "nll": metrics["nll_per_atom"][::max(1, cfg["train_steps"] // 100)],
          "train_s": train_s}


# ---- (b) alanine dipeptide ----------------------------------------------------------------------

AD_LENGTHSCALES = (0.1, 0.2, 0.5, 1.0)  # nm
AD_PROPOSALS = 8


def _ad_flow(molecule, seed: int):
  return timewarp.TimewarpFlow(molecule.num_atom_types, init_log_scale=math.log(0.05),
                               lengthscales=AD_LENGTHSCALES, rngs=nnx.Rngs(seed))


def _tic0(model, feats: np.ndarray) -> np.ndarray:
  return np.asarray(tib.tica_transform(model, feats))[..., 0]


def _ad(cfg: dict, seed: int) -> dict:
  molecule = _ad_molecule()
  md = _md(molecule, cfg)
  x = md.positions
  n_frames = x.shape[0]
  train_end = int(cfg["train_frac"] * n_frames)
  # Ground truth: angles, TICA on all of the MD, MD's own finite-sample JS (first vs second half).
  ang_md = _angles(molecule, x)
  feats_md = _features(molecule, x)
  tica = timewarp.fit_tica(feats_md, cfg["tica_lag"])
  tic_md = _tic0(tica, feats_md)
  half = n_frames // 2
  js_md_halves = float(timewarp.ramachandran_js_divergence(ang_md[:half], ang_md[half:],
                                                           cfg["bins"]))
  # Timewarp: pairs at lag tau from the first part, a small flow, MH and exploration chains.
  x0, x1 = timewarp.training_pairs(x[:train_end], cfg["lag"], molecule)
  t0 = time.perf_counter()
  flow, metrics = timewarp.train_flow(_ad_flow(molecule, seed), x0, x1, jax.random.key(seed + 1),
                                      atom_types=molecule.atom_types, steps=cfg["train_steps"],
                                      batch_size=cfg["batch"])
  train_s = time.perf_counter() - t0
  evaluator = timewarp.EnergyEvaluator(molecule)
  energy_fn = timewarp.jax_energy_fn(evaluator)
  kT = timewarp.thermal_energy(TEMPERATURE)
  held_out = x[train_end:]
  starts = held_out[np.linspace(0, held_out.shape[0] - 1, cfg["chains"]).astype(int)]
  mh = timewarp.make_chain_sampler(flow, energy_fn, atom_types=molecule.atom_types,
                                      num_steps=cfg["chain_steps"], kT=kT,
                                      num_proposals=AD_PROPOSALS)(starts, jax.random.key(seed + 2))
  ex = timewarp.make_chain_sampler(flow, energy_fn, atom_types=molecule.atom_types,
                                      num_steps=cfg["explore_steps"], num_proposals=AD_PROPOSALS,
                                      mode="explore")(starts, jax.random.key(seed + 3))
  # Proposal quality: U(y) - U(x) of fresh proposals from held-out states.
  v = jax.random.normal(jax.random.key(seed + 4), (64, molecule.num_atoms, 3))
  from_x = np.repeat(starts[:1], 64, axis=0)
  y, _ = flow.sample(jax.random.key(seed + 5), molecule.atom_types, from_x, v)
  du = evaluator(np.asarray(y, np.float64), nonfinite="inf") - evaluator(starts[0])
  # Chains -> sequential MH chains -> angles, TIC0, ESS.
  pos, wts = np.asarray(mh.positions), np.asarray(mh.weights)
  expanded = [timewarp.expand_chain(pos[c], wts[c]) for c in range(pos.shape[0])]
  ang_mh = np.concatenate([_angles(molecule, e) for e in expanded])
  tic_mh = [_tic0(tica, _features(molecule, e)) for e in expanded]
  # Each chain starts from an MD frame: count the effective samples it adds beyond its start
  # (ESS - 1; 0 for a chain that never moved).
  ess_mh = float(np.sum([max(float(timewarp.effective_sample_size(t)) - 1.0, 0.0)
                         for t in tic_mh]))
  ang_ex = _angles(molecule, np.asarray(ex.positions).reshape(-1, molecule.num_atoms, 3))
  rama = {k: np.asarray(timewarp.ramachandran_histogram(a, cfg["bins"]))
          for k, a in (("md", ang_md), ("mh", ang_mh), ("explore", ang_ex))}
  occupied = rama["md"] > 1e-3
  tic_edges = np.linspace(tic_md.min(), tic_md.max(), 41)
  return {
      "md_frames": n_frames, "frame_ps": md.frame_time_ps, "md_wall_s": md.wall_seconds,
      "md_temperature": float(md.kinetic_temperature.mean()),
      "tau_ps": cfg["lag"] * md.frame_time_ps, "train_pairs": int(x0.shape[0]),
      "train_s": train_s, "nll": metrics["nll_per_atom"][::max(1, cfg["train_steps"] // 100)],
      "nll_final": float(np.mean(metrics["nll_per_atom"][-50:])),
      "acceptance": float(np.mean(mh.acceptance_rate)),
      "moves": int(np.asarray(mh.accepted).sum()), "mh_steps": int(wts.sum()),
      "explore_acceptance": float(np.mean(ex.acceptance_rate)),
      "explore_moves": int(np.asarray(ex.accepted).sum()),
      "proposal_du_quantiles": np.percentile(du, [10, 50, 90]).tolist(),
      "js_mh": float(tib.js_divergence(rama["mh"], rama["md"])),
      "js_explore": float(tib.js_divergence(rama["explore"], rama["md"])),
      "js_md_halves": js_md_halves,
      "coverage_explore": float(np.mean((rama["explore"] > 0)[occupied])),
      "coverage_mh": float(np.mean((rama["mh"] > 0)[occupied])),
      "ess_md_per_frame": _ess_fraction(tic_md),
      "ess_mh_total": ess_mh, "chains": cfg["chains"], "chain_steps": cfg["chain_steps"],
      "tica_eigenvalues": np.asarray(tica.eigenvalues[:3]).tolist(),
      "tic0_psi_corr": float(np.corrcoef(tic_md, np.cos(ang_md[:, 1]))[0, 1]),
      "rama": rama,
      "tic_edges": tic_edges,
      "tic_hist_md": np.histogram(tic_md, tic_edges)[0],
      "tic_hist_mh": np.histogram(np.concatenate(tic_mh), tic_edges)[0],
  }


def experiment(config: dict) -> dict:
  t0 = time.perf_counter()
  out = {"toy": _toy(config["toy"], config["seed"])}
  if config["ad"] is not None:
    out["ad"] = _ad(config["ad"], config["seed"])
  out["run_s"] = time.perf_counter() - t0
  return out


def timings(config: dict) -> dict:
  """Seconds per MD frame (a short uncached run, same protocol) and per sampler iteration of
  all chains at once (an untrained flow of the same size: the cost does not depend on the
  weights), and per OpenMM energy."""
  cfg = config["ad"]
  if cfg is None:
    return {}
  molecule = _ad_molecule()
  md = timewarp.simulate_md(molecule, cfg["timing_md_frames"], spacing=cfg["spacing"],
                          burn_in_steps=0, seed=1)
  evaluator = timewarp.EnergyEvaluator(molecule)
  conf = np.repeat(molecule.positions[None], 200, axis=0)
  t_energy = _harness.timeit(lambda: evaluator(conf), repeats=3)
  sample = timewarp.make_chain_sampler(
      _ad_flow(molecule, 0), timewarp.jax_energy_fn(evaluator), atom_types=molecule.atom_types,
      num_steps=cfg["timing_steps"], kT=timewarp.thermal_energy(TEMPERATURE),
      num_proposals=AD_PROPOSALS)
  starts = np.repeat(molecule.positions[None], cfg["chains"], axis=0).astype(np.float32)
  t_chain = _harness.timeit(lambda: sample(starts, jax.random.key(0)).positions, repeats=3)
  return {"md_s_per_frame": md.wall_seconds / md.num_frames,
          "energy_s": t_energy.median_s / conf.shape[0],
          "sampler_s_per_iteration": t_chain.median_s / cfg["timing_steps"],
          "sampler_compile_s": t_chain.compile_s}


# ---- claims and report --------------------------------------------------------------------------

TOY_KL_BOUND = 0.02  # nats


def _speeds(exp: dict, times: dict) -> dict | None:
  """ESS per second on TIC0: MD (frames) and Timewarp MH (all chains batched)."""
  if "ad" not in exp or not times:
    return None
  ad = exp["ad"]
  md = ad["ess_md_per_frame"] / times["md_s_per_frame"]
  # All chains advance together: one iteration of the batched sampler moves every chain.
  tw = ad["ess_mh_total"] / (ad["chain_steps"] * times["sampler_s_per_iteration"])
  return {"md": md, "tw": tw, "ratio": tw / md}


def claims(config: dict, exp: dict, times: dict) -> list[_harness.Claim]:
  toy = exp["toy"]
  smoke = config["mode"] == "smoke"
  out = [_harness.Claim(
      f"Double-well dimer: Timewarp MH samples the exact bond-length density (KL(chain || "
      f"exact) < {TOY_KL_BOUND} nats)", "exact in the limit (MH)",
      f"KL {toy['kl_chain']:.4f} (Langevin data {toy['kl_langevin']:.4f}), acceptance "
      f"{toy['acceptance']:.3f}", toy["kl_chain"] < TOY_KL_BOUND,
      reason="" if toy["kl_chain"] < TOY_KL_BOUND else f"KL {toy['kl_chain']:.4f}",
      judged=not smoke)]
  if smoke:
    out[0].reason = "smoke trains 60 steps"
  ad = exp.get("ad")
  texts = [
      ("Alanine dipeptide: Timewarp MH acceptance rate (OpenMM energies, implicit solvent)",
       "not stated for AD (MH speed-ups on AD [mem])"),
      ("Alanine dipeptide: phi/psi histogram of Timewarp MH matches long MD (JS <= max(0.05, "
       "3 x MD half-vs-half JS))", "Ramachandran plots match MD [mem]"),
      ("Speed-up: Timewarp ESS/s on TIC0 over MD's, same CPU (> 1)",
       "~33x on the unseen dipeptide HT [3p]; speed-ups on AD [mem]"),
      ("README FAQ: no wall-clock speed-up for many peptides", "no speed-up for many"),
      ("Exploration: fraction of MD's Ramachandran states (p > 1e-3 cells) visited",
       "finds all metastable states faster than MD (4AA) [mem]"),
  ]
  if ad is None:
    for text, paper in texts:
      out.append(_harness.Claim(text, paper, "not run in smoke (no OpenMM MD)", None,
                                reason="smoke runs the toy only", judged=False))
    return out
  s = _speeds(exp, times)
  bound = max(0.05, 3 * ad["js_md_halves"])
  ratio = s["ratio"] if s else float("nan")
  out += [
      _harness.Claim(texts[0][0], texts[0][1],
                     f"{ad['acceptance']:.4f} ({ad['moves']} moves in {ad['mh_steps']} MH steps; "
                     f"median proposal dU {ad['proposal_du_quantiles'][1]:.3g} kJ/mol)", None),
      _harness.Claim(texts[1][0], texts[1][1],
                     f"JS {ad['js_mh']:.3f} (bound {bound:.3f}; MD halves "
                     f"{ad['js_md_halves']:.3f})",
                     ad["js_mh"] <= bound,
                     reason="" if ad["js_mh"] <= bound else
                     "the chains barely leave their starts"),
      _harness.Claim(texts[2][0], texts[2][1],
                     f"{ratio:.3g}x (Timewarp {s['tw']:.3g} vs MD {s['md']:.3g} ESS/s)"
                     if s else "no timings", (ratio > 1) if s else None,
                     reason="" if s and ratio > 1 else "MD wins on wall clock at this scale"
                     if ad["moves"] else "MD wins: no Timewarp proposal was accepted"),
      _harness.Claim(texts[3][0], texts[3][1],
                     f"alanine dipeptide, our flow: {ratio:.3g}x" if s else "no timings", None,
                     reason="consistent: MD wins here" if s and ratio <= 1 else ""),
      _harness.Claim(texts[4][0], texts[4][1],
                     f"exploration {ad['coverage_explore']:.2f}, MH {ad['coverage_mh']:.2f} "
                     f"({ad['explore_moves']} exploration moves)", None),
  ]
  return out


HEADLINE = (
    "({mode}) double-well dimer: MH with the trained flow gives KL {toy_kl:.4f} nats to the "
    "exact bond-length density at acceptance {toy_acc:.2f}.{ad_text}")
AD_HEADLINE = (
    " Alanine dipeptide (implicit solvent, {md_ns:.1f} ns of MD, tau = {tau_ps:g} ps, a "
    "{train_steps}-step CPU flow): MH acceptance {acc:.4f}, phi/psi JS to MD {js:.3f} (MD "
    "halves {js_md:.3f}); TIC0 ESS/s Timewarp {tw:.3g} vs MD {md:.3g}, a ratio of {ratio:.3g}x "
    "(paper: ~33x on an unseen dipeptide; the reference's FAQ: no wall-clock speed-up for many "
    "peptides).")

NOTES = """\
(a) Double-well dimer (``double_well_dimer``: barrier 5 kJ/mol, kT 2.5 kJ/mol): {toy_frames}
Langevin frames (BAOAB, friction {toy_friction}/ps, dt {toy_dt} ps, a frame every {toy_spacing}
steps), pairs at lag {toy_lag} frames, the flow trained {toy_steps} steps ({toy_train_s:.0f} s),
8 MH chains with 4 proposals per iteration ({toy_mh_steps} sequential MH steps). KL of the
weighted chain histogram of the bond length to the exact density (quadrature of d^2
exp(-U/kT)) over 40 bins: {toy_kl:.4f} nats (the Langevin training data: {toy_kl_md:.4f}).
{ad_notes}"""

AD_NOTES = """\
(b) Alanine dipeptide: AMBER99SB-ILDN with OBC1 implicit solvent (``amber99_obc.xml``), no
constraints, 310 K, LangevinMiddle friction 0.3/ps, 0.5 fs (the reference's MD), OpenMM's
Reference platform on one thread (faster than its CPU platform at 22 atoms). Ground truth:
{md_frames} frames, one every {frame_ps} ps ({md_ns:.1f} ns; mean kinetic temperature
{md_temp:.1f} K), run once and cached; its integration took {md_wall:.0f} s
({md_s_frame:.3g} s per frame in ``timings``: {md_ns_day:.0f} ns/day). TICA (lag
{tica_lag_ps:g} ps) on the 45 heavy-atom distances and sin/cos of phi, psi, omega; TIC0's
correlation with cos(psi) is {tic_psi:.2f} (no phi transition in this MD: the slow process
it sees is alpha_R <-> beta). MD's ESS on TIC0: {ess_md:.4f} per frame.

Timewarp: {pairs} training pairs at tau = {tau_ps:g} ps from the first {train_pct:.0f}% of the
MD, ``TimewarpFlow`` with 4 couplings, 2 kernel-attention layers, d_model 32, lengthscales
{lengthscales} nm ({train_steps} Adam steps, batch {batch}, {train_s:.0f} s; final NLL per atom
{nll:.2f}, the reference's AD-1 model reaches -6.56 on validation after far longer training).
{chains} MH chains from held-out MD frames, {chain_steps} iterations of {k} parallel proposals
({mh_steps} sequential MH steps), OpenMM energies through ``jax.pure_callback``
({energy_us:.0f} us per conformation): acceptance {acc:.4f}. Fresh proposals from a held-out
state have U(y) - U(x) of {du10:.3g} / {du50:.3g} / {du90:.3g} kJ/mol (10/50/90%): the
small flow has not learned the stiff bonds (unconstrained C-H bonds fluctuate by ~0.003 nm,
the proposals by far more), so nearly every proposal is rejected, and exploration (dU < 300
kJ/mol) accepts {ex_acc:.4f}.

Speed: ESS/s = ESS per step x steps per second; sampler {tw_s_iter:.3g} s per iteration of all
{chains} chains (compiled once, {compile_s:.1f} s). Timewarp {tw_ess_s:.3g} ESS/s vs MD
{md_ess_s:.3g} ESS/s on TIC0: {ratio:.3g}x. A chain that never moves counts as one effective
sample, its start (an MD frame), which we do not credit to Timewarp: each chain's ESS counts
minus one, so chains that never move give 0 ESS/s. Where MD
wins, we say so: at CPU scale, with a flow trained for minutes, MD wins by far on wall clock,
in line with the reference's FAQ ("no wall-clock speed-up for many peptides"); the paper's
33x needs the reference's model (8 couplings, d_model 128, 6 heads) trained for ~10^5 steps
on GPUs. Total run time {run_s:.0f} s."""


def report(config: dict, exp: dict, times: dict) -> _harness.Report:
  toy = exp["toy"]
  tcfg = config["toy"]
  fields = {"mode": config["mode"], "toy_kl": toy["kl_chain"], "toy_acc": toy["acceptance"],
            "toy_kl_md": toy["kl_langevin"], "toy_frames": toy["langevin_frames"],
            "toy_friction": TOY_FRICTION, "toy_dt": TOY_DT, "toy_spacing": TOY_SPACING,
            "toy_lag": TOY_LAG, "toy_steps": tcfg["train_steps"], "toy_train_s": toy["train_s"],
            "toy_mh_steps": toy["mh_steps"]}
  rows = [("double-well dimer", "KL(chain || exact) bond length", toy["kl_chain"]),
          ("double-well dimer", "KL(Langevin data || exact)", toy["kl_langevin"]),
          ("double-well dimer", "MH acceptance", toy["acceptance"])]
  ad_text, ad_notes = "", ""
  if "ad" in exp:
    ad, cfg = exp["ad"], config["ad"]
    s = _speeds(exp, times) or {"md": float("nan"), "tw": float("nan"), "ratio": float("nan")}
    md_ns = ad["md_frames"] * ad["frame_ps"] / 1000
    af = {"md_ns": md_ns, "tau_ps": ad["tau_ps"], "train_steps": cfg["train_steps"],
          "acc": ad["acceptance"], "js": ad["js_mh"], "js_md": ad["js_md_halves"],
          "tw": s["tw"], "md": s["md"], "ratio": s["ratio"]}
    ad_text = AD_HEADLINE.format(**af)
    md_s_frame = times.get("md_s_per_frame", float("nan"))
    ad_notes = AD_NOTES.format(
        **af, md_frames=ad["md_frames"], frame_ps=ad["frame_ps"], md_temp=ad["md_temperature"],
        md_wall=ad["md_wall_s"], md_s_frame=md_s_frame,
        md_ns_day=ad["frame_ps"] / 1000 / md_s_frame * 86400,
        tica_lag_ps=cfg["tica_lag"] * ad["frame_ps"], tic_psi=ad["tic0_psi_corr"],
        ess_md=ad["ess_md_per_frame"], pairs=ad["train_pairs"],
        train_pct=100 * cfg["train_frac"], lengthscales=AD_LENGTHSCALES, batch=cfg["batch"],
        train_s=ad["train_s"], nll=ad["nll_final"], chains=cfg["chains"],
        chain_steps=cfg["chain_steps"], k=AD_PROPOSALS, mh_steps=ad["mh_steps"],
        energy_us=1e6 * times.get("energy_s", float("nan")),
        du10=ad["proposal_du_quantiles"][0], du50=ad["proposal_du_quantiles"][1],
        du90=ad["proposal_du_quantiles"][2], ex_acc=ad["explore_acceptance"],
        tw_s_iter=times.get("sampler_s_per_iteration", float("nan")),
        compile_s=times.get("sampler_compile_s", float("nan")), tw_ess_s=s["tw"],
        md_ess_s=s["md"], run_s=exp["run_s"])
    rows += [("alanine dipeptide", "MH acceptance", ad["acceptance"]),
             ("alanine dipeptide", "exploration acceptance", ad["explore_acceptance"]),
             ("alanine dipeptide", "JS(MH, MD) phi/psi", ad["js_mh"]),
             ("alanine dipeptide", "JS(exploration, MD) phi/psi", ad["js_explore"]),
             ("alanine dipeptide", "JS(MD first half, MD second half)", ad["js_md_halves"]),
             ("alanine dipeptide", "TIC0 ESS per MD frame", ad["ess_md_per_frame"]),
             ("alanine dipeptide", "TIC0 ESS of all MH chains (beyond their starts)",
              ad["ess_mh_total"]),
             ("alanine dipeptide", "MD ESS/s", s["md"]),
             ("alanine dipeptide", "Timewarp ESS/s", s["tw"]),
             ("alanine dipeptide", "speed-up (Timewarp / MD)", s["ratio"])]
  tables = ["## Measurements\n\n" + _harness.markdown_table(["system", "quantity", "value"],
                                                            rows)]
  if times:
    tables.append("## Timings (this CPU)\n\n" + _harness.markdown_table(
        ["what", "seconds"],
        [("MD, per frame (" + str(config["ad"]["spacing"]) + " steps of 0.5 fs)",
          times["md_s_per_frame"]),
         ("OpenMM energy, per conformation", times["energy_s"]),
         ("Timewarp sampler, per iteration of all chains", times["sampler_s_per_iteration"])]))
  fields["ad_text"] = ad_text
  fields["ad_notes"] = ad_notes
  return _harness.Report(tables=tables, figure=_figure(config, exp),
                         notes=NOTES.format(**fields), headline=HEADLINE.format(**fields))


def _figure(config: dict, exp: dict):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  ad = exp.get("ad")
  fig, axes = plt.subplots(2, 3, figsize=(15, 9)) if ad else plt.subplots(1, 2, figsize=(10, 4))
  axes = np.atleast_1d(axes).ravel()
  toy = exp["toy"]
  centers = 0.5 * (TOY_EDGES[1:] + TOY_EDGES[:-1])
  ax = axes[0]
  ax.plot(centers, toy["p_exact"], "k-", label="exact")
  ax.plot(centers, toy["p_langevin"], "b--", label="Langevin data")
  ax.plot(centers, toy["p_chain"], "r.-", label=f"Timewarp MH (acc. {toy['acceptance']:.2f})")
  ax.set_xlabel("bond length d (nm)")
  ax.set_ylabel("probability per bin")
  ax.set_title("double-well dimer")
  ax.legend(fontsize=8)
  ax = axes[1]
  ax.plot(np.asarray(toy["nll"]), label="double well")
  if ad:
    ax.plot(np.asarray(ad["nll"]), label="alanine dipeptide")
  ax.set_xlabel("training step (x1/100 of the run)")
  ax.set_ylabel("NLL per atom")
  ax.set_title("flow training")
  ax.legend(fontsize=8)
  if ad:
    kT = timewarp.thermal_energy(TEMPERATURE)
    ext = [-180, 180, -180, 180]
    for ax, key, title in ((axes[2], "md", "MD"), (axes[3], "mh", "Timewarp MH"),
                           (axes[4], "explore", "Timewarp exploration")):
      f = np.asarray(timewarp.free_energy_surface(np.asarray(ad["rama"][key]), kT))
      im = ax.imshow(np.where(np.isfinite(f), f, np.nan).T, origin="lower", extent=ext,
                     cmap="viridis", vmax=25)
      ax.set_xlabel("phi (deg)")
      ax.set_ylabel("psi (deg)")
      ax.set_title(f"{title}: free energy (kJ/mol)")
      fig.colorbar(im, ax=ax, fraction=0.046)
    ax = axes[5]
    edges = np.asarray(ad["tic_edges"])
    mid = 0.5 * (edges[1:] + edges[:-1])
    for key, label, style in (("tic_hist_md", "MD", "k-"), ("tic_hist_mh", "Timewarp MH", "r.-")):
      h = np.asarray(ad[key], np.float64)
      f = np.asarray(timewarp.free_energy_surface(h / h.sum(), kT))
      ax.plot(mid, np.where(np.isfinite(f), f, np.nan), style, label=label)
    ax.set_xlabel("TIC0")
    ax.set_ylabel("free energy (kJ/mol)")
    ax.set_title("free energy along TIC0")
    ax.legend(fontsize=8)
  fig.suptitle(f"Timewarp ({config['mode']})")
  fig.tight_layout()
  return fig
