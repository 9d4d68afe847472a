"""GBO: per-layer input pulse counts for binary MLPs on a noisy memristive crossbar.

Run: ``jaxhw run gbo --preset quick`` (a few minutes on 2 CPU cores). Two binary MLPs are pretrained noise-free on
the vendored MNIST subset and read on the simulated crossbar (fast mode, additive per-read Gaussian noise): the
spec's 784-512-256-128-10 (``spec``) and a tapered 784-256-64-32-10 (``tapered``), whose narrow later layers are
cheap and sensitive. In both the three hidden layers are binary crossbar layers and the classifier is full
precision. The model is the Flax `BinaryMLP`; the crossbar attaches from outside by params-tree path. sigma_ref is
found per net by bisection on the validation split (uniform T = 1 falls half-way to chance); the noise grid is
{0} U sigma_ref x {0.25, 0.5, 1, 2, 4}. Methods at every noisy sigma and average budget T_bar in {2, 4, 8}: uniform
T; GBO, whose search (continuous T on the budget simplex, so sum_l R_l T_l = B_E throughout; run in `jaxhw.train`,
one compilation for all searches) is reported raw (its point rounded to candidates within the budget), after the
greedy repair, and with a fallback to uniform when uniform scores better on the noisy validation split; and the
closed-form sqrt(S/R) allocation. The test-set Monte Carlo draws each chip's read noise once and reuses it for
every allocation and sigma (common random numbers).

``full`` is the spec's full protocol (the paper's setting): CIFAR-10 (45,000 train / 5,000 val / 10,000 test,
through the tfds adapter; ``tfds build cifar10`` first, else the run stops at once with that command), the VGG-9
binary net (128C3-128C3-MP-256C3-256C3-MP-512C3-512C3-MP-1024-1024-10; full-precision first conv and classifier,
the rest binary crossbar layers), 200 pretraining epochs, GBO 10 epochs per (sigma, T_bar), 10 chips:
``jaxhw run gbo --preset full`` (an accelerator; hours).

References:
  Kim, Kim, Kim, Kim, Panda, "Gradient-based Bit Encoding Optimization for Noise-Robust Binary Memristive
  Crossbar", DATE 2022, arXiv:2201.01479.
"""
from __future__ import annotations

import csv
import dataclasses
import itertools
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax
from matplotlib.figure import Figure

from jaxhw.config import check_preset
from jaxhw.crossbar import (
  CrossbarConfig,
  GBOConfig,
  aggregate_noise_std,
  clip_latent,
  closed_form_allocation,
  evaluate_chips,
  fisher_sensitivity,
  gbo,
  inference_cost,
  layer_cost,
  layer_shapes,
  noise_objectives,
  program_weights,
  read_noise,
  uniform_allocation,
)
from jaxhw.crossbar.chips import fixed_noise_evaluator
from jaxhw.data.mnist import MnistConfig, load_mnist_splits
from jaxhw.metrics import append_jsonl, write_json
from jaxhw.models.binary_net import BinaryCNN, BinaryMLP, binary_layer_paths
from jaxhw.report import Table, write_study_report
from jaxhw.train import TrainConfig, make_optimizer, total_steps, train

PAPER_GAIN_POINTS = (5.0, 40.0)  # abstract of arXiv:2201.01479: "+5-40 %" under severe noise (baseline unnamed)


@dataclasses.dataclass(frozen=True)
class DataConfig:
  dataset: str = "mnist"        # mnist | cifar10 (tfds adapter, prepared data)
  mnist: MnistConfig = MnistConfig(val_size=500)   # the shared MNIST cut (val held out of the 5k subset)
  cifar_val_size: int = 5000    # cifar10: held out of the training set
  binarize: float = 0.5         # pixel threshold for the binary first layer (MLP); <0: keep raw input


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  kind: str = "mlp"             # mlp | cnn
  # MLPs run side by side (name, sizes): the tapered net (cheap, narrow later crossbar layers) and the spec's MLP
  nets: tuple[tuple[str, tuple[int, ...]], ...] = (("tapered", (784, 256, 64, 32, 10)),
                                                   ("spec", (784, 512, 256, 128, 10)))
  channels: tuple[int, ...] = (128, 256, 512)
  dense: tuple[int, ...] = (1024,)

  def __post_init__(self):
    if self.kind not in ("mlp", "cnn"):
      raise ValueError(f"model.kind must be 'mlp' or 'cnn', got {self.kind!r}")


@dataclasses.dataclass(frozen=True)
class HardwareConfig:
  tile_rows: int = 128
  tile_cols: int = 128
  mapping: str = "differential"
  sigma_ref: float = 0.0                       # 0: bisection on the validation split
  sigma_multipliers: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)   # the spec's grid
  ref_chips: int = 3                           # Monte-Carlo chips per bisection step
  bisection_steps: int = 12


