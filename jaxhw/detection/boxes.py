"""Boxes: IoU, validation against the image, YOLOv2 grid decoding and class-wise non-maximum suppression.

Boxes are ``(x1, y1, x2, y2)`` in pixels, continuous coordinates (no +1 pixel convention). A set of ground truths
for a batch is padded: ``boxes [B, M, 4]`` with ``labels [B, M]``, label ``-1`` marking padding.

References:
  Redmon and Farhadi, "YOLO9000: Better, Faster, Stronger", CVPR 2017, arXiv:1612.08242 (box parametrisation).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

__all__ = ["BOX_MODES", "iou", "iou_np", "check_boxes", "decode", "nms", "Detections", "postprocess"]

#: What `check_boxes` does with a box outside the image: clip it to the image, or refuse it with a ValueError.
BOX_MODES = ("clip", "refuse")


def iou(a: Float[Array, "... 4"], b: Float[Array, "... 4"]) -> Array:
  """IoU of boxes broadcast against each other (jnp; e.g. ``a[:, None]`` with ``b[None]`` for a matrix)."""
  ix = jnp.clip(jnp.minimum(a[..., 2], b[..., 2]) - jnp.maximum(a[..., 0], b[..., 0]), 0.0)
  iy = jnp.clip(jnp.minimum(a[..., 3], b[..., 3]) - jnp.maximum(a[..., 1], b[..., 1]), 0.0)
  inter = ix * iy
  area_a = jnp.clip(a[..., 2] - a[..., 0], 0.0) * jnp.clip(a[..., 3] - a[..., 1], 0.0)
  area_b = jnp.clip(b[..., 2] - b[..., 0], 0.0) * jnp.clip(b[..., 3] - b[..., 1], 0.0)
  union = area_a + area_b - inter
  return jnp.where(union > 0, inter / jnp.where(union > 0, union, 1.0), 0.0)


def iou_np(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """IoU matrix ``[N, M]`` of ``[N, 4]`` and ``[M, 4]`` boxes (numpy, float64)."""
  a = np.asarray(a, np.float64).reshape(-1, 4)[:, None]
  b = np.asarray(b, np.float64).reshape(-1, 4)[None]
  ix = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0.0, None)
  iy = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0.0, None)
  inter = ix * iy
  area_a = np.clip(a[..., 2] - a[..., 0], 0, None) * np.clip(a[..., 3] - a[..., 1], 0, None)
  area_b = np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)
  union = area_a + area_b - inter
  return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def check_boxes(boxes: np.ndarray, labels: np.ndarray, image_size: int | tuple[int, int], *, num_classes: int,
                mode: str = "clip") -> tuple[np.ndarray, np.ndarray]:
  """Validates padded ground truths ``boxes [B, M, 4]`` / ``labels [B, M]`` (label -1 = padding).

  A box reaching outside the image is clipped to it (``mode="clip"``) or refused (``mode="refuse"``); a box left
  with no area after clipping becomes padding. Images with no objects (all labels -1) are valid.

  Returns:
    ``(boxes float32, labels int32)``.

  Raises:
    ValueError: wrong shapes, labels outside ``[-1, num_classes)``, ``x2 < x1`` or ``y2 < y1``, non-finite
      coordinates, or (``refuse``) a box outside the image; the message names the image and box.
  """
  if mode not in BOX_MODES:
    raise ValueError(f"mode={mode!r}; valid: {BOX_MODES}")
  h, w = (image_size, image_size) if np.isscalar(image_size) else tuple(image_size)
  boxes = np.asarray(boxes, np.float32)
  labels = np.asarray(labels)
  if boxes.ndim != 3 or boxes.shape[-1] != 4 or labels.shape != boxes.shape[:2]:
    raise ValueError(f"boxes of shape {boxes.shape} and labels of shape {labels.shape}: expected [B, M, 4] and "
                     "[B, M]")
  if labels.size and (labels.min() < -1 or labels.max() >= num_classes):
    raise ValueError(f"labels in [{labels.min()}, {labels.max()}]; allowed: -1 (padding) or [0, {num_classes})")
  valid = labels >= 0
  bad = valid & ~np.all(np.isfinite(boxes), axis=-1)
  bad |= valid & ((boxes[..., 2] < boxes[..., 0]) | (boxes[..., 3] < boxes[..., 1]))
  if bad.any():
    i, j = map(int, np.argwhere(bad)[0])
    raise ValueError(f"boxes[{i}, {j}] = {boxes[i, j].tolist()} is not a box (x1 <= x2, y1 <= y2, finite)")
  outside = valid & ((boxes[..., 0] < 0) | (boxes[..., 1] < 0) | (boxes[..., 2] > w) | (boxes[..., 3] > h))
  if outside.any() and mode == "refuse":
    i, j = map(int, np.argwhere(outside)[0])
    raise ValueError(f"boxes[{i}, {j}] = {boxes[i, j].tolist()} reaches outside the {w}x{h} image; allowed: "
                     f"0 <= x <= {w}, 0 <= y <= {h} (or mode='clip')")
  boxes = np.stack([np.clip(boxes[..., 0], 0, w), np.clip(boxes[..., 1], 0, h), np.clip(boxes[..., 2], 0, w),
                    np.clip(boxes[..., 3], 0, h)], -1).astype(np.float32)
  empty = (boxes[..., 2] <= boxes[..., 0]) | (boxes[..., 3] <= boxes[..., 1])
  labels = np.where(valid & ~empty, labels, -1).astype(np.int32)
  return np.where(labels[..., None] >= 0, boxes, 0.0).astype(np.float32), labels


def decode(raw: Float[Array, "... s s ak"], anchors: Sequence[tuple[float, float]], num_classes: int,
           image_size: int) -> tuple[Array, Array]:
  """YOLOv2 decoding of a grid head.

  ``x = (j + sigmoid(tx)) * cell``, ``y = (i + sigmoid(ty)) * cell``, ``w = anchor_w * exp(tw)``,
  ``h = anchor_h * exp(th)``; class score ``sigmoid(to) * softmax(classes)``.

  Args:
    raw: ``[..., S, S, A * (5 + C)]`` head output (any leading axes).
    anchors: ``A`` anchor sizes ``(w, h)`` in pixels.
    num_classes: C.
    image_size: side of the square input in pixels.

  Returns:
    ``boxes [..., S*S*A, 4]`` clipped to the image, and ``scores [..., S*S*A, C]``.
  """
  anchors = jnp.asarray(anchors, jnp.float32)
  a = anchors.shape[0]
  if raw.shape[-1] != a * (5 + num_classes):
    raise ValueError(f"raw has {raw.shape[-1]} channels; {a} anchors x (5 + {num_classes}) = "
                     f"{a * (5 + num_classes)} expected")
  s = raw.shape[-2]
  r = raw.reshape(raw.shape[:-1] + (a, 5 + num_classes)).astype(jnp.float32)
  cell = image_size / s
  gx = jnp.arange(s, dtype=jnp.float32)[None, :, None]
  gy = jnp.arange(s, dtype=jnp.float32)[:, None, None]
  cx = (gx + jax.nn.sigmoid(r[..., 0])) * cell
  cy = (gy + jax.nn.sigmoid(r[..., 1])) * cell
  bw = anchors[:, 0] * jnp.exp(jnp.clip(r[..., 2], -10.0, 10.0))
  bh = anchors[:, 1] * jnp.exp(jnp.clip(r[..., 3], -10.0, 10.0))
  boxes = jnp.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], -1)
  boxes = jnp.clip(boxes, 0.0, float(image_size))
  scores = jax.nn.sigmoid(r[..., 4:5]) * jax.nn.softmax(r[..., 5:], axis=-1)
  lead = raw.shape[:-3]
  return boxes.reshape(lead + (s * s * a, 4)), scores.reshape(lead + (s * s * a, num_classes))


class Detections(NamedTuple):
  """Detections of one image: ``boxes [K, 4]``, ``scores [K]``, ``labels [K]`` (numpy), highest score first."""

  boxes: np.ndarray
  scores: np.ndarray
  labels: np.ndarray


def nms(boxes: np.ndarray, scores: np.ndarray, *, iou_threshold: float = 0.45, score_threshold: float = 0.01,
        max_detections: int = 100) -> Detections:
  """Class-wise greedy non-maximum suppression of one image.

  For every class, candidates above `score_threshold` are visited by decreasing score; one is kept unless its
  IoU with an already kept box of the same class exceeds `iou_threshold`. At most `max_detections` are kept
  over all classes (highest scores; ties keep the earlier box).

  Args:
    boxes: ``[N, 4]``.
    scores: ``[N, C]`` per-class scores (or ``[N]`` for one class).
    iou_threshold: in [0, 1].
    score_threshold: in [0, 1).
    max_detections: >= 1.
  """
  if not 0.0 <= iou_threshold <= 1.0:
    raise ValueError(f"iou_threshold={iou_threshold!r} must be in [0, 1]")
  if not 0.0 <= score_threshold < 1.0:
    raise ValueError(f"score_threshold={score_threshold!r} must be in [0, 1)")
  if max_detections < 1:
    raise ValueError(f"max_detections={max_detections!r} must be >= 1")
  boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
  scores = np.asarray(scores, np.float64)
  scores = scores[:, None] if scores.ndim == 1 else scores
  if scores.shape[0] != boxes.shape[0]:
    raise ValueError(f"scores has {scores.shape[0]} rows for {boxes.shape[0]} boxes")
  keep_b, keep_s, keep_l = [], [], []
  for c in range(scores.shape[1]):
    idx = np.nonzero(scores[:, c] > score_threshold)[0]
    if idx.size == 0:
      continue
    idx = idx[np.argsort(-scores[idx, c], kind="stable")]
    ious = iou_np(boxes[idx], boxes[idx])
    alive = np.ones(idx.size, bool)
    for k in range(idx.size):
      if alive[k]:
        alive[k + 1:] &= ious[k, k + 1:] <= iou_threshold
    kept = idx[alive]
    keep_b.append(boxes[kept])
    keep_s.append(scores[kept, c])
    keep_l.append(np.full(kept.size, c, np.int32))
  if not keep_b:
    return Detections(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0,), np.int32))
  b, s, lab = np.concatenate(keep_b), np.concatenate(keep_s), np.concatenate(keep_l)
  order = np.argsort(-s, kind="stable")[:max_detections]
  return Detections(b[order].astype(np.float32), s[order].astype(np.float32), lab[order])


def postprocess(boxes: np.ndarray, scores: np.ndarray, **nms_kwargs) -> list[Detections]:
  """`nms` over a batch: ``boxes [B, N, 4]``, ``scores [B, N, C]`` -> one `Detections` per image."""
  boxes, scores = np.asarray(boxes), np.asarray(scores)
  return [nms(boxes[i], scores[i], **nms_kwargs) for i in range(boxes.shape[0])]
