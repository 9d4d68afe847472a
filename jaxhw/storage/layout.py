"""The data set in NAND pages: whole examples per page, pages striped channel-first, virtual replication.

Page ``j`` lives on channel ``j mod N`` and way ``(j // N) mod W``, so an in-storage worker on channel ``i`` reads
pages ``i, i + N, i + 2N, ...`` and a host reading pages in order scans every channel in turn. Virtual replication
simulates a data set ``r`` times larger than the real one: virtual page ``j`` holds the examples of real page
``j mod R`` plus seeded Gaussian noise (none on the first copy), drawn from the page's own key, so the bytes a
simulated drive "stores" are reproducible without being held in memory.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from jaxhw.storage.ssd import SSDConfig


@dataclasses.dataclass(frozen=True)
class PageLayout:
  """Where every (virtual) page of a data set lives.

  Attributes:
    examples_per_page: whole examples in one page, ``floor(P / example_bytes)``.
    real_pages: pages of the real data set (a trailing partial page is dropped).
    replication: virtual replication factor r (1: the real data only).
    channels: N, from the SSD.
    ways: W, from the SSD.
    page_bytes: P, from the SSD.
    example_bytes: stored size of one example (pixels and label).
  """

  examples_per_page: int
  real_pages: int
  replication: int
  channels: int
  ways: int
  page_bytes: int
  example_bytes: int

  @property
  def num_pages(self) -> int:
    """Virtual pages of the simulated data set."""
    return self.real_pages * self.replication

  @property
  def data_bytes(self) -> int:
    """Simulated data-set size D in bytes (whole pages)."""
    return self.num_pages * self.page_bytes

  @property
  def num_examples(self) -> int:
    """Examples in the simulated data set."""
    return self.num_pages * self.examples_per_page

  def channel_of(self, pages: np.ndarray) -> np.ndarray:
    """Channel of each page: ``j mod N``."""
    return np.asarray(pages) % self.channels

  def way_of(self, pages: np.ndarray) -> np.ndarray:
    """Way (die) of each page on its channel: ``(j // N) mod W``."""
    return (np.asarray(pages) // self.channels) % self.ways

  def channel_pages(self, channel: int) -> np.ndarray:
    """The pages of `channel` in storage order (the order its in-storage worker reads them)."""
    if not 0 <= channel < self.channels:
      raise ValueError(f"channel must be in [0, {self.channels}), got {channel}.")
    return np.arange(channel, self.num_pages, self.channels, dtype=np.int64)

  def pages_per_channel(self) -> np.ndarray:
    """Page count of every channel (they differ by at most one)."""
    return np.array([len(range(c, self.num_pages, self.channels)) for c in range(self.channels)], np.int64)


def page_layout(num_examples: int, example_bytes: int, ssd: SSDConfig, replication: int = 1) -> PageLayout:
  """Lays a data set out in the pages of `ssd`.

  Args:
    num_examples: real examples, at least one page's worth.
    example_bytes: bytes one stored example takes (MNIST: 784 pixels + 1 label byte), in [1, page size].
    ssd: the drive (page size, channels, ways).
    replication: virtual replication factor r >= 1.

  Returns:
    The `PageLayout`.

  References:
    Choe et al., "Near-Data Processing for Differentiable Machine Learning Models", arXiv:1610.02273, 2016
    (data striped over channels, virtual replication of the data set past host memory).
  """
  if not isinstance(example_bytes, int) or example_bytes < 1:
    raise ValueError(f"example_bytes must be an integer >= 1, got {example_bytes!r}.")
  if ssd.page_bytes < example_bytes:
    raise ValueError(f"page_bytes={ssd.page_bytes} is smaller than one example (example_bytes={example_bytes}); "
                     f"the page must hold at least one whole example, so page_bytes must be >= {example_bytes}.")
  if not isinstance(replication, int) or replication < 1:
    raise ValueError(f"replication must be an integer >= 1, got {replication!r}.")
  per_page = ssd.page_bytes // example_bytes
  if num_examples < per_page:
    raise ValueError(f"num_examples must be at least one page's worth ({per_page}), got {num_examples}.")
  return PageLayout(examples_per_page=per_page, real_pages=num_examples // per_page, replication=replication,
                    channels=ssd.channels, ways=ssd.ways, page_bytes=ssd.page_bytes, example_bytes=example_bytes)


class PagedData(NamedTuple):
  """The real pages as device arrays plus what virtual pages add (a pytree: pass it into jitted code).

  Attributes:
    x: ``[real_pages, examples_per_page, features]`` inputs.
    y: ``[real_pages, examples_per_page]`` integer labels.
    noise_std: std of the Gaussian noise on replicas (copies after the first).
    key: the replication noise key (page ``j`` uses ``fold_in(key, j)``).
  """

  x: Float[Array, "pages per_page features"]
  y: Int[Array, "pages per_page"]
  noise_std: Float[Array, ""]
  key: PRNGKeyArray


def paged_data(x: np.ndarray, y: np.ndarray, layout: PageLayout, *, noise_std: float = 0.0,
               key: PRNGKeyArray | None = None) -> PagedData:
  """Packs examples into the layout's real pages (example ``e`` is slot ``e mod k`` of page ``e // k``).

  Args:
    x: ``[n, ...]`` inputs (flattened per example), n >= the layout's real examples.
    y: ``[n]`` labels.
    layout: from `page_layout`.
    noise_std: replica noise std, >= 0.
    key: replica noise key (default ``jax.random.key(0)``).

  Returns:
    `PagedData`.
  """
  if noise_std < 0:
    raise ValueError(f"noise_std must be >= 0, got {noise_std}.")
  k, r = layout.examples_per_page, layout.real_pages
  if len(x) < k * r or len(y) < k * r:
    raise ValueError(f"x and y must hold at least {k * r} examples for this layout, got {len(x)} and {len(y)}.")
  xs = np.asarray(x[: k * r], np.float32).reshape(r, k, -1)
  ys = np.asarray(y[: k * r], np.int32).reshape(r, k)
  return PagedData(jnp.asarray(xs), jnp.asarray(ys), jnp.asarray(noise_std, jnp.float32),
                   jax.random.key(0) if key is None else key)


def read_pages(data: PagedData, pages: Int[Array, " m"]) -> tuple[Float[Array, "m per_page features"],
                                                                   Int[Array, "m per_page"]]:
  """The examples stored in virtual `pages` (pure, jit-able).

  Args:
    data: from `paged_data`.
    pages: virtual page indices.

  Returns:
    ``(x, y)`` of shape ``[m, examples_per_page, features]`` and ``[m, examples_per_page]``.
  """
  pages = jnp.asarray(pages)
  real = data.x.shape[0]
  x, y = data.x[pages % real], data.y[pages % real]
  replica = (pages // real)[:, None, None]

  def noisy(x):
    noise = jax.vmap(lambda p: jax.random.normal(jax.random.fold_in(data.key, p), data.x.shape[1:], x.dtype))(pages)
    return x + jnp.where(replica > 0, data.noise_std * noise, 0.0).astype(x.dtype)

  return jax.lax.cond(jnp.any(replica > 0) & (data.noise_std > 0), noisy, lambda x: x, x), y
