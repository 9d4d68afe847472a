"""Tiny data sets prepared through the real tfds path under the names the studies read (for tests/test_full_presets*).

Each builder subclasses the real tfds builder (same name, version, config and features), so `tfds.data_source` reads
the files exactly as it reads a real ``tfds build`` output, but generates a handful of random examples instead of
downloading anything. Images are PIL images (the Image feature then needs no TensorFlow to encode them).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SIZES = {"train": 16, "test": 8}


def _images(n: int, shape: tuple[int, ...], seed: int, classes: int = 10):
  """Image i has label i % classes and a brightness set by its label plus noise (learnable in a few steps, so the
  studies' clean accuracies are above zero)."""
  from PIL import Image

  rng = np.random.default_rng(seed)
  for i in range(n):
    level = 255.0 * (i % classes) / max(1, classes - 1)
    img = np.clip(level + rng.normal(0.0, 20.0, shape), 0, 255).astype(np.uint8)
    yield i, Image.fromarray(img[..., 0] if shape[-1] == 1 else img)


def prepare(data_dir: str | Path, names=("cifar10", "cifar100", "mnist", "voc/2007")) -> Path:
  """Prepares tiny versions of `names` in `data_dir` (array_record) and returns `data_dir`.

  cifar10 / cifar100 / mnist: 16 train and 8 test images of the real shapes (the test images are the first 8
  training images; brightness encodes the label); voc/2007: 4 images per split
  (train, validation, test) of 48x64 pixels with one or two boxes each.
  """
  import tensorflow_datasets as tfds
  from tensorflow_datasets.image_classification import cifar, mnist
  from tensorflow_datasets.object_detection import voc

  data_dir = Path(data_dir)
  dl = tfds.download.DownloadConfig(try_download_gcs=False)

  def classification(base, name, shape, classes, extra):
    class Tiny(base, skip_registration=True):
      def _split_generators(self, dl_manager):
        return {split: self._generate_examples(split) for split in SIZES}

      def _generate_examples(self, split):
        # The test images repeat the first training images (same seed): a model trained for a few steps
        # classifies some of them, so the accuracies the sweeps divide by are above zero.
        for i, img in _images(SIZES[split], shape, seed=0, classes=min(classes, 10)):
          yield i, {"image": img, "label": i % min(classes, 10), **extra(i)}

    Tiny.name = name
    return Tiny

  builders = {
      "cifar10": lambda: classification(cifar.Cifar10, "cifar10", (32, 32, 3), 10, lambda i: {"id": f"train_{i}"}),
      "cifar100": lambda: classification(cifar.Cifar100, "cifar100", (32, 32, 3), 100,
                                         lambda i: {"id": f"train_{i}", "coarse_label": i % 20}),
      "mnist": lambda: classification(mnist.MNIST, "mnist", (28, 28, 1), 10, lambda i: {}),
  }
  for name in names:
    if name in builders:
      builders[name]()(data_dir=str(data_dir), file_format="array_record").download_and_prepare(download_config=dl)
    elif name == "voc/2007":
      class TinyVoc(voc.Voc, skip_registration=True):
        name = "voc"

        def _split_generators(self, dl_manager):
          return {split: self._generate_examples(split, seed) for seed, split in
                  enumerate(("train", "validation", "test"))}

        def _generate_examples(self, split, seed):
          rng = np.random.default_rng(seed)
          for i, img in _images(4, (48, 64, 3), seed):
            objs = []
            for k in range(1 + i % 2):
              y0, x0 = rng.uniform(0.0, 0.5, 2)
              objs.append({"label": (i + 7 * k) % 20, "pose": 0, "is_truncated": False, "is_difficult": k == 1,
                           "bbox": tfds.features.BBox(y0, x0, y0 + 0.4, x0 + 0.4)})
            labels = sorted({o["label"] for o in objs})
            yield f"{split}_{i}", {"image": img, "image/filename": f"{split}_{i}.jpg", "objects": objs,
                                   "labels": labels, "labels_no_difficult": [objs[0]["label"]]}

      TinyVoc(config="2007", data_dir=str(data_dir), file_format="array_record").download_and_prepare(
          download_config=dl)
    else:
      raise ValueError(f"no tiny builder for {name!r}")
  return data_dir
