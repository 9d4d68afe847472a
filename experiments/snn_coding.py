"""Neural codings of converted deep SNNs: rate, phase, burst, hybrid and T2FSNN (TTFS with kernels).

A small CNN is trained on MNIST, converted (BN folding, per-neuron 99.9th-percentile normalisation, spiking
max-pool) and simulated under every coding; the table gives accuracy at the last step, latency (steps to
99% of the ANN's accuracy), spikes per image, synaptic operations and an energy estimate.

Run: ``jaxhw run snn_coding --preset quick`` (a few minutes on 2 CPU cores).

The ANN is a Flax model (`jaxhw.models.snn_cnn.SequentialCNN`) trained by `jaxhw.train` with its batch-norm
statistics carried as model state; `jaxhw.snn.convert` reads the model and its variables.

References:
  Park et al., "Fast and Efficient Information Transmission with Burst Spikes in Deep Spiking Neural Networks",
  DAC 2019, arXiv:1809.03142.
  Park et al., "T2FSNN: Deep Spiking Neural Networks with Time-to-first-spike Coding", DAC 2020,
  arXiv:2003.11741.
  Rueckauer et al., "Conversion of Continuous-Valued Deep Networks to Efficient Event-Driven Networks for Image
  Classification", Frontiers in Neuroscience 2017.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure

from jaxhw import snn
from jaxhw.data.mnist import MnistConfig, load_mnist_splits
from jaxhw.metrics import accuracy, append_jsonl, cross_entropy, write_json
from jaxhw.models.snn_cnn import MNIST_CNN, SequentialCNN, bn_population_stats, vgg16_layers
from jaxhw.report import Table, write_study_report
from jaxhw.train import TrainConfig, train

# Paper figures (CIFAR-100, VGG-16): T2FSNN at 22% of burst coding's latency and under 1% of its spikes.
PAPER_T2FSNN_LATENCY_RATIO = 0.22
PAPER_T2FSNN_SPIKE_RATIO = 0.01

ROWS = ("rate-real", "rate-poisson", "phase", "burst", "hybrid", "ttfs", "ttfs+GO", "ttfs+GO+EF")


@dataclasses.dataclass(frozen=True)
class DataConfig(MnistConfig):
  """The shared MNIST settings (`jaxhw.data.mnist.MnistConfig`: train_size, val_size, test_size, split_seed;
  ``train_size`` and ``test_size`` also cut CIFAR) plus this study's own."""

  train_size: int = 5000
  dataset: str = "mnist"     # mnist (vendored) | cifar10 | cifar100 (tfds adapter, prepared offline)
  stats_size: int = 5000     # training images for the normalisation statistics
  n_snn: int = 300           # test images simulated (the ANN is re-scored on the same subset)
  # 2,000 simulated images in the papers' protocol; 300 keeps the quick preset near 4 minutes on 2 CPU cores

  def __post_init__(self):
    super().__post_init__()
    if self.dataset not in ("mnist", "cifar10", "cifar100"):
      raise ValueError(f"data.dataset={self.dataset!r}; valid: mnist, cifar10, cifar100")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  arch: str = "mnist_cnn"    # mnist_cnn (official MNIST CNN) | vgg16

  def __post_init__(self):
    if self.arch not in ("mnist_cnn", "vgg16"):
      raise ValueError(f"model.arch={self.arch!r}; valid: mnist_cnn, vgg16")


@dataclasses.dataclass(frozen=True)
class SNNConfig:
  norm: str = "neuron_p99.9_max"
  t_rate: int = 128          # rate-real, rate-poisson (256 in the protocol; on MNIST both settle before step 60)
  t_phase: int = 128         # phase, burst, hybrid
  tau: float = 5.0           # TTFS
  t_w: int = 20
  t_s_ef: int = 10           # early-firing window spacing
  go_passes: int = 2
  go_images: int = 5000
  go_batch: int = 100
  sim_batch: int = 500       # >= n_snn: one batch, so one compiled simulation per coding
  chunk: int = 8
  mode: str = "stepwise"
  rows: tuple[str, ...] = ROWS

  def __post_init__(self):
    bad = [r for r in self.rows if r not in ROWS]
    if bad:
      raise ValueError(f"snn.rows has {bad}; valid rows: {ROWS}")


