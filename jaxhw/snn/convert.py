"""ANN-to-SNN conversion of a Flax model: batch-norm folding, activation statistics, weight/threshold normalisation.

`convert(model, variables, x_stats)` reads a Linen module that describes its layers with a ``layers`` tuple of
`jaxhw.layers.LayerSpec` (e.g. `jaxhw.models.snn_cnn.SequentialCNN`) and its variables (``params`` and
``batch_stats``). Batch norm is folded into the preceding conv/dense layer; the activation statistics are
gathered on the folded ANN, run as the same Flax model (``model.clone(layers=folded)``) with the
`jaxhw.effects.record_activations` forward effect attached; every layer is identified by its params path.

References:
  Diehl et al., "Fast-Classifying, High-Accuracy Spiking Deep Networks Through Weight and Threshold Balancing",
  IJCNN 2015 (layer max).
  Rueckauer et al., "Conversion of Continuous-Valued Deep Networks to Efficient Event-Driven Networks for Image
  Classification", Frontiers in Neuroscience 2017 (99.9th percentile, batch-norm folding).
  Park et al., "Fast and Efficient Information Transmission with Burst Spikes in Deep Spiking Neural Networks",
  DAC 2019, arXiv:1809.03142, and Park et al., "T2FSNN: Deep Spiking Neural Networks with Time-to-first-spike
  Coding", DAC 2020, arXiv:2003.11741 (per-neuron percentile, then max over neurons).
  Kim et al., "Spiking-YOLO: Spiking Neural Network for Energy-Efficient Object Detection", AAAI 2020,
  arXiv:1903.06530 (channel-wise normalisation).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxhw import effects
from jaxhw import layers as L
from jaxhw.snn.network import SNNet, SNNOp, at_path, forward

__all__ = ["NORMS", "fold_batchnorm", "snn_ops", "activation_scales", "convert"]

#: Weight-normalization methods of `convert`: the activation statistic (max or 99.9th percentile) and its
#: granularity (layer, channel, neuron), or none.
NORMS = ("layer_max", "layer_p99.9", "neuron_p99.9_max", "channel_p99.9", "channel_max", "none")
_SUPPORTED = ("conv", "dense", "bn", "relu", "leaky_relu", "maxpool", "avgpool", "flatten", "dropout")
_COLLECTION = "snn_activations"

Path = tuple[str, ...]


def _layers_of(model: nn.Module) -> tuple[L.LayerSpec, ...]:
  specs = getattr(model, "layers", None)
  if specs is None or not all(isinstance(s, L.LayerSpec) for s in specs):
    raise ValueError(f"model: a {type(model).__name__} without a `layers` tuple of jaxhw.layers.LayerSpec; the "
                     "converter reads the layer order from it (e.g. jaxhw.models.snn_cnn.SequentialCNN)")
  return tuple(specs)


def _set(tree: dict, path: Path, value: Any) -> None:
  for p in path[:-1]:
    tree = tree.setdefault(p, {})
  tree[path[-1]] = value


def fold_batchnorm(layers: Sequence[L.LayerSpec], params: Mapping, batch_stats: Mapping
                   ) -> tuple[tuple[L.LayerSpec, ...], dict]:
  """Folds every batch norm into the conv/dense layer before it and drops dropout.

  ``W' = W * gamma/sigma`` per output channel, ``b' = (b - mu) * gamma/sigma + beta``, ``sigma = sqrt(var + eps)``.

  Args:
    layers: the ANN's layer specs.
    params: its ``variables["params"]``.
    batch_stats: its ``variables["batch_stats"]`` (population statistics).

  Returns:
    ``(folded_layers, folded_params)``: the specs without batch norm and dropout, and ``{path: {"kernel",
    "bias"}}`` of the conv/dense layers (same paths as in `params`).

  Raises:
    ValueError: a layer the converter does not support (named with its index), batch norm or an activation
      not after a conv/dense layer, a missing parameter path.
  """
  paths = L.param_paths(layers)
  folded: list[L.LayerSpec] = []
  weights: dict = {}
  last: Path | None = None  # path of the conv/dense layer the next batch norm folds into
  for i, (layer, path) in enumerate(zip(layers, paths)):
    if layer.kind not in _SUPPORTED:
      raise ValueError(f"layer {i} ({layer.kind!r}) is not supported by the ANN-to-SNN converter; "
                       f"supported layers: {_SUPPORTED}")
    try:
      p = at_path(params, path) if path is not None else None
    except KeyError:
      raise ValueError(f"layer {i} ({layer.kind!r}): no parameters at path {'/'.join(path)} in the params "
                       "tree") from None
    if layer.kind in ("conv", "dense"):
      _set(weights, path, {"kernel": jnp.asarray(p["kernel"]), "bias": jnp.asarray(p["bias"])})
      folded.append(layer)
      last = path
    elif layer.kind == "bn":
      if last is None or not folded or folded[-1].kind not in ("conv", "dense"):
        raise ValueError(f"layer {i} ('bn') must directly follow a conv or dense layer to be folded")
      st = at_path(batch_stats, path)
      g = p["scale"] * jax.lax.rsqrt(st["var"] + layer.eps)
      w = at_path(weights, last)
      _set(weights, last, {"kernel": w["kernel"] * g, "bias": (w["bias"] - st["mean"]) * g + p["bias"]})
    elif layer.kind in ("relu", "leaky_relu"):
      if not folded or folded[-1].kind not in ("conv", "dense"):
        raise ValueError(f"layer {i} ({layer.kind!r}) must follow a conv/dense(+bn) layer")
      folded.append(layer)
      last = None
    elif layer.kind == "dropout":
      continue
    else:
      folded.append(layer)
      last = None
  return tuple(folded), weights


def snn_ops(folded_layers: Sequence[L.LayerSpec]) -> tuple[SNNOp, ...]:
  """The SNN op list of folded layers (ReLU / leaky ReLU -> ``spike``).

  Raises:
    ValueError: the network does not end with a conv/dense output layer without an activation.
  """
  ops: list[SNNOp] = []
  for layer, path in zip(folded_layers, L.param_paths(folded_layers)):
    if layer.kind in ("conv", "dense"):
      ops.append(SNNOp(layer.kind, path=path, padding=layer.padding))
    elif layer.kind in ("relu", "leaky_relu"):
      alpha = layer.alpha if layer.kind == "leaky_relu" else 0.0
      ops.append(SNNOp("spike", alpha=alpha, index=sum(o.kind == "spike" for o in ops)))
    elif layer.kind in ("maxpool", "avgpool"):
      ops.append(SNNOp(layer.kind, window=layer.window))
    elif layer.kind == "flatten":
      ops.append(SNNOp("flatten"))
  syn = [k for k, o in enumerate(ops) if o.kind in ("conv", "dense")]
  if not syn or any(o.kind == "spike" for o in ops[syn[-1]:]):
    raise ValueError("the network must end with a conv/dense output layer without an activation")
  return tuple(ops)


def _scale_of(a: np.ndarray, norm: str, percentile: float) -> np.ndarray:
  """Per-channel lambda ``[C]`` of activations ``a`` of shape ``[N, ..., C]``."""
  c = a.shape[-1]
  if norm == "none":
    lam = np.ones(c)
  elif norm == "layer_max":
    lam = np.full(c, a.max())
  elif norm == "layer_p99.9":
    pos = a[a > 0]
    lam = np.full(c, np.percentile(pos, percentile) if pos.size else 1.0)
  elif norm == "neuron_p99.9_max":
    flat = a.reshape(a.shape[0], -1)
    lam = np.full(c, np.percentile(flat, percentile, axis=0).max())
  elif norm == "channel_p99.9":
    lam = np.percentile(a.reshape(-1, c), percentile, axis=0)
  elif norm == "channel_max":
    lam = a.reshape(-1, c).max(0)
  else:
    raise ValueError(f"norm={norm!r}; valid norms: {NORMS}")
  lam = np.asarray(lam, np.float64)
  return np.where(lam > 0, lam, 1.0).astype(np.float32)


def activation_scales(model: nn.Module, params: Mapping, x: np.ndarray, *, norm: str = "neuron_p99.9_max",
                      percentile: float = 99.9, batch_size: int = 500) -> dict:
  """Lambda of every conv/dense layer's activation over `x`, from a batch-norm-free model.

  The layers' outputs are recorded by the `jaxhw.effects.record_activations` forward effect; a layer followed by
  a ReLU (leaky ReLU) is measured after it, the output layer as is.

  Args:
    model: a Linen module with a ``layers`` tuple of `jaxhw.layers.LayerSpec` and no batch norm (e.g. the folded
      ANN), applied as ``model.apply({"params": params}, x, train=False)``.
    params: its params.
    x: statistics images (training set).
    norm: one of `NORMS`.
    percentile: the percentile of the ``p99.9`` norms.
    batch_size: images per forward pass.

  Returns:
    ``{path...: [C] float32}``, keyed like `params`.
  """
  if norm not in NORMS:
    raise ValueError(f"norm={norm!r}; valid norms: {NORMS}")
  ops = snn_ops(_layers_of(model))
  recording = effects.attach(model.apply, effects.record_activations(_COLLECTION))

  @jax.jit
  def outputs(params, xb):
    _, state = recording({"params": params}, xb, train=False, mutable=[_COLLECTION])
    rec = state[_COLLECTION]
    out = []
    for k, op in enumerate(ops):
      if op.kind in ("conv", "dense"):
        h = at_path(rec, op.path)["outputs"][0]
        nxt = ops[k + 1] if k + 1 < len(ops) else None
        if nxt is not None and nxt.kind == "spike":
          h = jnp.maximum(h, nxt.alpha * h) if nxt.alpha > 0 else jax.nn.relu(h)
        out.append(h)
    return out

  x = np.asarray(x)
  chunks = [[np.asarray(a) for a in outputs(params, jnp.asarray(x[s:s + batch_size]))]
            for s in range(0, len(x), batch_size)]
  lams: dict = {}
  syn = [op for op in ops if op.kind in ("conv", "dense")]
  for j, op in enumerate(syn):
    _set(lams, op.path, _scale_of(np.concatenate([c[j] for c in chunks]), norm, percentile))
  return lams


def _covering_outputs(size: int, kernel: int, padding: str) -> np.ndarray:
  """For a stride-1 1-D convolution over `size` inputs: how many output positions read each input position."""
  if padding == "SAME":
    lo, n_out = (kernel - 1) // 2, size          # XLA's SAME: the extra padding goes after
  elif padding == "VALID":
    lo, n_out = 0, size - kernel + 1
  else:
    raise ValueError(f"conv padding {padding!r} is not supported; valid: 'SAME', 'VALID'")
  i = np.arange(size)
  # output o reads inputs o - lo .. o - lo + kernel - 1
  return np.maximum(0, np.minimum(n_out - 1, i + lo) - np.maximum(0, i + lo - kernel + 1) + 1)


def _fanout(op: SNNOp, in_shape, w_shape) -> np.ndarray:
  """Exact fan-out of every input neuron (how many synapses leave it): for a dense layer every output; for a
  stride-1 conv, output channels times the output positions whose window covers it (separable in H and W)."""
  if op.kind == "dense":
    return np.full(tuple(in_shape), w_shape[-1], np.int32)
  kh, kw, _, c_out = w_shape
  h, w, c_in = in_shape
  rows, cols = _covering_outputs(h, kh, op.padding), _covering_outputs(w, kw, op.padding)
  fan = rows[:, None] * cols[None, :] * c_out
  return np.broadcast_to(fan[:, :, None], (h, w, c_in)).astype(np.int32)


def _expand_input_lambda(lam_c: np.ndarray, shape) -> np.ndarray:
  """Lambda of every input feature of a dense layer fed by a flattened ``[H, W, C]`` map."""
  return np.tile(lam_c, int(np.prod(shape)) // lam_c.shape[0])


def _given_lambdas(lambdas, ops) -> dict:
  syn = [op for op in ops if op.kind in ("conv", "dense")]
  out: dict = {}
  if isinstance(lambdas, Mapping):
    for op in syn:
      _set(out, op.path, np.asarray(at_path(lambdas, op.path), np.float32))
  else:
    lambdas = list(lambdas)
    if len(lambdas) != len(syn):
      raise ValueError(f"lambdas has {len(lambdas)} entries; the network has {len(syn)} conv/dense layers")
    for op, lam in zip(syn, lambdas):
      _set(out, op.path, np.asarray(lam, np.float32))
  return out


def convert(model: nn.Module, variables: Mapping, x_stats: np.ndarray, *, norm: str = "neuron_p99.9_max",
            norm_form: str = "weight", percentile: float = 99.9, batch_size: int = 500,
            lambdas: Mapping | Sequence[np.ndarray] | None = None) -> SNNet:
  """Converts a ReLU CNN with batch norm, given as a Flax model and its variables, to a spiking network.

  Args:
    model: a Linen module with a ``layers`` tuple of `jaxhw.layers.LayerSpec` whose ``clone(layers=...)`` builds
      the same network with other layers (e.g. `jaxhw.models.snn_cnn.SequentialCNN`).
    variables: its variables: ``params`` and, with batch norm, ``batch_stats`` (population statistics).
    x_stats: images for the activation statistics (training images); one example's shape is the input shape.
    norm: one of `NORMS` (``neuron_p99.9_max`` is the official default of T2FSNN / burst coding).
    norm_form: ``"weight"`` (rescale W, b) or ``"threshold"`` (keep W, b; scale every spiking layer's
      thresholds and amplitudes by its lambda); both give the same spikes.
    percentile: percentile of the ``p99.9`` norms.
    batch_size: images per statistics pass.
    lambdas: optional given scales instead of statistics: ``{path: [C]}`` keyed like the params, or one ``[C]``
      array per conv/dense layer in order.

  Returns:
    An `SNNet` whose ``params`` are ``{path: {"kernel", "bias"}}`` of the conv/dense layers.

  Raises:
    ValueError: a model without layer specs, an unsupported layer (named), an unknown ``norm`` or ``norm_form``.
  """
  if norm_form not in ("weight", "threshold"):
    raise ValueError(f"norm_form={norm_form!r}; valid: ('weight', 'threshold')")
  if norm not in NORMS:
    raise ValueError(f"norm={norm!r}; valid norms: {NORMS}")
  layers = _layers_of(model)
  folded_layers, weights = fold_batchnorm(layers, variables["params"], variables.get("batch_stats", {}))
  ops = snn_ops(folded_layers)
  x_stats = np.asarray(x_stats)
  if lambdas is None:
    lams = activation_scales(model.clone(layers=folded_layers), weights, x_stats, norm=norm,
                             percentile=percentile, batch_size=batch_size)
  else:
    lams = _given_lambdas(lambdas, ops)
  in_shape = tuple(int(d) for d in x_stats.shape[1:])
  shapes = []
  h = jax.ShapeDtypeStruct((1,) + in_shape, jnp.float32)
  for k in range(len(ops)):
    h = jax.eval_shape(lambda xx, k=k: forward(ops[k:k + 1], weights, xx)[0], h)
    shapes.append(tuple(h.shape[1:]))
  # Rescale: W[..., i, j] * lambda_prev[i] / lambda_out[j], b / lambda_out (weight form only).
  new_w: dict = {}
  fanouts: dict = {}
  scales: list = []
  lam_prev = np.ones(in_shape[-1], np.float32)
  prev_shape = in_shape
  out_lam = None
  for k, op in enumerate(ops):
    if op.kind in ("conv", "dense"):
      wb = at_path(weights, op.path)
      w = np.asarray(wb["kernel"], np.float64)
      b = np.asarray(wb["bias"], np.float64)
      lam_out = at_path(lams, op.path)
      lin = lam_prev if lam_prev.shape[0] == w.shape[-2] else _expand_input_lambda(lam_prev, prev_shape)
      if norm_form == "weight":
        w = w * lin.reshape((1,) * (w.ndim - 2) + (-1, 1)) / lam_out
        b = b / lam_out
      _set(new_w, op.path, {"kernel": jnp.asarray(w, jnp.float32), "bias": jnp.asarray(b, jnp.float32)})
      _set(fanouts, op.path, jnp.asarray(_fanout(op, prev_shape, w.shape)))
      lam_prev = lam_out
      out_lam = lam_out
    elif op.kind == "spike":
      scales.append(None if norm_form == "weight" else jnp.asarray(lam_prev))
    prev_shape = shapes[k]
  out_scale = jnp.asarray(out_lam) if norm_form == "weight" else jnp.ones_like(jnp.asarray(out_lam))
  return SNNet(ops=ops, params=new_w, lambdas=jax.tree.map(jnp.asarray, lams), scales=tuple(scales),
               out_scale=out_scale, input_shape=in_shape, fanouts=fanouts, shapes=tuple(shapes))
