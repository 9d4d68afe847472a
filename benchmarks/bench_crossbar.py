"""Crossbar simulator speed: fast-mode noisy forward vs the noise-free forward, and per-pulse vs fast.

Run: ``python -m benchmarks.bench_crossbar [--quick]``. Binary MLP 784-512-256-128-10 (three crossbar layers),
batch 256, T = 4 pulses per layer; median of repeats after warm-up, `block_until_ready`, the variants timed
interleaved so that a change in machine load hits all of them alike. The last stdout line is one JSON object.
`fast_rbg_over_clean` times the fast mode with a `jax.random.key(seed, impl="rbg")` read key (the caller picks the
generator through the key). On XLA:CPU the threefry draw of the ~230k normals is most of the fast mode's extra cost.
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
from jaxhw.models.binary_net import binary_mlp_init, crossbar_layer_fn, fold_binary_net, folded_net_apply, program_net


def _median_ms(calls: dict, repeats: int) -> dict:
  """Median ms of each `name: (fn, args)`, after one warm-up call each, the calls interleaved."""
  for fn, args in calls.values():
    jax.block_until_ready(fn(*args))
  ts = {name: [] for name in calls}
  for _ in range(repeats):
    for name, (fn, args) in calls.items():
      t = time.perf_counter()
      jax.block_until_ready(fn(*args))
      ts[name].append(time.perf_counter() - t)
  return {name: 1e3 * float(np.median(v)) for name, v in ts.items()}


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
  ms = _median_ms({"clean": (clean, (folded, x)), "fast": (fast, (folded, w_effs, x, key)),
                   "fast_rbg": (fast, (folded, w_effs, x, jax.random.key(3, impl="rbg")))}, repeats)
  pp_ms = _median_ms({"per_pulse": (per_pulse, (folded, w_effs, x, key))}, max(5, repeats // 4))["per_pulse"]
  clean_ms, fast_ms = ms["clean"], ms["fast"]
  dev = jax.devices()[0]
  device = f"{os.cpu_count()}-core CPU" if dev.platform == "cpu" else str(getattr(dev, "device_kind", dev.platform))
  out = {"bench": "crossbar", "backend": dev.platform, "device": device, "batch": args.batch, "pulses": t,
         "model": "binary MLP 784-512-256-128-10", "clean_ms": round(clean_ms, 3), "fast_ms": round(fast_ms, 3),
         "per_pulse_ms": round(pp_ms, 3), "fast_noise_over_clean": round(fast_ms / clean_ms, 3),
         "per_pulse_over_fast": round(pp_ms / fast_ms, 3), "fast_rbg_over_clean": round(ms["fast_rbg"] / clean_ms, 3),
         "goal_fast_noise_over_clean": 1.5}
  print(json.dumps(out))
  return out


if __name__ == "__main__":
  main()
