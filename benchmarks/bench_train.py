"""Train-step benchmark: input-pipeline overhead and jit speedup, on LeNet-5 with real MNIST batches.

Run: ``python -m benchmarks.bench_train``. Prints one JSON line:
  pipeline_overhead = step time fed by the real BatchIterator (host shuffle + transfer) / step time with
                      batches already on the device (goal <= 1.2)
  jit_speedup       = eager step time / jitted step time
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

from benchmarks._common import emit, time_call
from jaxhw.data import BatchIterator, load_mnist
from jaxhw.metrics import cross_entropy
from jaxhw.models import lenet_apply, lenet_init
from jaxhw.train import TrainConfig, make_optimizer, make_train_step


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--batch-size", type=int, default=128)
  parser.add_argument("--repeats", type=int, default=30)
  args = parser.parse_args()

  x, y = load_mnist("train")

  def loss_fn(params, batch, key, step):
    return cross_entropy(lenet_apply(params, batch[0]), batch[1]), {}

  tx = make_optimizer(TrainConfig(), 1000)
  raw_step = make_train_step(loss_fn, tx)
  jit_step = jax.jit(raw_step)
  params = lenet_init(jax.random.key(0))
  opt_state = tx.init(params)
  key, step = jax.random.key(1), jnp.asarray(0, jnp.int32)

  iterator = BatchIterator((x, y), args.batch_size, seed=0)
  resident = [tuple(jax.device_put(a) for a in next(iterator)) for _ in range(8)]
  counter = [0]

  def with_resident():
    counter[0] += 1
    return jit_step(params, opt_state, resident[counter[0] % len(resident)], key, step)[2]

  def with_pipeline():
    batch = tuple(jnp.asarray(a) for a in next(iterator))
    return jit_step(params, opt_state, batch, key, step)[2]

  def eager():
    return raw_step(params, opt_state, resident[0], key, step)[2]

  t_resident = time_call(with_resident, repeats=args.repeats)
  t_pipeline = time_call(with_pipeline, repeats=args.repeats)
  t_eager = time_call(eager, repeats=max(3, args.repeats // 5), warmup=1)
  emit("train", pipeline_overhead=t_pipeline / t_resident, jit_speedup=t_eager / t_resident,
       resident_step_ms=1e3 * t_resident, pipeline_step_ms=1e3 * t_pipeline, eager_step_ms=1e3 * t_eager,
       batch_size=args.batch_size, model="lenet5")


if __name__ == "__main__":
  main()