@dataclasses.dataclass(frozen=True)
class SearchConfig:
  uniform: tuple[int, ...] = (1, 2, 4, 8, 16)
  budgets: tuple[int, ...] = (2, 4, 8)         # GBO / closed form at these T_bar (T_bar = 1 is forced uniform)
  candidates: tuple[int, ...] = (1, 2, 3, 4, 6, 8, 12, 16)
  relaxation: str = "continuous"   # on the budget simplex; "gumbel": ST Gumbel-softmax, equality multiplier
  per_sigma: bool = True       # search at every noise level (full protocol); False: once per budget
  sigma_multiplier: float = 1.0  # with per_sigma=False: search at sigma_ref x this
  epochs: int = 3
  batch_size: int = 100
  lr: float = 0.1              # Adam on the search logits (spec 0.05: the noisy search then stops short)
  dual_lr: float = 0.1         # gumbel only: step of the equality multiplier
  validate: bool = True        # keep uniform if it beats the search result on the noisy validation split
  validate_chips: int = 8
  tau_start: float = 1.0
  tau_end: float = 0.1
  sens_batches: int = 8
  sens_batch_size: int = 128


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  chips: int = 5                 # Monte-Carlo noise seeds (chips x fresh read keys)
  batch_size: int = 5000         # test images per forward pass
  reuse_draws: bool = True       # draw each chip's read noise once and reuse it for every allocation and sigma
  exhaustive_chips: int = 4     # >0: at sigma >= 2 sigma_ref, score every budget-maximal allocation on the noisy
                                # validation split with this many chips and test the best (a reference for the
                                # search; 3 to 6 crossbar layers only)
  check_size: int = 1000         # images for the fast vs per-pulse consistency check (0: skip)
  bn_images: int = 0             # training images for the population BN statistics (0: all, in one pass)


@dataclasses.dataclass(frozen=True)
class Config:
  data: DataConfig = DataConfig()
  model: ModelConfig = ModelConfig()
  hardware: HardwareConfig = HardwareConfig()
  train: TrainConfig = TrainConfig(lr=0.03, schedule="cosine", batch_size=100, epochs=30, log_every=100)
  search: SearchConfig = SearchConfig()
  eval: EvalConfig = EvalConfig()
  seed: int = 0


def get_config(preset: str = "quick") -> Config:
  """Presets: ``smoke`` (seconds), ``quick`` (MNIST, both MLPs, a few minutes on 2 CPU cores), ``full`` (the paper's
  setting: CIFAR-10, the spec's VGG-9 BNN, 200 epochs; needs ``tfds build cifar10``)."""
  check_preset(preset)
  if preset == "smoke":
    return Config(data=DataConfig(mnist=MnistConfig(train_size=800, test_size=400, val_size=200)),
                  model=ModelConfig(nets=(("tapered", (784, 64, 32, 10)),)),
                  hardware=HardwareConfig(ref_chips=1, bisection_steps=5),
                  train=TrainConfig(lr=0.03, schedule="cosine", batch_size=100, epochs=2, log_every=8),
                  search=SearchConfig(uniform=(1, 2), budgets=(2,), epochs=1, sens_batches=1, batch_size=200,
                                      per_sigma=False, validate_chips=2, sigma_multiplier=2.0),
                  eval=EvalConfig(chips=2, batch_size=200, check_size=0, exhaustive_chips=1))
  if preset == "quick":
    return Config()
  return Config(data=DataConfig(dataset="cifar10", binarize=-1.0),
                model=ModelConfig(kind="cnn", nets=(("vgg9", ()),), channels=(128, 256, 512), dense=(1024, 1024)),
                hardware=HardwareConfig(ref_chips=5, sigma_multipliers=(0.25, 0.5, 1.0, 2.0, 4.0)),
                train=TrainConfig(lr=1e-3, schedule="cosine", batch_size=128, epochs=200, log_every=100,
                                  checkpoint_every=2000),
                search=SearchConfig(uniform=(1, 2, 4, 8, 16), budgets=(2, 4, 8), epochs=10, batch_size=128),
                eval=EvalConfig(chips=10, batch_size=1000, bn_images=10000, reuse_draws=False, exhaustive_chips=0))


# ----------------------------------------------------------------------------------------------- data / model


def _load(config: Config):
  d = config.data
  if d.dataset == "mnist":
    s = load_mnist_splits(d.mnist, config.seed)
    x_tr, y_tr, x_val, y_val, xt, yt = s
  elif d.dataset == "cifar10":
    from jaxhw.data import tfds_arrays
    x, y = tfds_arrays("cifar10", "train")
    xt, yt = tfds_arrays("cifar10", "test")
    x, xt = x.astype(np.float32) / 255.0, xt.astype(np.float32) / 255.0
    y, yt = y.astype(np.int32), yt.astype(np.int32)
    perm = np.random.default_rng(config.seed).permutation(len(x))
    n_val = d.cifar_val_size
    x_val, y_val, x_tr, y_tr = x[perm[:n_val]], y[perm[:n_val]], x[perm[n_val:]], y[perm[n_val:]]
  else:
    raise ValueError(f"data.dataset must be 'mnist' or 'cifar10', got {d.dataset!r}")
  return (np.asarray(x_tr, np.float32), np.asarray(y_tr, np.int32), np.asarray(x_val, np.float32),
          np.asarray(y_val, np.int32), np.asarray(xt, np.float32), np.asarray(yt, np.int32))


def _model(config: Config, sizes, binarize: float | None):
  m = config.model
  if m.kind == "mlp":
    return BinaryMLP(features=tuple(sizes[1:-1]), num_classes=sizes[-1], binarize_input=binarize)
  return BinaryCNN(channels=m.channels, dense=m.dense, binarize_input=binarize)


