"""Crossbar simulator speed: fast-mode noisy forward vs the noise-free forward, and per-pulse vs fast.

Run: ``python -m benchmarks.bench_crossbar [--quick]``. The Flax `BinaryMLP` 784-512-256-128-10 (three crossbar
layers, weights programmed onto the crossbar with `crossbar.program_weights`), batch 256, T = 4 pulses per layer,
read noise attached from outside with `effects.attach(model.apply, crossbar.read_noise(...))`; median of repeats
after warm-up, `block_until_ready`, the variants timed
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
import numpy as np

from jaxhw import effects
from jaxhw.crossbar import CrossbarConfig, program_weights, read_noise
from jaxhw.models.binary_net import BinaryMLP, binary_layer_paths


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
  model = BinaryMLP(features=(512, 256, 128), num_classes=10)
  x = jax.random.uniform(jax.random.key(2), (args.batch, 784))
  variables = jax.jit(model.init)(jax.random.key(0), x[:1])
  # running statistics mean 0, var 100: pre-activations of +-1 layers are O(sqrt(fan_in)), so signs stay mixed
  variables["batch_stats"] = jax.tree_util.tree_map_with_path(
      lambda p, a: a * 0 if p[-1].key == "mean" else a * 0 + 100.0, variables["batch_stats"])
  config = CrossbarConfig(sigma=4.0)
  paths = binary_layer_paths(model)
  prog = program_weights(config, layers=paths)
  params, _ = prog.apply(variables["params"], prog.init(variables["params"]), jax.random.key(1))
  variables = {**variables, "params": params}
  t = args.pulses

  clean = jax.jit(model.apply)

  def noisy(mode):
    fn = effects.attach(model.apply, read_noise(config.sigma, {p: t for p in paths}, config=config, mode=mode))
    return jax.jit(lambda v, xx, key: fn(v, xx, rngs={"noise": key}))

  fast, per_pulse = noisy("fast"), noisy("per_pulse")
  key = jax.random.key(3)
  ms = _median_ms({"clean": (clean, (variables, x)), "fast": (fast, (variables, x, key)),
                   "fast_rbg": (fast, (variables, x, jax.random.key(3, impl="rbg")))}, repeats)
  pp_ms = _median_ms({"per_pulse": (per_pulse, (variables, x, key))}, max(5, repeats // 4))["per_pulse"]
  clean_ms, fast_ms = ms["clean"], ms["fast"]
  dev = jax.devices()[0]
  device = f"{os.cpu_count()}-core CPU" if dev.platform == "cpu" else str(getattr(dev, "device_kind", dev.platform))
  out = {"bench": "crossbar", "backend": dev.platform, "device": device, "batch": args.batch, "pulses": t,
         "model": "Flax BinaryMLP 784-512-256-128-10", "clean_ms": round(clean_ms, 3), "fast_ms": round(fast_ms, 3),
         "per_pulse_ms": round(pp_ms, 3), "fast_noise_over_clean": round(fast_ms / clean_ms, 3),
         "per_pulse_over_fast": round(pp_ms / fast_ms, 3), "fast_rbg_over_clean": round(ms["fast_rbg"] / clean_ms, 3),
         "goal_fast_noise_over_clean": 1.5}
  print(json.dumps(out))
  return out


if __name__ == "__main__":
  main()
