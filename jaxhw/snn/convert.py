"""ANN-to-SNN conversion: batch-norm folding, activation statistics, weight/threshold normalisation.

The converted network :class:`SNNet` is a flat list of static ops (``conv``, ``dense``, ``spike``,
``maxpool``, ``avgpool``, ``flatten``) plus the weights; the last synaptic op without a ``spike`` after it is
the integrating output layer.

References:
  SNN spec (``shared/specs/snn.md``) section 1.3; Diehl et al. 2015 (layer max); Rueckauer et al. 2017 (99.9th
  percentile); Park et al. 2019/2020 (per-neuron percentile then max); Kim et al. 2020 (channel-wise).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from jaxhw.models.snn_cnn import LayerDef, conv2d, layer_key, pool2d

__all__ = [
    "NORMS",
    "SNNOp",
    "SNNet",
    "fold_batchnorm",
    "activation_scales",
    "convert",
    "snn_ann_apply",
    "ann_macs",
]

NORMS = ("layer_max", "layer_p99.9", "neuron_p99.9_max", "channel_p99.9", "channel_max", "none")
_SUPPORTED = ("conv", "dense", "bn", "relu", "leaky_relu", "maxpool", "avgpool", "flatten", "dropout")


@dataclasses.dataclass(frozen=True)
class SNNOp:
  """One op of a converted network (static).

  Attributes:
    kind: ``conv | dense | spike | maxpool | avgpool | flatten``.
    padding: conv padding.
    window: pooling window.
    alpha: leaky-ReLU slope for ``spike`` ops converted from leaky-ReLU (0 for ReLU).
    index: index of the synaptic op's weights in ``params`` or of the spiking layer (0-based hidden index).
  """

  kind: str
  padding: str = "VALID"
  window: int = 2
  alpha: float = 0.0
  index: int = 0


class SNNet(NamedTuple):
  """A converted network.

  Attributes:
    ops: static op list.
    params: one ``{"w", "b"}`` dict per synaptic op (normalised in weight form).
    lambdas: per spiking layer then the output, the per-channel scale lambda (``[C]``).
    scales: threshold-form factors per spiking layer (``None`` in weight form).
    out_scale: ``[C]`` factor turning ``V_L / n_b`` into the ANN's logits.
    input_shape: one example's shape.
    fanouts: per synaptic op, the int32 fan-out of every input neuron (shape of one example's input).
    shapes: per op, its output shape for one example.
  """

  ops: tuple
  params: tuple
  lambdas: tuple
  scales: tuple
  out_scale: Array
  input_shape: tuple
  fanouts: tuple
  shapes: tuple


def fold_batchnorm(arch: Sequence[LayerDef], params: dict, batch_stats: dict, *, eps: float = 1e-5
                   ) -> tuple[tuple[SNNOp, ...], list[dict]]:
  """Folds BN into the preceding conv/dense and maps layers to SNN ops (ReLU -> ``spike``; dropout dropped).

  ``W' = W * gamma/sigma`` per output channel, ``b' = (b - mu) * gamma/sigma + beta``,
  ``sigma = sqrt(var + eps)``.

  Args:
    arch: the ANN's layers.
    params: its weights.
    batch_stats: BN population statistics.
    eps: BN epsilon.

  Returns:
    ``(ops, weights)``.

  Raises:
    ValueError: a layer the converter does not support (named with its index), or BN not after conv/dense.
  """
  ops: list[SNNOp] = []
  weights: list[dict] = []
  for i, layer in enumerate(arch):
    name = layer_key(i, layer)
    if layer.kind not in _SUPPORTED:
      raise ValueError(f"layer {i} ({layer.kind!r}) is not supported by the ANN-to-SNN converter; "
                       f"supported layers: {_SUPPORTED}")
    if layer.kind in ("conv", "dense"):
      ops.append(SNNOp(layer.kind, padding=layer.padding, index=len(weights)))
      weights.append({"w": jnp.asarray(params[name]["w"]), "b": jnp.asarray(params[name]["b"])})
    elif layer.kind == "bn":
      if not ops or ops[-1].kind not in ("conv", "dense"):
        raise ValueError(f"layer {i} ('bn') must directly follow a conv or dense layer to be folded")
      g = params[name]["scale"] * jax.lax.rsqrt(batch_stats[name]["var"] + eps)
      wb = weights[-1]
      weights[-1] = {"w": wb["w"] * g, "b": (wb["b"] - batch_stats[name]["mean"]) * g + params[name]["bias"]}
    elif layer.kind in ("relu", "leaky_relu"):
      if not ops or ops[-1].kind not in ("conv", "dense"):
        raise ValueError(f"layer {i} ({layer.kind!r}) must follow a conv/dense(+bn) layer")
      alpha = layer.alpha if layer.kind == "leaky_relu" else 0.0
      ops.append(SNNOp("spike", alpha=alpha, index=sum(o.kind == "spike" for o in ops)))
    elif layer.kind in ("maxpool", "avgpool"):
      ops.append(SNNOp(layer.kind, window=layer.window))
    elif layer.kind == "flatten":
      ops.append(SNNOp("flatten"))
  syn = [k for k, o in enumerate(ops) if o.kind in ("conv", "dense")]
  if not syn or any(o.kind == "spike" for o in ops[syn[-1]:]):
    raise ValueError("the network must end with a conv/dense output layer without an activation")
  return tuple(ops), weights


def _forward(ops, weights, x, *, collect=False):
  """Float forward of the op list (``spike`` is ReLU / leaky-ReLU): logits and activations per spike op."""
  h = x
  acts = []
  for op in ops:
    if op.kind == "conv":
      w = weights[op.index]
      h = conv2d(h, w["w"], op.padding) + w["b"]
    elif op.kind == "dense":
      w = weights[op.index]
      h = h.reshape(h.shape[0], -1) @ w["w"] + w["b"]
    elif op.kind == "spike":
      h = jnp.maximum(h, op.alpha * h) if op.alpha > 0 else jax.nn.relu(h)
      if collect:
        acts.append(h)
    elif op.kind in ("maxpool", "avgpool"):
      h = pool2d(h, op.window, op.kind)
    elif op.kind == "flatten":
      h = h.reshape(h.shape[0], -1)
  return h, acts


def snn_ann_apply(net: SNNet, x: Float[Array, "batch ..."], *, return_activations: bool = False):
  """The converted (normalised) network run as an ANN: logits in the normalised domain (times ``out_scale``
  gives the original logits), and optionally the activation of every spiking layer."""
  logits, acts = _forward(net.ops, net.params, x, collect=True)
  return (logits, acts) if return_activations else logits


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


def activation_scales(ops, weights, x: np.ndarray, *, norm: str = "neuron_p99.9_max",
                      percentile: float = 99.9, batch_size: int = 500) -> list[np.ndarray]:
  """Lambda per spiking layer and for the output, from the folded ANN's activations on ``x``.

  Args:
    ops, weights: from :func:`fold_batchnorm`.
    x: statistics images (training set).
    norm: one of ``NORMS``.
    percentile: the percentile of the ``p99.9`` norms.
    batch_size: images per forward pass.

  Returns:
    A list of ``[C]`` float32 arrays, spiking layers in order then the output.
  """
  if norm not in NORMS:
    raise ValueError(f"norm={norm!r}; valid norms: {NORMS}")
  fwd = jax.jit(lambda xb: (lambda r: r[1] + [r[0]])(_forward(ops, weights, xb, collect=True)))
  chunks: list[list[np.ndarray]] = []
  for s in range(0, len(x), batch_size):
    chunks.append([np.asarray(a) for a in fwd(jnp.asarray(x[s:s + batch_size]))])
  per_layer = [np.concatenate([c[k] for c in chunks]) for k in range(len(chunks[0]))]
  return [_scale_of(a, norm, percentile) for a in per_layer]


def _fanout(op: SNNOp, in_shape, w_shape) -> np.ndarray:
  """Exact fan-out of every input neuron: VJP of the op with an all-ones kernel applied to ones."""
  x = jnp.zeros((1,) + tuple(in_shape), jnp.float32)
  ones_w = jnp.ones(w_shape, jnp.float32)
  if op.kind == "conv":
    f = lambda xx: conv2d(xx, ones_w, op.padding)
  else:
    f = lambda xx: xx.reshape(1, -1) @ ones_w
  y, vjp = jax.vjp(f, x)
  (g,) = vjp(jnp.ones_like(y))
  return np.rint(np.asarray(g[0])).astype(np.int32)


def _expand_input_lambda(lam_c: np.ndarray, shape) -> np.ndarray:
  """Lambda of every input feature of a dense layer fed by a flattened ``[H, W, C]`` map."""
  return np.tile(lam_c, int(np.prod(shape)) // lam_c.shape[0])


def convert(arch: Sequence[LayerDef], params: dict, batch_stats: dict, x_stats: np.ndarray, *,
            norm: str = "neuron_p99.9_max", norm_form: str = "weight", percentile: float = 99.9,
            input_shape: Sequence[int] | None = None, batch_size: int = 500,
            lambdas: Sequence[np.ndarray] | None = None) -> SNNet:
  """Converts a ReLU CNN with BN to a spiking network.

  Args:
    arch: the ANN's layers (see :mod:`jaxhw.models.snn_cnn`).
    params: trained weights.
    batch_stats: BN population statistics.
    x_stats: images for the activation statistics (training images).
    norm: one of ``NORMS`` (``neuron_p99.9_max`` is the official default of T2FSNN / burst coding).
    norm_form: ``"weight"`` (rescale W, b) or ``"threshold"`` (keep W, b; scale every spiking layer's
      thresholds and amplitudes by its lambda); both give the same spikes.
    percentile: percentile of the ``p99.9`` norms.
    input_shape: one example's shape (default ``x_stats.shape[1:]``).
    batch_size: images per statistics pass.
    lambdas: optional given scales (one ``[C]`` array per spiking layer, then the output) instead of
      statistics.

  Returns:
    An :class:`SNNet`.

  Raises:
    ValueError: an unsupported layer (named), an unknown ``norm`` or ``norm_form``.

  References:
    SNN spec section 1.3.
  """
  if norm_form not in ("weight", "threshold"):
    raise ValueError(f"norm_form={norm_form!r}; valid: ('weight', 'threshold')")
  ops, weights = fold_batchnorm(arch, params, batch_stats)
  if lambdas is None:
    lams = activation_scales(ops, weights, np.asarray(x_stats), norm=norm, percentile=percentile,
                             batch_size=batch_size)
  else:
    lams = [np.asarray(l, np.float32) for l in lambdas]  # noqa: E741
  in_shape = tuple(input_shape) if input_shape is not None else tuple(np.asarray(x_stats).shape[1:])
  # Shapes per op.
  shapes = []
  h = jax.ShapeDtypeStruct((1,) + in_shape, jnp.float32)
  for k in range(len(ops)):
    h = jax.eval_shape(lambda xx, k=k: _forward(ops[k:k + 1], weights, xx)[0], h)
    shapes.append(tuple(h.shape[1:]))
  # Rescale: W[..., i, j] * lambda_prev[i] / lambda_out[j], b / lambda_out (weight form only).
  new_w: list[dict] = []
  fanouts = []
  lam_prev = np.ones(in_shape[-1], np.float32)
  prev_shape = in_shape
  spike_i = 0
  for k, op in enumerate(ops):
    if op.kind in ("conv", "dense"):
      w = np.asarray(weights[op.index]["w"], np.float64)
      b = np.asarray(weights[op.index]["b"], np.float64)
      followed = k + 1 < len(ops) and ops[k + 1].kind == "spike"
      lam_out = lams[spike_i] if followed else lams[-1]
      lin = lam_prev if lam_prev.shape[0] == w.shape[-2] else _expand_input_lambda(lam_prev, prev_shape)
      if norm_form == "weight":
        w = w * lin.reshape((1,) * (w.ndim - 2) + (-1, 1)) / lam_out
        b = b / lam_out
      new_w.append({"w": jnp.asarray(w, jnp.float32), "b": jnp.asarray(b, jnp.float32)})
      fanouts.append(jnp.asarray(_fanout(op, prev_shape, w.shape)))
      lam_prev = lam_out
    elif op.kind == "spike":
      spike_i += 1
    prev_shape = shapes[k]
  if norm_form == "weight":
    scales = tuple(None for _ in lams[:-1])
    out_scale = jnp.asarray(lams[-1])
  else:
    scales = tuple(jnp.asarray(lam) for lam in lams[:-1])
    out_scale = jnp.ones_like(jnp.asarray(lams[-1]))
  return SNNet(ops=ops, params=tuple(new_w), lambdas=tuple(jnp.asarray(lam) for lam in lams), scales=scales,
               out_scale=out_scale, input_shape=in_shape, fanouts=tuple(fanouts), shapes=tuple(shapes))


def ann_macs(net: SNNet) -> list[int]:
  """Multiply-accumulates per synaptic op for one image (``outputs * fan-in``)."""
  macs = []
  for k, op in enumerate(net.ops):
    if op.kind in ("conv", "dense"):
      fan_in = int(np.prod(net.params[op.index]["w"].shape[:-1]))
      macs.append(int(np.prod(net.shapes[k])) * fan_in)
  return macs
