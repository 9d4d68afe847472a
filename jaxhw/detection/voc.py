"""PASCAL VOC 2007 detection data read from a prepared tensorflow-datasets directory (never downloaded).

`load_voc` opens ``voc/2007`` through `jaxhw.data.tfds_adapter.tfds_source` (``download=False``): when the data is
not prepared it raises `jaxhw.data.tfds_adapter.DatasetNotPreparedError` naming the dataset, the directory
searched and the ``tfds build`` command. Images are resized to a square side; boxes become ``(x1, y1, x2, y2)``
pixels of the resized image, padded like `jaxhw.detection.shapes.DetectionSet`, with a ``difficult`` mask.

References:
  Everingham et al., "The PASCAL Visual Object Classes (VOC) Challenge", IJCV 2010.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np

from jaxhw.data.tfds_adapter import tfds_source

__all__ = ["VOC_CLASSES", "VOC_NAME", "VocSet", "load_voc"]

#: The tensorflow-datasets name of PASCAL VOC 2007, which `load_voc` reads.
VOC_NAME = "voc/2007"
#: The 20 PASCAL VOC class names, in label order.
VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")


class VocSet(NamedTuple):
  """``images [N, S, S, 3]`` float32 in [0, 1]; ``boxes [N, M, 4]``; ``labels [N, M]`` (-1 padding);
  ``difficult [N, M]`` bool."""

  images: np.ndarray
  boxes: np.ndarray
  labels: np.ndarray
  difficult: np.ndarray


def load_voc(split: str, image_size: int = 416, *, limit: int | None = None, max_objects: int = 42,
             data_dir: str | os.PathLike | None = None) -> VocSet:
  """Reads a prepared ``voc/2007`` split into arrays.

  Args:
    split: ``"train"``, ``"validation"``, ``"test"`` or a tfds split expression.
    image_size: side the images are resized to (>= 32).
    limit: read at most this many images.
    max_objects: objects kept per image (the first ones).
    data_dir: the tfds data directory (default ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).

  Raises:
    DatasetNotPreparedError: ``voc/2007`` is not prepared in ``data_dir``.
  """
  if image_size < 32:
    raise ValueError(f"image_size={image_size!r} must be >= 32")
  if max_objects < 1:
    raise ValueError(f"max_objects={max_objects!r} must be >= 1")
  from PIL import Image

  source = tfds_source(VOC_NAME, split, data_dir)
  n = len(source) if limit is None else min(int(limit), len(source))
  images = np.zeros((n, image_size, image_size, 3), np.float32)
  boxes = np.zeros((n, max_objects, 4), np.float32)
  labels = np.full((n, max_objects), -1, np.int32)
  difficult = np.zeros((n, max_objects), bool)
  for i in range(n):
    ex = source[i]
    img = Image.fromarray(np.asarray(ex["image"], np.uint8)).resize((image_size, image_size), Image.BILINEAR)
    images[i] = np.asarray(img, np.float32) / 255.0
    obj = ex["objects"]
    bb = np.asarray(obj["bbox"], np.float32).reshape(-1, 4)[:max_objects]  # ymin, xmin, ymax, xmax in [0, 1]
    k = bb.shape[0]
    boxes[i, :k] = bb[:, [1, 0, 3, 2]] * image_size
    labels[i, :k] = np.asarray(obj["label"]).reshape(-1)[:k]
    difficult[i, :k] = np.asarray(obj.get("is_difficult", np.zeros(k, bool))).reshape(-1)[:k]
  return VocSet(images, boxes, labels, difficult)