def _population_bn(model, variables, x):
  """Exact population BN statistics over `x`: one training-mode pass with momentum 0 sets every layer's running
  statistics to its statistics over the whole of `x`, each layer normalised by its predecessors' (the same as
  computing them layer by layer)."""
  _, upd = jax.jit(lambda v, xx: model.clone(bn_momentum=0.0).apply(v, xx, train=True, mutable=["batch_stats"]))(
      variables, jnp.asarray(x))
  return {**variables, "batch_stats": upd["batch_stats"]}


def _accuracy(apply_fn, variables, x, y, batch_size):
  fn = jax.jit(lambda v, xx, yy: jnp.sum(jnp.argmax(apply_fn(v, xx), -1) == yy))
  return sum(int(fn(variables, jnp.asarray(x[i:i + batch_size]), jnp.asarray(y[i:i + batch_size])))
             for i in range(0, len(x), batch_size)) / len(x)


# ------------------------------------------------------------------------------------------------------ run

METHODS = ("uniform", "gbo_raw", "gbo", "gbo_fallback", "closed_form")
LABELS = {"uniform": "uniform", "gbo_raw": "GBO raw", "gbo": "GBO", "gbo_fallback": "GBO+fallback",
          "closed_form": "closed form"}


def run(config: Config, workdir: Path, *, quiet: bool = True) -> dict:
  """Pretrains each net, finds its sigma_ref, runs GBO and the baselines, evaluates, writes the report."""
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  t0 = time.perf_counter()
  # Data first: a data set that is not prepared raises `DatasetNotPreparedError` here, before any training, and
  # the CLI exits 1 with the `tfds build` command (no summary.json: the run is not marked finished).
  data = _load(config)
  nets = {name: _run_net(config, name, sizes, data, workdir, quiet) for name, sizes in config.model.nets}
  searches = [r for n in nets.values() for r in n["searches"]]
  n_search = len(searches)
  summary = {
      "nets": {k: {kk: vv for kk, vv in v.items() if kk not in ("acc", "searches")} for k, v in nets.items()},
      "gain_no_fallback": {k: v["gain_no_fallback"] for k, v in nets.items()},
      "gain_with_fallback": {k: v["gain_with_fallback"] for k, v in nets.items()},
      "closed_form_gain": {k: v["closed_form_gain"] for k, v in nets.items()},
      "search_equals_closed_form": {"count": sum(r["gbo"] == r["closed_form"] for r in searches), "of": n_search},
      "raw_equals_closed_form": {"count": sum(r["gbo_raw"] == r["closed_form"] for r in searches), "of": n_search},
      "raw_search_within_budget": (sum(r["raw_within_budget"] for r in searches) / n_search) if n_search else None,
      "raw_equals_repaired": {"count": sum(r["gbo_raw"] == r["gbo"] for r in searches), "of": n_search},
      "fallback_taken": {"count": sum(r["gbo_fallback"] != r["gbo"] for r in searches), "of": n_search},
      "goal": "GBO (no fallback) >= +5 points over uniform on at least one budget at some sigma >= 2 sigma_ref",
      "goal_met": {k: bool(v["gain_no_fallback"]["best_points"] is not None
                           and v["gain_no_fallback"]["best_points"] >= 5.0) for k, v in nets.items()},
      "exhaustive_val_best_gain": {k: max((e["test_gain_points"] for e in v["exhaustive_val_best"]
                                           if e["test_gain_points"] is not None), default=None)
                                   for k, v in nets.items()},
      "search_relaxation": config.search.relaxation,
      "scale": (f"{config.data.dataset}, {len(data[0])} train / {len(data[2])} val / {len(data[4])} test images, "
                f"{config.eval.chips} chips"),
  }
  summary["timings_s"] = {"total_s": time.perf_counter() - t0, **{k: v["timings_s"] for k, v in nets.items()}}
  _write_csv(workdir / "results.csv", config, nets)
  plots = _plots(workdir, nets)
  _report(workdir, config, summary, nets, plots)
  write_json(workdir / "summary.json", summary)
  return summary


