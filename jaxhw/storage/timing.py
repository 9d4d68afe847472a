"""Simulated time: a deterministic event queue, and the sequential page scan in event and analytic modes.

Event semantics of a page read (the whole package uses them): the read waits for its die (FIFO), holds it for
t_R, then waits for the channel bus (FIFO by the time it became ready, ties by page order) and holds die and bus
for t_xfer. A sequential scan of n pages striped channel-first has, on channel c with ways rotating, the
recurrence ``e_k = t_xfer + max(e_{k-1}, e_{k-W} + t_R, q_k + t_R)`` for the end time of its k-th page (q_k: the
time the read was issued). `scan_times` evaluates it exactly, W pages at a time over all channels at once with a
cumulative maximum (no Python event per page), and can instead push every read through `EventQueue`; the two
agree to rounding. `scan_time_analytic` is the closed form ``max_c max(t_R + n_c t_xfer, ceil(n_c / W) (t_R +
t_xfer))``, within one page time of the exact value.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from jaxhw.storage.ssd import SSDConfig

SCAN_METHODS = ("vectorised", "heap")


class EventQueue:
  """A deterministic discrete-event queue: events run in (time, insertion order); handlers may schedule more.

  Example::

    q = EventQueue()
    q.at(1e-3, print, "hello")
    q.run()
  """

  def __init__(self):
    self._heap: list[tuple[float, int, Callable[..., Any], tuple]] = []
    self._seq = itertools.count()
    self.now = 0.0
    self.processed = 0

  def at(self, time: float, fn: Callable[..., Any], *args) -> None:
    """Schedules ``fn(*args)`` at `time` (not before the current time)."""
    if time < self.now - 1e-15:
      raise ValueError(f"cannot schedule an event at {time} before the current time {self.now}.")
    heapq.heappush(self._heap, (max(time, self.now), next(self._seq), fn, args))

  def run(self) -> float:
    """Runs events until none is left; returns the time of the last one."""
    while self._heap:
      self.now, _, fn, args = heapq.heappop(self._heap)
      self.processed += 1
      fn(*args)
    return self.now


class Server:
  """A FIFO server (die, bus, engine, master, host link): requests are served in the order they are made.

  Requests must be made in nondecreasing time (as handlers of an `EventQueue` make them).
  """

  def __init__(self):
    self.free_at = 0.0
    self.busy_s = 0.0

  def serve(self, time: float, duration: float) -> tuple[float, float]:
    """Serves a request made at `time` for `duration`; returns ``(start, end)``."""
    start = max(time, self.free_at)
    self.free_at = start + duration
    self.busy_s += duration
    return start, self.free_at


def _check_scan_args(ssd: SSDConfig, num_pages: int) -> None:
  if not isinstance(num_pages, int | np.integer) or num_pages < 0:
    raise ValueError(f"num_pages must be an integer >= 0, got {num_pages!r}.")


def scan_times(ssd: SSDConfig, num_pages: int, *, issue_times: np.ndarray | None = None,
               method: str = "vectorised") -> np.ndarray:
  """Event-mode completion times of reading pages ``0 .. num_pages - 1`` (striped channel-first).

  Args:
    ssd: the drive.
    num_pages: pages to read, >= 0.
    issue_times: optional ``[num_pages]`` times at which each read is issued (default: all at 0).
    method: ``"vectorised"`` (exact recurrence, W pages per channel per numpy step) or ``"heap"`` (one
      `EventQueue` event per read and per transfer; the reference, slow).

  Returns:
    ``[num_pages]`` float64 seconds at which each page is in the channel controller's buffer.
  """
  _check_scan_args(ssd, num_pages)
  if method not in SCAN_METHODS:
    raise ValueError(f"method must be one of {SCAN_METHODS}, got {method!r}.")
  q = np.zeros(num_pages) if issue_times is None else np.asarray(issue_times, np.float64)
  if q.shape != (num_pages,):
    raise ValueError(f"issue_times must have shape ({num_pages},), got {q.shape}.")
  if method == "heap":
    return _scan_heap(ssd, q)
  n_ch, w, t_r, t_x = ssd.channels, ssd.ways, ssd.t_read_s, ssd.t_xfer_s
  per_block = n_ch * w
  blocks = -(-num_pages // per_block)
  pad = blocks * per_block - num_pages
  # Issue times in storage order: block m, way slot k, channel c is page (m W + k) N + c.
  qb = np.concatenate([q, np.full(pad, q[-1] if num_pages else 0.0)]).reshape(blocks, w, n_ch).transpose(0, 2, 1)
  out = np.empty((blocks, n_ch, w))
  ramp = np.arange(w) * t_x
  ready_shift = t_r - ramp  # ready_k - k t_x = end of the die's last transfer (or issue) + t_R - k t_x
  finish_ramp = ramp + t_x
  prev = np.zeros((n_ch, w))  # end of the last transfer of each die
  tmp = np.empty((n_ch, w))
  zero_issue = issue_times is None
  for m in range(blocks):
    # e_k = t_x + max(e_{k-1}, ready_k) unrolled: (k+1) t_x + max(bus_free, max_{i<=k}(ready_i - i t_x)).
    if zero_issue:
      np.add(prev, ready_shift, out=tmp)
    else:
      np.maximum(prev, qb[m], out=tmp)
      tmp += ready_shift
    np.maximum.accumulate(tmp, axis=1, out=tmp)
    np.maximum(tmp, prev[:, -1:], out=tmp)
    cur = out[m]
    np.add(tmp, finish_ramp, out=cur)
    prev = cur
  return out.transpose(0, 2, 1).reshape(-1)[:num_pages]


class NandReader:
  """Page reads through dies and channel buses with the exact event semantics, on an `EventQueue`.

  `read` queues a read at its die (FIFO); the die holds for t_R, then the transfer queues for the channel bus
  (FIFO) and holds die and bus for the transfer time; at its end ``callback(*args)`` runs. `program` holds a die
  for a page program (a swap-out's write) after its transfer in.
  """

  def __init__(self, ssd: SSDConfig, queue: EventQueue):
    self.ssd, self.q = ssd, queue
    self._die_queue: dict[tuple[int, int], list] = {}
    self._die_busy: dict[tuple[int, int], bool] = {}
    self._bus_queue: list[list] = [[] for _ in range(ssd.channels)]
    self._bus_busy = [False] * ssd.channels
    self.pages_read = 0
    self.bytes_read = 0

  def die_of(self, page: int) -> tuple[int, int]:
    return page % self.ssd.channels, (page // self.ssd.channels) % self.ssd.ways

  def read(self, page: int, callback: Callable[..., Any], *args, nbytes: int | None = None) -> None:
    """Reads (`nbytes` of) `page` now; ``callback(*args)`` at the end of its transfer."""
    nbytes = self.ssd.page_bytes if nbytes is None else nbytes
    self._enqueue_die(self.die_of(page), ("read", page, nbytes, callback, args))

  def program(self, page: int, callback: Callable[..., Any], *args, nbytes: int | None = None) -> None:
    """Writes `page`: bus transfer in (die held), then t_PROG on the die; ``callback(*args)`` at the end."""
    nbytes = self.ssd.page_bytes if nbytes is None else nbytes
    self._enqueue_die(self.die_of(page), ("program", page, nbytes, callback, args))

  def _enqueue_die(self, die, op):
    self._die_queue.setdefault(die, []).append(op)
    if not self._die_busy.get(die):
      self._start_die(die)

  def _start_die(self, die):
    op = self._die_queue[die].pop(0)
    self._die_busy[die] = True
    if op[0] == "read":
      self.q.at(self.q.now + self.ssd.t_read_s, self._want_bus, die, op)
    else:
      self._want_bus(die, op)

  def _want_bus(self, die, op):
    c = die[0]
    self._bus_queue[c].append((die, op))
    if not self._bus_busy[c]:
      self._start_bus(c)

  def _start_bus(self, c):
    die, op = self._bus_queue[c].pop(0)
    self._bus_busy[c] = True
    self.q.at(self.q.now + self.ssd.xfer_s(op[2]), self._bus_done, c, die, op)

  def _bus_done(self, c, die, op):
    self._bus_busy[c] = False
    if self._bus_queue[c]:
      self._start_bus(c)
    if op[0] == "read":
      self.pages_read += 1
      self.bytes_read += op[2]
      self._free_die(die)
      op[3](*op[4])
    else:
      self.q.at(self.q.now + self.ssd.t_prog_s, self._program_done, die, op)

  def _program_done(self, die, op):
    self._free_die(die)
    op[3](*op[4])

  def _free_die(self, die):
    self._die_busy[die] = False
    if self._die_queue.get(die):
      self._start_die(die)


def _scan_heap(ssd: SSDConfig, issue: np.ndarray) -> np.ndarray:
  done = np.zeros(len(issue))
  q = EventQueue()
  reader = NandReader(ssd, q)

  def finished(j):
    done[j] = q.now

  for j in np.argsort(issue, kind="stable"):
    q.at(float(issue[j]), reader.read, int(j), finished, int(j))
  q.run()
  return done


def scan_time(ssd: SSDConfig, num_pages: int, *, mode: str = "event") -> float:
  """Time to read pages ``0 .. num_pages - 1`` from an idle drive, all reads issued at 0.

  Args:
    ssd: the drive.
    num_pages: pages, >= 0.
    mode: ``"event"`` (exact event semantics, `scan_times`) or ``"analytic"`` (`scan_time_analytic`).

  Returns:
    Seconds until the last page is read.
  """
  if mode == "event":
    times = scan_times(ssd, num_pages)
    return float(times.max()) if num_pages else 0.0
  if mode == "analytic":
    return scan_time_analytic(ssd, num_pages)
  raise ValueError(f"mode must be 'event' or 'analytic', got {mode!r}.")


def scan_time_analytic(ssd: SSDConfig, num_pages: int) -> float:
  """Closed-form sequential-scan time: ``max_c max(t_R + n_c t_xfer, ceil(n_c / W) (t_R + t_xfer))``.

  The channel rate it implies is ``min(P / t_xfer, W P / (t_R + t_xfer))``; with one way it is exact, with
  several it is within one page time of the event mode.

  Args:
    ssd: the drive.
    num_pages: pages striped over the channels, >= 0.

  Returns:
    Seconds.

  References:
    Tavakkol et al., FAST 2018 (MQSim timing of a multi-way channel).
  """
  _check_scan_args(ssd, num_pages)
  if num_pages == 0:
    return 0.0
  n_c = -(-num_pages // ssd.channels)  # the busiest channel
  t_r, t_x = ssd.t_read_s, ssd.t_xfer_s
  return max(t_r + n_c * t_x, math.ceil(n_c / ssd.ways) * (t_r + t_x))


def scan_time_exact(ssd: SSDConfig, num_pages: int) -> float:
  """The event mode's scan time in closed form (idle drive, reads issued at 0).

  On a channel with n pages, ``T = max(t_R + n t_xfer, ceil(n / W) (t_R + t_xfer) + ((n - 1) mod W) t_xfer)``:
  the longest path of the recurrence either stays on the bus (bus-bound) or goes through every read of one die
  (die-bound). Used to check both scan modes.

  Args:
    ssd: the drive.
    num_pages: pages, >= 0.

  Returns:
    Seconds.
  """
  _check_scan_args(ssd, num_pages)
  if num_pages == 0:
    return 0.0
  n = -(-num_pages // ssd.channels)
  t_r, t_x, w = ssd.t_read_s, ssd.t_xfer_s, ssd.ways
  return max(t_r + n * t_x, math.ceil(n / w) * (t_r + t_x) + ((n - 1) % w) * t_x)
