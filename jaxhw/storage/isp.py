"""In-storage processing (ISP): one SGD worker per channel on the pages it reads, a master in the controller.

`simulate_isp` runs the drive in simulated time, event-driven: channel reads through dies and buses
(`NandReader`, with a bounded read-ahead per channel), per-channel engines computing each step, a shared internal
bus carrying parameter messages, and the master (FIFO) applying the variant's rule. It returns the schedule the
numerics then follow: for lockstep variants the pages and end time of every step, for asynchronous ones the
records (SEND, PUSH, FETCH, ELASTIC_READ, GRAD_*) in the order of their event times, with the staleness of every
push. ``mode="analytic"`` gives the same run's time in closed form (steady-state cycle per step).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from jaxhw.storage import sgd as S
from jaxhw.storage.layout import PageLayout
from jaxhw.storage.sgd import SGDConfig
from jaxhw.storage.ssd import SSDConfig
from jaxhw.storage.timing import EventQueue, NandReader, Server

MODES = ("event", "analytic")


@dataclasses.dataclass(frozen=True)
class ModelCost:
  """What a model costs the hardware.

  Attributes:
    params_bytes: S, bytes of one parameter copy (a message to or from the master).
    grad_flops_per_example: FLOPs of one example's forward and backward pass.
    update_flops: FLOPs of applying one update to the parameters (an axpy).
  """

  params_bytes: int
  grad_flops_per_example: float
  update_flops: float


def dense_model_cost(sizes: Sequence[int], bytes_per_param: int = 4) -> ModelCost:
  """`ModelCost` of an MLP (softmax regression for two sizes): forward 2 in out, weight gradient 2 in out,
  input gradient 2 in out except for the first layer, per example; an update is 2 FLOPs per parameter.

  Args:
    sizes: layer widths, e.g. ``(784, 10)``.
    bytes_per_param: 4 for float32.

  Returns:
    The `ModelCost` (softmax regression 784 -> 10: S = 31.4 kB, 4 d c = 31,360 FLOPs per example).
  """
  if len(sizes) < 2 or any(s < 1 for s in sizes):
    raise ValueError(f"sizes must list at least two positive widths, got {tuple(sizes)}.")
  params = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
  flops = sum((4 if i == 0 else 6) * a * b for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])))
  return ModelCost(params_bytes=params * bytes_per_param, grad_flops_per_example=float(flops),
                   update_flops=2.0 * params)


@dataclasses.dataclass(frozen=True)
class IspSchedule:
  """A simulated ISP run.

  Attributes:
    algorithm: the variant's name (``"easgd"`` with its mode, ``"easgd-sync"`` for the lockstep one).
    mode: ``"event"`` or ``"analytic"``.
    end_time_s: simulated time at which the last master update is done.
    step_pages: lockstep variants: ``[steps, p]`` the page of worker i at step k (else None).
    step_times: lockstep variants: ``[steps]`` time at which step k's centre is final (else None).
    communicate: synchronous EASGD: ``[steps]`` whether step k exchanges with the master (else None).
    kinds, workers, pages, times: asynchronous variants: the records in execution order (else None).
    staleness: per push, the number of other workers' pushes the master applied between the pusher's last
      read of the centre and its push (empty for lockstep variants, whose staleness is 0).
    pages_read: NAND pages read by all channels.
    host_link_bytes: bytes over the host link (the trained model read out once).
    busy_s: busy time of the shared resources (internal bus, master) and the busiest engine.
  """

  algorithm: str
  mode: str
  end_time_s: float
  step_pages: np.ndarray | None = None
  step_times: np.ndarray | None = None
  communicate: np.ndarray | None = None
  kinds: np.ndarray | None = None
  workers: np.ndarray | None = None
  pages: np.ndarray | None = None
  times: np.ndarray | None = None
  staleness: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))
  pages_read: int = 0
  host_link_bytes: int = 0
  busy_s: dict | None = None


def _check(ssd: SSDConfig, layout: PageLayout, epochs: int, mode: str) -> None:
  if layout.channels != ssd.channels or layout.ways != ssd.ways or layout.page_bytes != ssd.page_bytes:
    raise ValueError(f"layout ({layout.channels} channels, {layout.ways} ways, {layout.page_bytes} B pages) does not "
                     f"match the SSD ({ssd.channels}, {ssd.ways}, {ssd.page_bytes} B).")
  if not isinstance(epochs, int) or epochs < 1:
    raise ValueError(f"epochs must be an integer >= 1, got {epochs!r}.")
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")


def lockstep_pages(layout: PageLayout, epochs: int) -> np.ndarray:
  """``[steps, p]`` pages of a lockstep run: step k of an epoch reads page ``k N + i`` on worker i (a trailing
  partial row of pages is skipped, so every step has one page per worker)."""
  steps = layout.num_pages // layout.channels
  one = np.arange(steps * layout.channels, dtype=np.int64).reshape(steps, layout.channels)
  return np.concatenate([one] * epochs)


def simulate_isp(ssd: SSDConfig, layout: PageLayout, sgd: SGDConfig, cost: ModelCost, epochs: int = 1, *,
                 mode: str = "event", prefetch_pages: int | None = None) -> IspSchedule:
  """Simulates in-storage SGD: one worker per channel, the master in the controller.

  Args:
    ssd: the drive (its channel count is p).
    layout: the data set's pages (`page_layout` with the same drive).
    sgd: the variant and its periods.
    cost: the model's `ModelCost`.
    epochs: passes over each worker's pages, >= 1.
    mode: ``"event"`` (deterministic event queue) or ``"analytic"`` (closed form, end time only).
    prefetch_pages: read-ahead per channel: the read of a worker's page k is issued when it starts computing
      on page k - prefetch_pages (default 2 W).

  Returns:
    An `IspSchedule`.

  References:
    Choe et al., "Near-Data Processing for Differentiable Machine Learning Models", arXiv:1610.02273, 2016.
  """
  _check(ssd, layout, epochs, mode)
  depth = 2 * ssd.ways if prefetch_pages is None else prefetch_pages
  if not isinstance(depth, int) or depth < 1:
    raise ValueError(f"prefetch_pages must be an integer >= 1, got {prefetch_pages!r}.")
  p = ssd.channels
  sgd.alpha(p)  # validates the elastic coefficient for this many workers
  if mode == "analytic":
    return _analytic(ssd, layout, sgd, cost, epochs)
  if sgd.lockstep:
    return _simulate_lockstep(ssd, layout, sgd, cost, epochs, depth)
  return _simulate_async(ssd, layout, sgd, cost, epochs, depth)


class _Channel:
  """A worker's page stream: reads issued with read-ahead `depth`, arrival times kept."""

  def __init__(self, reader: NandReader, pages: np.ndarray, depth: int, on_ready):
    self.reader, self.pages, self.depth, self.on_ready = reader, pages, depth, on_ready
    self.arrived = np.full(len(pages), np.nan)
    self.issued = 0

  def start(self):
    for _ in range(min(self.depth, len(self.pages))):
      self._issue()

  def consume(self, k: int):
    """The worker starts computing on page k: a buffer slot frees, the next read is issued."""
    if self.issued < len(self.pages) and self.issued <= k + self.depth:
      self._issue()

  def _issue(self):
    k = self.issued
    self.issued += 1
    self.reader.read(int(self.pages[k]), self._arrive, k)

  def _arrive(self, k: int):
    self.arrived[k] = self.reader.q.now
    self.on_ready(k)

  def ready(self, k: int) -> bool:
    return not np.isnan(self.arrived[k])