def _run_net(config: Config, name: str, sizes, data, workdir: Path, quiet: bool) -> dict:
  """One net: pretraining, sigma_ref, the searches at every (T_bar, sigma), the Monte Carlo on the test set."""
  t0 = time.perf_counter()
  timings = {}
  x_tr, y_tr, x_val, y_val, xt, yt = data
  binarize = None if config.data.binarize < 0 else config.data.binarize
  num_classes = int(max(y_tr.max(), yt.max())) + 1
  chance = 1.0 / num_classes

  # 1. noise-free pretraining: BN in training mode (batch_stats carried by the trainer), latent weights clipped
  #    to [-1, 1] after every update; then exact population BN statistics over the training set
  model = _model(config, sizes, binarize)
  paths = binary_layer_paths(model)
  variables = model.init(jax.random.key(config.seed), jnp.asarray(x_tr[:1]))

  def loss_fn(p, state, batch, rng, step):
    logits, new_state = model.apply({"params": p, **state}, batch[0], train=True, mutable=["batch_stats"])
    loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, batch[1]))
    return loss, ({"train_accuracy": jnp.mean(jnp.argmax(logits, -1) == batch[1])}, new_state)

  tx = optax.chain(make_optimizer(config.train, total_steps(config.train, len(x_tr))), clip_latent(paths))
  res = train(loss_fn, variables["params"], (x_tr, y_tr), config.train, workdir / name,
              model_state={"batch_stats": variables["batch_stats"]}, tx=tx, quiet=quiet, desc=f"gbo: pretrain {name}",
              fingerprint={"study": "gbo", "data": dataclasses.asdict(config.data), "net": [name, list(sizes)],
                           "model": dataclasses.asdict(config.model), "seed": config.seed})
  bn_x = x_tr if not config.eval.bn_images else x_tr[:config.eval.bn_images]
  variables = _population_bn(model, {"params": res.params, **res.model_state}, bn_x)
  timings["pretrain_s"] = time.perf_counter() - t0

  # 2. crossbar description and cost (layers by params-tree path)
  xcfg = CrossbarConfig(tile_rows=config.hardware.tile_rows, tile_cols=config.hardware.tile_cols,
                        mapping=config.hardware.mapping)
  shape_of = layer_shapes(model.apply, variables, jnp.asarray(x_tr[:1]), paths)
  shapes = [shape_of[p] for p in paths]
  costs = [layer_cost(a, b, xcfg, p) for a, b, p in shapes]
  n_rows = [c.grid.n_r for c in costs]
  reads = [c.reads for c in costs]
  n_layers = len(shapes)
  fan_ins = [a for a, _, _ in shapes]

  @jax.jit
  def read_stds(sigma, pulses):  # fast-mode read-noise std of each layer's output
    return jnp.stack([aggregate_noise_std(f, pulses[i], xcfg, sigma=sigma) for i, f in enumerate(fan_ins)])

  def noise(sigma, pulses):  # one function object: every fresh-draw evaluation reuses one compilation
    return read_noise(sigma, dict(zip(paths, pulses)), config=xcfg)

  root = jax.random.key(config.seed + 1)
  k_ref, k_sens, k_gbo, k_eval, k_check = jax.random.split(root, 5)
  k_val = jax.random.fold_in(k_ref, 10_000)
  evaluators = {}

  def evaluator(split, key, chips):
    tag = (split, int(jax.random.key_data(key).sum()), chips)
    if tag not in evaluators:
      x, y = (x_val, y_val) if split == "val" else (xt, yt)
      if config.eval.reuse_draws:
        evaluators[tag] = fixed_noise_evaluator(model.apply, variables, x, y, layers=paths, chips=chips, key=key,
                                                batch_size=config.eval.batch_size)
      else:
        evaluators[tag] = lambda stds, sigma, pulses: evaluate_chips(
            model.apply, variables, x, y, effect_factory=noise, chips=chips, key=key,
            effect_args=(jnp.float32(sigma), jnp.asarray(pulses, jnp.float32)), batch_size=config.eval.batch_size)
    return evaluators[tag]

  memo: dict = {}

  def chip_acc(split, pulses, sigma, key, chips):
    """Accuracy per chip of one allocation at one sigma (fast mode, common random numbers through `key`)."""
    pulses = tuple(int(t) for t in pulses)
    tag = (split, pulses, float(sigma), int(jax.random.key_data(key).sum()), chips)
    if tag not in memo:
      ev = evaluator(split, key, chips)
      stds = read_stds(jnp.float32(sigma), jnp.asarray(pulses, jnp.float32))
      memo[tag] = ev(stds) if config.eval.reuse_draws else ev(stds, sigma, pulses)
    return memo[tag]

  clean_val = _accuracy(model.apply, variables, x_val, y_val, config.eval.batch_size)
  clean_test = _accuracy(model.apply, variables, xt, yt, config.eval.batch_size)

  # 3. sigma_ref: uniform T = 1 falls half-way from clean to chance (validation split, bisection in log sigma)
  t1 = time.perf_counter()
  target = 0.5 * (clean_val + chance)

  def val_acc(sigma):
    return float(np.mean(chip_acc("val", [1] * n_layers, sigma, k_ref, config.hardware.ref_chips)))

  if config.hardware.sigma_ref > 0:
    sigma_ref = float(config.hardware.sigma_ref)
  else:
    lo, hi = 0.0, 1.0
    while val_acc(hi) > target and hi < 1e4:
      lo, hi = hi, hi * 2
    for _ in range(config.hardware.bisection_steps):
      mid = math.sqrt(lo * hi) if lo > 0 else hi / 2
      if val_acc(mid) > target:
        lo = mid
      else:
        hi = mid
    sigma_ref = 0.5 * (lo + hi) if lo > 0 else hi
  sigmas = [0.0] + [sigma_ref * m for m in config.hardware.sigma_multipliers]
  n_sig = len(sigmas)
  timings["sigma_ref_s"] = time.perf_counter() - t1

  # 4. allocations at every noisy sigma (or once per budget): closed form (empirical Fisher) and GBO. One loss
  #    function object and one config for every search: the search step compiles once.
  t2 = time.perf_counter()
  gbo_loss, grad_fn = noise_objectives(model.apply, variables, paths)
  sc = config.search
  gcfg = GBOConfig(candidates=sc.candidates, relaxation=sc.relaxation, epochs=sc.epochs, batch_size=sc.batch_size,
                   lr=sc.lr, dual_lr=sc.dual_lr, tau_start=sc.tau_start, tau_end=sc.tau_end, seed=config.seed)
  alloc = {m: {} for m in METHODS}
  for t in sc.uniform:
    alloc["uniform"][t] = [uniform_allocation(t, n_layers)] * n_sig
  search_sigmas = ({j: s for j, s in enumerate(sigmas) if s > 0} if sc.per_sigma
                   else {None: sigma_ref * sc.sigma_multiplier})
  rng = np.random.default_rng(config.seed)
  sel = [rng.choice(len(x_tr), sc.sens_batch_size, replace=False) for _ in range(sc.sens_batches)]
  sens_batches = [(x_tr[i], y_tr[i]) for i in sel]
  searches = []
  for tb in sc.budgets:
    budget_e = tb * sum(reads)
    found = {}
    for j, sig in search_sigmas.items():
      stds = jnp.asarray([sig * math.sqrt(n / tb) for n in n_rows], jnp.float32)
      sens = fisher_sensitivity(lambda b, k, stds=stds: grad_fn(stds, b, k), sens_batches,
                                jax.random.fold_in(jax.random.fold_in(k_sens, tb), j or 0), n_rows)
      cf = closed_form_allocation(sens, reads, budget_e, sc.candidates)
      res_g = gbo(gbo_loss, (x_tr, y_tr), reads=reads, n_rows=n_rows, mean_pulses=tb, sigma=sig,
                  key=jax.random.fold_in(jax.random.fold_in(k_gbo, tb), j or 0), config=gcfg, model=variables,
                  validate_fn=((lambda p, sig=sig: 1.0 - float(np.mean(chip_acc(
                      "val", p, sig, k_val, sc.validate_chips)))) if sc.validate else None))
      raw_e = float(np.dot(res_g.raw_pulses, reads))
      rec = {"budget": tb, "sigma": sig, "sigma_over_sigma_ref": sig / sigma_ref, "budget_E": budget_e,
             "gbo_raw": list(res_g.raw_pulses), "raw_E": raw_e, "raw_within_budget": raw_e <= budget_e + 1e-9,
             "gbo": list(res_g.search_pulses), "gbo_fallback": list(res_g.pulses), "closed_form": list(cf),
             "fisher_sensitivity": sens.tolist(), "stein_sensitivity": res_g.sensitivity.tolist(),
             "validation_error": res_g.validation, "final_cost_ratio": res_g.history[-1]["cost_ratio"],
             "logits": res_g.logits.tolist()}
      found[j] = rec
      searches.append(rec)
      for h in res_g.history[:: max(1, len(res_g.history) // 10)]:
        append_jsonl(workdir / name / "search.jsonl", {"phase": f"gbo_T{tb}_sigma{sig:.4g}", **h})
    per = ([found[j if j in found else min(found)] for j in range(n_sig)] if sc.per_sigma
           else [found[None]] * n_sig)  # sigma = 0 is noise-free: any allocation
    for m in METHODS[1:]:
      alloc[m][tb] = [tuple(r[m]) for r in per]
  timings["search_s"] = time.perf_counter() - t2

  # 5. reference: the best budget-maximal allocation on the noisy validation split (exhaustive), at severe sigma
  t5 = time.perf_counter()
  exhaustive = {}
  if config.eval.exhaustive_chips and 3 <= n_layers <= 6:
    k_ex = jax.random.fold_in(k_val, 1)
    for tb in sc.budgets:
      budget_e = tb * sum(reads)
      maximal = [a for a in itertools.product(sc.candidates, repeat=n_layers) if _maximal(a, reads, budget_e,
                                                                                        sc.candidates)]
      for j, sig in enumerate(sigmas):
        if sig < 2 * sigma_ref * (1 - 1e-9):
          continue
        scores = [float(np.mean(chip_acc("val", a, sig, k_ex, config.eval.exhaustive_chips))) for a in maximal]
        exhaustive[(tb, j)] = {"pulses": maximal[int(np.argmax(scores))], "candidates_scored": len(maximal)}
  timings["exhaustive_s"] = time.perf_counter() - t5

  # 6. Monte-Carlo evaluation on the test set (common random numbers across methods and sigmas)
  t3 = time.perf_counter()
  acc = {m: {t: np.zeros((n_sig, config.eval.chips)) for t in alloc[m]} for m in METHODS}
  for j, s in enumerate(sigmas):
    for m in METHODS:
      for t, per in alloc[m].items():
        acc[m][t][j] = clean_test if s == 0 else chip_acc("test", per[j], s, k_eval, config.eval.chips)
  ex_acc = {}
  for (tb, j), e in exhaustive.items():
    ex_acc[(tb, j)] = chip_acc("test", e["pulses"], sigmas[j], k_eval, config.eval.chips)
    e["test_gain_points"] = float(100 * (ex_acc[(tb, j)] - acc["uniform"][tb][j]).mean()) if (
        tb in acc["uniform"]) else None
    e["test_accuracy"] = float(ex_acc[(tb, j)].mean())
  timings["eval_s"] = time.perf_counter() - t3

  # 7. consistency check on a subset: fast mode vs exact per-pulse reads of the programmed weights
  check = {}
  if config.eval.check_size:
    t4 = time.perf_counter()
    n = min(config.eval.check_size, len(xt))
    tb = sc.budgets[0] if sc.budgets else 1
    j_ref = int(np.argmin(np.abs(np.asarray(sigmas) - sigma_ref)))
    pulses = alloc["gbo"][tb][j_ref] if tb in alloc["gbo"] else (1,) * n_layers
    for mode in ("fast", "per_pulse"):
      vals = evaluate_chips(
          model.apply, variables, xt[:n], yt[:n], chips=config.eval.chips, key=k_check,
          effect_factory=lambda s, mode=mode: read_noise(s, dict(zip(paths, pulses)), config=xcfg, mode=mode),
          effect_args=(jnp.float32(sigma_ref),), param_transform=program_weights(xcfg, layers=paths))
      check[mode] = {"mean": float(np.mean(vals)), "std": float(np.std(vals))}
    check.update({"images": n, "pulses": list(pulses), "sigma": sigma_ref})
    timings["check_s"] = time.perf_counter() - t4

  # 8. per-net summary
  curves = {}
  for m in METHODS:
    for t in alloc[m]:
      curves[f"{m}@T{t}"] = {"method": m, "budget": t, "pulses": [list(p) for p in alloc[m][t]], "sigma": sigmas,
                             "mean": acc[m][t].mean(1).tolist(), "std": acc[m][t].std(1).tolist()}
  severe = [j for j, s in enumerate(sigmas) if s >= 2 * sigma_ref * (1 - 1e-9)]

  def gain(method):
    per_budget, best = {}, (None, None, None)
    for tb in sc.budgets:
      if tb not in alloc["uniform"] or tb not in alloc[method]:
        continue
      d = 100 * (acc[method][tb] - acc["uniform"][tb]).mean(1)   # paired by chip
      per_budget[str(tb)] = {f"{sigmas[j] / sigma_ref:.3g}": float(d[j]) for j in severe}
      for j in severe:
        if best[0] is None or d[j] > best[0]:
          best = (float(d[j]), sigmas[j] / sigma_ref, tb)
    return {"per_budget_points": per_budget, "best_points": best[0], "sigma_over_sigma_ref": best[1],
            "budget": best[2]}

  paired, never_worse = {}, True
  for tb in sc.budgets:
    if tb not in alloc["uniform"]:
      continue
    d = 100 * (acc["gbo"][tb] - acc["uniform"][tb])
    k_chips = d.shape[1]
    ddof = 1 if k_chips > 1 else 0
    se_g = 100 * acc["gbo"][tb].std(1, ddof=ddof) / math.sqrt(k_chips)
    se_u = 100 * acc["uniform"][tb].std(1, ddof=ddof) / math.sqrt(k_chips)
    tol = 2 * np.sqrt(se_g**2 + se_u**2)  # spec oracle 10
    paired[str(tb)] = {"gain_points": d.mean(1).tolist(), "paired_se_points": (d.std(1, ddof=ddof) / math.sqrt(
        k_chips)).tolist(), "tolerance_points": tol.tolist()}
    never_worse &= bool(np.all(d.mean(1) >= -tol - 1e-9))
  timings["total_s"] = time.perf_counter() - t0
  return {
      "sizes": list(sizes), "curves": curves, "searches": searches, "acc": acc, "alloc": alloc,
      "allocations": [{k: v for k, v in r.items() if k != "logits"} for r in searches],
      "gain_no_fallback": gain("gbo"), "gain_with_fallback": gain("gbo_fallback"), "gain_raw": gain("gbo_raw"),
      "closed_form_gain": gain("closed_form"), "gbo_vs_uniform_paired": paired,
      "exhaustive_val_best": [{"budget": tb, "sigma_over_sigma_ref": sigmas[j] / sigma_ref, **{
          k: (list(v) if k == "pulses" else v) for k, v in e.items()}} for (tb, j), e in exhaustive.items()],
      "gbo_never_worse_than_uniform_beyond_spread": never_worse,
      "sigma_ref": sigma_ref, "sigmas": sigmas, "clean_test_accuracy": clean_test, "clean_val_accuracy": clean_val,
      "chance": chance, "mode_check": check, "timings_s": timings, "pretrain_steps": res.steps,
      "layers": [{"path": "/".join(path), "fan_in": a, "fan_out": b, "positions": p, "n_r": c.grid.n_r,
                  "n_c": c.grid.n_c, "reads_per_pulse": c.reads} for path, (a, b, p), c in zip(paths, shapes, costs)],
      "cost_per_inference": {f"{m}@T{t}": inference_cost(per[-1], costs)
                             for m in METHODS for t, per in alloc[m].items()},
      "paths": ["/".join(p) for p in paths],
  }


def _maximal(pulses, reads, budget_e, candidates) -> bool:
  """Within the budget, and no layer can take its next candidate without exceeding it."""
  e = float(np.dot(pulses, reads))
  if e > budget_e * (1 + 1e-9):
    return False
  cand = list(candidates)
  for t, r in zip(pulses, reads):
    i = cand.index(t)
    if i + 1 < len(cand) and e + r * (cand[i + 1] - t) <= budget_e * (1 + 1e-9):
      return False
  return True


def _write_csv(path, config, nets):
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["dataset", "model", "method", "T_bar", "sigma", "chip", "accuracy", "E_reads", "pulses_per_layer"])
    for name, net in nets.items():
      reads = [l["reads_per_pulse"] for l in net["layers"]]
      for m in METHODS:
        for t, per in net["alloc"][m].items():
          for j, s in enumerate(net["sigmas"]):
            e = float(np.dot(per[j], reads))
            for chip in range(net["acc"][m][t].shape[1]):
              w.writerow([config.data.dataset, name, m, t, f"{s:.6g}", chip, f"{net['acc'][m][t][j, chip]:.4f}",
                          e, " ".join(map(str, per[j]))])


def _plots(workdir, nets):
  plots = []
  styles = {"uniform": ("-", "o"), "gbo": ("--", "s"), "closed_form": (":", "^")}
  fig = Figure(figsize=(6.5 * len(nets), 4.5))
  axes = np.atleast_1d(fig.subplots(1, len(nets)))
  for ax, (name, net) in zip(axes, nets.items()):
    budgets = sorted({t for m in styles for t in net["alloc"][m]})
    colors = {t: matplotlib.colormaps["viridis"](i / max(1, len(budgets) - 1)) for i, t in enumerate(budgets)}
    xs = np.asarray(net["sigmas"][1:]) / net["sigma_ref"]
    for m, (ls, mk) in styles.items():
      for t in net["alloc"][m]:
        c = net["curves"][f"{m}@T{t}"]
        ax.errorbar(xs, c["mean"][1:], yerr=c["std"][1:], ls=ls, marker=mk, color=colors[t], capsize=3,
                    label=f"{LABELS[m]} T̄={t}")
    ax.axhline(net["clean_test_accuracy"], color="gray", lw=0.8, ls="-.", label="noise-free")
    ax.set(xscale="log", xlabel="read-noise sigma / sigma_ref (log)", ylabel="test accuracy",
           title=f"{name} {net['sizes']}")
    ax.legend(fontsize=6, ncol=2)
  fig.tight_layout()
  fig.savefig(workdir / "accuracy_vs_noise.png", dpi=100)
  plots.append("accuracy_vs_noise.png")

  fig = Figure(figsize=(6.5 * len(nets), 3.8))
  axes = np.atleast_1d(fig.subplots(1, len(nets)))
  for ax, (name, net) in zip(axes, nets.items()):
    last = [r for r in net["searches"] if r["sigma"] == max(q["sigma"] for q in net["searches"])]
    width = 0.8 / max(1, 2 * len(last))
    n_layers = len(net["paths"])
    for i, r in enumerate(last):
      ax.bar(np.arange(n_layers) + 2 * i * width, r["gbo"], width, label=f"GBO T̄={r['budget']}")
      ax.bar(np.arange(n_layers) + (2 * i + 1) * width, r["closed_form"], width, hatch="//", alpha=0.6,
             label=f"closed form T̄={r['budget']}")
    ax.set(xlabel="crossbar layer", ylabel="pulses T_l", xticks=np.arange(n_layers) + 0.4 - width / 2,
           xticklabels=net["paths"], yscale="log",
           title=(f"{name}: pulses per layer at sigma = {last[0]['sigma_over_sigma_ref']:.2g} sigma_ref"
                  if last else name))
    ax.legend(fontsize=6)
  fig.tight_layout()
  fig.savefig(workdir / "pulses_per_layer.png", dpi=100)
  plots.append("pulses_per_layer.png")
  return plots


def _fmt(a):
  return f"{100 * a.mean():.1f} ± {100 * a.std():.1f}"


def _alloc(p):
  return " ".join(map(str, p))


def _report(workdir, config, summary, nets, plots):
  tables = []
  for name, net in nets.items():
    acc, sig_ref = net["acc"], net["sigma_ref"]
    uni_cols = [t for t in net["alloc"]["uniform"]]
    cols = ["sigma / sigma_ref"] + [f"uniform T={t}" for t in uni_cols]
    rows = [[f"{s / sig_ref:.3g}"] + [_fmt(acc["uniform"][t][j]) for t in uni_cols]
            for j, s in enumerate(net["sigmas"])]
    tables.append(Table(f"{name} {net['sizes']}: uniform pulses, test accuracy (%) vs read noise", cols, rows))
    rows = []
    for r in net["searches"]:
      j = net["sigmas"].index(r["sigma"]) if r["sigma"] in net["sigmas"] else len(net["sigmas"]) - 1
      tb = r["budget"]
      rows.append([tb, f"{r['sigma_over_sigma_ref']:.3g}", _fmt(acc["uniform"][tb][j]) if tb in acc["uniform"] else "",
                   f"{_alloc(r['gbo_raw'])} (E {r['raw_E']:.0f}/{r['budget_E']:.0f}): {_fmt(acc['gbo_raw'][tb][j])}",
                   f"{_alloc(r['gbo'])}: {_fmt(acc['gbo'][tb][j])}",
                   f"{_alloc(r['closed_form'])}: {_fmt(acc['closed_form'][tb][j])}",
                   f"{_alloc(r['gbo_fallback'])}: {_fmt(acc['gbo_fallback'][tb][j])}"])
    tables.append(Table(f"{name}: allocations (pulses per layer) and test accuracy (%) per budget and sigma",
                        ["T̄", "sigma / sigma_ref", "uniform", "GBO raw (no repair)", "GBO repaired (no fallback)",
                         "closed form", "GBO with fallback"], rows))
    g, gf, cf = net["gain_no_fallback"], net["gain_with_fallback"], net["closed_form_gain"]
    rows = []
    for tb, per in g["per_budget_points"].items():
      for s, v in per.items():
        rows.append([tb, s, f"{PAPER_GAIN_POINTS[0]:.0f} to {PAPER_GAIN_POINTS[1]:.0f}", f"{v:+.1f}",
                     f"{gf['per_budget_points'][tb][s]:+.1f}", f"{cf['per_budget_points'][tb][s]:+.1f}"])
    ex = {(e["budget"], f"{e['sigma_over_sigma_ref']:.3g}"): e for e in net["exhaustive_val_best"]}
    for row in rows:
      e = ex.get((int(row[0]), row[1]))
      row.append(f"{_alloc(e['pulses'])}: {e['test_gain_points']:+.1f}" if e and e["test_gain_points"] is not None
                 else "")
    tables.append(Table(f"{name}: gain over uniform at the same budget, sigma >= 2 sigma_ref (points)",
                        ["T̄", "sigma / sigma_ref", "paper (abstract, severe noise)", "GBO (no fallback)",
                         "GBO with fallback", "closed form", "best on validation (exhaustive), on test"], rows))
  paper_setting = (config.data.dataset == "cifar10" and config.model.kind == "cnn" and config.train.epochs >= 200
                   and tuple(config.model.channels) == (128, 256, 512) and tuple(config.model.dense) == (1024, 1024))
  notes = [f"Scale: {summary['scale']}, {config.train.epochs} pretraining epochs; "
           + ("the paper's setting (the spec's full protocol: CIFAR-10, VGG-9 BNN). " if paper_setting else
              "a reduced setting (the paper's is CIFAR-10 with a VGG-9 BNN: `--preset full`). ")
           + "The paper's +5-40 % comes from networks and data sets whose details the abstract does not give "
           "(baseline and absolute/relative points unknown)."]
  for name, net in nets.items():
    g = net["gain_no_fallback"]
    lay = ", ".join(f"{l['fan_in']}->{l['fan_out']} (n_r={l['n_r']}, R_l={l['reads_per_pulse']})"
                    for l in net["layers"])
    best = "n/a" if g["best_points"] is None else (f"{g['best_points']:+.1f} points at T̄={g['budget']}, "
                                                   f"{g['sigma_over_sigma_ref']:.3g} sigma_ref")
    notes.append(f"{name}: crossbar layers {lay}; sigma_ref = {net['sigma_ref']:.3g} (row units); noise-free test "
                 f"accuracy {100 * net['clean_test_accuracy']:.1f} %. Best GBO gain (no fallback) at sigma >= 2 "
                 f"sigma_ref: {best} (goal >= +5): " + ("met." if summary["goal_met"][name] else "NOT met."))
  s = summary
  notes += [
      f"The search ({s['search_relaxation']}) meets the budget itself: continuous T on the budget simplex "
      "(sum_l R_l T_l = B_E for every parameter value), rounded to the candidates that bracket each T_l, nearest in "
      "log2 among the roundings within budget. Raw allocation within budget in "
      f"{100 * s['raw_search_within_budget']:.0f} % of searches; raw = repaired in "
      f"{s['raw_equals_repaired']['count']} of {s['raw_equals_repaired']['of']} (the repair only spends whole steps "
      f"the rounding left); final allocation = closed form in {s['search_equals_closed_form']['count']} of "
      f"{s['search_equals_closed_form']['of']}; "
      f"fallback to uniform taken in {s['fallback_taken']['count']} of {s['fallback_taken']['of']}.",
      "The headline gain is GBO's repaired search result without the fallback to uniform.",
      "Pretraining uses Adam lr 0.03 with cosine decay instead of the spec's 1e-3, which trains too slowly for 30 "
      "epochs on the subset.",
      "History: an earlier version switched to the tapered net and a grid stopping at 2 sigma_ref after seeing "
      "results; the spec's 784-512-256-128-10 MLP then gave +3.3 / +2.7 / 0.0 points at 2 sigma_ref. Both nets and "
      "the spec's grid up to 4 sigma_ref are reported here.",
  ]
  for name, net in nets.items():
    c = net["mode_check"]
    if c:
      parts = ", ".join(f"{k} {100 * c[k]['mean']:.1f} ± {100 * c[k]['std']:.1f} %" for k in ("fast", "per_pulse"))
      notes.append(f"{name}: fast vs per-pulse check on {c['images']} test images at sigma_ref, pulses "
                   f"{c['pulses']}: {parts}.")
  write_study_report(workdir, study="gbo", title="GBO: per-layer pulse counts on a noisy binary crossbar",
                     setup={"data": s["scale"], "models": {k: v["sizes"] for k, v in nets.items()},
                            "crossbar": f"{config.hardware.tile_rows}x{config.hardware.tile_cols} tiles, "
                                        f"{config.hardware.mapping}, additive read noise, fast mode",
                            "Monte Carlo": f"{config.eval.chips} chips, common random numbers",
                            "seed": config.seed, "wall s": round(s["timings_s"]["total_s"], 1)},
                     tables=tables, plots=plots, notes=notes)
