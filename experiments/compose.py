"""Composing hardware effects: bit flips on a spiking net, flat minima on a noisy crossbar, random bit errors.

Run: ``jaxhw run compose --preset quick`` (a few minutes on 2 CPU cores). Three experiments that need effects from
different papers on one model, each written with jaxhw's public API in a few lines:

1. **Bit flips on a spiking network.** The MNIST CNN of the SNN study is trained, converted to an SNN
   (``snn.convert``), and the converted weights are swept bit by bit (``faults.single_bit_sweep``) twice: through
   the ANN that computes with them (``snn.ann_logits_fn``) and through the simulated SNN (``snn.logits_fn``), on
   the same images. Catastrophic bits (a flip costing >= 90 % of the clean accuracy) of each, and which bits.
2. **Flatness against analog noise.** MLPs trained plainly, with SAM and with HAT (as in the HAT study) are run on
   the crossbar with read noise attached from outside (``effects.attach`` + ``crossbar.read_noise``): accuracy vs
   the noise level, over several simulated chips.
3. **Random bit errors.** The same MLPs under random bit errors (``faults.random_bit_flips``, vmapped over draws):
   accuracy vs bit-error rate, the sweep the HAT paper reports beside single flips.

References:
  Prato et al., "Hessian-aware Training for Enhancing DNNs Resilience to Parameter Corruptions", arXiv:2504.01933,
  2025; Foret et al., "Sharpness-Aware Minimization for Efficiently Improving Generalization", ICLR 2021,
  arXiv:2010.01412; Kim et al., "Gradient-based Bit Encoding Optimization for Noise-Robust Binary Memristive
  Crossbar", DATE 2022, arXiv:2201.01479; Park et al., "T2FSNN: Deep Spiking Neural Networks with Time-to-first-
  spike Coding", DAC 2020, arXiv:2003.11741.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxhw import crossbar, effects, faults, hessian, snn
from jaxhw.config import check_preset
from jaxhw.data import MnistConfig, load_mnist_splits
from jaxhw.metrics import batched_accuracy, cross_entropy, write_json
from jaxhw.models import MNIST_CNN, SequentialCNN, bn_population_stats, mlp
from jaxhw.report import Table, figure, write_study_report
from jaxhw.train import TrainConfig, train

METHODS = ("plain", "sam", "hat")


@dataclasses.dataclass(frozen=True)
class DataConfig(MnistConfig):
  val_size: int = 500
  eval_images: int = 2000        # test images for the noise and bit-error curves


@dataclasses.dataclass(frozen=True)
class MLPConfig:
  sizes: tuple[int, ...] = (784, 32, 10)
  methods: tuple[str, ...] = METHODS
  sam_rho: float = 0.05
  hat_lam: float = 1e-3          # the HAT study's choice on this MLP
  hat_probes: int = 2
  train: TrainConfig = TrainConfig(optimizer="adam", lr=3e-3, schedule="cosine", batch_size=128, epochs=20)

  def __post_init__(self):
    bad = [m for m in self.methods if m not in METHODS]
    if bad:
      raise ValueError(f"mlp.methods contains {bad}; allowed: {list(METHODS)}")


@dataclasses.dataclass(frozen=True)
class SNNConfig:
  epochs: int = 3                # training epochs of the converted CNN on the 4.5k training images
  coding: str = "phase"          # the SNN coding (a jaxhw.snn.CODING_PRESETS name)
  steps: int = 24                # simulation time steps T (3 phase periods; phase coding reaches the ANN in ~6)
  norm: str = "layer_p99.9"      # data-based weight normalisation of the conversion
  layers: tuple[str, ...] = ("Conv_0",)   # params paths swept (all their parameters)
  # bit positions swept: the exponent MSB and the sign of float32 (the HAT study's exhaustive sweep finds every
  # catastrophic flip at bit 30); `full` sweeps all 32 bits
  bits: tuple[int, ...] = (30, 31)
  images: int = 200              # test images both sweeps are scored on
  screen_images: int = 32        # flips are screened on this many images; those with RAD >= 3 % are re-scored
  chunk: int = 16                # flips simulated at once (vmapped); bounds the sweep's memory


@dataclasses.dataclass(frozen=True)
class NoiseConfig:
  sigmas: tuple[float, ...] = (0.0, 0.02, 0.04, 0.06, 0.08, 0.1)   # read-noise std per read, fraction of G_max
  pulses: int = 1
  chips: int = 8


@dataclasses.dataclass(frozen=True)
class BERConfig:
  bers: tuple[float, ...] = (1e-7, 1e-6, 1e-5, 1e-4, 1e-3)
  draws: int = 32


@dataclasses.dataclass(frozen=True)
class Config:
  data: DataConfig = DataConfig()
  mlp: MLPConfig = MLPConfig()
  snn: SNNConfig = SNNConfig()
  noise: NoiseConfig = NoiseConfig()
  ber: BERConfig = BERConfig()
  seed: int = 0


def get_config(preset: str = "quick") -> Config:
  """Presets: ``smoke`` (seconds, for tests), ``quick`` (a few minutes on 2 CPU cores), ``full`` (all test images,
  every bit of both conv layers, more draws; hours on a CPU). This study composes effects from three papers and
  has no paper setting of its own: ``full`` is its largest scale on the vendored MNIST (no external data)."""
  check_preset(preset)
  if preset == "smoke":
    return Config(data=DataConfig(train_size=1000, test_size=1000, eval_images=300),
                  mlp=MLPConfig(methods=("plain", "hat"), train=TrainConfig(steps=30, batch_size=64, lr=3e-3)),
                  snn=SNNConfig(epochs=1, steps=4, bits=(30,), images=16, screen_images=0),
                  noise=NoiseConfig(sigmas=(0.0, 0.1), chips=2), ber=BERConfig(bers=(1e-6, 1e-3), draws=4))
  if preset == "quick":
    return Config()
  return Config(data=DataConfig(eval_images=10000),
                snn=SNNConfig(epochs=10, steps=128, layers=("Conv_0", "Conv_1"), bits=tuple(range(32)),
                              images=1000, screen_images=100),
                noise=NoiseConfig(chips=32), ber=BERConfig(draws=128))


def _train_mlps(config: Config, data, quiet: bool) -> dict[str, dict]:
  """Plain, SAM and HAT MLPs from the same initial params and data order."""
  model = mlp(config.mlp.sizes)
  params0 = model.init(jax.random.key(config.seed), jnp.zeros((1, config.mlp.sizes[0])))["params"]

  def task_loss(params, batch):
    return cross_entropy(model.apply({"params": params}, batch[0]), batch[1])

  def plain(params, batch, key, step):
    return task_loss(params, batch), {}

  losses = {"plain": plain, "sam": plain,
            "hat": hessian.hat_loss(task_loss, lam=config.mlp.hat_lam, probes=config.mlp.hat_probes)}
  out = {}
  for method in config.mlp.methods:
    tc = dataclasses.replace(config.mlp.train, seed=config.seed)
    if method == "sam":
      tc = dataclasses.replace(tc, optimizer="sam", sam_rho=config.mlp.sam_rho)
    out[method] = train(losses[method], params0, (data.x_train, data.y_train), tc, quiet=quiet,
                        desc=f"mlp {method}").params
  return out


def flatness_vs_noise(model, params_by_method: dict, x, y, config: NoiseConfig, key) -> list[dict]:
  """Accuracy of each MLP on an analog crossbar (read noise on every weight, relative to each layer's G_max) vs the
  noise level.

  Returns:
    Rows ``{"method", "sigma", "accuracy", "accuracy_std", "chips"}``; the same chip keys for every method.
  """
  def acc(params, sigma, k):
    noisy = effects.attach(model.apply, crossbar.analog_read_noise(sigma, pulses=config.pulses))
    logits = noisy({"params": params}, x, rngs={"noise": k})
    return jnp.mean(jnp.argmax(logits, -1) == y)

  chips = jax.jit(jax.vmap(acc, in_axes=(None, None, 0)))
  keys = jax.random.split(key, config.chips)
  rows = []
  for method, params in params_by_method.items():
    for sigma in config.sigmas:
      a = np.asarray(chips(params, jnp.float32(sigma), keys))
      rows.append({"method": method, "sigma": float(sigma), "accuracy": float(a.mean()),
                   "accuracy_std": float(a.std(ddof=1)) if len(a) > 1 else 0.0, "chips": int(len(a))})
  return rows


def ber_sweep(model, params_by_method: dict, x, y, config: BERConfig, key) -> list[dict]:
  """Accuracy under random bit errors (every bit of every float32 parameter flips with probability `ber`).

  Returns:
    Rows ``{"method", "ber", "accuracy_mean", "accuracy_std", "draws", "flips_mean"}``; the same draw keys for every
    method.
  """
  rows = []
  keys = jax.random.split(key, config.draws)
  for ber in config.bers:
    corrupt = faults.random_bit_flips(ber)

    def acc(params, k, corrupt=corrupt):
      flipped, st = corrupt.apply(params, corrupt.init(params), k)
      logits = model.apply({"params": flipped}, x)
      ok = (jnp.argmax(logits, -1) == y) & jnp.all(jnp.isfinite(logits), -1)
      return jnp.mean(ok), st.total

    draws = jax.jit(jax.vmap(acc, in_axes=(None, 0)))
    for method, params in params_by_method.items():
      a, n = (np.asarray(v) for v in draws(params, keys))
      rows.append({"method": method, "ber": float(ber), "accuracy_mean": float(a.mean()),
                   "accuracy_std": float(a.std(ddof=1)) if len(a) > 1 else 0.0, "draws": int(len(a)),
                   "flips_mean": float(n.mean())})
  return rows


def snn_vs_ann(config: Config, data, key, quiet: bool) -> dict:
  """Trains the SNN study's MNIST CNN, converts it, and sweeps the same bits of the same converted weights through
  the ANN and through the SNN.

  Returns:
    ``{"ann": {...}, "snn": {...}, "ratio", ...}`` with, per network, the clean accuracy, the catastrophic flips and
    their count per bit position.
  """
  sc = config.snn
  x, y = data.x_train, data.y_train
  model = SequentialCNN(layers=MNIST_CNN)
  k_init, k_sim = jax.random.split(key)
  variables = jax.jit(model.init)(k_init, jnp.zeros((1, *x.shape[1:]), jnp.float32))

  def loss_fn(params, model_state, batch, step_key, step):
    logits, new = model.apply({"params": params, **model_state}, batch[0], train=True, mutable=["batch_stats"],
                              rngs={"dropout": step_key})
    return cross_entropy(logits, batch[1]), ({}, new)

  tc = TrainConfig(optimizer="adam", lr=1e-3, schedule="cosine", batch_size=64, epochs=sc.epochs, seed=config.seed)
  res = train(loss_fn, variables["params"], (x, y), tc, model_state={"batch_stats": variables["batch_stats"]},
              quiet=quiet, desc="snn cnn")
  trained = {"params": res.params, "batch_stats": res.model_state["batch_stats"]}
  trained["batch_stats"] = bn_population_stats(model, trained, x)
  net = snn.convert(model, trained, x, norm=sc.norm)

  # The same converted weights, swept through the ANN that computes with them and through the SNN.
  params, snn_apply = snn.logits_fn(net, sc.coding, sc.steps, key=k_sim)
  _, ann_apply = snn.ann_logits_fn(net)

  xs, ys = data.x_test[: sc.images], data.y_test[: sc.images]
  flips = faults.all_flips(params, leaves=list(sc.layers), bits=sc.bits)
  out = {"flips": int(len(flips.leaf)), "layers": list(sc.layers), "bits": sc.bits, "images": int(len(xs)),
         "coding": sc.coding, "steps": sc.steps}
  for name, apply_fn in (("ann", ann_apply), ("snn", snn_apply)):
    t0 = time.perf_counter()
    r = faults.single_bit_sweep(apply_fn, params, xs, ys, flips=flips, structure="full", with_loss=False,
                                nonfinite="evaluate", chunk=sc.chunk,
                                screen_examples=min(sc.screen_images, len(xs)) or None, quiet=quiet)
    cat = r.rad >= 0.9
    out[name] = {"clean_accuracy": float(r.clean_accuracy), "catastrophic": int(cat.sum()),
                 "per_bit": [int(c) for c in faults.counts_per_bit(r.rad, r.flips.bit)],
                 "worst_rad": float(np.max(r.rad)), "rad_sorted": np.sort(r.rad)[::-1].round(4).tolist(),
                 "catastrophic_flips": [[r.leaf_paths[int(lf)], int(ix), int(b)] for lf, ix, b in
                                        zip(r.flips.leaf[cat], r.flips.index[cat], r.flips.bit[cat])][:200],
                 "sweep_s": time.perf_counter() - t0}
  out["ratio_snn_over_ann"] = (out["snn"]["catastrophic"] / out["ann"]["catastrophic"]
                               if out["ann"]["catastrophic"] else None)
  return out


def run(config: Config, workdir: Path, *, quiet: bool = True) -> dict:
  """Runs the three compositions; writes summary.json, the plots and report.md."""
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  t0 = time.perf_counter()
  data = load_mnist_splits(config.data, seed=config.seed)
  k_snn, k_noise, k_ber = jax.random.split(jax.random.key(config.seed + 1), 3)
  timings = {}

  t = time.perf_counter()
  snn_part = snn_vs_ann(config, data, k_snn, quiet)
  timings["snn_vs_ann_s"] = time.perf_counter() - t

  t = time.perf_counter()
  model = mlp(config.mlp.sizes)
  trained = _train_mlps(config, data, quiet)
  xe, ye = jnp.asarray(data.x_test[: config.data.eval_images]), jnp.asarray(data.y_test[: config.data.eval_images])
  clean = {m: batched_accuracy(lambda p, xx: model.apply({"params": p}, xx), p, data.x_test, data.y_test)
           for m, p in trained.items()}
  timings["train_mlps_s"] = time.perf_counter() - t
  t = time.perf_counter()
  noise_rows = flatness_vs_noise(model, trained, xe, ye, config.noise, k_noise)
  timings["flatness_s"] = time.perf_counter() - t
  t = time.perf_counter()
  ber_rows = ber_sweep(model, trained, xe, ye, config.ber, k_ber)
  timings["ber_s"] = time.perf_counter() - t

  summary = {
      "snn_vs_ann": snn_part,
      "mlp_clean_accuracy": clean,
      "flatness_vs_noise": noise_rows,
      "ber_sweep": ber_rows,
      "timings": timings,
      "wall_s": time.perf_counter() - t0,
  }
  write_json(workdir / "summary.json", summary)
  plots = _plots(workdir, summary, config)
  _report(workdir, config, summary, plots, data)
  return summary


def _plots(workdir: Path, summary: dict, config: Config) -> list[str]:
  s = summary["snn_vs_ann"]
  fig = figure(figsize=(11, 3.6))
  ax1, ax2 = fig.subplots(1, 2)
  bits = list(config.snn.bits)
  pos = np.arange(len(bits))
  for k, name in enumerate(("ann", "snn")):
    ax1.bar(pos + (k - 0.5) * 0.38, [s[name]["per_bit"][b] for b in bits], width=0.38,
            label=f"{name.upper()} ({s[name]['catastrophic']} in all)")
    ax2.plot(np.arange(1, len(s[name]["rad_sorted"]) + 1), s[name]["rad_sorted"], label=name.upper())
  ax1.set_xticks(pos, [str(b) for b in bits])
  ax1.set(xlabel="bit position (30 = exponent MSB, 31 = sign)", ylabel="catastrophic flips (RAD >= 90 %)",
          title=f"Same weights, same flips: {', '.join(s['layers'])}")
  ax2.axhline(0.9, color="gray", ls="--", lw=0.8)
  ax2.set(xscale="log", xlabel="flips, worst first", ylabel="relative accuracy drop",
          title=f"Every flip's accuracy drop ({s['flips']:,} flips)")
  ax1.legend()
  ax2.legend()
  fig.tight_layout()
  fig.savefig(workdir / "snn_vs_ann.png", dpi=100)

  fig = figure(figsize=(11, 3.8))
  ax1, ax2 = fig.subplots(1, 2)
  for k, m in enumerate(config.mlp.methods):
    rows = [r for r in summary["flatness_vs_noise"] if r["method"] == m]
    ax1.errorbar([r["sigma"] for r in rows], [r["accuracy"] for r in rows], [r["accuracy_std"] for r in rows],
                 marker="o", capsize=3, label=m, color=f"C{k}")
    rows = [r for r in summary["ber_sweep"] if r["method"] == m]
    ax2.errorbar([r["ber"] for r in rows], [r["accuracy_mean"] for r in rows], [r["accuracy_std"] for r in rows],
                 marker="o", capsize=3, label=m, color=f"C{k}")
  ax1.set(xlabel="read-noise std (fraction of G_max)", ylabel="test accuracy", title="Analog crossbar read noise")
  ax2.set(xlabel="bit-error rate", ylabel="test accuracy", xscale="log", title="Random bit errors")
  ax1.legend()
  ax2.legend()
  fig.tight_layout()
  fig.savefig(workdir / "mlp_noise_and_ber.png", dpi=100)
  return ["snn_vs_ann.png", "mlp_noise_and_ber.png"]


def _report(workdir: Path, config: Config, summary: dict, plots: list[str], data) -> None:
  s = summary["snn_vs_ann"]
  sc = config.snn
  snn_table = Table(
      "1. Single-bit flips on the converted CNN: through the ANN and through the SNN (same weights, same flips)",
      ["network", "clean accuracy", "catastrophic flips", "of flips swept", "bits holding them"],
      [[n.upper(), s[n]["clean_accuracy"], s[n]["catastrophic"], s["flips"],
        ", ".join(f"{b}: {c}" for b, c in enumerate(s[n]["per_bit"]) if c) or "-"] for n in ("ann", "snn")])
  methods = config.mlp.methods
  sigmas = sorted({r["sigma"] for r in summary["flatness_vs_noise"]})
  noise_table = Table(
      "2. MLP accuracy on an analog crossbar vs read noise (mean +- std over chips)",
      ["method", "clean (10k)"] + [f"sigma {v:g}" for v in sigmas],
      [[m, summary["mlp_clean_accuracy"][m]] + [
          f"{r['accuracy']:.4f} +- {r['accuracy_std']:.4f}" for r in summary["flatness_vs_noise"] if r["method"] == m]
       for m in methods])
  bers = sorted({r["ber"] for r in summary["ber_sweep"]})
  ber_table = Table(
      "3. MLP accuracy under random bit errors (mean +- std over draws)",
      ["method"] + [f"BER {b:g}" for b in bers],
      [[m] + [f"{r['accuracy_mean']:.4f} +- {r['accuracy_std']:.4f}" for r in summary["ber_sweep"]
              if r["method"] == m] for m in methods])
  ratio = s["ratio_snn_over_ann"]
  notes = [
      "Scale: " + ("the `full` preset (this study has no paper setting of its own: every bit of both conv layers, "
                   "all test images)." if config == get_config("full") else "reduced (`--preset full`: every bit "
                   "of both conv layers, all 10,000 test images); no paper gives this composition's figures."),
      f"Part 1 sweeps every parameter of {', '.join(s['layers'])} at bits {min(sc.bits)}-{max(sc.bits)} "
      f"({s['flips']:,} flips) on {s['images']} test images, screened on {sc.screen_images} images then re-scored; "
      f"the SNN uses {sc.coding} coding for {sc.steps} steps. Non-finite weights are simulated as IEEE arithmetic "
      "would (not counted catastrophic by rule).",
      (f"SNN/ANN catastrophic-flip ratio: {ratio:.2f}; the worst single flip costs the ANN "
       f"{s['ann']['worst_rad']:.0%} and the SNN {s['snn']['worst_rad']:.0%} of its accuracy. A likely "
       "mechanism: a spiking neuron's output is bounded by its maximum firing rate, so a weight blown up by an "
       "exponent flip saturates its neuron instead of propagating a huge activation." if ratio is not None else
       "The ANN has no catastrophic flip in the swept set, so there is no ratio."),
      "Parts 2 and 3 use the same three MLPs (784-32-10, one seed, same initial weights and data order); the noise "
      f"curves use {config.noise.chips} chips and the bit-error curves {config.ber.draws} draws on "
      f"{config.data.eval_images} test images, with the same keys for every method.",
  ]
  write_study_report(
      workdir, study="compose", title="Composing hardware effects: SNN bit flips, crossbar noise, bit errors",
      setup={"data": f"MNIST, {len(data.x_train):,} train images (vendored subset), test subsets as stated, CPU",
             "snn": f"MNIST CNN (conv12-conv64-fc10, BN folded), {config.snn.epochs} epochs, {sc.norm} normalisation",
             "mlp": f"784-32-10, {', '.join(methods)}, HAT lambda {config.mlp.hat_lam}, SAM rho {config.mlp.sam_rho}",
             "seed": config.seed, "wall_s": round(summary["wall_s"], 1)},
      tables=[snn_table, noise_table, ber_table], plots=plots, notes=notes)
