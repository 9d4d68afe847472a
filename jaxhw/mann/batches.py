"""A resumable stream of bAbI minibatches bucketed by story length, so a batch of short stories is not padded to
the full 50-slot memory (most bAbI questions see fewer than 10 statements)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxhw.mann.babi import BabiArrays


class BucketedBatches:
  """Shuffled minibatches whose memory is cut to the smallest bucket that holds every story in the batch.

  Each epoch shuffles the questions (from ``(seed, epoch)``), groups them by bucket, cuts the groups into
  ``num_examples // batch_size`` consecutive batches and shuffles the batch order; a batch straddling two buckets
  takes the larger. Only ``len(buckets)`` shapes occur, so a jitted step compiles at most that many times. A
  `jaxhw.data.Stream`: ``get_state``/``set_state`` resume exactly.

  Args:
    data: the questions.
    batch_size: questions per batch, in [1, n].
    seed: shuffling seed.
    buckets: increasing memory sizes; the last must be the arrays' memory size.

  Yields:
    ``(stories[:, :M_b], queries, answers, story_len)``.
  """

  def __init__(self, data: BabiArrays, batch_size: int, seed: int = 0, buckets: Sequence[int] = (10, 25, 50)):
    n, memory = data.stories.shape[:2]
    if not 1 <= batch_size <= n:
      raise ValueError(f"batch_size must be in [1, {n}] (the number of questions), got {batch_size}.")
    buckets = tuple(sorted(int(b) for b in buckets))
    if not buckets or buckets[-1] != memory or buckets[0] < 1:
      raise ValueError(f"buckets must be positive and end at the memory size {memory}, got {buckets}.")
    self.data, self.batch_size, self.seed, self.buckets = data, batch_size, seed, buckets
    self._bucket = np.searchsorted(np.asarray(buckets), data.story_len, side="left")
    self.epoch, self.position = 0, 0
    self._batches = self._epoch_batches(0)

  @property
  def num_examples(self) -> int:
    return len(self.data.answers)

  def _epoch_batches(self, epoch: int) -> list[tuple[np.ndarray, int]]:
    rng = np.random.default_rng([self.seed, epoch])
    order = rng.permutation(self.num_examples)
    order = order[np.argsort(self._bucket[order], kind="stable")]
    nb = self.num_examples // self.batch_size
    batches = [order[i * self.batch_size:(i + 1) * self.batch_size] for i in range(nb)]
    batches = [(idx, self.buckets[int(self._bucket[idx].max())]) for idx in batches]
    return [batches[i] for i in rng.permutation(nb)]

  def __iter__(self):
    return self

  def __next__(self) -> tuple[np.ndarray, ...]:
    if self.position >= len(self._batches):
      self.epoch, self.position = self.epoch + 1, 0
      self._batches = self._epoch_batches(self.epoch)
    idx, memory = self._batches[self.position]
    self.position += 1
    d = self.data
    return d.stories[idx, :memory], d.queries[idx], d.answers[idx], d.story_len[idx]

  def get_state(self) -> dict[str, Any]:
    return {"epoch": int(self.epoch), "position": int(self.position), "seed": int(self.seed)}

  def set_state(self, state: dict[str, Any]) -> None:
    if int(state["seed"]) != self.seed:
      raise ValueError(f"stream state was saved with seed {state['seed']}, this stream uses {self.seed}.")
    self.epoch, self.position = int(state["epoch"]), int(state["position"])
    self._batches = self._epoch_batches(self.epoch)
