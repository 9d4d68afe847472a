"""Fault-sweep benchmark: vectorized `single_bit_sweep` vs a naive flip-evaluate-restore loop.

Run: ``python -m benchmarks.bench_faults [--quick]``. Prints one JSON line:
  sweep_speedup = (naive seconds per flip) / (sweep seconds per flip) over the same >= 1,000 random flips of the
                  MLP 784-32-10 on 1,000 MNIST test images, identical correct counts required (goal >= 100;
                  HAT spec section 6). The naive loop sets one element, calls the jitted full-test evaluation and
                  fetches the result, once per flip.
  flips_per_s   = flips per second of the vectorized sweep (rank-one suffix update, after compile)
  full_flips_per_s = flips per second of the generic structure="full" sweep (no model structure used)
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


def main(argv=None) -> None:
  ap = argparse.ArgumentParser(description=__doc__)
  ap.add_argument("--quick", action="store_true", default=True)
  ap.add_argument("--flips", type=int, default=4096)
  ap.add_argument("--images", type=int, default=1000)
  args = ap.parse_args(argv)
  x, y = load_mnist("test")
  x, y = jnp.asarray(x[: args.images]), jnp.asarray(y[: args.images])
  params = mlp_init(jax.random.key(0), (784, 32, 10))
  rng = np.random.default_rng(0)
  all_fl = F.all_flips(params)
  pick = rng.choice(len(all_fl.leaf), args.flips, replace=False)
  flips = F.Flips(all_fl.leaf[pick], all_fl.index[pick], all_fl.bit[pick])

  def sweep(structure):
    return F.single_bit_sweep(mlp_apply, params, x, y, flips=flips, structure=structure, with_loss=False,
                              nonfinite="evaluate")

  sweep("mlp")  # compile
  t0 = time.perf_counter()
  res = sweep("mlp")
  t_sweep = time.perf_counter() - t0
  sweep("full")
  t0 = time.perf_counter()
  res_full = sweep("full")
  t_full = time.perf_counter() - t0

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
  agree = float(np.mean(naive == res.correct[:n_naive]))
  emit("faults", flips=args.flips, images=args.images, sweep_speedup=(t_naive / n_naive) / (t_sweep / args.flips),
       flips_per_s=args.flips / t_sweep, full_flips_per_s=args.flips / t_full,
       naive_flips_per_s=n_naive / t_naive, agreement=agree,
       full_agreement=float(np.mean(res_full.correct == res.correct)))


if __name__ == "__main__":
  main()
