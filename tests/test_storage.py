"""jaxhw.storage: SSD timing identities, event vs analytic, page cache, layouts and bad input."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhw import storage as st

COST = st.dense_model_cost((784, 10))


def _heap_scan(ssd, n):
  """Reference: per-page discrete events written from the rules, independent of the library's simulators."""
  import heapq

  t_r, t_x = ssd.t_read_s, ssd.t_xfer_s
  die_free = {}
  bus_free = [0.0] * ssd.channels
  # Each die serves its pages in order; a page's transfer waits for its die's read and its channel's bus, served
  # by the time reads became ready (ties by page order).
  heap, done, die_next = [], np.zeros(n), {}
  for j in range(n):
    die_next.setdefault((j % ssd.channels, (j // ssd.channels) % ssd.ways), []).append(j)
  for die, pages in die_next.items():
    heapq.heappush(heap, (t_r, pages[0], die))
    die_free[die] = 1
  while heap:
    ready, j, die = heapq.heappop(heap)
    c = die[0]
    start = max(ready, bus_free[c])
    end = start + t_x
    bus_free[c] = end
    done[j] = end
    k = die_free[die]
    if k < len(die_next[die]):
      heapq.heappush(heap, (end + t_r, die_next[die][k], die))
      die_free[die] = k + 1
  return done


@pytest.mark.parametrize("channels,ways", [(1, 1), (3, 1), (4, 4), (8, 4), (2, 8), (5, 3)])
@pytest.mark.parametrize("n", [1, 13, 200])
def test_scan_event_matches_per_page_reference(channels, ways, n):
  ssd = st.SSDConfig(channels=channels, ways=ways)
  ref = _heap_scan(ssd, n)
  np.testing.assert_allclose(st.scan_times(ssd, n), ref, rtol=1e-12)
  np.testing.assert_allclose(st.scan_times(ssd, n, method="heap"), ref, rtol=1e-12)
  assert st.scan_time(ssd, n) == pytest.approx(st.scan_time_exact(ssd, n), rel=1e-12)


@pytest.mark.parametrize("channels", [1, 4, 7])
@pytest.mark.parametrize("n", [1, 10, 333])
def test_sequential_scan_identity_one_way(channels, n):
  ssd = st.SSDConfig(channels=channels, ways=1)
  expected = math.ceil(n / channels) * (ssd.t_read_s + ssd.t_xfer_s)
  assert st.scan_time(ssd, n, mode="event") == pytest.approx(expected, rel=1e-12)
  assert st.scan_time(ssd, n, mode="analytic") == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("channels,ways", [(4, 4), (8, 4), (2, 8), (3, 2)])
@pytest.mark.parametrize("n", [5, 64, 1000])
def test_sequential_scan_identity_several_ways(channels, ways, n):
  ssd = st.SSDConfig(channels=channels, ways=ways)
  t_r, t_x = ssd.t_read_s, ssd.t_xfer_s
  n_c = [len(range(c, n, channels)) for c in range(channels)]
  formula = max(max(t_r + k * t_x, math.ceil(k / ways) * (t_r + t_x)) for k in n_c)
  event = st.scan_time(ssd, n, mode="event")
  assert abs(event - formula) <= t_r + t_x + 1e-12  # within one page time
  assert st.scan_time(ssd, n, mode="analytic") == pytest.approx(formula, rel=1e-12)


def test_scan_event_equals_analytic_on_long_scans():
  for ssd in (st.SSDConfig(), st.SSDConfig(channels=16), st.ssd_preset("nvme", channels=32)):
    n = 50_000
    e, a = st.scan_time(ssd, n, mode="event"), st.scan_time(ssd, n, mode="analytic")
    assert abs(e - a) / e < 0.02
  # The analytic channel rate is the spec's min(P / t_xfer, W P / (t_R + t_xfer)): 329 MB/s by default.
  assert st.SSDConfig().channel_bytes_per_s == pytest.approx(329e6, rel=0.01)


def test_scan_with_issue_times_matches_heap():
  ssd = st.SSDConfig(channels=3, ways=2)
  q = np.sort(np.random.default_rng(0).uniform(0, 2e-3, 120))
  np.testing.assert_allclose(st.scan_times(ssd, 120, issue_times=q), st.scan_times(ssd, 120, issue_times=q,
                                                                                       method="heap"), rtol=1e-12)


def test_scan_time_monotone_in_pages():
  ssd = st.SSDConfig(channels=4, ways=4)
  times = [st.scan_time(ssd, n) for n in range(0, 300, 7)]
  assert all(b >= a for a, b in zip(times, times[1:]))


def test_event_queue_is_deterministic_fifo():
  q, seen = st.EventQueue(), []
  for name, t in [("b", 1.0), ("a", 0.5), ("c", 1.0)]:
    q.at(t, seen.append, name)
  assert q.run() == 1.0 and seen == ["a", "b", "c"]
  with pytest.raises(ValueError, match="before the current time"):
    q.at(0.1, seen.append, "late")
  server = st.Server()
  assert server.serve(0.0, 2.0) == (0.0, 2.0) and server.serve(1.0, 1.0) == (2.0, 3.0)


def _layout(n_examples=5000, **ssd_kw):
  ssd = st.SSDConfig(**ssd_kw)
  return ssd, st.page_layout(n_examples, 785, ssd)


def test_layout_striping_and_bad_input():
  ssd, layout = _layout(channels=4, ways=2)
  assert layout.examples_per_page == 10 and layout.num_pages == 500
  np.testing.assert_array_equal(layout.channel_of(np.arange(8)), [0, 1, 2, 3, 0, 1, 2, 3])
  np.testing.assert_array_equal(layout.way_of(np.arange(0, 32, 4)), [0, 1, 0, 1, 0, 1, 0, 1])
  np.testing.assert_array_equal(layout.channel_pages(1)[:3], [1, 5, 9])
  assert layout.pages_per_channel().sum() == 500
  with pytest.raises(ValueError, match=r"page_bytes=512 is smaller than one example \(example_bytes=785\)"):
    st.page_layout(100, 785, st.SSDConfig(page_bytes=512))
  with pytest.raises(ValueError, match="channels must be an integer >= 1, got 0"):
    st.SSDConfig(channels=0)
  with pytest.raises(ValueError, match="t_read_s"):
    st.SSDConfig(t_read_s=-1.0)
  with pytest.raises(ValueError, match="replication"):
    st.page_layout(100, 785, ssd, replication=0)
  with pytest.raises(ValueError, match="SSD preset"):
    st.ssd_preset("pata")


class ReadPagesTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_read_pages_and_virtual_replication(self):
    ssd = st.SSDConfig(channels=2, page_bytes=64)
    layout = st.page_layout(12, 16, ssd, replication=3)  # 4 examples per page, 3 real pages, 9 virtual
    x = np.arange(12 * 5, dtype=np.float32).reshape(12, 5)
    y = np.arange(12) % 3
    data = st.paged_data(x, y, layout, noise_std=0.5, key=jax.random.key(3))
    read = self.variant(st.read_pages)
    xs, ys = read(data, jnp.array([1, 4, 7]))
    np.testing.assert_array_equal(xs[0], x[4:8])          # first copy: the real page, no noise
    np.testing.assert_array_equal(ys[1], y[4:8])          # virtual page 4 holds real page 1's labels
    assert not np.allclose(xs[1], x[4:8]) and np.abs(xs[1] - x[4:8]).std() == pytest.approx(0.5, rel=0.5)
    np.testing.assert_array_equal(xs[1], read(data, jnp.array([7, 4, 1]))[0][1])  # reproducible per page
    assert not np.allclose(xs[1], xs[2])


def test_lru_exact_and_analytic():
  seq = np.tile(np.arange(100), 3)
  full = st.lru_trace(seq, 100)
  assert full.miss[:100].all() and not full.miss[100:].any()
  short = st.lru_trace(seq, 99)
  assert short.miss.all()  # sequential scan larger than the cache: the LRU pathology
  np.testing.assert_array_equal(st.lru_misses_analytic(100, 99, 3), [100, 100, 100])
  np.testing.assert_array_equal(st.lru_misses_analytic(100, 100, 3), [100, 0, 0])
  rng = np.random.default_rng(0)
  random = rng.integers(0, 2000, 12000)  # independent uniform accesses: hit ratio M / D
  assert 1 - st.lru_trace(random, 500).miss[4000:].mean() == pytest.approx(0.25, abs=0.02)
  assert st.lru_hit_ratio(0.25, "random") == 0.25
  shuffled = np.concatenate([rng.permutation(2000) for _ in range(6)])  # a permutation per epoch
  hit = 1 - st.lru_trace(shuffled, 500).miss[2000:].mean()
  assert hit == pytest.approx(0.25 + 0.75 * np.log(0.75), abs=0.01)  # 0.034: far below M / D under LRU
  assert st.lru_misses_analytic(2000, 500, 2, "shuffled")[1] == pytest.approx(2000 * (1 - hit), rel=0.02)
  with pytest.raises(ValueError, match="capacity"):
    st.lru_trace(seq, -1)


@pytest.mark.parametrize("overlap", [False, True])
def test_ihp_memory_and_event_equals_analytic(overlap):
  ssd, layout = _layout(1000, channels=4)
  kw = dict(pages_per_step=4, epochs=3, host_step_s=50e-6)
  full = st.simulate_ihp(ssd, layout, st.IhpConfig(memory_fraction=1.0, overlap=overlap), **kw)
  np.testing.assert_array_equal(full.misses_per_epoch, [200, 0, 0])  # epochs >= 2 read nothing
  short = st.simulate_ihp(ssd, layout, st.IhpConfig(memory_fraction=0.75, overlap=overlap), **kw)
  np.testing.assert_array_equal(short.misses_per_epoch, [200, 200, 200])  # 4 KiB pages: D = 200 every epoch
  assert short.host_link_bytes == 600 * 4096 and full.host_link_bytes == 200 * 4096
  for cfg in (st.IhpConfig(memory_fraction=1.0, overlap=overlap), st.IhpConfig(memory_fraction=0.5, overlap=overlap)):
    e = st.simulate_ihp(ssd, layout, cfg, **kw)
    a = st.simulate_ihp(ssd, layout, cfg, mode="analytic", **kw)
    np.testing.assert_allclose(e.step_times, a.step_times, rtol=1e-9)  # one fault at a time: no contention
  analytic_cache = st.simulate_ihp(ssd, layout, st.IhpConfig(memory_fraction=0.5, cache_model="analytic"), **kw)
  assert analytic_cache.misses == short.misses
  assert short.end_time_s > full.end_time_s


@pytest.mark.parametrize("preset", ["sata", "nvme"])
def test_ihp_readahead_spreads_faults(preset):
  ssd = st.ssd_preset(preset, channels=4)
  layout = st.page_layout(1000, 785, ssd)
  kw = dict(pages_per_step=4, epochs=2, host_step_s=20e-6)
  demand = st.simulate_ihp(ssd, layout, st.IhpConfig(memory_fraction=0.5), **kw)
  ahead = st.IhpConfig(memory_fraction=0.5, readahead=True)
  e = st.simulate_ihp(ssd, layout, ahead, **kw)
  a = st.simulate_ihp(ssd, layout, ahead, mode="analytic", **kw)
  assert e.misses == demand.misses and e.end_time_s < demand.end_time_s / 2
  assert a.end_time_s == pytest.approx(e.end_time_s, rel=0.02)
  with pytest.raises(ValueError, match="readahead"):
    st.IhpConfig(memory_fraction=0.5, swap=True, swap_writeback=True, readahead=True)


def test_ihp_swap_and_bad_input():
  ssd, layout = _layout(1000, channels=4)
  kw = dict(pages_per_step=4, epochs=2, host_step_s=0.0)
  plain = st.simulate_ihp(ssd, layout, st.IhpConfig(memory_fraction=0.5), **kw)
  swap = st.simulate_ihp(ssd, layout, st.IhpConfig(memory_fraction=0.5, swap=True, swap_writeback=True), **kw)
  assert swap.evictions == 400 - 100 and swap.end_time_s > plain.end_time_s + swap.evictions * ssd.t_prog_s * 0.99
  assert swap.host_link_bytes == plain.host_link_bytes + swap.evictions * 4096
  with pytest.raises(ValueError, match="memory_fraction must be < 1, got 1.5"):
    st.IhpConfig(memory_fraction=1.5, swap=True)
  with pytest.raises(ValueError, match="memory_fraction must be > 0"):
    st.IhpConfig(memory_fraction=0.0)
  with pytest.raises(ValueError, match="pages_per_step"):
    st.simulate_ihp(ssd, layout, st.IhpConfig(), pages_per_step=0, epochs=1, host_step_s=0.0)


@pytest.mark.parametrize("algorithm", ["sync", "downpour", "easgd"])
def test_isp_time_monotone_in_data_size(algorithm):
  sgd = st.SGDConfig(algorithm, tau=4)
  times = []
  for n in (400, 800, 1600):
    ssd, layout = _layout(n, channels=4)
    times.append(st.simulate_isp(ssd, layout, sgd, COST, 1).end_time_s)
  assert times[0] < times[1] < times[2]
  ihp_times = []
  for n in (400, 800, 1600):
    ssd, layout = _layout(n, channels=4)
    ihp_times.append(st.simulate_ihp(ssd, layout, st.IhpConfig(memory_fraction=0.5), pages_per_step=4, epochs=2,
                                     host_step_s=1e-5).end_time_s)
  assert ihp_times[0] < ihp_times[1] < ihp_times[2]


@pytest.mark.parametrize("sgd", [st.SGDConfig("sync"), st.SGDConfig("easgd", tau=4, easgd_mode="sync"),
                                 st.SGDConfig("easgd", tau=16)])
def test_isp_event_equals_analytic_when_compute_bound(sgd):
  ssd, layout = _layout(2000, channels=8)
  e = st.simulate_isp(ssd, layout, sgd, COST, 2)
  a = st.simulate_isp(ssd, layout, sgd, COST, 2, mode="analytic")
  assert e.end_time_s == pytest.approx(a.end_time_s, rel=0.001 if sgd.lockstep else 0.02)
  assert e.pages_read == (len(e.step_pages) * 8 if sgd.lockstep else layout.num_pages * 2)


def test_isp_schedule_order_and_staleness():
  ssd, layout = _layout(400, channels=4)
  sched = st.simulate_isp(ssd, layout, st.SGDConfig("downpour"), COST, 1)
  assert np.all(np.diff(sched.times) >= 0)
  grads = sched.kinds == st.GRAD_DOWNPOUR
  assert grads.sum() == layout.num_pages
  for i in range(4):
    mine = sched.kinds[sched.workers == i]
    # Program order per worker: fetch, grad, then (send, push, fetch, grad) ... and a final send and push.
    assert mine[0] == st.FETCH and mine[1] == st.GRAD_DOWNPOUR and mine[-1] == st.PUSH
    np.testing.assert_array_equal(sched.pages[(sched.workers == i) & grads], layout.channel_pages(i))
  assert len(sched.staleness) == (sched.kinds == st.PUSH).sum() and sched.staleness.max() >= 1
  one = st.simulate_isp(*_layout(400, channels=1), st.SGDConfig("downpour"), COST, 1)
  assert one.staleness.max() == 0
  # With compute much faster than messages, a worker still has at most one update in flight: between two of its
  # SENDs (or ELASTIC_READs) the master applies its PUSH.
  fast = st.ModelCost(params_bytes=COST.params_bytes, grad_flops_per_example=1.0, update_flops=1.0)
  for sgd in (st.SGDConfig("downpour", n_push=2, n_fetch=3), st.SGDConfig("easgd", tau=1)):
    sched = st.simulate_isp(ssd, layout, sgd, fast, 1)
    for i in range(4):
      mine = [k for k in sched.kinds[sched.workers == i] if k in (st.SEND, st.ELASTIC_READ, st.PUSH)]
      assert mine[1::2] == [st.PUSH] * (len(mine) // 2) and st.PUSH not in mine[0::2]


def test_elastic_coefficient_out_of_range():
  with pytest.raises(ValueError, match=r"rho=20.0 gives moving rate alpha = lr \* rho = 1.*outside \[0, 1/p\]"):
    st.SGDConfig("easgd", lr=0.05, rho=20.0).alpha(4)
  with pytest.raises(ValueError, match="rho"):
    st.SGDConfig("easgd", rho=-1.0)
  with pytest.raises(ValueError, match="beta"):
    st.SGDConfig("easgd", beta=1.5)
  with pytest.raises(ValueError, match="tau must be an integer >= 1"):
    st.SGDConfig("easgd", tau=0)
  with pytest.raises(ValueError, match="algorithm"):
    st.SGDConfig("hogwild")
  assert st.SGDConfig("easgd").alpha(8) == pytest.approx(0.9 / 8)
  ssd, layout = _layout(400, channels=4)
  with pytest.raises(ValueError, match="rho"):
    st.simulate_isp(ssd, layout, st.SGDConfig("easgd", rho=100.0), COST, 1)
  with pytest.raises(ValueError, match="epochs"):
    st.simulate_isp(ssd, layout, st.SGDConfig(), COST, 0)
