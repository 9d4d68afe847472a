"""In-host processing (IHP): the host trains on pages it reads over the host link into a page cache of limited size.

The host runs one SGD worker whose step takes the pages that N in-storage workers would read in one step (batch
N b). Its data set sits in a file (or, in swap mode, in process memory backed by swap) that the OS caches in 4 KiB
pages with LRU. Every miss is a demand fault, served one at a time: a NAND read of the page's die, the transfer on
its channel, then the host link; in swap mode with ``swap_writeback`` the evicted page is first written out (host
link, then t_PROG on a die). With ``readahead`` a step's misses are issued together instead, spread over dies and
queued on the host link. I/O and compute add up unless ``overlap`` (the next step's faults during this step's
compute). Event mode drives dies, buses, host link and host CPU through an `EventQueue`; analytic mode sums the
same costs per miss in closed form.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxhw.storage.cache import CACHE_ORDERS, lru_misses_analytic, lru_trace
from jaxhw.storage.layout import PageLayout
from jaxhw.storage.ssd import CACHE_PAGE_BYTES, SSDConfig
from jaxhw.storage.timing import EventQueue, NandReader, Server

MODES = ("event", "analytic")
CACHE_MODELS = ("exact", "analytic")


@dataclasses.dataclass(frozen=True)
class IhpConfig:
  """The host side of in-host processing.

  Attributes:
    memory_fraction: host memory for the data set, as a fraction M / D of its size, > 0.
    order: ``"sequential"`` (same page order every epoch), ``"shuffled"`` (a fresh permutation per epoch) or
      ``"random"`` (pages drawn uniformly with replacement).
    swap: the data set is held in process memory backed by swap rather than in a file; needs M < D.
    swap_writeback: in swap mode, an evicted page is written out before the faulting page is read.
    overlap: the next step's faults overlap this step's compute.
    readahead: all misses of a step are issued at once (as OS readahead or an asynchronous loader would), so
      they spread over dies and channels and queue on the host link, instead of one demand fault at a time.
    cache_model: ``"exact"`` (LRU over the trace) or ``"analytic"`` (misses per epoch in closed form).
  """

  memory_fraction: float = 1.0
  order: str = "sequential"
  swap: bool = False
  swap_writeback: bool = False
  overlap: bool = False
  readahead: bool = False
  cache_model: str = "exact"

  def __post_init__(self):
    if not self.memory_fraction > 0:
      raise ValueError(f"memory_fraction must be > 0 (M / D), got {self.memory_fraction}.")
    if self.order not in CACHE_ORDERS:
      raise ValueError(f"order must be one of {CACHE_ORDERS}, got {self.order!r}.")
    if self.cache_model not in CACHE_MODELS:
      raise ValueError(f"cache_model must be one of {CACHE_MODELS}, got {self.cache_model!r}.")
    if self.swap and self.memory_fraction >= 1:
      raise ValueError(f"swap mode simulates a data set larger than host memory, so memory_fraction must be < 1, "
                       f"got {self.memory_fraction}.")
    if self.swap_writeback and not self.swap:
      raise ValueError("swap_writeback=True needs swap=True.")
    if self.readahead and self.swap_writeback:
      raise ValueError("readahead=True is not modelled with swap_writeback=True (a swap-out precedes each fault).")


@dataclasses.dataclass(frozen=True)
class IhpSchedule:
  """A simulated IHP run.

  Attributes:
    mode: ``"event"`` or ``"analytic"``.
    step_pages: ``[steps, m]`` NAND pages of each host step (the numerics' batches).
    step_times: ``[steps]`` time at which step k's update is done.
    end_time_s: time of the last update.
    misses: 4 KiB cache misses (pages read over the host link).
    misses_per_epoch: ``[epochs]``.
    evictions: cache evictions.
    host_link_bytes: bytes over the host link (reads, plus swap-outs with writeback).
    io_s: time spent waiting on faults (sum over steps, without overlap).
    compute_s: host compute time (sum over steps).
  """

  mode: str
  step_pages: np.ndarray
  step_times: np.ndarray
  end_time_s: float
  misses: int
  misses_per_epoch: np.ndarray
  evictions: int
  host_link_bytes: int
  io_s: float
  compute_s: float


def host_step_pages(layout: PageLayout, pages_per_step: int, epochs: int, order: str = "sequential",
                    seed: int = 0) -> np.ndarray:
  """``[steps, pages_per_step]`` the host's page batches: consecutive pages, a seeded permutation per epoch, or
  seeded uniform draws with replacement (``"random"``).

  A trailing partial batch of an epoch is skipped (the same pages as a lockstep ISP run in sequential order).
  """
  if not isinstance(pages_per_step, int) or not 1 <= pages_per_step <= layout.num_pages:
    raise ValueError(f"pages_per_step must be an integer in [1, {layout.num_pages}], got {pages_per_step!r}.")
  if order not in CACHE_ORDERS:
    raise ValueError(f"order must be one of {CACHE_ORDERS}, got {order!r}.")
  steps = layout.num_pages // pages_per_step
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(epochs):
    if order == "sequential":
      perm = np.arange(layout.num_pages)
    elif order == "shuffled":
      perm = rng.permutation(layout.num_pages)
    else:
      perm = rng.integers(0, layout.num_pages, layout.num_pages)
    out.append(perm[: steps * pages_per_step].reshape(steps, pages_per_step))
  return np.concatenate(out).astype(np.int64)


def simulate_ihp(ssd: SSDConfig, layout: PageLayout, ihp: IhpConfig, *, pages_per_step: int, epochs: int,
                 host_step_s: float, mode: str = "event", seed: int = 0) -> IhpSchedule:
  """Simulates in-host SGD on data read through the host's page cache.

  Args:
    ssd: the drive.
    layout: the data set's pages.
    ihp: memory fraction, access order, swap and overlap settings.
    pages_per_step: NAND pages per host step (N for the batch of N in-storage workers).
    epochs: passes over the data, >= 1.
    host_step_s: seconds of one host compute step (measured, or FLOPs / host FLOP/s), >= 0.
    mode: ``"event"`` or ``"analytic"``.
    seed: the shuffled order's seed.

  Returns:
    An `IhpSchedule`.

  References:
    Choe et al., "Near-Data Processing for Differentiable Machine Learning Models", arXiv:1610.02273, 2016.
  """
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
  if not isinstance(epochs, int) or epochs < 1:
    raise ValueError(f"epochs must be an integer >= 1, got {epochs!r}.")
  if not host_step_s >= 0:
    raise ValueError(f"host_step_s must be >= 0, got {host_step_s}.")
  if ssd.page_bytes % CACHE_PAGE_BYTES and ssd.page_bytes > CACHE_PAGE_BYTES:
    raise ValueError(f"page_bytes must be a multiple of {CACHE_PAGE_BYTES} (the host page), got {ssd.page_bytes}.")
  per_nand = max(1, ssd.page_bytes // CACHE_PAGE_BYTES)
  chunk = min(ssd.page_bytes, CACHE_PAGE_BYTES)
  step_pages = host_step_pages(layout, pages_per_step, epochs, ihp.order, seed)
  steps = len(step_pages)
  steps_per_epoch = steps // epochs
  accesses = (step_pages[:, :, None] * per_nand + np.arange(per_nand)).reshape(steps, -1)
  distinct = layout.num_pages * per_nand
  capacity = int(ihp.memory_fraction * distinct)
  if ihp.cache_model == "exact":
    trace = lru_trace(accesses.reshape(-1), capacity)
    miss = trace.miss.reshape(steps, -1)
    evict = trace.evict.reshape(steps, -1)
    misses_step = miss.sum(1).astype(float)
    evict_step = evict.sum(1).astype(float)
  else:
    per_epoch = lru_misses_analytic(distinct, capacity, epochs, ihp.order)
    misses_step = np.repeat(per_epoch / steps_per_epoch, steps_per_epoch)
    evict_step = np.maximum(np.cumsum(misses_step) - capacity, 0.0)
    evict_step = np.diff(np.concatenate([[0.0], evict_step]))
    miss = evict = None
  write = ihp.swap and ihp.swap_writeback
  t_miss = ssd.t_read_s + ssd.xfer_s(chunk) + ssd.host_s(chunk)
  t_out = ssd.host_s(chunk) + ssd.xfer_s(chunk) + ssd.t_prog_s
  if ihp.readahead:
    # m misses issued together arrive in waves (the chunks of one NAND page share a die), r per wave, and queue on
    # the host link: T = max over waves w of (w (t_R + t_x) + (m - (w - 1) r) t_host), at the first or last wave.
    t_r = ssd.t_read_s + ssd.xfer_s(chunk)
    waves = np.maximum(1.0, per_nand * np.ceil(misses_step / per_nand / (ssd.channels * ssd.ways)))
    per_wave = misses_step / waves
    io = np.maximum(t_r + misses_step * ssd.host_s(chunk), waves * t_r + per_wave * ssd.host_s(chunk))
    io = np.where(misses_step > 0, io, 0.0)
  else:
    io = misses_step * t_miss + (evict_step * t_out if write else 0.0)
  total_misses = int(round(misses_step.sum()))
  total_evictions = int(round(evict_step.sum()))
  link = int(round((misses_step.sum() + (evict_step.sum() if write else 0.0)) * chunk))
  per_epoch_misses = misses_step.reshape(epochs, steps_per_epoch).sum(1)
  if mode == "analytic" or miss is None:
    step_times = _pipeline(io, host_step_s, ihp.overlap)
  else:
    step_times = _event_ihp(ssd, accesses, miss, evict if write else np.zeros_like(miss), per_nand, chunk,
                            host_step_s, ihp.overlap, layout.num_pages, ihp.readahead)
  return IhpSchedule(mode=mode, step_pages=step_pages, step_times=step_times, end_time_s=float(step_times[-1]),
                     misses=total_misses, misses_per_epoch=per_epoch_misses, evictions=total_evictions,
                     host_link_bytes=link, io_s=float(io.sum()), compute_s=host_step_s * steps)


def _pipeline(io: np.ndarray, compute: float, overlap: bool) -> np.ndarray:
  if not overlap:
    return np.cumsum(io + compute)
  # Faults of step k start when step k-1's faults are done and step k-1's compute has started.
  io_end = np.zeros(len(io))
  comp_end = np.zeros(len(io))
  prev_io_end = prev_comp_start = prev_comp_end = 0.0
  for k in range(len(io)):
    io_end[k] = max(prev_io_end, prev_comp_start) + io[k]
    start = max(io_end[k], prev_comp_end)
    comp_end[k] = start + compute
    prev_io_end, prev_comp_start, prev_comp_end = io_end[k], start, comp_end[k]
  return comp_end


def _event_ihp(ssd, accesses, miss, evict, per_nand, chunk, host_step_s, overlap, num_pages,
               readahead) -> np.ndarray:
  q = EventQueue()
  reader = NandReader(ssd, q)
  link, cpu = Server(), Server()
  steps = len(accesses)
  step_times = np.zeros(steps)
  state = {"swap_slot": 0}

  def start_io(k):
    if not readahead:
      fault(k, 0)
      return
    wanted = np.nonzero(miss[k])[0]
    if len(wanted) == 0:
      io_finished(k)
      return
    left = [len(wanted)]

    def arrived():
      _, end = link.serve(q.now, ssd.host_s(chunk))
      q.at(end, delivered)

    def delivered():
      left[0] -= 1
      if left[0] == 0:
        io_finished(k)

    for a in wanted:
      reader.read(int(accesses[k, a] // per_nand), arrived, nbytes=chunk)

  def fault(k, a):
    while a < accesses.shape[1] and not miss[k, a]:
      a += 1
    if a == accesses.shape[1]:
      io_finished(k)
      return
    if evict[k, a]:
      _, end = link.serve(q.now, ssd.host_s(chunk))
      slot = state["swap_slot"]
      state["swap_slot"] += 1
      q.at(end, lambda: reader.program(num_pages + slot, read_page, k, a, nbytes=chunk))
    else:
      read_page(k, a)

  def read_page(k, a):
    reader.read(int(accesses[k, a] // per_nand), over_link, k, a, nbytes=chunk)

  def over_link(k, a):
    _, end = link.serve(q.now, ssd.host_s(chunk))
    q.at(end, fault, k, a + 1)

  def io_finished(k):
    start, end = cpu.serve(q.now, host_step_s)
    q.at(start, compute_started, k)
    q.at(end, computed, k)

  def compute_started(k):
    if overlap and k + 1 < steps:
      start_io(k + 1)

  def computed(k):
    step_times[k] = q.now
    if not overlap and k + 1 < steps:
      start_io(k + 1)

  q.at(0.0, start_io, 0)
  q.run()
  return step_times
