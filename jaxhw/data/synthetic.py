"""Seeded synthetic datasets for tests and smoke runs."""

from __future__ import annotations

import numpy as np


def synthetic_classification(seed: int, n: int, shape: tuple[int, ...] = (8,), num_classes: int = 3,
                             noise: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
  """Gaussian class clusters: linearly separable up to `noise`.

  Args:
    seed: numpy seed.
    n: number of examples.
    shape: shape of one input.
    num_classes: number of classes.
    noise: standard deviation around each class centre (centres have unit-scale entries).

  Returns:
    ``(x, y)``: float32 ``[n, *shape]`` and int32 ``[n]``.
  """
  if n < 1 or num_classes < 2:
    raise ValueError(f"need n >= 1 and num_classes >= 2, got n={n}, num_classes={num_classes}.")
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(num_classes, *shape)).astype(np.float32)
  y = rng.integers(0, num_classes, size=n).astype(np.int32)
  x = centres[y] + noise * rng.normal(size=(n, *shape)).astype(np.float32)
  return x.astype(np.float32), y
