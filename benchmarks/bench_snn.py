"""Benchmarks of jaxhw.snn on CPU: one simulated step of the converted MNIST CNN vs one ANN forward pass,
and the common peer benchmark (16k LIF neurons in one fully connected layer, batch 16, 500 steps).

Run: ``python -m benchmarks.bench_snn [--quick]``; the last stdout line is one JSON object.

References:
  Open Neuromorphic, "SNN library benchmarks" (Linear 16,384 + LIF, batch 16, 500 steps), 2023.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxhw import snn
from jaxhw.models.snn_cnn import MNIST_CNN, SequentialCNN, bn_population_stats


def _median_time(fn, repeats: int) -> float:
  jax.block_until_ready(fn())  # warm-up (compile)
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def bench_scan_over_dense(batch: int, steps: int, repeats: int, mode: str) -> dict:
  model = SequentialCNN(layers=MNIST_CNN)
  x = np.asarray(jax.random.uniform(jax.random.key(1), (batch, 28, 28, 1)))
  variables = model.init(jax.random.key(0), jnp.asarray(x[:1]))
  variables = {**variables, "batch_stats": bn_population_stats(model, variables, x)}
  net = snn.convert(model, variables, x)
  ann = jax.jit(lambda xb: model.apply(variables, xb))
  xj = jnp.asarray(x)
  t_ann = _median_time(lambda: ann(xj), repeats)
  t_snn = _median_time(lambda: snn.simulate(net, xj, "rate-real", steps, mode=mode, record=()).vmem, repeats)
  per_step = t_snn / steps
  return {"scan_over_dense": per_step / t_ann, "ann_forward_ms": 1e3 * t_ann, "snn_step_ms": 1e3 * per_step,
          "cnn_batch": batch, "cnn_steps": steps, "cnn_mode": mode}


def bench_linear_if(n: int, batch: int, steps: int, repeats: int) -> dict:
  """Linear(n) + IF over ``steps``: the scan vs a Python loop over a jitted step, and vs one ``[T*B, n] @ [n, n]``."""
  w = jax.random.normal(jax.random.key(0), (n, n)) / np.sqrt(n)
  x = (jax.random.uniform(jax.random.key(1), (steps, batch, n)) < 0.2).astype(jnp.float32)
  neuron = snn.if_neuron(1.0)

  ts = jnp.arange(steps, dtype=jnp.int32)

  @functools.partial(jax.jit, static_argnames="unroll")
  def scan_run(w, x, unroll=1):
    # stepwise: the matmul inside the scan body, as a network with feedback would need.
    def body(state, xt):
      state, o = neuron.step(state, xt[0] @ w, xt[1])
      return state, None
    state, _ = jax.lax.scan(body, neuron.init((batch, n)), (x, ts), unroll=unroll)
    return state.n

  @jax.jit
  def layerwise_run(w, x):
    # layerwise (jaxhw.snn's mode for feed-forward nets): one [T*B, n] @ [n, n], then scan only the neuron.
    z = (x.reshape(steps * batch, n) @ w).reshape(steps, batch, n)
    def body(state, zt):
      state, o = neuron.step(state, zt[0], zt[1])
      return state, None
    state, _ = jax.lax.scan(body, neuron.init((batch, n)), (z, ts), unroll=8)
    return state.n

  @jax.jit
  def one_step(state, w, xt, t):
    return neuron.step(state, xt @ w, t)[0]

  def loop_run():
    state = neuron.init((batch, n))
    for t in range(steps):
      state = one_step(state, w, x[t], jnp.int32(t))
    return state.n

  matmul = jax.jit(lambda w, x: x.reshape(steps * batch, n) @ w)
  t_scan = min(_median_time(lambda u=u: scan_run(w, x, unroll=u), repeats) for u in (1, 4))
  t_layer = _median_time(lambda: layerwise_run(w, x), repeats)
  t_loop = _median_time(loop_run, repeats)
  t_mm = _median_time(lambda: matmul(w, x), repeats)
  return {"scan_over_loop": t_scan / t_loop, "scan_over_matmul": t_layer / t_mm,
          "stepwise_scan_over_matmul": t_scan / t_mm, "linear_if_stepwise_ms": 1e3 * t_scan,
          "linear_if_layerwise_ms": 1e3 * t_layer, "linear_if_loop_ms": 1e3 * t_loop,
          "linear_if_matmul_ms": 1e3 * t_mm, "linear_if_n": n}


def _lif_fwd_bwd(n_in: int, n_out: int, batch: int, steps: int, *, w=None, x=None):
  if w is None:
    w = jax.random.normal(jax.random.key(0), (n_in, n_out)) / np.sqrt(n_in)
  if x is None:
    x = (jax.random.uniform(jax.random.key(1), (steps, batch, n_in)) < 0.1).astype(jnp.float32)

  @jax.jit
  def run(w, x):
    def loss(w):
      z = (x.reshape(steps * batch, n_in) @ w).reshape(steps, batch, n_out)
      return snn.lif_scan(z, leak=0.9).sum()
    return jax.value_and_grad(loss)(w)

  return lambda: run(w, x)


def _spyx_available() -> bool:
  return importlib.util.find_spec("spyx") is not None


def bench_vs_spyx(n: int, batch: int, steps: int, repeats: int) -> dict:
  """Linear(n, no bias) + LIF (leak 0.9), fwd+bwd of the summed spikes over ``steps``: spyx (its ``nn.run``
  scan over a ``Sequential``) vs :func:`jaxhw.snn.lif_scan` on the same weights and inputs, same process."""
  import spyx
  from flax import nnx

  x = (jax.random.uniform(jax.random.key(1), (steps, batch, n)) < 0.1).astype(jnp.float32)
  model = spyx.nn.Sequential(nnx.Linear(n, n, use_bias=False, rngs=nnx.Rngs(0)),
                             spyx.nn.LIF((n,), beta=0.9, rngs=nnx.Rngs(0)))
  w = model.layers[0].kernel[...]

  @nnx.jit
  def spyx_step(model, x):
    def loss(model):
      out, _ = spyx.nn.run(model, x)
      return out.sum()
    return nnx.value_and_grad(loss)(model)

  ours = _lif_fwd_bwd(n, n, batch, steps, w=w, x=x)
  t_spyx = _median_time(lambda: spyx_step(model, x), repeats)
  t_ours = _median_time(ours, repeats)
  # the spike totals of both forwards (equal when the two LIF definitions agree on these inputs)
  spikes_spyx, spikes_ours = float(spyx_step(model, x)[0]), float(ours()[0])
  return {"ours_over_spyx": t_ours / t_spyx, "spyx_ms": 1e3 * t_spyx, "ours_ms": 1e3 * t_ours,
          "spyx_spikes": spikes_spyx, "ours_spikes": spikes_ours,
          "spyx_cmp_shape": f"n={n}, batch={batch}, steps={steps}, fwd+bwd",
          "spyx_version": getattr(spyx, "__version__", "?")}


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--quick", action="store_true", default=True)
  parser.add_argument("--full", dest="quick", action="store_false")
  args = parser.parse_args(argv)
  repeats = 5
  out = {"bench": "snn", "backend": jax.default_backend(), "device": f"{os.cpu_count()}-core CPU"
         if jax.default_backend() == "cpu" else str(jax.devices()[0].device_kind)}
  batch = 64 if args.quick else 256
  out.update(bench_scan_over_dense(batch=batch, steps=32, repeats=repeats, mode="stepwise"))
  out.update(bench_linear_if(1024, 16, 500, repeats))
  n = 16384
  steps = 8 if args.quick and jax.default_backend() == "cpu" else 500
  t_lif = _median_time(_lif_fwd_bwd(n, n, 16, steps), 3 if args.quick else repeats)
  # On CPU the quick run times a few steps of the 500 and scales linearly (the work per step is constant).
  out["lif_16k_ms"] = 1e3 * t_lif * (500 / steps)
  out["lif_16k_steps_timed"] = steps
  if _spyx_available():
    # 16k neurons x 500 steps is minutes per call on a 2-core CPU, so the head-to-head uses a smaller layer.
    cmp_n, cmp_steps = (2048, 100) if jax.default_backend() == "cpu" else (n, 500)
    out.update(bench_vs_spyx(cmp_n, 16, cmp_steps, repeats))
    out["spyx_note"] = ("spyx importable (not a project dependency); same process, same weights and inputs; spyx's "
                        "LIF fires on the potential before the step's input (one step later than ours), so the "
                        "spike totals differ while the work per step is the same")
  else:
    out["ours_over_spyx"] = None
    out["spyx_note"] = "skipped: spyx is not importable in this environment"
  print(json.dumps(out))
  return out


if __name__ == "__main__":
  main()
