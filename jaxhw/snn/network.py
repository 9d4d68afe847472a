"""A converted spiking network: static ops, weights keyed by layer path, and its float (ANN) forward.

`SNNet.ops` is a tuple of static `SNNOp` (``conv``, ``dense``, ``spike``, ``maxpool``, ``avgpool``, ``flatten``);
a synaptic op names its layer by its path in the params tree (``("Conv_0",)``), and `SNNet.params` is a plain
nested dict ``{"Conv_0": {"kernel", "bias"}, ..., "Dense_0": {...}}`` of the normalised, batch-norm-folded
weights, so parameter effects (`jaxhw.faults`, `jaxhw.effects.ParamTransform`) act on it directly. The last
synaptic op without a ``spike`` after it is the integrating output layer.

References:
  Rueckauer et al., "Conversion of Continuous-Valued Deep Networks to Efficient Event-Driven Networks for
  Image Classification", Frontiers in Neuroscience 2017.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

__all__ = ["SNNOp", "SNNet", "snn_ann_apply", "ann_logits_fn", "ann_macs", "synapse", "pool", "forward", "at_path",
           "with_params"]

Path = tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class SNNOp:
  """One op of a converted network (static, hashable).

  Attributes:
    kind: ``conv | dense | spike | maxpool | avgpool | flatten``.
    path: the params path of a synaptic op (``conv``/``dense``), ``()`` otherwise.
    padding: conv padding.
    window: pooling window.
    alpha: leaky-ReLU slope of a ``spike`` op converted from a leaky ReLU (0 for ReLU).
    index: a ``spike`` op's 0-based hidden-layer index.
  """

  kind: str
  path: Path = ()
  padding: str = "VALID"
  window: int = 2
  alpha: float = 0.0
  index: int = 0


class SNNet(NamedTuple):
  """A converted network.

  Attributes:
    ops: static op list.
    params: ``{layer path...: {"kernel", "bias"}}`` of every synaptic op (normalised in weight form).
    lambdas: the per-channel scale lambda (``[C]``) of every synaptic op's output, keyed like `params`.
    scales: threshold-form factors per hidden spiking layer (None entries in weight form).
    out_scale: ``[C]`` factor turning ``V_L / n_b`` into the ANN's logits.
    input_shape: one example's shape.
    fanouts: int32 fan-out of every input neuron of every synaptic op (one example), keyed like `params`.
    shapes: per op, its output shape for one example.
  """

  ops: tuple
  params: dict
  lambdas: dict
  scales: tuple
  out_scale: Array
  input_shape: tuple
  fanouts: dict
  shapes: tuple


def at_path(tree: Mapping[str, Any], path: Path) -> Any:
  """``tree[path[0]][path[1]]...``."""
  for p in path:
    tree = tree[p]
  return tree


def with_params(net: SNNet, params: dict) -> SNNet:
  """`net` with other synaptic weights (same structure), e.g. corrupted ones."""
  return net._replace(params=params)


def synapse(op: SNNOp, w: Mapping[str, Array], x: Array, *, bias: bool = True) -> Array:
  """A synaptic op on ``x`` (``[N, ...]``): NHWC x HWIO stride-1 convolution or a dense layer on the
  flattened input, plus the bias unless ``bias=False``."""
  if op.kind == "conv":
    z = jax.lax.conv_general_dilated(x, w["kernel"], (1, 1), op.padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))
  else:
    z = x.reshape(x.shape[0], -1) @ w["kernel"]
  return z + w["bias"] if bias else z


def pool(op: SNNOp, x: Array) -> Array:
  """Non-overlapping (stride = window) max or average pooling of ``[N, H, W, C]``."""
  win = (op.window, op.window)
  return nn.max_pool(x, win, strides=win) if op.kind == "maxpool" else nn.avg_pool(x, win, strides=win)


def forward(ops, params, x, *, collect: bool = False):
  """Float forward of the op list (``spike`` is ReLU / leaky ReLU): the output and, with `collect`, the
  activation of every spiking layer."""
  h = x
  acts = []
  for op in ops:
    if op.kind in ("conv", "dense"):
      h = synapse(op, at_path(params, op.path), h)
    elif op.kind == "spike":
      h = jnp.maximum(h, op.alpha * h) if op.alpha > 0 else jax.nn.relu(h)
      if collect:
        acts.append(h)
    elif op.kind in ("maxpool", "avgpool"):
      h = pool(op, h)
    elif op.kind == "flatten":
      h = h.reshape(h.shape[0], -1)
  return h, acts


def snn_ann_apply(net: SNNet, x: Float[Array, "batch ..."], *, return_activations: bool = False):
  """The converted (normalised) network run as an ANN: logits in the normalised domain (times ``out_scale``
  gives the original logits), and optionally the activation of every spiking layer."""
  logits, acts = forward(net.ops, net.params, x, collect=True)
  return (logits, acts) if return_activations else logits


def ann_logits_fn(net: SNNet) -> tuple[dict, Callable[[dict, Array], Array]]:
  """The converted network's source ANN as ``(params, apply_fn)`` on the same params tree as
  :func:`jaxhw.snn.logits_fn`: ``apply_fn(params, x) = out_scale * snn_ann_apply(...)``, the ANN's logits (batch
  norm folded, normalised weights), so one sweep of the same flips compares the ANN and its SNN."""

  def apply_fn(params: dict, x: Array) -> Array:
    return net.out_scale * snn_ann_apply(net._replace(params=params), x)

  return net.params, apply_fn


def ann_macs(net: SNNet) -> list[int]:
  """Multiply-accumulates per synaptic op for one image (``outputs * fan-in``)."""
  macs = []
  for k, op in enumerate(net.ops):
    if op.kind in ("conv", "dense"):
      fan_in = int(np.prod(at_path(net.params, op.path)["kernel"].shape[:-1]))
      macs.append(int(np.prod(net.shapes[k])) * fan_in)
  return macs
