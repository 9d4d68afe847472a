"""Tiny-YOLO-style detectors as sequential Flax CNNs (conv + batch norm + leaky ReLU, max-pools, a 1x1 grid head).

The detector is a `jaxhw.models.snn_cnn.SequentialCNN` described by static `jaxhw.layers.LayerSpec`s, so the
ANN-to-SNN converter reads it like any other sequential CNN. Its output is the raw grid map
``[batch, S, S, A * (5 + C)]`` (S x S cells, A anchors, per anchor ``tx, ty, tw, th``, objectness and C class
logits); `head_reshape` gives ``[batch, S, S, A, 5 + C]``, and `jaxhw.detection` decodes, scores and trains it.

References:
  Redmon and Farhadi, "YOLO9000: Better, Faster, Stronger", CVPR 2017, arXiv:1612.08242 (YOLOv2, Tiny YOLO).
  Kim et al., "Spiking-YOLO: Spiking Neural Network for Energy-Efficient Object Detection", AAAI 2020,
  arXiv:1903.06530 (Tiny YOLO converted to a spiking network).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
from jaxtyping import Array, Float

from jaxhw import layers as L
from jaxhw.models.snn_cnn import SequentialCNN

__all__ = ["tiny_yolo_layers", "tiny_yolo", "head_channels", "head_reshape", "grid_size", "TINY_YOLO_VOC_WIDTHS",
           "TINY_YOLO_VOC_POOLS", "VOC_ANCHORS_416"]

#: Conv widths of YOLOv2-tiny-voc (9 convs with the head) and after how many convs a 2x2 max-pool follows.
TINY_YOLO_VOC_WIDTHS = (16, 32, 64, 128, 256, 512, 1024, 1024)
TINY_YOLO_VOC_POOLS = 5
#: YOLOv2-tiny-voc anchors (in 32-px grid units in the cfg) converted to pixels of a 416 x 416 image.
VOC_ANCHORS_416 = tuple((w * 32.0, h * 32.0) for w, h in
                        ((1.08, 1.19), (3.42, 4.41), (6.63, 11.38), (9.42, 5.11), (16.62, 10.52)))


def head_channels(num_anchors: int, num_classes: int) -> int:
  """Output channels of the grid head: ``num_anchors * (5 + num_classes)``."""
  return num_anchors * (5 + num_classes)


def tiny_yolo_layers(widths: Sequence[int] = (16, 32, 64, 64), *, pools: int = 3, num_anchors: int = 2,
                     num_classes: int = 3, alpha: float = 0.1) -> tuple[L.LayerSpec, ...]:
  """Layer specs of a Tiny-YOLO-style detector.

  Every width is a 3x3 SAME conv -> batch norm -> leaky ReLU(`alpha`); the first `pools` of them are followed
  by a 2x2 max-pool (stride 2); a linear 1x1 conv head with `head_channels` outputs ends the network.

  Args:
    widths: conv widths, in order (at least one).
    pools: number of convs followed by a max-pool, in [0, len(widths)].
    num_anchors: anchors per grid cell (>= 1).
    num_classes: object classes (>= 1).
    alpha: leaky-ReLU negative slope, in (0, 1).

  Returns:
    The static layer tuple (use with `tiny_yolo` or `jaxhw.models.snn_cnn.SequentialCNN`).
  """
  widths = tuple(int(w) for w in widths)
  if not widths or min(widths) < 1:
    raise ValueError(f"widths={widths!r} must hold at least one positive width")
  if not 0 <= pools <= len(widths):
    raise ValueError(f"pools={pools!r} must be in [0, {len(widths)}] (the number of convs)")
  if num_anchors < 1:
    raise ValueError(f"num_anchors={num_anchors!r} must be >= 1")
  if num_classes < 1:
    raise ValueError(f"num_classes={num_classes!r} must be >= 1")
  if not 0.0 < alpha < 1.0:
    raise ValueError(f"alpha={alpha!r} must be in (0, 1)")
  out: list[L.LayerSpec] = []
  for i, w in enumerate(widths):
    out += [L.conv(w, 3, "SAME"), L.batch_norm(), L.leaky_relu(alpha)]
    if i < pools:
      out.append(L.max_pool(2))
  out.append(L.conv(head_channels(num_anchors, num_classes), 1, "SAME"))
  return tuple(out)


def tiny_yolo(widths: Sequence[int] = (16, 32, 64, 64), *, pools: int = 3, num_anchors: int = 2,
              num_classes: int = 3, alpha: float = 0.1) -> SequentialCNN:
  """The detector as a Flax module: ``model.apply(variables, x)`` returns ``[B, S, S, A * (5 + C)]``."""
  return SequentialCNN(layers=tiny_yolo_layers(widths, pools=pools, num_anchors=num_anchors,
                                               num_classes=num_classes, alpha=alpha))


def grid_size(image_size: int, pools: int) -> int:
  """Grid cells per side, ``image_size / 2**pools`` (must divide exactly)."""
  if image_size < 1 or pools < 0 or image_size % (2 ** pools):
    raise ValueError(f"image_size={image_size!r} must be a positive multiple of 2**pools = {2 ** pools}")
  return image_size // 2 ** pools


def head_reshape(raw: Float[Array, "batch s s ch"], num_anchors: int) -> Float[Array, "batch s s a k"]:
  """``[B, S, S, A * (5 + C)]`` -> ``[B, S, S, A, 5 + C]`` (any leading axes)."""
  if raw.shape[-1] % num_anchors:
    raise ValueError(f"num_anchors={num_anchors!r} does not divide the head's {raw.shape[-1]} channels")
  return jnp.reshape(raw, raw.shape[:-1] + (num_anchors, raw.shape[-1] // num_anchors))
