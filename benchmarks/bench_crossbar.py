"""Crossbar simulator speed: fast-mode noisy forward vs the noise-free forward, and per-pulse vs fast.

Run: ``python -m benchmarks.bench_crossbar [--quick]``. Binary MLP 784-512-256-128-10 (three crossbar layers),
batch 256, T = 4 pulses per layer; median of repeats after warm-up, `block_until_ready`. The last stdout line
is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxhw.crossbar import CrossbarConfig
from jaxhw.models.binary_net import (binary_mlp_init, crossbar_layer_fn, fold_binary_net, folded_net_apply,
                                     program_net)


def _median_ms(fn, *args, repeats):
  jax.block_until_ready(fn(*args))
  ts = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    ts.append(time.perf_counter() - t)
  return 1e3 * float(np.median(ts))


def main(argv=None):
  ap = argparse.ArgumentParser()
  ap.add_argument("--quick", action="store_true", default=True)
  ap.add_argument("--full", dest="quick", action="store_false")
  ap.add_argument("--batch", type=int, default=256)
  ap.add_argument("--pulses", type=int, default=4)
  args = ap.parse_args(argv)
  repeats = 20 if args.quick else 100
  params = binary_mlp_init(jax.random.key(0), (784, 512, 256, 128, 10))
  stats = {f"xb{i}": {"mean": jnp.zeros(n), "var": jnp.full((n,), 100.0)} for i, n in enumerate((512, 256, 128))}
  folded = fold_binary_net(params, stats)
  config = CrossbarConfig(sigma=4.0)
  w_effs = program_net(folded, jax.random.key(1), config)
  x = jax.random.uniform(jax.random.key(2), (args.batch, 784))
  t = args.pulses

  @jax.jit
  def clean(f, xx):
    return folded_net_apply(f, xx, threshold=True)

  def noisy(mode):
    @jax.jit
    def fn(f, we, xx, key):
      return folded_net_apply(f, xx, threshold=True,
                              layer_fn=crossbar_layer_fn(we, (t, t, t), key, config, mode=mode))
    return fn

  fast, per_pulse = noisy("fast"), noisy("per_pulse")
  key = jax.random.key(3)
  clean_ms = _median_ms(clean, folded, x, repeats=repeats)
  fast_ms = _median_ms(fast, folded, w_effs, x, key, repeats=repeats)
  pp_ms = _median_ms(per_pulse, folded, w_effs, x, key, repeats=repeats)
  dev = jax.devices()[0]
  device = f"{os.cpu_count()}-core CPU" if dev.platform == "cpu" else str(getattr(dev, "device_kind", dev.platform))
  out = {"bench": "crossbar", "backend": dev.platform, "device": device, "batch": args.batch, "pulses": t,
         "model": "binary MLP 784-512-256-128-10", "clean_ms": round(clean_ms, 3), "fast_ms": round(fast_ms, 3),
         "per_pulse_ms": round(pp_ms, 3), "fast_noise_over_clean": round(fast_ms / clean_ms, 3),
         "per_pulse_over_fast": round(pp_ms / fast_ms, 3), "goal_fast_noise_over_clean": 1.5}
  print(json.dumps(out))
  return out


if __name__ == "__main__":
  main()