def _engine_step_s(ssd: SSDConfig, layout: PageLayout, cost: ModelCost, local_update: bool) -> float:
  flops = cost.grad_flops_per_example * layout.examples_per_page + (cost.update_flops if local_update else 0.0)
  return flops / ssd.engine_flops


def _simulate_lockstep(ssd, layout, sgd, cost, epochs, depth) -> IspSchedule:
  p = ssd.channels
  pages = lockstep_pages(layout, epochs)
  steps = len(pages)
  easgd = sgd.algorithm == "easgd"
  communicate = (np.arange(steps) % sgd.tau == 0) if easgd else np.ones(steps, bool)
  q = EventQueue()
  reader = NandReader(ssd, q)
  bus, master = Server(), Server()
  t_compute = _engine_step_s(ssd, layout, cost, local_update=easgd)
  t_msg = ssd.message_s(cost.params_bytes)
  t_apply = cost.update_flops / ssd.master_flops
  step_times = np.zeros(steps)
  state = {"arrived": np.zeros(steps, int)}
  engine_busy = np.zeros(p)
  step_of = np.zeros(p, int)
  waiting = [False] * p

  def on_ready(i, k):
    if waiting[i] and step_of[i] == k:
      waiting[i] = False
      begin(i)

  channels = [_Channel(reader, pages[:, i], depth, lambda k, i=i: on_ready(i, k)) for i in range(p)]

  def begin(i):
    k = step_of[i]
    if k >= steps:
      return
    if not channels[i].ready(k):
      waiting[i] = True
      return
    channels[i].consume(k)
    engine_busy[i] += t_compute
    q.at(q.now + t_compute, computed, i, k)

  def computed(i, k):
    if communicate[k]:
      _, end = bus.serve(q.now, t_msg)
      q.at(end, at_master, i, k)
    else:
      step_times[k] = max(step_times[k], q.now)
      finish(i, k)

  def at_master(i, k):
    _, end = master.serve(q.now, t_apply)
    state["arrived"][k] += 1
    if state["arrived"][k] == p:
      _, upd_end = master.serve(end, t_apply)
      q.at(upd_end, broadcast, k)

  def broadcast(k):
    _, end = bus.serve(q.now, t_msg)
    step_times[k] = max(step_times[k], q.now)  # the centre is final when the master has updated it
    q.at(end, received, k)

  def received(k):
    for i in range(p):
      finish(i, k)

  def finish(i, k):
    step_of[i] = k + 1
    begin(i)

  for i in range(p):
    q.at(0.0, channels[i].start)
    q.at(0.0, begin, i)
  end_time = q.run()
  name = "easgd-sync" if easgd else "sync"
  return IspSchedule(algorithm=name, mode="event", end_time_s=float(end_time), step_pages=pages,
                     step_times=np.maximum.accumulate(step_times), communicate=communicate if easgd else None,
                     pages_read=reader.pages_read, host_link_bytes=cost.params_bytes,
                     busy_s={"internal_bus": bus.busy_s, "master": master.busy_s, "engine": float(engine_busy.max())})


