"""Sequential CNNs with batch norm, described by a static layer list, for ANN-to-SNN conversion.

A network is an ``arch`` (a tuple of frozen :class:`LayerDef`, hashable, so it can be a static jit argument)
plus ``params`` (a plain dict of arrays keyed ``"<index>_<kind>"``) and ``batch_stats`` (BN population
statistics, same keys). Batch norm uses the batch's statistics in training; the population statistics are
computed afterwards in one exact pass over the training set (:func:`bn_population_stats`), so the trainer does
not need to carry mutable state.

References:
  SNN spec (``shared/specs/snn.md``) section 4.1: the official MNIST CNN of Park et al. (T2FSNN, burst
  coding).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

__all__ = [
    "LayerDef",
    "MNIST_CNN",
    "sequential_init",
    "sequential_apply",
    "bn_population_stats",
    "layer_key",
]

LAYER_KINDS = ("conv", "dense", "bn", "relu", "leaky_relu", "maxpool", "avgpool", "flatten", "dropout")


@dataclasses.dataclass(frozen=True)
class LayerDef:
  """One layer of a sequential network.

  Attributes:
    kind: one of ``conv, dense, bn, relu, leaky_relu, maxpool, avgpool, flatten, dropout`` (others are
      accepted here but refused by the ANN-to-SNN converter, which names them).
    features: output channels (conv) or units (dense).
    kernel: conv kernel size (square).
    padding: ``"VALID"`` or ``"SAME"`` (conv).
    window: pooling window and stride.
    rate: dropout rate.
    alpha: leaky-ReLU negative slope.
  """

  kind: str
  features: int = 0
  kernel: int = 0
  padding: str = "VALID"
  window: int = 2
  rate: float = 0.0
  alpha: float = 0.1


# Official MNIST CNN of the T2FSNN / burst-coding code (spec section 4.1).
MNIST_CNN: tuple[LayerDef, ...] = (
    LayerDef("conv", features=12, kernel=5, padding="VALID"),
    LayerDef("bn"),
    LayerDef("relu"),
    LayerDef("maxpool", window=2),
    LayerDef("conv", features=64, kernel=5, padding="VALID"),
    LayerDef("bn"),
    LayerDef("relu"),
    LayerDef("maxpool", window=2),
    LayerDef("flatten"),
    LayerDef("dropout", rate=0.5),
    LayerDef("dense", features=10),
)


def layer_key(i: int, layer: LayerDef) -> str:
  """The params key of layer ``i``: ``"<i>_<kind>"``."""
  return f"{i}_{layer.kind}"


def conv2d(x: Array, w: Array, padding: str) -> Array:
  """NHWC x HWIO convolution, stride 1."""
  return jax.lax.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))


def pool2d(x: Array, window: int, kind: str) -> Array:
  """Non-overlapping max or average pooling (VALID, stride = window)."""
  dims = (1, window, window, 1)
  if kind == "maxpool":
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, dims, dims, "VALID")
  return jax.lax.reduce_window(x, 0.0, jax.lax.add, dims, dims, "VALID") / (window * window)


def sequential_init(key: jax.Array, arch: Sequence[LayerDef],
                    input_shape: Sequence[int]) -> tuple[dict, dict]:
  """Initialises a sequential network (He-normal weights, zero biases, BN scale 1 / bias 0).

  Args:
    key: PRNG key.
    arch: the layers.
    input_shape: one example's shape, e.g. ``(28, 28, 1)``.

  Returns:
    ``(params, batch_stats)``; batch_stats holds BN ``mean`` 0 and ``var`` 1.
  """
  # Weights come from a numpy generator seeded by the key's bits: the same key gives the same weights, and it
  # avoids compiling one PRNG program per weight shape (seconds on CPU).
  seed = np.asarray(jax.random.key_data(key)).astype(np.uint64).ravel().tolist()
  rng = np.random.default_rng(seed)
  return _sequential_init(rng, tuple(arch), tuple(int(d) for d in input_shape))


def _sequential_init(rng, arch, input_shape):
  params: dict[str, Any] = {}
  stats: dict[str, Any] = {}
  shape = tuple(input_shape)
  for i, layer in enumerate(arch):
    name = layer_key(i, layer)
    if layer.kind == "conv":
      cin = shape[-1]
      fan_in = layer.kernel * layer.kernel * cin
      w = rng.standard_normal((layer.kernel, layer.kernel, cin, layer.features)) * np.sqrt(2.0 / fan_in)
      params[name] = {"w": jnp.asarray(w, jnp.float32), "b": jnp.zeros((layer.features,))}
      if layer.padding == "VALID":
        shape = (shape[0] - layer.kernel + 1, shape[1] - layer.kernel + 1, layer.features)
      else:
        shape = (shape[0], shape[1], layer.features)
    elif layer.kind == "dense":
      fan_in = int(np.prod(shape))
      w = rng.standard_normal((fan_in, layer.features)) * np.sqrt(2.0 / fan_in)
      params[name] = {"w": jnp.asarray(w, jnp.float32), "b": jnp.zeros((layer.features,))}
      shape = (layer.features,)
    elif layer.kind == "bn":
      c = shape[-1]
      params[name] = {"scale": jnp.ones((c,)), "bias": jnp.zeros((c,))}
      stats[name] = {"mean": jnp.zeros((c,)), "var": jnp.ones((c,))}
    elif layer.kind in ("maxpool", "avgpool"):
      shape = (shape[0] // layer.window, shape[1] // layer.window, shape[2])
    elif layer.kind == "flatten":
      shape = (int(np.prod(shape)),)
  return params, stats


def sequential_apply(
    arch: Sequence[LayerDef],
    params: dict,
    x: Float[Array, "batch ..."],
    *,
    batch_stats: dict | None = None,
    train: bool = False,
    rng: jax.Array | None = None,
    bn_eps: float = 1e-5,
    return_preact: int | None = None,
) -> Float[Array, "batch classes"]:
  """Runs a sequential network.

  Args:
    arch: the layers.
    params: weights from :func:`sequential_init`.
    x: NHWC input.
    batch_stats: BN population statistics (required when ``train`` is False and the net has BN).
    train: batch statistics in BN and dropout on (needs ``rng``).
    rng: dropout key.
    bn_eps: BN epsilon.
    return_preact: if set, return the input of layer ``return_preact`` instead of the logits.

  Returns:
    Logits (or the requested intermediate tensor).
  """
  h = x
  for i, layer in enumerate(arch):
    if return_preact is not None and i == return_preact:
      return h
    name = layer_key(i, layer)
    if layer.kind == "conv":
      h = conv2d(h, params[name]["w"], layer.padding) + params[name]["b"]
    elif layer.kind == "dense":
      h = h.reshape(h.shape[0], -1) @ params[name]["w"] + params[name]["b"]
    elif layer.kind == "bn":
      axes = tuple(range(h.ndim - 1))
      if train:
        mean, var = jnp.mean(h, axes), jnp.var(h, axes)
      else:
        mean, var = batch_stats[name]["mean"], batch_stats[name]["var"]
      h = (h - mean) * jax.lax.rsqrt(var + bn_eps) * params[name]["scale"] + params[name]["bias"]
    elif layer.kind == "relu":
      h = jax.nn.relu(h)
    elif layer.kind == "leaky_relu":
      h = jnp.maximum(h, layer.alpha * h)
    elif layer.kind in ("maxpool", "avgpool"):
      h = pool2d(h, layer.window, layer.kind)
    elif layer.kind == "flatten":
      h = h.reshape(h.shape[0], -1)
    elif layer.kind == "dropout":
      if train and layer.rate > 0:
        rng, sub = jax.random.split(rng)
        keep = jax.random.bernoulli(sub, 1.0 - layer.rate, h.shape)
        h = jnp.where(keep, h / (1.0 - layer.rate), 0.0)
    else:
      raise ValueError(f"arch: layer {i} has kind {layer.kind!r}; valid kinds: {LAYER_KINDS}")
  return h


def bn_population_stats(
    arch: Sequence[LayerDef], params: dict, x: np.ndarray, *, batch_size: int = 500
) -> dict:
  """Exact population mean / variance of every BN layer's input over ``x`` (earlier BNs use their new stats).

  Args:
    arch: the layers.
    params: trained weights.
    x: training images.
    batch_size: images per forward pass.

  Returns:
    batch_stats dict ``{"<i>_bn": {"mean", "var"}}``.
  """
  stats: dict[str, Any] = {}
  for i, layer in enumerate(arch):
    if layer.kind != "bn":
      continue
    fwd = jax.jit(lambda xb, st, i=i: sequential_apply(arch, params, xb, batch_stats=st, return_preact=i))
    s1 = s2 = 0.0
    count = 0
    for start in range(0, len(x), batch_size):
      h = np.asarray(fwd(jnp.asarray(x[start:start + batch_size]), stats), dtype=np.float64)
      h = h.reshape(-1, h.shape[-1])
      s1 = s1 + h.sum(0)
      s2 = s2 + (h * h).sum(0)
      count += h.shape[0]
    mean = s1 / count
    var = np.maximum(s2 / count - mean * mean, 0.0)
    stats[layer_key(i, layer)] = {"mean": jnp.asarray(mean, jnp.float32),
                                  "var": jnp.asarray(var, jnp.float32)}
  return stats
