"""Static descriptions of the layers of a sequential network, shared by models and the code that reads them.

A sequential model is a tuple of frozen `LayerSpec` (hashable, so it can be a field of a Linen module or a static
``jit`` argument). The model builds Flax layers from it (`jaxhw.models.snn_cnn.SequentialCNN`); other code that
must know the order of the layers (the ANN-to-SNN converter in `jaxhw.snn`) reads the same tuple. A layer with
parameters is identified by its path in the params tree, given by `param_paths`: ``("Conv_0",)``,
``("BatchNorm_1",)``, ``("Dense_0",)``, i.e. Flax's own automatic names.

This module sits at the bottom of the package: it imports neither `jaxhw.models` nor a hardware package.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

__all__ = [
    "KINDS", "PARAM_KINDS", "LayerSpec", "conv", "dense", "batch_norm", "relu", "leaky_relu", "max_pool",
    "avg_pool", "flatten", "dropout", "param_paths",
]

#: Every layer kind a `LayerSpec` may have.
KINDS = ("conv", "dense", "bn", "relu", "leaky_relu", "maxpool", "avgpool", "flatten", "dropout")

#: Kinds with parameters, and the Flax class name that prefixes their path.
PARAM_KINDS = {"conv": "Conv", "dense": "Dense", "bn": "BatchNorm"}

Path = tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class LayerSpec:
  """One layer of a sequential network.

  Attributes:
    kind: one of `KINDS`.
    features: output channels (conv) or units (dense).
    kernel: conv kernel size (square), stride 1.
    padding: ``"VALID"`` or ``"SAME"`` (conv).
    window: pooling window and stride.
    rate: dropout rate.
    alpha: leaky-ReLU negative slope.
    eps: batch-norm epsilon.
  """

  kind: str
  features: int = 0
  kernel: int = 0
  padding: str = "VALID"
  window: int = 2
  rate: float = 0.0
  alpha: float = 0.1
  eps: float = 1e-5

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"kind={self.kind!r} is not a layer kind; valid kinds: {KINDS}")
    if self.kind in ("conv", "dense") and self.features < 1:
      raise ValueError(f"features={self.features!r} must be >= 1 for a {self.kind} layer")
    if self.kind == "conv" and self.kernel < 1:
      raise ValueError(f"kernel={self.kernel!r} must be >= 1 for a conv layer")
    if self.padding not in ("VALID", "SAME"):
      raise ValueError(f"padding={self.padding!r}; valid: 'VALID', 'SAME'")
    if self.kind in ("maxpool", "avgpool") and self.window < 1:
      raise ValueError(f"window={self.window!r} must be >= 1")
    if not 0.0 <= self.rate < 1.0:
      raise ValueError(f"rate={self.rate!r} must be in [0, 1)")


def conv(features: int, kernel: int, padding: str = "VALID") -> LayerSpec:
  """A stride-1 convolution with bias."""
  return LayerSpec("conv", features=features, kernel=kernel, padding=padding)


def dense(features: int) -> LayerSpec:
  """A fully connected layer with bias (its input is flattened)."""
  return LayerSpec("dense", features=features)


def batch_norm(eps: float = 1e-5) -> LayerSpec:
  """Batch norm over the last axis (statistics in the ``batch_stats`` collection)."""
  return LayerSpec("bn", eps=eps)


def relu() -> LayerSpec:
  """ReLU activation, ``max(x, 0)``."""
  return LayerSpec("relu")


def leaky_relu(alpha: float = 0.1) -> LayerSpec:
  """Leaky ReLU, ``x`` for ``x >= 0`` else ``alpha * x``."""
  return LayerSpec("leaky_relu", alpha=alpha)


def max_pool(window: int = 2) -> LayerSpec:
  """Non-overlapping max pooling (stride = window, VALID)."""
  return LayerSpec("maxpool", window=window)


def avg_pool(window: int = 2) -> LayerSpec:
  """Non-overlapping average pooling (stride = window, VALID)."""
  return LayerSpec("avgpool", window=window)


def flatten() -> LayerSpec:
  """Flattens every axis but the batch axis."""
  return LayerSpec("flatten")


def dropout(rate: float) -> LayerSpec:
  """Dropout with drop probability `rate` in training (identity at inference and in a converted SNN)."""
  return LayerSpec("dropout", rate=rate)


def param_paths(layers: Sequence[LayerSpec]) -> tuple[Path | None, ...]:
  """The params-tree path of every layer (None for layers without parameters).

  Layers of one kind are numbered in order, as Flax names submodules created in a compact method:
  ``Conv_0, Conv_1, ..., BatchNorm_0, ..., Dense_0, ...``.
  """
  counts: dict[str, int] = {}
  out: list[Path | None] = []
  for layer in layers:
    prefix = PARAM_KINDS.get(layer.kind)
    if prefix is None:
      out.append(None)
      continue
    out.append((f"{prefix}_{counts.get(prefix, 0)}",))
    counts[prefix] = counts.get(prefix, 0) + 1
  return tuple(out)
