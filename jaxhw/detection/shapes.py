"""An offline detection data set: seeded RGB images of squares, discs and triangles with their boxes.

Every image is drawn from its own generator seeded by ``(seed, split, index)``, so a split is deterministic per
seed, any image can be regenerated alone, and the train and test splits never share an image. An image has a
noisy, shaded background with clutter (small strokes and dots that are not objects), then 1..``max_objects``
objects of random class, size, colour and position; objects may overlap (pairwise box IoU at most ``max_iou``,
later objects drawn on top). A box is the object's full extent, occluded or not.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np

__all__ = ["SHAPE_CLASSES", "ShapesConfig", "DetectionSet", "generate_shapes", "shapes_splits"]

#: Class names of the synthetic shapes detection set, in label order.
SHAPE_CLASSES = ("square", "disc", "triangle")
_SPLITS = {"train": 0, "test": 1}


@dataclasses.dataclass(frozen=True)
class ShapesConfig:
  """Settings of the generated set.

  Attributes:
    image_size: side of the square RGB image in pixels (>= 8).
    min_objects, max_objects: objects per image (0 <= min <= max).
    min_size, max_size: object side / diameter in pixels (2 <= min <= max <= image_size).
    max_iou: largest IoU between two objects' boxes, in [0, 1].
    noise: standard deviation of the background's pixel noise.
    clutter: clutter strokes and dots per image (mean of a Poisson count).
    num_train, num_test: split sizes.
  """

  image_size: int = 32
  min_objects: int = 1
  max_objects: int = 3
  min_size: int = 8
  max_size: int = 16
  max_iou: float = 0.3
  noise: float = 0.05
  clutter: float = 4.0
  num_train: int = 3000
  num_test: int = 300

  def __post_init__(self):
    if self.image_size < 8:
      raise ValueError(f"image_size={self.image_size!r} must be >= 8")
    if not 0 <= self.min_objects <= self.max_objects:
      raise ValueError(f"min_objects={self.min_objects!r}, max_objects={self.max_objects!r}: need "
                       "0 <= min_objects <= max_objects")
    if not 2 <= self.min_size <= self.max_size <= self.image_size:
      raise ValueError(f"min_size={self.min_size!r}, max_size={self.max_size!r}: need 2 <= min_size <= max_size "
                       f"<= image_size ({self.image_size})")
    if not 0.0 <= self.max_iou <= 1.0:
      raise ValueError(f"max_iou={self.max_iou!r} must be in [0, 1]")
    if self.noise < 0 or self.clutter < 0:
      raise ValueError(f"noise={self.noise!r} and clutter={self.clutter!r} must be >= 0")
    if self.num_train < 0 or self.num_test < 0:
      raise ValueError(f"num_train={self.num_train!r} and num_test={self.num_test!r} must be >= 0")


class DetectionSet(NamedTuple):
  """``images [N, H, W, 3]`` float32 in [0, 1]; ``boxes [N, M, 4]`` (x1, y1, x2, y2) pixels; ``labels [N, M]``
  int32, -1 = padding."""

  images: np.ndarray
  boxes: np.ndarray
  labels: np.ndarray


def _colour(rng, avoid: np.ndarray) -> np.ndarray:
  for _ in range(20):
    c = rng.uniform(0.0, 1.0, 3)
    if np.abs(c - avoid).sum() > 0.6:
      return c
  return 1.0 - avoid


def _mask(kind: int, xx, yy, cx, cy, s) -> np.ndarray:
  if kind == 0:
    return (np.abs(xx - cx) <= s / 2) & (np.abs(yy - cy) <= s / 2)
  if kind == 1:
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= (s / 2) ** 2
  top = cy - s / 2
  return (yy >= top) & (yy <= cy + s / 2) & (np.abs(xx - cx) <= (yy - top) / 2)


def _one_image(rng: np.random.Generator, c: ShapesConfig):
  n = c.image_size
  yy, xx = np.mgrid[0:n, 0:n].astype(np.float64) + 0.5
  base = rng.uniform(0.1, 0.9, 3)
  tilt = rng.uniform(-0.25, 0.25, (2, 3))
  img = base + (xx[..., None] / n - 0.5) * tilt[0] + (yy[..., None] / n - 0.5) * tilt[1]
  for _ in range(rng.poisson(c.clutter)):
    col = rng.uniform(0, 1, 3)
    if rng.random() < 0.5:  # a short thin stroke
      x0, y0 = rng.uniform(0, n, 2)
      ang = rng.uniform(0, np.pi)
      length = rng.uniform(2, max(3.0, c.min_size / 2))
      t = np.linspace(0, length, 16)
      px = np.clip((x0 + t * np.cos(ang)).astype(int), 0, n - 1)
      py = np.clip((y0 + t * np.sin(ang)).astype(int), 0, n - 1)
      img[py, px] = col
    else:  # a dot of 1-2 px
      r = rng.uniform(0.5, 1.2)
      x0, y0 = rng.uniform(0, n, 2)
      img[(xx - x0) ** 2 + (yy - y0) ** 2 <= r * r] = col
  k = int(rng.integers(c.min_objects, c.max_objects + 1))
  boxes, labels = [], []
  for _ in range(k):
    for _attempt in range(30):
      s = rng.uniform(c.min_size, c.max_size)
      cx, cy = rng.uniform(s / 2, n - s / 2, 2)
      box = np.array([cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2])
      if not boxes or _max_iou(box, np.array(boxes)) <= c.max_iou:
        break
    else:
      continue
    kind = int(rng.integers(len(SHAPE_CLASSES)))
    img[_mask(kind, xx, yy, cx, cy, s)] = _colour(rng, base)
    boxes.append(box)
    labels.append(kind)
  img = img + rng.normal(0.0, c.noise, img.shape)
  return np.clip(img, 0.0, 1.0).astype(np.float32), boxes, labels


def _max_iou(box: np.ndarray, others: np.ndarray) -> float:
  ix = np.clip(np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0]), 0, None)
  iy = np.clip(np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1]), 0, None)
  inter = ix * iy
  union = (box[2] - box[0]) * (box[3] - box[1]) + (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
  return float(np.max(inter / (union - inter)))


def generate_shapes(config: ShapesConfig, seed: int, split: str, n: int | None = None,
                    start: int = 0) -> DetectionSet:
  """Images ``start .. start + n - 1`` of a split (``n`` defaults to the split's size).

  Args:
    config: the set's settings.
    seed: data seed.
    split: ``"train"`` or ``"test"``.
    n: number of images (>= 0).
    start: index of the first image (>= 0).
  """
  if split not in _SPLITS:
    raise ValueError(f"split={split!r}; valid: {tuple(_SPLITS)}")
  n = (config.num_train if split == "train" else config.num_test) if n is None else n
  if n < 0 or start < 0:
    raise ValueError(f"n={n!r} and start={start!r} must be >= 0")
  m = max(config.max_objects, 1)
  images = np.zeros((n, config.image_size, config.image_size, 3), np.float32)
  boxes = np.zeros((n, m, 4), np.float32)
  labels = np.full((n, m), -1, np.int32)
  for i in range(n):
    rng = np.random.default_rng([int(seed), _SPLITS[split], start + i])
    img, b, lab = _one_image(rng, config)
    images[i] = img
    if b:
      boxes[i, :len(b)] = np.asarray(b, np.float32)
      labels[i, :len(lab)] = lab
  return DetectionSet(images, boxes, labels)


def shapes_splits(config: ShapesConfig, seed: int) -> tuple[DetectionSet, DetectionSet]:
  """The fixed ``(train, test)`` splits of a seed."""
  return generate_shapes(config, seed, "train"), generate_shapes(config, seed, "test")
