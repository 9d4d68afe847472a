"""Spiking-YOLO: a Tiny-YOLO-style detector converted to a spiking network, channel-wise normalization and the
signed neuron with imbalanced threshold (IBT).

A small conv + batch-norm + leaky-ReLU grid detector is trained on generated shapes (offline), converted (batch norm
folded, layer-wise or channel-wise 99.9th-percentile normalization, spiking max-pool) and simulated with real-valued
input and either plain IF neurons (negative activations dropped) or signed IBT neurons; mAP@0.5 is measured every
few steps. The table gives the ANN's mAP, each variant's mAP at the last step, the steps to reach 90 % of the ANN's
mAP, spikes per image and the SNN/ANN energy ratio.

Run: ``jaxhw run spiking_yolo --preset quick`` (about 5 minutes on 2 CPU cores). ``--preset full`` reads PASCAL VOC
2007 prepared with tensorflow-datasets (``tfds build voc/2007``) and refuses when it is absent.

References:
  Kim et al., "Spiking-YOLO: Spiking Neural Network for Energy-Efficient Object Detection", AAAI 2020,
  arXiv:1903.06530.
  Redmon and Farhadi, "YOLO9000: Better, Faster, Stronger", CVPR 2017, arXiv:1612.08242 (Tiny YOLO).
  Rueckauer et al., "Conversion of Continuous-Valued Deep Networks to Efficient Event-Driven Networks for Image
  Classification", Frontiers in Neuroscience 2017.
  Horowitz, "Computing's energy problem", ISSCC 2014 (energy per operation).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxhw import detection as det
from jaxhw import snn
from jaxhw.config import PRESETS, ConfigError
from jaxhw.metrics import append_jsonl, write_json
from jaxhw.models.snn_cnn import bn_population_stats
from jaxhw.models.tiny_yolo import TINY_YOLO_VOC_POOLS, TINY_YOLO_VOC_WIDTHS, VOC_ANCHORS_416, grid_size, tiny_yolo
from jaxhw.report import Table, figure, write_study_report
from jaxhw.snn.detection_ops import conv_head_as_dense
from jaxhw.snn.network import at_path, pool, synapse
from jaxhw.train import TrainConfig, train

# The paper's figures (Tiny YOLO on PASCAL VOC 2007).
PAPER_ANN_MAP = 0.5301
PAPER_SNN_MAP = 0.5183
PAPER_SPEEDUP = (2.3, 4.0)
PAPER_ENERGY_RATIO = 1 / 280  # "about 280x less energy" on neuromorphic chips

NORMS = {"layer-wise": "layer_p99.9", "channel-wise": "channel_p99.9"}
NEURONS = {"IF": "rate-std", "IBT": "ibt"}


@dataclasses.dataclass(frozen=True)
class DataConfig(det.ShapesConfig):
  """The generated shapes set (`jaxhw.detection.ShapesConfig`) plus this study's own settings."""

  min_size: int = 10
  max_size: int = 18
  max_iou: float = 0.15
  clutter: float = 2.0
  dataset: str = "shapes"    # shapes (generated offline) | voc2007 (tfds, prepared data only)
  num_test: int = 600        # 300 until 2026-11-29 (2nd session): 200 images left IBT - IF unresolved
  stats_size: int = 1000     # training images for the normalization statistics
  n_eval: int = 600          # test images simulated (the ANN is scored on the same images); was 200

  def __post_init__(self):
    super().__post_init__()
    if self.dataset not in ("shapes", "voc2007"):
      raise ValueError(f"data.dataset={self.dataset!r}; valid: shapes, voc2007")
    if self.stats_size < 1 or self.n_eval < 1:
      raise ValueError(f"data.stats_size={self.stats_size!r} and data.n_eval={self.n_eval!r} must be >= 1")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  widths: tuple[int, ...] = (16, 32, 64, 64)
  pools: int = 3
  anchors: tuple[tuple[float, float], ...] = ((11.0, 11.0), (16.0, 16.0))  # (w, h) in pixels
  alpha: float = 0.1         # leaky-ReLU slope (IBT negative threshold -1/alpha)

  def __post_init__(self):
    if not self.anchors or any(len(a) != 2 or min(a) <= 0 for a in self.anchors):
      raise ValueError(f"model.anchors={self.anchors!r}: one positive (w, h) pair per anchor")