def _simulate_async(ssd, layout, sgd, cost, epochs, depth) -> IspSchedule:
  p = ssd.channels
  downpour = sgd.algorithm == "downpour"
  worker_pages = [np.concatenate([layout.channel_pages(i)] * epochs) for i in range(p)]
  q = EventQueue()
  reader = NandReader(ssd, q)
  bus, master = Server(), Server()
  t_grad = _engine_step_s(ssd, layout, cost, local_update=True)
  t_elastic = 3.0 * cost.update_flops / 2.0 / ssd.engine_flops  # e = alpha (x - c); x -= e
  t_msg = ssd.message_s(cost.params_bytes)
  t_req = ssd.internal_latency_s
  t_apply = cost.update_flops / ssd.master_flops
  records: list[tuple[float, int, int, int, int]] = []  # (time, seq, kind, worker, page)
  seq = [0]
  engine_busy = np.zeros(p)
  step_of = np.zeros(p, int)
  waiting = [False] * p
  unsent = np.zeros(p, int)  # Downpour: gradient steps not yet sent
  in_flight = [False] * p    # a sent update not yet applied by the master (at most one per worker)
  blocked = [False] * p      # the worker waits for that update before sending the next

  def record(time, kind, i, page=0):
    records.append((time, seq[0], kind, i, page))
    seq[0] += 1

  def on_ready(i, k):
    if waiting[i] and step_of[i] == k:
      waiting[i] = False
      compute(i)

  channels = [_Channel(reader, worker_pages[i], depth, lambda k, i=i: on_ready(i, k)) for i in range(p)]

  def send_to_master(i, then=None):
    """Posts worker i's pending update: internal bus, then the master applies it (FIFO)."""
    in_flight[i] = True
    _, end = bus.serve(q.now, t_msg)
    q.at(end, apply_at_master, i)
    if then is not None:
      q.at(end, then, i)

  def apply_at_master(i):
    start, end = master.serve(q.now, t_apply)
    record(start, S.PUSH, i)
    q.at(end, applied, i)

  def applied(i):
    in_flight[i] = False
    if blocked[i]:
      blocked[i] = False
      begin(i)

  def request_center(i, kind):
    """A read of the centre: request message (bus, FIFO behind this worker's push), master serves, bus back."""
    _, end = bus.serve(q.now, t_req)
    q.at(end, serve_read, i, kind)

  def serve_read(i, kind):
    start, end = master.serve(q.now, 0.0)
    record(start, kind, i)
    q.at(end, reply, i)

  def reply(i):
    _, end = bus.serve(q.now, t_msg)
    q.at(end, compute, i)

  def begin(i):
    t = step_of[i]
    sending = downpour and unsent[i] > 0 and (t >= len(worker_pages[i]) or (t > 0 and t % sgd.n_push == 0))
    if (sending or (not downpour and t < len(worker_pages[i]) and t % sgd.tau == 0)) and in_flight[i]:
      blocked[i] = True  # the previous update is still on its way: one in flight per worker
      return
    if t >= len(worker_pages[i]):
      if downpour and unsent[i]:
        record(q.now, S.SEND, i)
        unsent[i] = 0
        send_to_master(i)
      return
    if downpour:
      push = t > 0 and t % sgd.n_push == 0 and unsent[i] > 0
      fetch = t % sgd.n_fetch == 0
      if push:
        record(q.now, S.SEND, i)
        unsent[i] = 0
        send_to_master(i, then=(lambda j: request_center(j, S.FETCH)) if fetch else None)
        if not fetch:
          compute(i)
      elif fetch:
        request_center(i, S.FETCH)
      else:
        compute(i)
    elif t % sgd.tau == 0:
      request_center(i, S.ELASTIC_READ)
    else:
      compute(i)

  def compute(i):
    t = step_of[i]
    if not channels[i].ready(t):
      waiting[i] = True
      return
    channels[i].consume(t)
    if downpour:
      kind, dur = S.GRAD_DOWNPOUR, t_grad
    elif t % sgd.tau == 0:
      kind, dur = S.GRAD_ANCHOR, t_grad + t_elastic
    else:
      kind, dur = S.GRAD_LOCAL, t_grad
    record(q.now, kind, i, int(worker_pages[i][t]))
    engine_busy[i] += dur
    q.at(q.now + dur, computed, i, kind)

  def computed(i, kind):
    step_of[i] += 1
    if downpour:
      unsent[i] += 1
    if kind == S.GRAD_ANCHOR:
      _, end = bus.serve(q.now, t_msg)  # the elastic difference goes to the master; the worker goes on
      q.at(end, apply_at_master, i)
    begin(i)

  for i in range(p):
    q.at(0.0, channels[i].start)
    q.at(0.0, begin, i)
  end_time = q.run()
  rec = sorted(records)
  times = np.array([r[0] for r in rec])
  kinds = np.array([r[2] for r in rec], np.int32)
  workers = np.array([r[3] for r in rec], np.int32)
  pages = np.array([r[4] for r in rec], np.int64)
  name = "downpour" if downpour else "easgd"
  return IspSchedule(algorithm=name, mode="event", end_time_s=float(end_time), kinds=kinds, workers=workers,
                     pages=pages, times=times, staleness=staleness(kinds, workers), pages_read=reader.pages_read,
                     host_link_bytes=cost.params_bytes,
                     busy_s={"internal_bus": bus.busy_s, "master": master.busy_s, "engine": float(engine_busy.max())})