@dataclasses.dataclass(frozen=True)
class Config:
  data: DataConfig = DataConfig()
  model: ModelConfig = ModelConfig()
  train: TrainConfig = TrainConfig(epochs=8, batch_size=128, lr=1e-3, weight_decay=1e-4, log_every=20)
  snn: SNNConfig = SNNConfig()
  seed: int = 0


def get_config(preset: str = "quick") -> Config:
  """Presets: ``smoke`` (seconds), ``quick`` (MNIST 5k, 300 test images simulated, a few minutes on 2 CPU
  cores), ``full`` (CIFAR-10 through the tfds adapter, VGG-16, T = 1000 / TTFS tau 20, T_w 80)."""
  if preset == "smoke":
    return Config(data=DataConfig(train_size=512, stats_size=256, n_snn=64, test_size=1000),
                  train=TrainConfig(epochs=2, batch_size=128, lr=1e-3, weight_decay=1e-4, log_every=4),
                  snn=SNNConfig(t_rate=32, t_phase=32, go_passes=1, go_images=100, sim_batch=64,
                                rows=("burst", "ttfs+GO+EF")))
  if preset == "quick":
    return Config()
  if preset == "full":
    return Config(data=DataConfig(dataset="cifar10", train_size=50000, stats_size=10000, n_snn=10000),
                  model=ModelConfig(arch="vgg16"),
                  train=TrainConfig(epochs=200, batch_size=128, lr=1e-3, weight_decay=5e-4, schedule="cosine",
                                    log_every=100, checkpoint_every=2000),
                  snn=SNNConfig(t_rate=1000, t_phase=1000, tau=20.0, t_w=80, t_s_ef=40, go_passes=6,
                                go_images=10000, sim_batch=200, chunk=10))
  raise ValueError(f"unknown preset {preset!r}; valid: smoke, quick, full.")


def _load(config: Config):
  if config.data.dataset == "mnist":
    sp = load_mnist_splits(config.data, config.seed)
    return sp.x_train, sp.y_train, sp.x_test, sp.y_test
  from jaxhw.data import tfds_arrays
  x, y = tfds_arrays(config.data.dataset, "train", limit=config.data.train_size or None)
  xt, yt = tfds_arrays(config.data.dataset, "test")
  if config.data.test_size:
    xt, yt = xt[:config.data.test_size], yt[:config.data.test_size]
  x, xt = x.astype(np.float32) / 255.0, xt.astype(np.float32) / 255.0
  return x, y.astype(np.int32), xt, yt.astype(np.int32)


def _row_codings(config: Config, net: snn.SNNet, x_train: np.ndarray):
  """(name, coding, T, extras) per row; GO runs here."""
  c = config.snn
  ttfs = snn.Coding(input="ttfs", hidden="ttfs", tau=c.tau, t_w=c.t_w)
  out, go = [], None
  for name in c.rows:
    if name in ("rate-real", "rate-poisson"):
      out.append((name, snn.get_coding(name), c.t_rate, {}))
    elif name in ("phase", "burst", "hybrid"):
      out.append((name, snn.get_coding(name), c.t_phase, {}))
    elif name == "ttfs":
      out.append((name, ttfs, snn.pipeline_length(net, ttfs), {}))
    else:
      if go is None:
        t0 = time.perf_counter()
        go = snn.optimize_kernels(net, x_train[:c.go_images], ttfs, passes=c.go_passes, batch_size=c.go_batch,
                                  seed=config.seed)
        go_s = time.perf_counter() - t0
      coding = go if name == "ttfs+GO" else dataclasses.replace(go, t_s=c.t_s_ef)
      out.append((name, coding, snn.pipeline_length(net, coding),
                  {"tau": list(go.tau), "t_d": list(go.t_d), "go_s": go_s}))
  return out


