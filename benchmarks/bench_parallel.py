"""Data-parallel benchmark on 2 simulated CPU devices (or the first 2 accelerators when present).

Run: ``python -m benchmarks.bench_parallel``. Prints one JSON line:
  dp_step_over_single       = the trainer's data-parallel step on 2 devices / its single-device step, same global
                              batch (MLP 784-512-512-10, batch 512). Simulated devices share the cores, so the floor
                              is about 1.0 here (goal <= 1.3).
  allreduce_ms              = a psum of a 10 MB fp32 buffer per device over 2 devices.
  allreduce_model_error_pct = the host cost model p (a + S / B_mem), fitted on psum sweeps of 64 KiB - 16 MiB
                              (10 MB itself held out), predicting the 10 MB all-reduce (goal <= 20).
  Step times are medians, psum times minima, of calls interleaved round-robin, so a busy machine slows both sides
  alike.
"""

from __future__ import annotations

import os
import re

# Two simulated CPU devices, fixed before JAX starts its backend (harmless on GPU/TPU).
os.environ["XLA_FLAGS"] = (re.sub(r"--xla_force_host_platform_device_count=\d+", "", os.environ.get("XLA_FLAGS", ""))
                           + " --xla_force_host_platform_device_count=2").strip()

import jax  # noqa: E402
import optax  # noqa: E402

from benchmarks._common import emit  # noqa: E402
from jaxhw.experiments._cluster_calibrate import dp_step_fn, mlp_problem, psum_fn, time_calls  # noqa: E402
from jaxhw.parallel import cost  # noqa: E402

SIZE = 10 * 10**6
FIT_SIZES = (2**16, 2**18, 2**20, 2**21, 2**22, 2**23, 2**24)  # 10 MB itself is held out


def main() -> None:
  p = min(2, jax.device_count())
  loss_fn, params, batch = mlp_problem(512, 512)
  tx = optax.sgd(0.01)
  if p < 2:  # one accelerator: only the single-device step
    single = time_calls({"single": dp_step_fn(loss_fn, params, batch, tx, 1)}, repeats=30)["single"]
    dp = allreduce = predicted = a = bw = float("nan")
    sweep = {}
  else:
    steps = time_calls({"single": dp_step_fn(loss_fn, params, batch, tx, 1),
                        "dp": dp_step_fn(loss_fn, params, batch, tx, p)}, repeats=30)
    single, dp = steps["single"], steps["dp"]
    # The floor of each psum (min): a busy machine adds delays on top, never below, so the fit and the held-out
    # size are compared without the background load's noise.
    times = time_calls({s: psum_fn(s, p) for s in (*FIT_SIZES, SIZE)}, repeats=30, statistic="min")
    allreduce = times.pop(SIZE)
    sweep = times
    a, bw = cost.fit_host_allreduce(list(sweep), [p] * len(sweep), list(sweep.values()))
    predicted = cost.host_allreduce_time(SIZE, p, a, bw)
  emit("parallel", devices=p, dp_step_over_single=dp / single, allreduce_ms=1e3 * allreduce,
       allreduce_model_error_pct=100 * abs(predicted - allreduce) / allreduce,
       single_step_ms=1e3 * single, dp_step_ms=1e3 * dp, predicted_allreduce_ms=1e3 * predicted,
       fit_latency_us=1e6 * a, fit_bandwidth_GBps=bw / 1e9,
       psum_sweep_ms={str(k): round(1e3 * v, 4) for k, v in sweep.items()})


if __name__ == "__main__":
  main()
