"""SSD simulator benchmark: event-mode scan throughput, and the vmapped per-channel step against the host step.

Run: ``python -m benchmarks.bench_storage``. Prints one JSON line:
  simulated_pages_per_s   = pages of a long sequential scan simulated per second of wall time in event mode
                            (exact die/bus recurrence, vectorised over channels; goal >= 1e6)
  heap_pages_per_s        = the same scan with one EventQueue event per read and transfer (the reference)
  isp_step_over_host_step = time of one synchronous in-storage step (p workers, gradients vmapped over the worker
                            axis, one page each) / one host step on the same p pages as one batch
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks._common import emit, time_call
from jaxhw import storage as st
from jaxhw.data import load_mnist
from jaxhw.metrics import cross_entropy
from jaxhw.models import mlp_apply, mlp_init


def _wall(fn, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return float(np.median(times))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--pages", type=int, default=2_000_000, help="pages of the event-mode scan")
  parser.add_argument("--heap-pages", type=int, default=20_000, help="pages of the per-event reference scan")
  parser.add_argument("--channels", type=int, default=8, help="workers of the ISP step (one per channel)")
  parser.add_argument("--steps", type=int, default=32, help="steps per timed scan of the training step")
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()

  ssd = st.SSDConfig()
  st.scan_times(ssd, 10_000)  # warm-up
  scan_s = _wall(lambda: st.scan_times(ssd, args.pages), args.repeats)
  heap_s = _wall(lambda: st.scan_times(ssd, args.heap_pages, method="heap"), 1)
  event_t = st.scan_time(ssd, args.pages, mode="event")
  analytic_t = st.scan_time(ssd, args.pages, mode="analytic")

  x, y = load_mnist("train")
  ssd_p = st.SSDConfig(channels=args.channels)
  layout = st.page_layout(len(x), 785, ssd_p)
  data = st.paged_data(x.reshape(len(x), -1), y, layout)
  params = mlp_init(jax.random.key(0), (784, 10))

  def loss_fn(p, xb, yb):
    return cross_entropy(mlp_apply(p, xb), yb)

  isp_run, host_run = st.make_sync_sgd_runner(loss_fn), st.make_host_sgd_runner(loss_fn)
  pages = jnp.arange(args.steps * args.channels, dtype=jnp.int32).reshape(args.steps, args.channels)
  lr = jnp.float32(0.05)
  isp_s = time_call(lambda: isp_run(params, pages, lr, data), repeats=args.repeats * 4) / args.steps
  host_s = time_call(lambda: host_run(params, pages, lr, data), repeats=args.repeats * 4) / args.steps
  emit("storage", simulated_pages_per_s=args.pages / scan_s, heap_pages_per_s=args.heap_pages / heap_s,
       isp_step_over_host_step=isp_s / host_s, scan_wall_s=scan_s, heap_wall_s=heap_s, scan_pages=args.pages,
       simulated_scan_s=event_t, analytic_scan_s=analytic_t,
       event_vs_analytic_pct=100 * abs(analytic_t - event_t) / event_t, isp_step_us=1e6 * isp_s,
       host_step_us=1e6 * host_s, channels=args.channels, examples_per_page=layout.examples_per_page,
       ssd=f"{ssd.channels}x{ssd.ways}")


if __name__ == "__main__":
  main()
