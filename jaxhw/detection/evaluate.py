"""PASCAL VOC-style mean average precision (mAP@IoU), all-point or 11-point interpolated.

Per class, detections of all images are sorted by score (stable: ties keep image order) and matched greedily to
ground truths of their image with IoU >= threshold. ``matching="voc"`` follows the VOC devkit: a detection takes
the ground truth it overlaps most, and is a false positive if that one is already taken. ``matching="coco"``
follows pycocotools: it takes the best-overlapping ground truth not yet taken. AP is the area under the
precision envelope (all-point, VOC2010+) or the mean of the envelope at recalls 0, 0.1, ..., 1 (11-point, VOC2007);
mAP averages over classes with at least one ground truth. Images without objects are valid (their detections
are false positives); ground truths marked difficult are neither needed nor penalised (VOC rule).

References:
  Everingham et al., "The PASCAL Visual Object Classes (VOC) Challenge", IJCV 2010 (devkit ``VOCevalDet``).
  Lin et al., "Microsoft COCO: Common Objects in Context", ECCV 2014 (matching rule of ``pycocotools``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from jaxhw.detection.boxes import Detections, iou_np

__all__ = ["voc_ap", "MAPResult", "mean_average_precision", "MATCHINGS"]

#: Detection-to-ground-truth matching rules of `mean_average_precision`: PASCAL VOC or COCO style.
MATCHINGS = ("voc", "coco")


def voc_ap(recall: np.ndarray, precision: np.ndarray, *, use_07_metric: bool = False) -> float:
  """AP from a precision/recall curve (detections in decreasing score order).

  Args:
    recall, precision: cumulative values after each detection.
    use_07_metric: 11-point interpolation (VOC2007) instead of the all-point area.
  """
  recall = np.asarray(recall, np.float64)
  precision = np.asarray(precision, np.float64)
  if use_07_metric:
    points = [precision[recall >= t].max() if np.any(recall >= t) else 0.0 for t in np.linspace(0.0, 1.0, 11)]
    return float(np.sum(points) / 11.0)
  mrec = np.concatenate([[0.0], recall, [1.0]])
  mpre = np.concatenate([[0.0], precision, [0.0]])
  mpre = np.maximum.accumulate(mpre[::-1])[::-1]
  i = np.nonzero(mrec[1:] != mrec[:-1])[0]
  return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


class MAPResult(NamedTuple):
  """``map``: mean AP over classes with ground truths (nan if none); ``ap [C]`` (nan for classes without ground
  truths); ``num_gt [C]`` (non-difficult); ``num_det [C]``."""

  map: float
  ap: np.ndarray
  num_gt: np.ndarray
  num_det: np.ndarray


def _as_gt(g) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  boxes, labels = np.asarray(g[0], np.float64).reshape(-1, 4), np.asarray(g[1]).reshape(-1)
  difficult = np.asarray(g[2], bool).reshape(-1) if len(g) > 2 and g[2] is not None else np.zeros(len(labels), bool)
  keep = labels >= 0
  return boxes[keep], labels[keep].astype(np.int64), difficult[keep]


def mean_average_precision(detections: Sequence[Detections | tuple], ground_truths: Sequence[tuple],
                           num_classes: int, *, iou_threshold: float = 0.5, use_07_metric: bool = False,
                           matching: str = "voc") -> MAPResult:
  """mAP of detections against ground truths.

  Args:
    detections: one per image, ``(boxes [K, 4], scores [K], labels [K])`` (e.g. `Detections`).
    ground_truths: one per image, ``(boxes [M, 4], labels [M])`` or ``(boxes, labels, difficult)``; labels -1
      are padding.
    num_classes: C; labels must lie in ``[0, C)``.
    iou_threshold: a match needs IoU >= this, in (0, 1].
    use_07_metric: 11-point interpolation (VOC2007) instead of all-point.
    matching: ``"voc"`` (devkit) or ``"coco"`` (pycocotools), see the module docstring.

  Returns:
    A `MAPResult`.
  """
  if len(detections) != len(ground_truths):
    raise ValueError(f"detections has {len(detections)} images, ground_truths {len(ground_truths)}")
  if not 0.0 < iou_threshold <= 1.0:
    raise ValueError(f"iou_threshold={iou_threshold!r} must be in (0, 1]")
  if matching not in MATCHINGS:
    raise ValueError(f"matching={matching!r}; valid: {MATCHINGS}")
  if num_classes < 1:
    raise ValueError(f"num_classes={num_classes!r} must be >= 1")
  gts = [_as_gt(g) for g in ground_truths]
  dets = []
  for i, d in enumerate(detections):
    b = np.asarray(d[0], np.float64).reshape(-1, 4)
    s = np.asarray(d[1], np.float64).reshape(-1)
    lab = np.asarray(d[2]).reshape(-1).astype(np.int64)
    if not len(b) == len(s) == len(lab):
      raise ValueError(f"detections[{i}]: {len(b)} boxes, {len(s)} scores, {len(lab)} labels")
    if lab.size and (lab.min() < 0 or lab.max() >= num_classes):
      raise ValueError(f"detections[{i}] has labels in [{lab.min()}, {lab.max()}]; allowed [0, {num_classes})")
    dets.append((b, s, lab))
  for i, (_, lab, _) in enumerate(gts):
    if lab.size and lab.max() >= num_classes:
      raise ValueError(f"ground_truths[{i}] has label {lab.max()}; allowed [0, {num_classes}) or -1 (padding)")

  ap = np.full(num_classes, np.nan)
  num_gt = np.zeros(num_classes, np.int64)
  num_det = np.zeros(num_classes, np.int64)
  for c in range(num_classes):
    npos = 0
    scores_c, tp_c, ignore_c = [], [], []
    for (b, s, lab), (gb, gl, gd) in zip(dets, gts):
      gsel = gl == c
      g_boxes, g_diff = gb[gsel], gd[gsel]
      npos += int(np.sum(~g_diff))
      dsel = np.nonzero(lab == c)[0]
      if dsel.size == 0:
        continue
      order = dsel[np.argsort(-s[dsel], kind="stable")]
      tp = np.zeros(order.size, bool)
      ign = np.zeros(order.size, bool)
      if g_boxes.shape[0]:
        ov = iou_np(b[order], g_boxes)
        taken = np.zeros(g_boxes.shape[0], bool)
        for k in range(order.size):
          if matching == "voc":
            j = int(np.argmax(ov[k]))
            if ov[k, j] >= iou_threshold:
              if g_diff[j]:
                ign[k] = True
              elif not taken[j]:
                tp[k] = taken[j] = True
          else:
            # pycocotools: non-difficult (non-ignored) ground truths first, then difficult ones.
            best, bj = min(iou_threshold, 1 - 1e-10), -1
            for j in np.argsort(g_diff, kind="stable"):
              if taken[j]:
                continue
              if bj > -1 and not g_diff[bj] and g_diff[j]:
                break
              if ov[k, j] < best:
                continue
              best, bj = ov[k, j], j
            if bj > -1:
              taken[bj] = True
              if g_diff[bj]:
                ign[k] = True
              else:
                tp[k] = True
      scores_c.append(s[order])
      tp_c.append(tp)
      ignore_c.append(ign)
    num_gt[c] = npos
    if scores_c:
      s_all = np.concatenate(scores_c)
      tp_all = np.concatenate(tp_c)
      keep = ~np.concatenate(ignore_c)
      s_all, tp_all = s_all[keep], tp_all[keep]
      order = np.argsort(-s_all, kind="stable")
      tp_all = tp_all[order]
    else:
      tp_all = np.zeros(0, bool)
    num_det[c] = tp_all.size
    if npos == 0:
      continue
    tp_cum = np.cumsum(tp_all)
    fp_cum = np.cumsum(~tp_all)
    rec = tp_cum / npos
    prec = tp_cum / np.maximum(tp_cum + fp_cum, np.finfo(np.float64).eps)
    ap[c] = voc_ap(rec, prec, use_07_metric=use_07_metric)
  has = num_gt > 0
  m = float(np.mean(ap[has])) if has.any() else float("nan")
  return MAPResult(m, ap, num_gt, num_det)
