"""Resumable batch streams: the `Stream` protocol the trainer takes, and `BatchIterator` over in-memory arrays."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Stream(Protocol):
  """An endless iterator of batches that can report and restore its position (what `jaxhw.train` takes).

  A batch is any pytree of arrays (a tuple ``(images, labels)``, a dict of story arrays, ...). ``get_state``
  returns a JSON-serialisable position and ``set_state`` restores it, so a resumed run sees exactly the batches
  an uninterrupted one would. A stream may also have ``num_examples`` (examples per epoch), which lets
  ``TrainConfig.epochs`` set the number of steps.
  """

  def __next__(self) -> Any: ...

  def get_state(self) -> dict[str, Any]: ...

  def set_state(self, state: dict[str, Any]) -> None: ...


class BatchIterator(Iterator[tuple[np.ndarray, ...]]):
  """Yields shuffled minibatches forever, epoch after epoch.

  The order of epoch ``e`` depends only on ``(seed, e)``, so the iterator's whole state is two integers
  (``epoch``, ``position``): `get_state` / `set_state` make an interrupted run continue exactly where it was.

  Args:
    arrays: arrays sharing their first (example) axis, e.g. ``(images, labels)``.
    batch_size: examples per batch, in [1, n].
    seed: shuffling seed.
    drop_remainder: drop the last incomplete batch of each epoch (keeps shapes static under jit).
    shuffle: shuffle each epoch (False keeps the array order).
  """

  def __init__(self, arrays: tuple[np.ndarray, ...], batch_size: int, seed: int = 0, *,
               drop_remainder: bool = True, shuffle: bool = True):
    if not arrays:
      raise ValueError("arrays must hold at least one array.")
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
      raise ValueError(f"arrays must share their first axis, got lengths {[len(a) for a in arrays]}.")
    if not 1 <= batch_size <= n:
      raise ValueError(f"batch_size must be in [1, {n}] (the number of examples), got {batch_size}.")
    self.arrays = arrays
    self.batch_size = batch_size
    self.seed = seed
    self.drop_remainder = drop_remainder
    self.shuffle = shuffle
    self.epoch = 0
    self.position = 0
    self._order = self._epoch_order(0)

  @property
  def num_examples(self) -> int:
    return len(self.arrays[0])

  @property
  def batches_per_epoch(self) -> int:
    n, b = self.num_examples, self.batch_size
    return n // b if self.drop_remainder else -(-n // b)

  def _epoch_order(self, epoch: int) -> np.ndarray:
    if not self.shuffle:
      return np.arange(self.num_examples)
    return np.random.default_rng([self.seed, epoch]).permutation(self.num_examples)

  def __next__(self) -> tuple[np.ndarray, ...]:
    if self.position >= self.batches_per_epoch:
      self.epoch += 1
      self.position = 0
      self._order = self._epoch_order(self.epoch)
    start = self.position * self.batch_size
    idx = self._order[start : start + self.batch_size]
    self.position += 1
    return tuple(a[idx] for a in self.arrays)

  def get_state(self) -> dict[str, int]:
    """Returns the position as ``{"epoch", "position", "seed"}`` (JSON-serialisable)."""
    return {"epoch": int(self.epoch), "position": int(self.position), "seed": int(self.seed)}

  def set_state(self, state: dict[str, int]) -> None:
    """Restores a position returned by `get_state`; refuses one made with another seed."""
    if int(state["seed"]) != self.seed:
      raise ValueError(f"iterator state was saved with seed {state['seed']}, this iterator uses {self.seed}.")
    self.epoch, self.position = int(state["epoch"]), int(state["position"])
    self._order = self._epoch_order(self.epoch)
