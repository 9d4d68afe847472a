"""YOLOv2 loss of a grid detector on padded ground truths.

Each object is assigned to the grid cell holding its centre and to the anchor whose shape (centred) overlaps it
best. Responsible anchors regress ``sigmoid(tx), sigmoid(ty)`` to the centre's offset in the cell and
``tw, th`` to ``log(w / anchor_w), log(h / anchor_h)`` (weighted ``2 - w*h/image_area``), learn objectness 1
and the class by softmax cross-entropy; other anchors learn objectness 0 unless their predicted box overlaps an
object by more than ``ignore_iou``.

References:
  Redmon and Farhadi, "YOLO9000: Better, Faster, Stronger", CVPR 2017, arXiv:1612.08242.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, Int

from jaxhw.detection.boxes import iou

__all__ = ["YoloTargets", "yolo_targets", "yolo_loss"]


class YoloTargets(NamedTuple):
  """Per anchor ``[B, S, S, A]``: ``obj`` mask (float), regression targets ``txy [.., 2]``, ``twh [.., 2]``,
  ``weight`` (box-size weight), ``label`` (int32, 0 where no object)."""

  obj: Array
  txy: Array
  twh: Array
  weight: Array
  label: Array


def yolo_targets(boxes: Float[Array, "b m 4"], labels: Int[Array, "b m"], grid: int,
                 anchors: Sequence[tuple[float, float]], image_size: int) -> YoloTargets:
  """Assigns padded ground truths (label -1 = padding) to cells and anchors (two objects on one anchor: the
  later one wins)."""
  anchors = jnp.asarray(anchors, jnp.float32)
  b, m = labels.shape
  na = anchors.shape[0]
  cell = image_size / grid
  x1, y1, x2, y2 = (boxes[..., k] for k in range(4))
  cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
  w, h = jnp.maximum(x2 - x1, 1e-3), jnp.maximum(y2 - y1, 1e-3)
  gi = jnp.clip(jnp.floor(cx / cell), 0, grid - 1).astype(jnp.int32)
  gj = jnp.clip(jnp.floor(cy / cell), 0, grid - 1).astype(jnp.int32)
  inter = jnp.minimum(w[..., None], anchors[:, 0]) * jnp.minimum(h[..., None], anchors[:, 1])
  shape_iou = inter / (w[..., None] * h[..., None] + anchors[:, 0] * anchors[:, 1] - inter)
  best = jnp.argmax(shape_iou, -1).astype(jnp.int32)
  valid = labels >= 0
  bi = jnp.broadcast_to(jnp.arange(b, dtype=jnp.int32)[:, None], (b, m))
  gj = jnp.where(valid, gj, grid)  # out of range: dropped by the scatter
  idx = (bi, gj, gi, best)
  shape = (b, grid, grid, na)
  obj = jnp.zeros(shape, jnp.float32).at[idx].set(1.0, mode="drop")
  txy = jnp.zeros(shape + (2,), jnp.float32).at[idx].set(
      jnp.stack([cx / cell - gi, cy / cell - jnp.minimum(gj, grid - 1)], -1), mode="drop")
  twh = jnp.zeros(shape + (2,), jnp.float32).at[idx].set(
      jnp.stack([jnp.log(w / anchors[best, 0]), jnp.log(h / anchors[best, 1])], -1), mode="drop")
  weight = jnp.zeros(shape, jnp.float32).at[idx].set(2.0 - w * h / image_size ** 2, mode="drop")
  label = jnp.zeros(shape, jnp.int32).at[idx].set(jnp.maximum(labels, 0), mode="drop")
  return YoloTargets(obj, txy, twh, weight, label)


def yolo_loss(raw: Float[Array, "b s s ak"], boxes: Float[Array, "b m 4"], labels: Int[Array, "b m"],
              anchors: Sequence[tuple[float, float]], num_classes: int, image_size: int, *,
              lambda_coord: float = 5.0, lambda_noobj: float = 1.0, ignore_iou: float = 0.6
              ) -> tuple[Array, dict[str, Array]]:
  """YOLOv2 loss, summed over anchors and averaged over images.

  Args:
    raw: head output ``[B, S, S, A * (5 + C)]``.
    boxes, labels: padded ground truths.
    anchors: ``A`` anchor sizes (w, h) in pixels.
    num_classes: C.
    image_size: input side in pixels.
    lambda_coord, lambda_noobj: weights of the box and no-object terms.
    ignore_iou: predicted boxes overlapping an object by more than this are not pushed to objectness 0.

  Returns:
    ``(loss, parts)`` with the parts ``coord``, ``obj``, ``noobj``, ``cls``.
  """
  anchors_a = jnp.asarray(anchors, jnp.float32)
  na = anchors_a.shape[0]
  bsz, s = raw.shape[0], raw.shape[1]
  r = raw.reshape(raw.shape[:-1] + (na, 5 + num_classes)).astype(jnp.float32)
  t = yolo_targets(boxes, labels, s, anchors, image_size)
  cell = image_size / s
  gx = jnp.arange(s, dtype=jnp.float32)[None, :, None]
  gy = jnp.arange(s, dtype=jnp.float32)[:, None, None]
  cx = (gx + jax.nn.sigmoid(r[..., 0])) * cell
  cy = (gy + jax.nn.sigmoid(r[..., 1])) * cell
  bw = anchors_a[:, 0] * jnp.exp(jnp.clip(r[..., 2], -10.0, 10.0))
  bh = anchors_a[:, 1] * jnp.exp(jnp.clip(r[..., 3], -10.0, 10.0))
  pred = jax.lax.stop_gradient(jnp.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], -1))
  ov = iou(pred.reshape(bsz, -1, 1, 4), boxes[:, None, :, :])  # [B, S*S*A, M]
  ov = jnp.where((labels >= 0)[:, None, :], ov, 0.0).max(-1, initial=0.0).reshape(t.obj.shape)
  noobj_mask = (1.0 - t.obj) * (ov <= ignore_iou)
  sq = (jax.nn.sigmoid(r[..., :2]) - t.txy) ** 2 + (r[..., 2:4] - t.twh) ** 2
  coord = jnp.sum(t.obj * t.weight * sq.sum(-1))
  bce = optax.sigmoid_binary_cross_entropy
  obj = jnp.sum(t.obj * bce(r[..., 4], jnp.ones_like(r[..., 4])))
  noobj = jnp.sum(noobj_mask * bce(r[..., 4], jnp.zeros_like(r[..., 4])))
  cls = jnp.sum(t.obj * optax.softmax_cross_entropy_with_integer_labels(r[..., 5:], t.label))
  parts = {"coord": coord / bsz, "obj": obj / bsz, "noobj": noobj / bsz, "cls": cls / bsz}
  loss = lambda_coord * parts["coord"] + parts["obj"] + lambda_noobj * parts["noobj"] + parts["cls"]
  return loss, parts
