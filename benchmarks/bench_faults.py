"""Fault-sweep benchmark: vectorized `single_bit_sweep` vs a naive flip-evaluate-restore loop.

Run: ``python -m benchmarks.bench_faults [--quick]``. Prints one JSON line:
  sweep_speedup = (naive seconds per flip) / (sweep seconds per flip) over the same >= 1,000 random flips of the
                  MLP 784-32-10 on 1,000 MNIST test images, identical correct counts required (goal >= 100;
                  HAT spec section 6). The naive loop sets one element, calls the jitted full-test evaluation and
                  fetches the result, once per flip. The sweep time is the median of repeated calls (after
                  compilation) and includes everything `single_bit_sweep` does per call (validation, clean
                  evaluation, activation cache, routing, the device calls, the fetch).
  flips_per_s   = flips per second of the vectorized sweep (structure="mlp": correct-class intervals for the
                  last two layers, exact rank-one update for flips that would overflow or give Inf/NaN)
  exact_flips_per_s = the same with with_loss=True (every flip through the exact rank-one suffix update)
  full_flips_per_s = flips per second of the generic structure="full" sweep (no model structure used)
  exhaustive_s  = seconds for all 814,400 single-bit flips of the model (all 32 bits of every parameter)
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks._common import emit
from jaxhw import faults as F
from jaxhw.data import load_mnist
from jaxhw.models import mlp_apply, mlp_init


def _median_time(fn, repeats: int) -> tuple[float, object]:
  out = fn()  # compile / warm-up
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    out = fn()
    times.append(time.perf_counter() - t0)
  return float(np.median(times)), out


def main(argv=None) -> None:
  ap = argparse.ArgumentParser(description=__doc__)
  ap.add_argument("--quick", action="store_true", default=True)
  ap.add_argument("--flips", type=int, default=4096)
  ap.add_argument("--images", type=int, default=1000)
  ap.add_argument("--repeats", type=int, default=5)
  args = ap.parse_args(argv)
  x, y = load_mnist("test")
  x, y = jnp.asarray(x[: args.images]), jnp.asarray(y[: args.images])
  params = mlp_init(jax.random.key(0), (784, 32, 10))
  rng = np.random.default_rng(0)
  all_fl = F.all_flips(params)
  pick = rng.choice(len(all_fl.leaf), args.flips, replace=False)
  flips = F.Flips(all_fl.leaf[pick], all_fl.index[pick], all_fl.bit[pick])

  def sweep(structure, fl=flips, with_loss=False):
    return lambda: F.single_bit_sweep(mlp_apply, params, x, y, flips=fl, structure=structure, with_loss=with_loss,
                                      nonfinite="evaluate")

  t_sweep, res = _median_time(sweep("mlp"), args.repeats)
  t_exact, res_exact = _median_time(sweep("mlp", with_loss=True), args.repeats)
  t_full, res_full = _median_time(sweep("full"), 1)
  t_exh, _ = _median_time(sweep("mlp", all_fl), 1)

  # Naive baseline: flip one element, evaluate the jitted model on the whole eval set, fetch, restore.
  @jax.jit
  def correct(p):
    lg = mlp_apply(p, x)
    return jnp.sum((jnp.argmax(lg, -1) == y) & jnp.all(jnp.isfinite(lg), -1))

  leaves, treedef = jax.tree.flatten(params)
  np_leaves = [np.asarray(a) for a in leaves]
  correct(params).block_until_ready()
  n_naive = args.flips
  naive = np.zeros(n_naive, np.int64)
  t0 = time.perf_counter()
  for k in range(n_naive):
    lf, idx, b = int(flips.leaf[k]), int(flips.index[k]), int(flips.bit[k])
    flipped = F.bits._np_flip(np_leaves[lf], idx, b)
    ls = list(leaves)
    ls[lf] = jnp.asarray(flipped)
    naive[k] = int(correct(jax.tree.unflatten(treedef, ls)))
  t_naive = time.perf_counter() - t0
  emit("faults", flips=args.flips, images=args.images, sweep_speedup=(t_naive / n_naive) / (t_sweep / args.flips),
       flips_per_s=args.flips / t_sweep, exact_flips_per_s=args.flips / t_exact, full_flips_per_s=args.flips / t_full,
       naive_flips_per_s=n_naive / t_naive, exhaustive_flips=len(all_fl.leaf), exhaustive_s=t_exh,
       agreement=float(np.mean(naive == res.correct[:n_naive])),
       exact_agreement=float(np.mean(naive == res_exact.correct)),
       full_agreement=float(np.mean(res_full.correct == naive)))


if __name__ == "__main__":
  main()
