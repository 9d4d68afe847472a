"""Train-step benchmark on LeNet-5 with real MNIST batches: input pipeline, jit, and the cost of Flax.

Run: ``python -m benchmarks.bench_train``. Prints one JSON line:
  pipeline_overhead = step time fed by the real BatchIterator (host shuffle + transfer) / step time with
                      batches already on the device (goal <= 1.2)
  jit_speedup       = eager step time / jitted step time
  flax_over_plain   = jitted grad step of the Flax `LeNet5` / the same step of a LeNet-5 written here in plain
                      JAX (lax.conv, reduce_window, matmuls) on the same weights and batch (goal <= 1.05)
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks._common import emit, time_call
from jaxhw.data import BatchIterator, load_mnist
from jaxhw.metrics import cross_entropy
from jaxhw.models import LeNet5
from jaxhw.train import TrainConfig, make_optimizer, make_train_step


def plain_lenet(params, x):
  """LeNet-5 in plain JAX on a `LeNet5` params dict (the baseline that Flax must not slow down)."""
  def conv(h, p, padding):
    return jax.lax.conv_general_dilated(h, p["kernel"], (1, 1), padding,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC")) + p["bias"]

  def pool(h):
    return jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")

  h = pool(jax.nn.relu(conv(x, params["Conv_0"], "SAME")))
  h = pool(jax.nn.relu(conv(h, params["Conv_1"], "VALID")))
  h = h.reshape(h.shape[0], -1)
  h = jax.nn.relu(h @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"])
  h = jax.nn.relu(h @ params["Dense_1"]["kernel"] + params["Dense_1"]["bias"])
  return h @ params["Dense_2"]["kernel"] + params["Dense_2"]["bias"]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--batch-size", type=int, default=128)
  parser.add_argument("--repeats", type=int, default=30)
  args = parser.parse_args()

  x, y = load_mnist("train")
  model = LeNet5()

  def flax_loss(params, batch, key, step):
    return cross_entropy(model.apply({"params": params}, batch[0]), batch[1]), {}

  def plain_loss(params, batch, key, step):
    return cross_entropy(plain_lenet(params, batch[0]), batch[1]), {}

  tx = make_optimizer(TrainConfig(), 1000)
  raw_step = make_train_step(flax_loss, tx)
  jit_step = jax.jit(raw_step)
  plain_step = jax.jit(make_train_step(plain_loss, tx))
  params = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"]
  opt_state = tx.init(params)
  key, step = jax.random.key(1), jnp.asarray(0, jnp.int32)

  iterator = BatchIterator((x, y), args.batch_size, seed=0)
  resident = [tuple(jax.device_put(a) for a in next(iterator)) for _ in range(8)]
  counter = [0]

  out_flax = jit_step(params, opt_state, {}, resident[0], key, step)
  out_plain = plain_step(params, opt_state, {}, resident[0], key, step)
  np.testing.assert_allclose(float(out_flax[3]), float(out_plain[3]), rtol=1e-5)  # same model, same loss

  def with_resident():
    counter[0] += 1
    return jit_step(params, opt_state, {}, resident[counter[0] % len(resident)], key, step)[3]

  def with_plain():
    counter[0] += 1
    return plain_step(params, opt_state, {}, resident[counter[0] % len(resident)], key, step)[3]

  def with_pipeline():
    batch = tuple(jnp.asarray(a) for a in next(iterator))
    return jit_step(params, opt_state, {}, batch, key, step)[3]

  def eager():
    return raw_step(params, opt_state, {}, resident[0], key, step)[3]

  # Flax and plain interleaved in rounds, so drifting machine load hits both alike.
  t_flax, t_plain = [], []
  for _ in range(3):
    t_flax.append(time_call(with_resident, repeats=args.repeats))
    t_plain.append(time_call(with_plain, repeats=args.repeats))
  t_resident, t_plain_ = float(np.median(t_flax)), float(np.median(t_plain))
  t_pipeline = time_call(with_pipeline, repeats=args.repeats)
  t_eager = time_call(eager, repeats=max(3, args.repeats // 5), warmup=1)
  emit("train", pipeline_overhead=t_pipeline / t_resident, jit_speedup=t_eager / t_resident,
       flax_over_plain=t_resident / t_plain_, resident_step_ms=1e3 * t_resident, plain_step_ms=1e3 * t_plain_,
       pipeline_step_ms=1e3 * t_pipeline, eager_step_ms=1e3 * t_eager, batch_size=args.batch_size,
       model="lenet5")


if __name__ == "__main__":
  main()
