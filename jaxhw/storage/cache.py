"""The host's page cache for in-host processing: exact LRU over an access trace, and its analytic counterpart.

Reading a data set larger than the cache in the same order every epoch is LRU's worst case: each page is evicted
before it comes round again, so every access misses. Pages drawn independently and uniformly ("random", sampling
with replacement) hit with probability M / D. A fresh permutation every epoch ("shuffled") hits far less under LRU:
a page is still cached only if fewer than M distinct pages came between its two visits, which happens with
probability m + (1 - m) ln(1 - m) for m = M / D (0.034 at m = 0.25).
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict

import numpy as np

#: Page access orders the cache model knows: sequential epochs, a fresh permutation per epoch, uniform draws
#: with replacement.
CACHE_ORDERS = ("sequential", "shuffled", "random")


@dataclasses.dataclass(frozen=True)
class CacheTrace:
  """What an LRU cache did on a trace.

  Attributes:
    miss: ``[accesses]`` bool, True where the page had to be read from the drive.
    evict: ``[accesses]`` bool, True where the miss evicted a resident page (the cache was full).
  """

  miss: np.ndarray
  evict: np.ndarray

  @property
  def misses(self) -> int:
    return int(self.miss.sum())

  @property
  def hit_ratio(self) -> float:
    return 1.0 - self.miss.mean() if len(self.miss) else 1.0


def lru_trace(accesses: np.ndarray, capacity: int) -> CacheTrace:
  """Runs an LRU cache of `capacity` pages over a trace of page ids (exact, one dictionary operation per access).

  Args:
    accesses: ``[n]`` integer page ids in access order.
    capacity: cache size in pages, >= 0 (0: every access misses).

  Returns:
    A `CacheTrace`.
  """
  if not isinstance(capacity, int | np.integer) or capacity < 0:
    raise ValueError(f"capacity must be an integer >= 0 pages, got {capacity!r}.")
  accesses = np.asarray(accesses)
  miss = np.zeros(len(accesses), bool)
  evict = np.zeros(len(accesses), bool)
  cache: OrderedDict[int, None] = OrderedDict()
  for i, page in enumerate(accesses.tolist()):
    if page in cache:
      cache.move_to_end(page)
      continue
    miss[i] = True
    if capacity == 0:
      continue
    if len(cache) >= capacity:
      cache.popitem(last=False)
      evict[i] = True
    cache[page] = None
  return CacheTrace(miss, evict)


def lru_hit_ratio(memory_fraction: float, order: str) -> float:
  """Steady-state LRU hit ratio for a cache of M = `memory_fraction` D pages.

  Args:
    memory_fraction: m = M / D, >= 0.
    order: ``"sequential"`` (0 when m < 1), ``"random"`` (m) or ``"shuffled"`` (m + (1 - m) ln(1 - m)).

  Returns:
    The hit ratio in [0, 1] (1 when m >= 1).
  """
  if order not in CACHE_ORDERS:
    raise ValueError(f"order must be one of {CACHE_ORDERS}, got {order!r}.")
  if memory_fraction < 0:
    raise ValueError(f"memory_fraction must be >= 0, got {memory_fraction}.")
  m = float(memory_fraction)
  if m >= 1:
    return 1.0
  if order == "sequential":
    return 0.0
  if order == "random":
    return m
  return m + (1 - m) * np.log1p(-m)


def lru_misses_analytic(distinct_pages: int, capacity: int, epochs: int, order: str = "sequential") -> np.ndarray:
  """Expected misses per epoch of an LRU cache on repeated passes over `distinct_pages` pages.

  Args:
    distinct_pages: D, pages per pass.
    capacity: M, cache pages, >= 0.
    epochs: passes, >= 1.
    order: ``"sequential"`` (same order every pass), ``"shuffled"`` (a fresh permutation each pass) or
      ``"random"`` (D independent uniform draws per pass).

  Returns:
    ``[epochs]`` float misses: pass 1 reads every page it touches (cold cache; D, or D (1 - 1/e) distinct pages
    for random draws); later passes read D (1 - `lru_hit_ratio`).
  """
  if order not in CACHE_ORDERS:
    raise ValueError(f"order must be one of {CACHE_ORDERS}, got {order!r}.")
  if capacity < 0 or distinct_pages < 0 or epochs < 1:
    raise ValueError(f"need capacity >= 0, distinct_pages >= 0 and epochs >= 1, got {capacity}, {distinct_pages}, "
                     f"{epochs}.")
  if distinct_pages == 0:
    return np.zeros(epochs)
  later = distinct_pages * (1.0 - lru_hit_ratio(capacity / distinct_pages, order))
  first = float(distinct_pages)
  if order == "random":  # cold cache: every distinct page touched misses once, repeats hit while cached
    first = distinct_pages * (1 - np.exp(-1.0))
    if capacity < distinct_pages:
      first = max(first, later)
  return np.array([first] + [later] * (epochs - 1))
