"""HAT: Hessian-aware training against parameter bit-flips (Pranto et al., arXiv 2504.01933).

Run: ``jaxhw run hat --preset quick`` (a few minutes on 2 CPU cores). An MLP 784-32-10 (ReLU, 25,450 float32
parameters) is trained on the vendored 5k MNIST subset (4,500 train / 500 val) with the same seed, optimizer and
budget by five methods: plain cross-entropy, weight decay (L2 5e-4), gradient-norm penalty (beta 0.01), SAM
(rho 0.05) and HAT (truncated Hutchinson trace penalty, lambda picked on the validation split from the spec's
grid). For each: clean test accuracy (10k test images), Hessian trace (Hutchinson, 100 probes, 1,000 test
images), top eigenvalue, training step time vs plain, a single-bit sweep over all 32 bits of a stratified sample
of parameters on 1,000 test images (rank-one suffix update, 95 % CIs): catastrophic bits (RAD >= 0.9), erratic
parameters (a bit with RAD > 0.1), the RAD histogram and counts per bit position; and the int8 progressive bit
search attack (flips to bring accuracy under 20 %) beside random int8 flips. ``full`` sweeps every parameter
exhaustively (and keeps the study on MNIST; the CIFAR-10 ResNet-18 part of the issue is not implemented here).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from jaxhw import faults as F
from jaxhw import hessian as H
from jaxhw.data import load_mnist, train_val_split
from jaxhw.metrics import batched_accuracy, cross_entropy, write_json
from jaxhw.models import mlp_apply, mlp_init
from jaxhw.report import Table, write_study_report
from jaxhw.train import TrainConfig, train

# Paper figures (HAT spec section 4, read off the authors' plots, +-10 %): LeNet/MNIST 95-100 % RAD bin.
PAPER_CATASTROPHIC_PLAIN = 7.3e3
PAPER_CATASTROPHIC_HAT = 4.45e3
PAPER_REDUCTION = (0.20, 0.50)
METHODS = ("plain", "weight_decay", "grad_norm", "sam", "hat")


@dataclasses.dataclass(frozen=True)
class DataConfig:
  val_size: int = 500            # held out of the 5k training subset (lambda selection)
  test_size: int = 10000         # clean accuracy
  sweep_images: int = 1000       # first test images used by the sweep and the attack's accuracy
  trace_images: int = 1000       # test images for Tr(H) and lambda_max


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  sizes: tuple[int, ...] = (784, 32, 10)


@dataclasses.dataclass(frozen=True)
class MethodConfig:
  methods: tuple[str, ...] = METHODS
  weight_decay: float = 5e-4
  grad_norm_beta: float = 0.01
  sam_rho: float = 0.05
  hat_lams: tuple[float, ...] = (1e-4, 1e-3, 1e-2)   # spec grid; largest with val acc >= plain - tol is kept
  hat_val_tol: float = 0.005
  hat_probes: int = 2
  hat_top_p: float = 0.5
  hat_trunc: str = "probe_top_p"
  hat_layers: tuple[str, ...] = ()                    # () = all leaves


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  sweep_params: int = 2000       # stratified sample of parameters, all bits each; 0 = exhaustive
  sweep_bits: str = "all"
  trace_probes: int = 100
  eig_iters: int = 50
  attack_seeds: int = 2
  attack_iters: int = 60
  attack_threshold: float = 0.20
  random_draws: int = 20


@dataclasses.dataclass(frozen=True)
class HATStudyConfig:
  data: DataConfig = DataConfig()
  model: ModelConfig = ModelConfig()
  methods: MethodConfig = MethodConfig()
  train: TrainConfig = TrainConfig(optimizer="adam", lr=1e-3, batch_size=128, epochs=20, seed=0)
  eval: EvalConfig = EvalConfig()
  seeds: tuple[int, ...] = (0,)


def get_config(preset: str = "quick") -> HATStudyConfig:
  """Presets: `smoke` (seconds, for tests), `quick` (minutes on 2 CPU cores), `full` (exhaustive sweep)."""
  base = HATStudyConfig()
  if preset == "quick":
    return base
  if preset == "smoke":
    return dataclasses.replace(
        base, data=DataConfig(val_size=500, test_size=1000, sweep_images=300, trace_images=200),
        methods=dataclasses.replace(base.methods, hat_lams=(1e-2,)),
        train=dataclasses.replace(base.train, epochs=1),
        eval=EvalConfig(sweep_params=48, trace_probes=8, eig_iters=10, attack_seeds=1, attack_iters=5,
                        random_draws=3))
  if preset == "full":
    return dataclasses.replace(base, data=dataclasses.replace(base.data, sweep_images=10000),
                               eval=dataclasses.replace(base.eval, sweep_params=0, attack_seeds=5,
                                                        attack_iters=100), seeds=(0, 1, 2))
  raise ValueError(f"preset={preset!r}; allowed: 'smoke', 'quick', 'full'")


def _loss_fns(config: HATStudyConfig, lam: float):
  """Trainer loss per method (the HAT penalty is a loss term; SAM/weight decay live in the optimizer)."""
  mc = config.methods

  def ce(params, batch):
    return cross_entropy(mlp_apply(params, batch[0]), batch[1])

  def plain(params, batch, rng, step):
    return ce(params, batch), {}

  def grad_norm(params, batch, rng, step):
    loss, g = jax.value_and_grad(ce)(params, batch)
    gn = sum(jnp.sum(a * a) for a in jax.tree.leaves(g))
    return loss + mc.grad_norm_beta * gn, {"grad_norm_sq": gn}

  hat = H.hat_loss(ce, lam=lam, probes=mc.hat_probes, top_p=mc.hat_top_p, trunc=mc.hat_trunc,
                   layers=list(mc.hat_layers) or None,
                   logits_fn=lambda p, b: mlp_apply(p, b[0]))
  return {"plain": plain, "weight_decay": plain, "grad_norm": grad_norm, "sam": plain, "hat": hat}


def _train_method(method, config, lam, params0, data, seed):
  tc = dataclasses.replace(config.train, seed=seed)
  if method == "weight_decay":
    tc = dataclasses.replace(tc, weight_decay=config.methods.weight_decay)
  if method == "sam":
    tc = dataclasses.replace(tc, optimizer="sam", sam_rho=config.methods.sam_rho)
  loss_fn = _loss_fns(config, lam)[method]
  return train(loss_fn, params0, data, tc, desc=method)


def _hessian_fns(config, xh, yh):
  """Jitted Tr(H) and lambda_max with params and key as arguments (compiled once for all methods)."""
  ec = config.eval

  def trace(p, key):
    f = lambda q: cross_entropy(mlp_apply(q, xh), yh)  # noqa: E731
    return H.hutchinson_trace(key, f, p, ec.trace_probes, chunk=min(25, ec.trace_probes))

  def eig(p, key):
    f = lambda q: cross_entropy(mlp_apply(q, xh), yh)  # noqa: E731
    return H.top_eigenvalues(key, f, p, 1, max_iters=ec.eig_iters)

  return jax.jit(trace), jax.jit(eig)


def _analyse(params, config, xs, ys, xt, yt, hfns, ev, seed, quiet):
  """Sweep, Hessian and attack figures of one trained model."""
  ec = config.eval
  out = {}
  tr = hfns[0](params, jax.random.key(1000 + seed))
  out["hessian_trace"] = float(tr.mean)
  out["hessian_trace_se"] = float(tr.stderr)
  eig = hfns[1](params, jax.random.key(2000 + seed))
  out["lambda_max"] = float(eig.eigenvalues[0])
  t0 = time.perf_counter()
  if ec.sweep_params > 0:
    s = F.sampled_sweep(mlp_apply, params, xs, ys, num_params=ec.sweep_params, seed=seed, bits=ec.sweep_bits,
                        structure="mlp", with_loss=False, quiet=quiet)
    cat, err, v10, nfin = s.catastrophic, s.erratic, s.vulnerable_10, s.n_nonfinite
    hist, per_bit, res, total = s.histogram, s.per_bit, s.result, s.total_flips
  else:
    res = F.single_bit_sweep(mlp_apply, params, xs, ys, bits=ec.sweep_bits, structure="mlp", with_loss=False,
                             quiet=quiet)
    c = F.catastrophic_bits(res.rad)
    cat = {"estimate": c, "lo": c, "hi": c, "se": 0.0}
    e = F.erratic_params(res.rad.reshape(-1, len(F.resolve_bits(ec.sweep_bits, jnp.float32))))
    err = {"estimate": e, "lo": e, "hi": e, "se": 0.0}
    v = int(np.sum(res.rad > 0.1))
    v10 = {"estimate": v, "lo": v, "hi": v, "se": 0.0}
    nf = int(res.nonfinite.sum())
    nfin = {"estimate": nf, "lo": nf, "hi": nf, "se": 0.0}
    hist, per_bit, total = F.rad_histogram(res.rad), F.counts_per_bit(res.rad, res.flips.bit), len(res.rad)
  out["sweep_s"] = time.perf_counter() - t0
  out["sweep_flips_evaluated"] = int(len(res.rad))
  out["sweep_population"] = int(total)
  out["sweep_clean_accuracy"] = res.clean_accuracy
  out["catastrophic"] = cat
  out["erratic"] = err
  out["vulnerable_10"] = v10
  out["nonfinite"] = nfin
  out["histogram"] = hist
  out["per_bit"] = per_bit
  n_params = sum(int(np.size(a)) for a in jax.tree.leaves(params))
  out["erratic_fraction"] = err["estimate"] / n_params
  # Bit-flip attack on int8 weights.
  flips_to, curves, rand_acc = [], [], []
  for a in range(ec.attack_seeds):
    rng = np.random.default_rng(10_000 * seed + a)
    pick = rng.choice(len(xt), 128, replace=False)
    r = F.bit_flip_attack(mlp_apply, params, xt[pick], yt[pick], eval_fn=ev, iterations=ec.attack_iters,
                          stop_accuracy=ec.attack_threshold)
    ft = F.flips_to_accuracy(r, ec.attack_threshold)
    flips_to.append(ft)
    curves.append((r.num_flips.tolist(), r.accuracy.tolist()))
    n = int(r.num_flips[-1])
    rand_acc.append(float(np.mean(F.random_int8_flips(params, n, eval_fn=ev, draws=ec.random_draws, seed=a))))
  ok = [v for v in flips_to if v is not None]
  out["attack_flips_to_20pct"] = float(np.mean(ok)) if len(ok) == len(flips_to) else None
  out["attack_flips_each"] = flips_to
  out["attack_curves"] = curves
  out["random_flip_accuracy"] = float(np.mean(rand_acc))
  return out


def run(config: HATStudyConfig, workdir: Path, *, quiet: bool = True) -> dict:
  """Trains the five methods, analyses each, writes summary.json, plots and report.md."""
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  t_all = time.perf_counter()
  for m in config.methods.methods:
    if m not in METHODS:
      raise ValueError(f"methods contains {m!r}; allowed: {list(METHODS)}")
  x5k, y5k = load_mnist("train")
  xt, yt = load_mnist("test")
  xt, yt = xt[: config.data.test_size], yt[: config.data.test_size]
  xs, ys = jnp.asarray(xt[: config.data.sweep_images]), jnp.asarray(yt[: config.data.sweep_images])
  xh, yh = jnp.asarray(xt[: config.data.trace_images]), jnp.asarray(yt[: config.data.trace_images])
  apply_jit = jax.jit(mlp_apply)
  hfns = _hessian_fns(config, xh, yh)
  ev_jit = jax.jit(lambda p, xx, yy: jnp.mean(jnp.argmax(mlp_apply(p, xx), -1) == yy))
  ev = lambda p: ev_jit(p, xs, ys)  # noqa: E731
  per_seed = []
  lam_log = []
  for seed in config.seeds:
    x, y, xv, yv = train_val_split(x5k, y5k, config.data.val_size, seed=seed)
    params0 = mlp_init(jax.random.key(seed), config.model.sizes)
    rows = {}
    for method in config.methods.methods:
      if method == "hat":
        cands = []
        for lam in sorted(config.methods.hat_lams):
          r = _train_method("hat", config, lam, params0, (x, y), seed)
          cands.append((lam, r, batched_accuracy(apply_jit, r.params, xv, yv)))
        base_val = rows["plain"]["val_accuracy"] if "plain" in rows else -1.0
        ok = [c for c in cands if c[2] >= base_val - config.methods.hat_val_tol]
        lam, r, val = (ok or cands[:1])[-1]
        lam_log.append({"seed": seed, "grid": [(c[0], c[2]) for c in cands], "chosen": lam, "plain_val": base_val})
      else:
        lam = 0.0
        r = _train_method(method, config, 0.0, params0, (x, y), seed)
        val = batched_accuracy(apply_jit, r.params, xv, yv)
      row = {"method": method, "lam": lam, "val_accuracy": val, "train_wall_s": r.wall_s,
             "step_ms": 1e3 * r.step_time_s,
             "clean_accuracy": batched_accuracy(apply_jit, r.params, xt, yt)}
      row.update(_analyse(r.params, config, xs, ys, jnp.asarray(xt[config.data.sweep_images:]),
                          jnp.asarray(yt[config.data.sweep_images:]), hfns, ev, seed, quiet))
      rows[method] = row
    plain_ms = rows["plain"]["step_ms"] if "plain" in rows else float("nan")
    for row in rows.values():
      row["train_time_ratio"] = row["step_ms"] / plain_ms
    per_seed.append(rows)

  def agg(method, key):
    vals = [s[method][key] for s in per_seed]
    if any(v is None for v in vals):
      return None
    return float(np.mean(vals))

  summary_rows = []
  for method in config.methods.methods:
    cat_est = [s[method]["catastrophic"]["estimate"] for s in per_seed]
    lo = [s[method]["catastrophic"]["lo"] for s in per_seed]
    hi = [s[method]["catastrophic"]["hi"] for s in per_seed]
    summary_rows.append({
        "method": method,
        "clean_accuracy": agg(method, "clean_accuracy"),
        "hessian_trace": agg(method, "hessian_trace"),
        "lambda_max": agg(method, "lambda_max"),
        "catastrophic_bits": float(np.mean(cat_est)),
        "catastrophic_bits_ci": [float(np.mean(lo)), float(np.mean(hi))],
        "erratic_params": float(np.mean([s[method]["erratic"]["estimate"] for s in per_seed])),
        "erratic_params_ci": [float(np.mean([s[method]["erratic"]["lo"] for s in per_seed])),
                              float(np.mean([s[method]["erratic"]["hi"] for s in per_seed]))],
        "erratic_fraction": agg(method, "erratic_fraction"),
        "bits_rad_gt_10pct": float(np.mean([s[method]["vulnerable_10"]["estimate"] for s in per_seed])),
        "nonfinite_flips": float(np.mean([s[method]["nonfinite"]["estimate"] for s in per_seed])),
        "attack_flips_to_20pct": agg(method, "attack_flips_to_20pct"),
        "random_flip_accuracy": agg(method, "random_flip_accuracy"),
        "train_time_ratio": agg(method, "train_time_ratio"),
        "lam": agg(method, "lam"),
        "sweep_s": agg(method, "sweep_s"),
        "clean_accuracy_std": float(np.std([s[method]["clean_accuracy"] for s in per_seed])),
        "catastrophic_bits_std": float(np.std(cat_est)),
    })
  by = {r["method"]: r for r in summary_rows}
  reduction = None
  if "plain" in by and "hat" in by and by["plain"]["catastrophic_bits"] > 0:
    reduction = 1.0 - by["hat"]["catastrophic_bits"] / by["plain"]["catastrophic_bits"]
  n_params = sum(int(np.prod((a, b))) + b for a, b in zip(config.model.sizes[:-1], config.model.sizes[1:]))
  summary = {
      "rows": summary_rows,
      "catastrophic_reduction": reduction,
      "goal": {"reduction_min": 0.20, "accuracy_within_points": 1.0},
      "goal_met": None,
      "paper": {"catastrophic_plain_lenet": PAPER_CATASTROPHIC_PLAIN, "catastrophic_hat_lenet":
                PAPER_CATASTROPHIC_HAT, "reduction_range": list(PAPER_REDUCTION)},
      "lam_selection": lam_log,
      "seeds": list(config.seeds),
      "n_params": n_params,
      "per_seed": [{m: {k: v for k, v in r.items() if k not in ("attack_curves",)} for m, r in s.items()}
                   for s in per_seed],
      "wall_s": None,
  }
  if reduction is not None:
    summary["goal_met"] = bool(reduction >= 0.20
                               and by["hat"]["clean_accuracy"] >= by["plain"]["clean_accuracy"] - 0.01
                               and by["hat"]["hessian_trace"] < by["plain"]["hessian_trace"])
  plots = _plots(workdir, per_seed[0], config)
  summary["wall_s"] = time.perf_counter() - t_all
  write_json(workdir / "summary.json", summary)
  _report(workdir, config, summary, plots, n_params)
  return summary


def _plots(workdir: Path, rows: dict, config: HATStudyConfig) -> list[str]:
  from jaxhw.faults import HIST_LABELS
  names = []
  fig, ax = plt.subplots(figsize=(10, 4))
  w = 0.8 / max(1, len(rows))
  for k, (m, r) in enumerate(rows.items()):
    counts = np.asarray([r["histogram"][lab] for lab in HIST_LABELS])
    ax.bar(np.arange(len(HIST_LABELS)) + k * w, np.maximum(counts, 1e-1), width=w, label=m)
  ax.set_yscale("log")
  ax.set_xticks(np.arange(len(HIST_LABELS)) + 0.4, HIST_LABELS, rotation=60, fontsize=7)
  ax.set(xlabel="RAD bin (%)", ylabel="flips (estimated population count)",
         title=f"RAD histogram per method (seed {config.seeds[0]})")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(workdir / "rad_histogram.png", dpi=100)
  plt.close(fig)
  names.append("rad_histogram.png")

  fig, ax = plt.subplots(figsize=(10, 4))
  for k, (m, r) in enumerate(rows.items()):
    ax.bar(np.arange(32) + k * w, r["per_bit"], width=w, label=m)
  ax.set(xlabel="bit position (0 = LSB, 31 = sign, 30 = exponent MSB)", ylabel="catastrophic flips (est.)",
         title="Catastrophic flips (RAD >= 90 %) per bit position", yscale="symlog")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(workdir / "per_bit.png", dpi=100)
  plt.close(fig)
  names.append("per_bit.png")

  fig, ax = plt.subplots(figsize=(7, 4))
  for m, r in rows.items():
    for j, (nf, acc) in enumerate(r["attack_curves"]):
      ax.plot(nf, acc, marker=".", color=f"C{list(rows).index(m)}", label=m if j == 0 else None)
  ax.axhline(config.eval.attack_threshold, color="gray", ls="--", lw=0.8)
  ax.set(xlabel="committed int8 bit flips (progressive bit search)", ylabel="test accuracy",
         title="Accuracy vs attack flips")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(workdir / "attack.png", dpi=100)
  plt.close(fig)
  names.append("attack.png")
  return names


def _fmt_ci(ci):
  return f"[{ci[0]:,.0f}, {ci[1]:,.0f}]"


def _report(workdir, config, summary, plots, n_params):
  rows = summary["rows"]
  by = {r["method"]: r for r in rows}
  plain_cat = by.get("plain", {}).get("catastrophic_bits")
  tab = []
  for r in rows:
    d = (100 * (r["catastrophic_bits"] / plain_cat - 1)) if plain_cat else None
    tab.append([r["method"], r["clean_accuracy"], r["hessian_trace"], r["lambda_max"], r["catastrophic_bits"],
                _fmt_ci(r["catastrophic_bits_ci"]), d, r["erratic_params"], _fmt_ci(r["erratic_params_ci"]),
                r["bits_rad_gt_10pct"], r["nonfinite_flips"], r["attack_flips_to_20pct"],
                r["random_flip_accuracy"], r["train_time_ratio"]])
  ec = config.eval
  sweep_desc = (f"bit set '{ec.sweep_bits}' (32 bits) of a stratified sample of {ec.sweep_params:,} parameters (of "
                f"{n_params:,})" if ec.sweep_params else f"exhaustive, bit set '{ec.sweep_bits}' of all {n_params:,} parameters")
  red = summary["catastrophic_reduction"]
  notes = []
  if red is not None:
    h, p = by["hat"], by["plain"]
    notes.append(
        f"Measured: HAT changes catastrophic bits by {-100 * red:+.1f} % vs plain (paper: -20 to -50 %; LeNet "
        f"95-100 % bin {PAPER_CATASTROPHIC_PLAIN:,.0f} -> {PAPER_CATASTROPHIC_HAT:,.0f}, -39 %). Clean accuracy "
        f"{100 * h['clean_accuracy']:.2f} % vs {100 * p['clean_accuracy']:.2f} %; Tr(H) {h['hessian_trace']:.3g} vs "
        f"{p['hessian_trace']:.3g}. Goal (>= 20 % fewer, accuracy within 1 pt, lower trace): "
        f"{'met' if summary['goal_met'] else 'NOT met'}.")
    if h["catastrophic_bits_ci"][0] <= p["catastrophic_bits_ci"][1] and p["catastrophic_bits_ci"][0] <= \
        h["catastrophic_bits_ci"][1]:
      notes.append(f"The 95 % CIs of HAT and plain overlap ({_fmt_ci(h['catastrophic_bits_ci'])} vs "
                   f"{_fmt_ci(p['catastrophic_bits_ci'])}): with {len(config.seeds)} seed(s) and this sample the "
                   "reduction is not statistically resolved; catastrophic flips are rare here (tens out of "
                   f"~{32 * n_params:,}), most of them in the fully enumerated small leaves.")
    if not summary["goal_met"]:
      notes.append("Where it falls short: the catastrophic count is driven by exponent-MSB (bit 30) flips that "
                   "multiply a weight by 2^128; whether such a flip is catastrophic depends on which hidden unit "
                   "it saturates, a far-from-quadratic effect that a lower Hessian trace does not control at this "
                   "scale. The measured figures are reported as they are.")
  notes.append(f"Scale: MNIST, {config.train.epochs} epochs on 4,500 vendored train images (paper: full MNIST, "
               f"LeNet); MLP {'-'.join(map(str, config.model.sizes))}; CPU; seeds {list(config.seeds)}. Counts "
               "are population estimates from the stratified sample with normal 95 % CIs; the paper's counts "
               "are for a larger LeNet, so compare relative changes, not absolute counts.")
  notes.append(f"lambda selection (val accuracy per lambda, plain val accuracy): {summary['lam_selection']}.")
  notes.append("All methods use Adam (lr 1e-3): the trainer's SAM wraps Adam, so Adam is used for every method "
               "(the spec's RMSProp is a secondary-source reading). Train-time ratio = median step time / plain.")
  notes.append("Attack: int8 symmetric per-tensor quantization of the weight matrices, progressive bit search on "
               f"128 test images outside the sweep set, {ec.attack_seeds} attack seed(s), cap {ec.attack_iters} "
               "iterations; '-' means accuracy never fell under 20 % within the cap. Random-flip accuracy: the "
               "same number of random int8 bit flips, mean of draws.")
  write_study_report(
      workdir, study="hat", title="HAT: Hessian-aware training vs parameter bit-flips",
      setup={"data": f"MNIST, 5k vendored train images (4,500 train / {config.data.val_size} val), "
                     f"{config.data.test_size:,} test images; sweep on {config.data.sweep_images:,}",
             "model": f"MLP {'-'.join(map(str, config.model.sizes))} ReLU ({n_params:,} params)",
             "training": f"{config.train.optimizer}, lr {config.train.lr}, batch {config.train.batch_size}, "
                         f"{config.train.epochs} epochs",
             "sweep": sweep_desc, "seeds": str(list(config.seeds)),
             "wall_s": f"{summary['wall_s']:.0f}"},
      tables=[Table("Bit-flip resilience per method (catastrophic = single flip with RAD >= 90 %)",
                    ["method", "clean acc", "Tr(H)", "lambda_max", "#catastrophic bits", "95% CI",
                     "delta % vs plain", "erratic params", "95% CI", "#bits RAD>10%", "#non-finite",
                     "BFA flips to 20%", "random-flip acc @ same #", "step time x plain"], tab),
              Table("Paper vs ours (catastrophic-bit reduction, HAT vs plain)", ["", "paper", "jaxhw"],
                    [["reduction", "20-50 % (LeNet/MNIST -39 %)", "-" if red is None else f"{100 * red:.1f} %"]])],
      plots=plots, notes=notes)