def run(config: Config, workdir: Path, *, quiet: bool = True) -> dict:
  """Trains, converts and simulates every coding; writes summary.json, the plot and report.md."""
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  t_start = time.perf_counter()
  x, y, xt, yt = _load(config)
  layers = MNIST_CNN if config.model.arch == "mnist_cnn" else vgg16_layers(int(yt.max()) + 1)
  model = SequentialCNN(layers=layers)

  # 1. ANN: batch norm's running statistics are model state carried by the trainer.
  def loss_fn(params, model_state, batch, key, step):
    logits, new_state = model.apply({"params": params, **model_state}, batch[0], train=True,
                                    mutable=["batch_stats"], rngs={"dropout": key})
    return cross_entropy(logits, batch[1]), ({"train_accuracy": accuracy(logits, batch[1])}, new_state)

  variables = jax.jit(lambda k, xb: model.init(k, xb))(jax.random.key(config.seed), jnp.asarray(x[:1]))
  # the checkpoint's identity: only what changes the trained ANN (the SNN settings can vary on a resumed run).
  fingerprint = {"dataset": config.data.dataset, "train_size": config.data.train_size,
                 "val_size": config.data.val_size, "arch": config.model.arch, "model": "flax SequentialCNN",
                 "train": dataclasses.asdict(config.train), "seed": config.seed}
  result = train(loss_fn, variables["params"], (x, y), config.train, workdir, fingerprint=fingerprint,
                 model_state={"batch_stats": variables["batch_stats"]}, quiet=quiet, desc="snn_coding ANN")
  variables = {"params": result.params, **result.model_state}
  # Exact population statistics over the training set replace the running averages.
  variables = {**variables, "batch_stats": bn_population_stats(model, variables, x)}
  ann_fn = jax.jit(lambda xb: model.apply(variables, xb, train=False))
  ann_logits = np.concatenate([np.asarray(ann_fn(jnp.asarray(xt[s:s + 1000])))
                               for s in range(0, len(xt), 1000)])
  ann_acc_full = float(np.mean(ann_logits.argmax(-1) == yt))
  n = min(config.data.n_snn, len(xt))
  xs, ys = xt[:n], yt[:n]
  ann_acc = float(np.mean(ann_logits[:n].argmax(-1) == ys))
  t_train = time.perf_counter() - t_start

  # 2. Conversion.
  net = snn.convert(model, variables, x[:config.data.stats_size], norm=config.snn.norm)
  conv_acc = float(np.mean(np.asarray(snn.snn_ann_apply(net, jnp.asarray(xs))).argmax(-1) == ys))
  e_ann = snn.ann_energy_uj(net)

  # 3. Simulation of every coding.
  rows, curves = [], {}
  for name, coding, T, extra in _row_codings(config, net, x):
    t0 = time.perf_counter()
    outs, evs, sops = [], [], []
    key = jax.random.key(config.seed + 1)
    mode = "stepwise" if coding.is_ttfs else config.snn.mode
    for s in range(0, n, config.snn.sim_batch):
      key, sub = jax.random.split(key)
      r = snn.simulate(net, xs[s:s + config.snn.sim_batch], coding, T, key=sub, mode=mode,
                       chunk=config.snn.chunk)
      outs.append((np.asarray(r.output).argmax(-1) == ys[None, s:s + config.snn.sim_batch]).sum(-1))
      evs.append(np.asarray(r.step_events))
      sops.append(np.asarray(r.sops))
    curve = np.sum(outs, axis=0) / n
    step_events = np.concatenate(evs, axis=1)
    step_sops = np.concatenate(sops, axis=1)
    acc = float(curve[-1])
    target = 0.99 * ann_acc
    if coding.is_ttfs:
      latency = T if acc >= target else None
    else:
      latency = snn.latency_steps(curve, target)
    upto = latency if latency is not None else T
    synops = snn.synops_per_image(step_sops)
    energy = snn.snn_energy_uj(net, synops, real_input=coding.input == "real")
    row = {
        "coding": name, "accuracy": acc, "latency_steps": latency,
        "spikes_per_image": snn.spikes_per_image(step_events),
        "synops": synops, "energy_uj": energy,
        "T": T, "input": coding.input, "hidden": coding.hidden,
        "spikes_per_image_at_latency": snn.spikes_per_image(step_events, upto=upto),
        "input_spikes_per_image": snn.spikes_per_image(step_events[..., :1], include_input=True),
        "ann_over_snn_energy": e_ann / energy if energy > 0 else None,
        "steps_to_ann_minus_1pt": snn.latency_steps(curve, ann_acc - 0.01),
        "sim_s": time.perf_counter() - t0,
    }
    row.update(extra)
    rows.append(row)
    curves[name] = curve
    append_jsonl(workdir / "metrics.jsonl", {"row": name, **{k: v for k, v in row.items()
                                                             if not isinstance(v, list)}})
    if not quiet:
      print(f"{name:12s} T={T:4d} acc={acc:.4f} latency={latency} spikes/img={row['spikes_per_image']:.0f} "
            f"({row['sim_s']:.1f}s)", flush=True)

  # 4. Summary.
  by = {r["coding"]: r for r in rows}
  t2 = by.get("ttfs+GO+EF") or by.get("ttfs+GO") or by.get("ttfs")
  burst = by.get("burst")
  versus = None
  if t2 is not None and burst is not None:
    # Burst latency = its L99 (first step from which it stays at >= 99% of the ANN's accuracy);
    # T2FSNN latency = its pipeline length D*T_s + T_w, the step at which its output is read.
    # Spikes are compared at those points: TTFS's spikes over its whole pipeline vs burst's spikes up to its
    # L99, i.e. each coding's cost of reaching (about) the same accuracy.
    burst_lat = burst["latency_steps"]
    burst_spikes = burst["spikes_per_image_at_latency"]
    burst_acc_at_lat = (float(curves["burst"][burst_lat - 1]) if burst_lat else None)
    gap = None if burst_acc_at_lat is None else 100 * (t2["accuracy"] - burst_acc_at_lat)
    versus = {
        "t2fsnn_row": t2["coding"],
        "t2fsnn_latency_steps": t2["T"],
        "burst_latency_steps": burst_lat,
        "t2fsnn_spikes_per_image": t2["spikes_per_image"],
        "burst_spikes_per_image_at_latency": burst_spikes,
        "latency_ratio": (t2["T"] / burst_lat) if burst_lat else None,
        "spike_ratio": t2["spikes_per_image"] / burst_spikes if burst_spikes > 0 else None,
        "t2fsnn_accuracy": t2["accuracy"],
        "burst_accuracy_at_latency": burst_acc_at_lat,
        "accuracy_gap_points": gap,
        "same_accuracy_within_1pt": None if gap is None else bool(abs(gap) <= 1.0),
        # for context only: against burst's spikes over its whole run (T steps), not at the same accuracy.
        "spike_ratio_vs_burst_at_T": (t2["spikes_per_image"] / burst["spikes_per_image"]
                                      if burst["spikes_per_image"] > 0 else None),
        "paper_latency_ratio": PAPER_T2FSNN_LATENCY_RATIO,
        "paper_spike_ratio": PAPER_T2FSNN_SPIKE_RATIO,
    }
  best = max(rows, key=lambda r: r["accuracy"])
  rate = by.get("rate-real")
  summary = {
      "ann_accuracy": ann_acc,
      "ann_accuracy_full_test": ann_acc_full,
      "converted_ann_accuracy": conv_acc,
      "n_snn_images": n,
      "rows": rows,
      "t2fsnn_vs_burst": versus,
      "best_coding": best["coding"],
      "best_gap_points": 100 * (best["accuracy"] - ann_acc),
      "burst_faster_than_rate": (
          None if rate is None or burst is None else
          (burst["latency_steps"] is not None and
           (rate["latency_steps"] is None or burst["latency_steps"] < rate["latency_steps"]))),
      "ann_energy_uj": e_ann,
      "train_s": t_train,
      "wall_s": time.perf_counter() - t_start,
  }
  write_json(workdir / "summary.json", summary)

  # 5. Plot and report.
  fig = Figure(figsize=(7.5, 4.5))
  ax = fig.subplots()
  for name, curve in curves.items():
    ax.plot(np.arange(1, len(curve) + 1), curve, label=name, lw=1.4)
  ax.axhline(ann_acc, color="k", ls="--", lw=1, label="ANN")
  ax.axhline(0.99 * ann_acc, color="gray", ls=":", lw=1, label="99% of ANN")
  ax.set(xscale="log", xlabel="time step", ylabel="test accuracy", ylim=(0.0, 1.0),
         title=f"Accuracy vs time step ({n} test images)")
  ax.legend(fontsize=8, loc="lower right")
  fig.tight_layout()
  fig.savefig(workdir / "accuracy_vs_time.png", dpi=100)

  table = Table(
      "Per coding (accuracy at the last step T; latency = steps to 99% of the ANN's accuracy, TTFS: pipeline "
      "length; spikes over the hidden layers; SOPs and energy at T)",
      ["coding", "input / hidden", "T", "accuracy", "latency", "spikes/img @latency", "spikes/img @T",
       "SOPs/img", "energy uJ", "E_ANN / E_SNN"],
      [[r["coding"], f"{r['input']} / {r['hidden']}", r["T"], r["accuracy"], r["latency_steps"],
        r["spikes_per_image_at_latency"], r["spikes_per_image"], r["synops"], r["energy_uj"],
        r["ann_over_snn_energy"]] for r in rows])
  tables = [table]
  if versus is not None:
    tables.append(Table("T2FSNN vs burst coding", ["", "paper (VGG-16, CIFAR-100)", "jaxhw", "goal"],
                        [["latency steps (T2FSNN / burst)", "680 / ~3,100",
                          f"{versus['t2fsnn_latency_steps']} / {versus['burst_latency_steps']}", ""],
                         ["spikes/img (T2FSNN / burst @latency)", "",
                          f"{versus['t2fsnn_spikes_per_image']:.0f} / "
                          f"{versus['burst_spikes_per_image_at_latency']:.0f}", ""],
                         ["latency ratio", PAPER_T2FSNN_LATENCY_RATIO, versus["latency_ratio"], "<= 0.5"],
                         ["spike ratio", PAPER_T2FSNN_SPIKE_RATIO, versus["spike_ratio"], "<= 0.1"],
                         ["accuracy gap (points)", "~0", versus["accuracy_gap_points"], "within 1"]]))
  scale = (f"{config.data.dataset.upper()}, {len(x):,} train images, ANN on {len(xt):,} test images, "
           f"SNNs on the first {n:,} test images")
  notes = [
      f"Scale: {scale}; the papers use VGG-16 on CIFAR-10/100 with T up to 1000-4000, so absolute "
      "latencies and spike counts are not comparable, only the ordering of the codings.",
      f"ANN accuracy {ann_acc:.4f} on the simulated subset ({ann_acc_full:.4f} on the full test set); the "
      f"converted (normalised) ANN scores {conv_acc:.4f}.",
      "Energy: Horowitz (ISSCC 2014, 45 nm, fp32): ADD 0.9 pJ, MULT 3.7 pJ, so AC 0.9 pJ per synaptic "
      "operation and MAC 4.6 pJ; E_SNN = 0.9 SOPs + 4.6 MACs of the first layer when the input is "
      "real-valued (spiking inputs count their SOPs instead); memory access is not counted.",
      "Burst input injects the bias once per input cycle (Coding.burst_bias='reload'), not every step as the "
      "official code: the burst input re-sends an image only every few steps, and a bias every step then "
      "outweighs it (jaxhw.snn.Coding(burst_bias='every') restores the official behaviour).",
      f"Budget cuts against the papers' MNIST protocol: rate codings run T = {config.snn.t_rate} (protocol: "
      "256; their accuracy curves settle within the first ~60 steps here) and the SNNs see "
      f"{n:,} test images (protocol: 2,000), so one test image is worth {100 / n:.2f} accuracy points.",
      "Spikes per image count the events of the hidden spiking layers (a graded phase/burst spike counts "
      "once); input events are listed separately in summary.json.",
      f"T2FSNN vs burst: latency ratio = TTFS pipeline length / burst latency; spike ratio = TTFS spikes / "
      f"burst spikes up to its latency (paper: {PAPER_T2FSNN_LATENCY_RATIO:.0%} and "
      f"< {PAPER_T2FSNN_SPIKE_RATIO:.0%} on CIFAR-100).",
  ]
  go_row = by.get("ttfs+GO") or by.get("ttfs+GO+EF")
  if go_row is not None:
    notes.append("T2FSNN kernels after GO (input first): tau " + ", ".join(f"{v:.2f}" for v in go_row["tau"])
                 + "; t_d " + ", ".join(f"{v:.2f}" for v in go_row["t_d"]) + f" ({go_row['go_s']:.1f} s).")
  if best["accuracy"] < ann_acc - 0.01:
    gap = 100 * (ann_acc - best["accuracy"])
    notes.append(f"Short of the goal: the best coding ({best['coding']}) is {gap:.2f} points below the ANN.")
  if versus is not None:
    lr_, sr_ = versus["latency_ratio"], versus["spike_ratio"]
    fmt = lambda v: "n/a" if v is None else f"{v:.3g}"
    if lr_ is None or lr_ > 0.5 or sr_ is None or sr_ > 0.1 or not versus["same_accuracy_within_1pt"]:
      notes.append(
          f"Short of the goal: T2FSNN ({versus['t2fsnn_row']}) vs burst misses at least one target here: "
          f"latency {versus['t2fsnn_latency_steps']} vs {fmt(versus['burst_latency_steps'])} steps (ratio "
          f"{fmt(lr_)}, goal <= 0.5), spikes/image {fmt(versus['t2fsnn_spikes_per_image'])} vs "
          f"{fmt(versus['burst_spikes_per_image_at_latency'])} (ratio {fmt(sr_)}, goal <= 0.1), accuracy gap "
          f"{fmt(versus['accuracy_gap_points'])} points (goal within 1). On this small MNIST CNN burst coding "
          "reaches 99% of the ANN within a few dozen steps, while the TTFS pipeline cannot answer before "
          "D*T_s + T_w steps; the paper's advantage comes from deep nets where burst needs thousands of steps. "
          f"Against burst's spikes over all its {burst['T']} steps the spike ratio is "
          f"{fmt(versus['spike_ratio_vs_burst_at_T'])}.")
  if summary["burst_faster_than_rate"] is False:
    notes.append("Burst coding did not reach 99% of the ANN's accuracy in fewer steps than rate coding here.")
  write_study_report(
      workdir, study="snn_coding",
      title="Neural codings of converted SNNs (rate, phase, burst, hybrid, T2FSNN)",
      setup={"data": scale, "model": config.model.arch,
             "conversion": f"BN folded, {config.snn.norm}, spiking max-pool, readout V_L",
             "seed": config.seed, "wall s": f"{summary['wall_s']:.0f}"},
      tables=tables, plots=["accuracy_vs_time.png"], notes=notes)
  return summary