@dataclasses.dataclass(frozen=True)
class SNNConfig:
  T: int = 256               # time steps
  eval_every: int = 4        # mAP measured every this many steps (8 until 2026-11-29, 2nd session)
  percentile: float = 99.9
  sim_batch: int = 200
  mode: str = "stepwise"
  target_fraction: float = 0.9   # steps_to_90pct: first measured step with mAP >= this x ANN mAP
  # Spiking max-pool selection (reconstructed; `jaxhw.snn.Coding.maxpool`): "signed" = largest cumulative signed
  # amplitude (default since 2026-11-29), "abs" = largest cumulative |amplitude| (the earlier runs).
  maxpool: str = "signed"
  n_boot: int = 200          # paired bootstrap resamples of the test images for IBT - IF at T
  # The layer-wise baseline's statistic: "layer_p99.9" (the spec's, Rueckauer 2017) or "layer_max" (Diehl 2015's
  # maximum activation, the layer-norm the Spiking-YOLO paper describes); channel-wise is always channel_p99.9.
  layer_norm: str = "layer_p99.9"

  def __post_init__(self):
    if self.n_boot < 1:
      raise ValueError(f"snn.n_boot={self.n_boot!r} must be >= 1")
    if self.layer_norm not in ("layer_p99.9", "layer_max"):
      raise ValueError(f"snn.layer_norm={self.layer_norm!r}; valid: layer_p99.9, layer_max")
    if self.maxpool not in ("signed", "abs"):
      raise ValueError(f"snn.maxpool={self.maxpool!r}; valid: signed, abs")
    if self.T < 1 or not 1 <= self.eval_every <= self.T:
      raise ValueError(f"snn.T={self.T!r}, snn.eval_every={self.eval_every!r}: need 1 <= eval_every <= T")
    if not 0 < self.target_fraction <= 1:
      raise ValueError(f"snn.target_fraction={self.target_fraction!r} must be in (0, 1]")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  iou_threshold: float = 0.5
  nms_iou: float = 0.45
  score_threshold: float = 0.01
  max_detections: int = 50
  use_07_metric: bool = False    # 11-point interpolation (VOC2007 protocol) instead of all-point


@dataclasses.dataclass(frozen=True)
class EnergyConfig:
  e_ac: float = 0.9          # pJ per accumulate (Horowitz, 45 nm fp32 add)
  e_mac: float = 4.6         # pJ per multiply-accumulate (3.7 + 0.9)


@dataclasses.dataclass(frozen=True)
class Config:
  data: DataConfig = DataConfig()
  model: ModelConfig = ModelConfig()
  train: TrainConfig = TrainConfig(epochs=20, batch_size=64, lr=3e-3, log_every=50)
  snn: SNNConfig = SNNConfig()
  eval: EvalConfig = EvalConfig()
  energy: EnergyConfig = EnergyConfig()
  seed: int = 0


def get_config(preset: str = "quick") -> Config:
  """Presets: ``smoke`` (seconds), ``quick`` (generated 32x32 shapes, about 5 minutes on 2 CPU cores), ``full``
  (PASCAL VOC 2007 through the tfds adapter, Tiny YOLO at 416x416, 11-point mAP, T = 8000)."""
  if preset == "smoke":
    return Config(data=DataConfig(num_train=64, num_test=8, stats_size=32, n_eval=8),
                  model=ModelConfig(widths=(8, 8), pools=2),
                  train=TrainConfig(epochs=1, batch_size=32, lr=3e-3, log_every=1),
                  snn=SNNConfig(T=16, eval_every=8, sim_batch=8))
  if preset == "quick":
    return Config()
  if preset == "full":
    return Config(data=DataConfig(dataset="voc2007", image_size=416, max_size=416, num_train=5011, num_test=4952,
                                  stats_size=1000, n_eval=4952),
                  model=ModelConfig(widths=TINY_YOLO_VOC_WIDTHS, pools=TINY_YOLO_VOC_POOLS, anchors=VOC_ANCHORS_416),
                  train=TrainConfig(epochs=160, batch_size=64, lr=1e-3, schedule="warmup_cosine", warmup_steps=1000,
                                    weight_decay=5e-4, log_every=100, checkpoint_every=2000),
                  snn=SNNConfig(T=8000, eval_every=250, sim_batch=50),
                  eval=EvalConfig(use_07_metric=True, max_detections=100))
  raise ConfigError(f"unknown preset {preset!r}. Valid presets: {', '.join(PRESETS)}")