def staleness(kinds: np.ndarray, workers: np.ndarray) -> np.ndarray:
  """Per PUSH record: pushes by other workers applied since the pusher's last FETCH or ELASTIC_READ."""
  count = 0
  last_read: dict[int, int] = {}
  out = []
  for kind, i in zip(kinds.tolist(), workers.tolist()):
    if kind in (S.FETCH, S.ELASTIC_READ):
      last_read[i] = count
    elif kind == S.PUSH:
      out.append(count - last_read.get(i, 0))
      count += 1
  return np.array(out, np.int64)


def _analytic(ssd, layout, sgd, cost, epochs) -> IspSchedule:
  """Closed-form run time: first page, then a steady cycle per step, bounded by the busiest shared resource."""
  p = ssd.channels
  t_first = ssd.t_read_s + ssd.t_xfer_s
  t_msg = ssd.message_s(cost.params_bytes)
  t_apply = cost.update_flops / ssd.master_flops
  t_req = ssd.internal_latency_s
  if sgd.lockstep:
    steps = len(lockstep_pages(layout, epochs))
    easgd = sgd.algorithm == "easgd"
    t_c = _engine_step_s(ssd, layout, cost, local_update=easgd)
    # p pushes serialised on the bus (the master's adds overlap them), the update, the broadcast.
    t_exchange = p * t_msg + max(t_apply - t_msg, 0.0) + t_apply + t_apply + t_msg
    comm_steps = math.ceil(steps / sgd.tau) if easgd else steps
    total = t_first + steps * t_c + comm_steps * t_exchange
    name = "easgd-sync" if easgd else "sync"
  else:
    steps = int(layout.pages_per_channel().max()) * epochs
    t_g = _engine_step_s(ssd, layout, cost, local_update=True)
    if sgd.algorithm == "downpour":
      pushes, fetches = 1.0 / sgd.n_push, 1.0 / sgd.n_fetch
      serial = t_g + pushes * t_msg + fetches * (t_req + t_msg)
      shared = p * (pushes * t_msg + fetches * (t_req + t_msg))
      tail = t_msg + t_apply
      name = "downpour"
    else:
      every = 1.0 / sgd.tau
      t_e = 3.0 * cost.update_flops / 2.0 / ssd.engine_flops
      serial = t_g + every * (t_e + t_req + t_msg)
      shared = p * every * (2 * t_msg + t_req)
      tail = t_msg + t_apply
      name = "easgd"
    master_load = p * (1.0 / (sgd.n_push if sgd.algorithm == "downpour" else sgd.tau)) * t_apply
    total = t_first + steps * max(serial, shared, master_load) + tail
  return IspSchedule(algorithm=name, mode="analytic", end_time_s=float(total), pages_read=layout.num_pages * epochs,
                     host_link_bytes=cost.params_bytes)