def _load(config: Config):
  """(train, test, class names, difficult mask of test or None)."""
  d = config.data
  if d.dataset == "shapes":
    tr, te = det.shapes_splits(d, config.seed)
    return tr, te, det.SHAPE_CLASSES, None
  tr = det.load_voc("train+validation", d.image_size, limit=d.num_train)
  te = det.load_voc("test", d.image_size, limit=d.num_test)
  return (det.DetectionSet(tr.images, tr.boxes, np.where(tr.difficult, -1, tr.labels)),
          det.DetectionSet(te.images, te.boxes, te.labels), det.VOC_CLASSES, te.difficult)


def _detections(raw: np.ndarray, config: Config, num_classes: int, decode_fn) -> list:
  boxes, scores = decode_fn(jnp.asarray(raw))
  return det.postprocess(np.asarray(boxes), np.asarray(scores), iou_threshold=config.eval.nms_iou,
                         score_threshold=config.eval.score_threshold, max_detections=config.eval.max_detections)


def _abs_maxpool_forward(net: snn.SNNet, x: jnp.ndarray) -> jnp.ndarray:
  """The converted network in float with each max-pool replaced by "forward the largest |value|", the rule the
  spiking max-pool applies to signed (IBT) neurons through their cumulative |output| (a diagnostic)."""
  h = x
  for op in net.ops:
    if op.kind in ("conv", "dense"):
      h = synapse(op, at_path(net.params, op.path), h)
    elif op.kind == "spike":
      h = jnp.maximum(h, op.alpha * h) if op.alpha > 0 else jax.nn.relu(h)
    elif op.kind == "maxpool":
      k = op.window
      n, hh, ww, ch = h.shape
      b = h[:, :hh // k * k, :ww // k * k].reshape(n, hh // k, k, ww // k, k, ch)
      b = b.transpose(0, 1, 3, 5, 2, 4).reshape(n, hh // k, ww // k, ch, k * k)
      h = jnp.take_along_axis(b, jnp.argmax(jnp.abs(b), -1)[..., None], -1)[..., 0]
    elif op.kind == "avgpool":
      h = pool(op, h)
    elif op.kind == "flatten":
      h = h.reshape(h.shape[0], -1)
  return h * net.out_scale


def _paired_bootstrap(dets_a: list, dets_b: list, gts: list, score_dets, n_boot: int, seed: int) -> np.ndarray:
  """``mAP(a) - mAP(b)`` on `n_boot` resamples of the test images (with replacement), the same resample for both
  (paired): its percentiles bound the difference the test set can resolve."""
  rng = np.random.default_rng(seed)
  out = np.empty(n_boot)
  for b in range(n_boot):
    idx = rng.integers(0, len(gts), len(gts))
    g = [gts[i] for i in idx]
    out[b] = score_dets([dets_a[i] for i in idx], g) - score_dets([dets_b[i] for i in idx], g)
  return out


def channel_ranges(layer_net: snn.SNNet, channel_net: snn.SNNet) -> list[dict]:
  """Per synaptic layer, the spread of the channel-wise scales against the layer-wise one: each channel's
  99.9th-percentile activation over the layer's (``lambda_c / lambda_layer``). Under layer-wise normalization a
  channel whose ratio is r fires at most at rate r, so it needs about 1/r times the steps channel-wise normalization
  gives it: these ratios bound the speed-up channel-wise normalization can bring.

  Args:
    layer_net: the detector converted layer-wise (``layer_p99.9`` or ``layer_max``).
    channel_net: the same detector converted with ``channel_p99.9`` on the same statistics data.

  Returns:
    One row per conv/dense layer: ``layer``, ``channels``, ``min``, ``p10``, ``median`` of the ratios,
    ``below_half`` (the fraction of channels under 0.5) and ``ratios`` (every channel's).

  References:
    Kim et al., "Spiking-YOLO", AAAI 2020, arXiv:1903.06530 (channel-wise normalization).
  """
  rows = []
  for op in channel_net.ops:
    if op.kind not in ("conv", "dense"):
      continue
    lam_c = np.asarray(at_path(channel_net.lambdas, op.path), np.float64)
    r = lam_c / float(np.max(np.asarray(at_path(layer_net.lambdas, op.path))))
    rows.append({"layer": "/".join(op.path), "channels": int(r.size), "min": float(r.min()),
                 "p10": float(np.percentile(r, 10)), "median": float(np.median(r)),
                 "below_half": float(np.mean(r < 0.5)), "ratios": [float(v) for v in r]})
  return rows


def _first_reaching(steps: np.ndarray, curve: np.ndarray, target: float) -> int | None:
  ok = np.nonzero(curve >= target)[0]
  return int(steps[ok[0]]) if ok.size else None


def run(config: Config, workdir: Path, *, quiet: bool = True) -> dict:
  """Trains the detector, converts it four ways and simulates; writes summary.json, plots and report.md."""
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  t_start = time.perf_counter()
  train_set, test_set, class_names, test_difficult = _load(config)
  size = config.data.image_size
  num_classes = len(class_names)
  anchors = tuple(tuple(float(v) for v in a) for a in config.model.anchors)
  na = len(anchors)
  grid = grid_size(size, config.model.pools)
  tboxes, tlabels = det.check_boxes(train_set.boxes, train_set.labels, size, num_classes=num_classes, mode="clip")
  model = tiny_yolo(config.model.widths, pools=config.model.pools, num_anchors=na, num_classes=num_classes,
                    alpha=config.model.alpha)

  # 1. The ANN detector; batch-norm statistics are model state carried by the trainer.
  def loss_fn(params, model_state, batch, key, step):
    raw, new_state = model.apply({"params": params, **model_state}, batch[0], train=True, mutable=["batch_stats"])
    loss, parts = det.yolo_loss(raw, batch[1], batch[2], anchors, num_classes, size)
    return loss, (parts, new_state)

  x = train_set.images
  variables = jax.jit(model.init)(jax.random.key(config.seed), jnp.asarray(x[:1]))
  fingerprint = {"data": dataclasses.asdict(config.data), "model": dataclasses.asdict(config.model),
                 "train": dataclasses.asdict(config.train), "seed": config.seed, "detector": "tiny_yolo"}
  fingerprint["data"].pop("n_eval")
  fingerprint["data"].pop("stats_size")
  result = train(loss_fn, variables["params"], (x, tboxes, tlabels), config.train, workdir,
                 fingerprint=fingerprint, model_state={"batch_stats": variables["batch_stats"]}, quiet=quiet,
                 desc="spiking_yolo ANN")
  variables = {"params": result.params, **result.model_state}
  stats_x = x[:config.data.stats_size]
  variables = {**variables, "batch_stats": bn_population_stats(model, variables, stats_x, batch_size=250)}
  t_train = time.perf_counter() - t_start

  n = min(config.data.n_eval, len(test_set.images))
  xs = test_set.images[:n]
  gboxes, glabels = det.check_boxes(test_set.boxes[:n], test_set.labels[:n], size, num_classes=num_classes)
  gdiff = None if test_difficult is None else test_difficult[:n]
  gts = [(gboxes[i], glabels[i], None if gdiff is None else gdiff[i]) for i in range(n)]
  decode_fn = jax.jit(lambda r: det.decode(r, anchors, num_classes, size))

  def score_dets(dets, gts=gts) -> float:
    return det.mean_average_precision(dets, gts, num_classes, iou_threshold=config.eval.iou_threshold,
                                      use_07_metric=config.eval.use_07_metric).map

  def score(raw) -> float:
    return score_dets(_detections(raw, config, num_classes, decode_fn))

  ann_apply = jax.jit(lambda xb: model.apply(variables, xb, train=False))
  ann_raw = np.concatenate([np.asarray(ann_apply(jnp.asarray(xs[s:s + 250]))) for s in range(0, n, 250)])
  ann_map = score(ann_raw)
  ann_dets = _detections(ann_raw[:4], config, num_classes, decode_fn)

  # 2. Convert (both normalizations) and simulate (both neurons).
  c = config.snn
  emodel = snn.EnergyModel(e_ac=config.energy.e_ac, e_mac=config.energy.e_mac)
  steps = np.arange(c.eval_every, c.T + 1, c.eval_every)
  if steps[-1] != c.T:
    steps = np.append(steps, c.T)
  rows, curves, snn_dets, final_dets = [], {}, None, {}
  e_ann = None
  conv_maps, absmax_maps, nets = {}, {}, {}
  for norm_name, norm in {**NORMS, "layer-wise": c.layer_norm}.items():
    net = nets[norm_name] = snn.convert(model, variables, stats_x, norm=norm, percentile=c.percentile,
                                        batch_size=250)
    e_ann = snn.ann_energy_uj(net, model=emodel)
    conv_raw = np.asarray(snn.snn_ann_apply(net, jnp.asarray(xs))) * np.asarray(net.out_scale)
    conv_maps[norm_name] = score(conv_raw)
    absmax_maps[norm_name] = score(np.asarray(_abs_maxpool_forward(net, jnp.asarray(xs))))
    dense_net = conv_head_as_dense(net)
    for neuron_name, coding in NEURONS.items():
      t0 = time.perf_counter()
      snaps, evs, sops = [], [], []
      for s in range(0, n, c.sim_batch):
        r = snn.simulate(dense_net, xs[s:s + c.sim_batch], snn.get_coding(coding, maxpool=c.maxpool), c.T,
                         mode=c.mode)
        snaps.append(np.asarray(r.output)[steps - 1])
        evs.append(np.asarray(r.step_events))
        sops.append(np.asarray(r.sops))
      out = np.concatenate(snaps, axis=1).reshape((len(steps), n) + ann_raw.shape[1:])
      curve = np.array([score(out[k]) for k in range(len(steps))])
      step_events = np.concatenate(evs, axis=1)
      synops = snn.synops_per_image(np.concatenate(sops, axis=1))
      e_snn = snn.snn_energy_uj(net, synops, real_input=True, model=emodel)
      name = f"{norm_name} + {neuron_name}"
      row = {
          "normalization": norm_name, "neuron": neuron_name, "map": float(curve[-1]),
          "steps_to_90pct": _first_reaching(steps, curve, c.target_fraction * ann_map),
          "steps_to_95pct": _first_reaching(steps, curve, 0.95 * ann_map),
          "spikes_per_image": snn.spikes_per_image(step_events),
          "synops_per_image": synops, "energy_uj": e_snn,
          "energy_ratio_snn_over_ann": e_snn / e_ann, "map_fraction_of_ann": float(curve[-1] / ann_map)
          if ann_map > 0 else None,
          "T": c.T, "sim_s": time.perf_counter() - t0,
      }
      rows.append(row)
      curves[name] = curve
      final_dets[(norm_name, neuron_name)] = _detections(out[-1], config, num_classes, decode_fn)
      if norm_name == "channel-wise" and neuron_name == "IBT":
        snn_dets = _detections(out[-1, :4], config, num_classes, decode_fn)
      append_jsonl(workdir / "metrics.jsonl", {"variant": name, **row})
      if not quiet:
        print(f"{name:24s} mAP@T={row['map']:.4f} steps_to_90%={row['steps_to_90pct']} "
              f"spikes/img={row['spikes_per_image']:.0f} ({row['sim_s']:.1f}s)", flush=True)

  by = {(r["normalization"], r["neuron"]): r for r in rows}
  lw, cw = by[("layer-wise", "IBT")]["steps_to_90pct"], by[("channel-wise", "IBT")]["steps_to_90pct"]
  speedup = (lw / cw) if (lw is not None and cw) else None
  speedup_lower_bound = (c.T / cw) if (lw is None and cw) else None
  ibt_cw = by[("channel-wise", "IBT")]
  goals = {
      "ann_map_at_least_0.6": bool(ann_map >= 0.6),
      "channelwise_ibt_at_least_95pct_of_ann": bool(ibt_cw["map"] >= 0.95 * ann_map),
      "channelwise_speedup_at_least_2": bool((speedup or speedup_lower_bound or 0) >= 2),
      "ibt_above_if_at_T": bool(all(by[(nm, "IBT")]["map"] > by[(nm, "IF")]["map"] for nm in NORMS)),
  }
  # Paired bootstrap over the test images (the same resamples for both neurons): is IBT - IF at T resolved?
  ibt_minus_if = {}
  for nm in NORMS:
    diffs = _paired_bootstrap(final_dets[(nm, "IBT")], final_dets[(nm, "IF")], gts, score_dets, c.n_boot,
                              config.seed)
    lo, hi = np.quantile(diffs, [0.025, 0.975])
    ibt_minus_if[nm] = {"diff": by[(nm, "IBT")]["map"] - by[(nm, "IF")]["map"], "ci95": [float(lo), float(hi)],
                        "resolved": bool(lo > 0 or hi < 0), "n_boot": c.n_boot}
  ranges = channel_ranges(nets["layer-wise"], nets["channel-wise"])
  summary = {
      "ann_map": ann_map,
      "rows": rows,
      "channelwise_speedup": speedup,
      "channelwise_speedup_lower_bound": speedup_lower_bound,
      "channel_ranges": ranges,
      "converted_ann_map": conv_maps,
      "abs_maxpool_ann_map": absmax_maps,
      "ibt_minus_if_at_T": ibt_minus_if,
      "goals": goals,
      "map_curves": {k: {"steps": steps.tolist(), "map": v.tolist()} for k, v in curves.items()},
      "n_eval_images": n,
      "ann_energy_uj": e_ann,
      "interpolation": "11-point" if config.eval.use_07_metric else "all-point",
      "train_s": t_train,
      "wall_s": time.perf_counter() - t_start,
  }
  write_json(workdir / "summary.json", summary)

  # 3. Plots.
  fig = figure(figsize=(7.5, 4.5))
  ax = fig.subplots()
  for name, curve in curves.items():
    ax.plot(steps, curve, label=name, lw=1.4, marker=".", ms=3)
  ax.axhline(ann_map, color="k", ls="--", lw=1, label="ANN")
  ax.axhline(c.target_fraction * ann_map, color="gray", ls=":", lw=1, label=f"{c.target_fraction:.0%} of ANN")
  ax.set(xlabel="time step", ylabel="mAP@0.5", ylim=(0.0, 1.0), title=f"mAP vs time step ({n} test images)")
  ax.legend(fontsize=8, loc="lower right")
  fig.tight_layout()
  fig.savefig(workdir / "map_vs_time.png", dpi=100)

  fig = figure(figsize=(10, 2.9))
  axes = fig.subplots(1, 4)
  for i, ax in enumerate(axes):
    ax.imshow(xs[i], extent=(0, size, size, 0))
    for (boxes, labels, colour, ls) in ((gboxes[i], glabels[i], "lime", "-"),
                                        (ann_dets[i].boxes[ann_dets[i].scores > 0.3],
                                         ann_dets[i].labels[ann_dets[i].scores > 0.3], "cyan", "--"),
                                        (snn_dets[i].boxes[snn_dets[i].scores > 0.3],
                                         snn_dets[i].labels[snn_dets[i].scores > 0.3], "red", ":")):
      for b, lab in zip(boxes, labels):
        if lab < 0:
          continue
        ax.add_patch(_rect(b, colour, ls))
        ax.text(b[0], b[1], class_names[int(lab)][:3], color=colour, fontsize=6, va="bottom")
    ax.set_axis_off()
  fig.suptitle("ground truth (green), ANN (cyan dashed), SNN channel-wise + IBT at T (red dotted); score > 0.3",
               fontsize=8)
  fig.tight_layout()
  fig.savefig(workdir / "detections.png", dpi=110)

  fig = figure(figsize=(7.5, 3.6))
  ax = fig.subplots()
  jitter = np.random.default_rng(0)
  for i, r in enumerate(ranges):
    head = i == len(ranges) - 1
    ax.scatter(i + jitter.uniform(-0.25, 0.25, r["channels"]), r["ratios"], s=9, alpha=0.6,
               color="gray" if head else "tab:blue")
    ax.plot([i - 0.3, i + 0.3], [r["median"]] * 2, color="k", lw=1.5)
  ax.axhline(0.5, color="tab:red", ls=":", lw=1, label="0.5: channel-wise is 2x faster for this channel")
  ax.set_xticks(range(len(ranges)), [r["layer"] + (" (head, linear)" if i == len(ranges) - 1 else "")
                                      for i, r in enumerate(ranges)], fontsize=8)
  ax.set(ylabel="lambda_channel / lambda_layer", ylim=(0, None),
         title="Channel ranges (99.9th percentiles; black: median per layer)")
  ax.legend(fontsize=8, loc="lower left")
  fig.tight_layout()
  fig.savefig(workdir / "channel_ranges.png", dpi=100)

  # 4. Report.
  table = Table(
      f"Per variant (mAP@0.5 {summary['interpolation']} at the last step T = {c.T}; steps to "
      f"{c.target_fraction:.0%} of the ANN's mAP, measured every {c.eval_every} steps)",
      ["variant", "mAP @T", "mAP / ANN", "steps to 90%", "spikes/img", "SOPs/img", "E_SNN / E_ANN"],
      [[f"{r['normalization']} + {r['neuron']}", r["map"], r["map_fraction_of_ann"], r["steps_to_90pct"],
        r["spikes_per_image"], r["synops_per_image"], r["energy_ratio_snn_over_ann"]] for r in rows])
  paper = Table("Against the paper (Tiny YOLO, PASCAL VOC 2007)", ["", "paper", "jaxhw", "goal"], [
      ["ANN mAP", PAPER_ANN_MAP, ann_map, ">= 0.6 (generated set)"],
      ["SNN mAP (channel-wise + IBT)", PAPER_SNN_MAP, ibt_cw["map"], ">= 95% of ANN"],
      ["SNN / ANN mAP", PAPER_SNN_MAP / PAPER_ANN_MAP, ibt_cw["map_fraction_of_ann"], ">= 0.95"],
      ["channel-wise speed-up (layer / channel steps, IBT)", f"{PAPER_SPEEDUP[0]}-{PAPER_SPEEDUP[1]}",
       speedup if speedup is not None else (f">= {speedup_lower_bound:.3g}" if speedup_lower_bound else None),
       ">= 2"],
      ["E_SNN / E_ANN", f"~{PAPER_ENERGY_RATIO:.4f} (neuromorphic chip)", ibt_cw["energy_ratio_snn_over_ann"], ""],
  ])
  spread = Table("Channel ranges: each channel's 99.9th-percentile activation over its layer's (lambda_c / "
                 "lambda_layer); a channel at ratio r fires at most at rate r under layer-wise normalization",
                 ["layer", "channels", "min", "10th pct", "median", "share < 0.5"],
                 [[r["layer"], r["channels"], r["min"], r["p10"], r["median"], r["below_half"]] for r in ranges])
  d = config.data
  scale = (f"{d.dataset}: {len(x):,} train images {size}x{size}, {num_classes} classes, mAP on {n:,} test images; "
           f"detector convs {config.model.widths}, {config.model.pools} max-pools, {grid}x{grid} grid, {na} anchors")
  notes = [
      f"Scale: {scale}. The paper converts Tiny YOLO (9 convs, 416x416, VOC07+12) and simulates up to 8,000 "
      "steps; absolute mAP and step counts are not comparable, only the ordering of the variants.",
      "Converted (normalised, batch-norm-folded) ANN in float: mAP " + ", ".join(
          f"{k} {v:.4f}" for k, v in conv_maps.items()) + f" (ANN {ann_map:.4f}).",
      "IF = rate_std neurons (threshold 1, reset by subtraction): negative leaky-ReLU activations are dropped. "
      f"IBT = signed neurons: +1 at V >= 1, -1 at V <= -1/alpha (alpha {config.model.alpha}).",
      f"Max-pool (snn.maxpool={c.maxpool!r}, reconstructed): the spiking max-pool forwards, per window, the "
      "neuron with the largest cumulative " + ("signed amplitude, the rate estimate of the ANN's max"
                                               if c.maxpool == "signed" else "|amplitude|") +
      " (jaxhw.snn.spiking_maxpool). Selecting by |amplitude| (the runs before 2026-11-29) lets a strongly "
      "negative IBT neuron win a window whose ANN maximum is a small positive value: the float network with "
      "that |value| max-pool scores mAP " + ", ".join(f"{k} {v:.4f}" for k, v in absmax_maps.items()) +
      " (IF neurons are non-negative: both rules are the exact max).",
      "The 1x1 grid head is read as the linear output layer (V_L / bias steps, times its lambda); "
      "jaxhw.snn.detection_ops.conv_head_as_dense presents it to the simulator as the equivalent dense map.",
      f"Energy model (configurable, energy.*): Horowitz ISSCC 2014, 45 nm fp32: AC {config.energy.e_ac} pJ, MAC "
      f"{config.energy.e_mac} pJ; E_ANN = MAC x MACs, E_SNN = AC x SOPs + MAC x MACs of the first layer (real "
      "input). Memory traffic is not counted; the paper's ~280x is on neuromorphic chips, a different model.",
  ]
  notes.append("IBT - IF mAP at T, paired bootstrap over the test images (95 % interval): " + "; ".join(
      f"{nm} {v['diff']:+.4f} [{v['ci95'][0]:+.4f}, {v['ci95'][1]:+.4f}]"
      + ("" if v["resolved"] else " (not resolved by these images)") for nm, v in ibt_minus_if.items()) + ".")
  notes.append("Channel ranges (table): under layer-wise normalization a hidden channel whose 99.9th percentile is r "
               "times its layer's fires at most at rate r, so its value takes about 1/r times the steps channel-wise "
               "normalization gives it; the spread of these ratios bounds the channel-wise speed-up. The last row, the "
               "grid head, is read as a membrane potential (linear), where the ratios cost no steps.")
  for goal, ok in goals.items():
    if not ok:
      notes.append(f"Short of the goal {goal}.")
  if speedup is None:
    notes.append("Layer-wise + IBT never reached 90% of the ANN's mAP within T; channelwise_speedup is null and "
                 "channelwise_speedup_lower_bound = T / channel-wise steps." if lw is None else
                 "Channel-wise + IBT never reached 90% of the ANN's mAP within T; no speed-up measured.")
  write_study_report(workdir, study="spiking_yolo", title="Spiking-YOLO: converted spiking object detector",
                     setup={"data": scale, "conversion": f"BN folded, {c.layer_norm} / channel_p99.9, spiking max-pool",
                            "T": c.T, "seed": config.seed, "wall s": f"{summary['wall_s']:.0f}"},
                     tables=[table, paper, spread], notes=notes,
                     plots=["map_vs_time.png", "channel_ranges.png", "detections.png"])
  return summary


def _rect(b, colour, ls):
  from matplotlib.patches import Rectangle

  return Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, edgecolor=colour, ls=ls, lw=1.2)
