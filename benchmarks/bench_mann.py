"""MemN2N benchmarks: joint training throughput, and integer Hamming addressing vs float dot-product addressing.

Run: ``python -m benchmarks.bench_mann``. Prints one JSON line:
  train_questions_per_s = questions per second of the jitted training step (joint bAbI, d = 50, batch 32, LS
                          off, RN on), batches from the real bucketed stream
  hamming_over_dot      = time of Q-MANN's integer bounded-Hamming addressing on 8-bit sign-magnitude words
                          packed four to a uint32 (`hamming_words`, SWAR) / time of float dot-product addressing,
                          same [batch, memory, d] shapes (goal <= 1.0)
  closed_form_over_dot  = the same for the element-wise closed form on (sign, magnitude) int16 codes
                          (`hamming_scores_int`; the kernel `hamming_over_dot` measured before the packed words)
  popcount_over_dot     = the same for the bit-plane XNOR/popcount kernel, and binary_over_dot for the binary
                          (sign XOR + popcount) kernel on packed codes
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks._common import emit, time_call
from jaxhw.mann import BucketedBatches, Recipe, load_splits, make_loss_fn, make_optimizer
from jaxhw.mann.quantize import FixedPoint, to_codes
from jaxhw.mann.similarity import hamming_popcount, hamming_scores_int, hamming_words, pack_bits, pack_words
from jaxhw.models.memn2n import MemN2N
from jaxhw.train import make_train_step


def _train_throughput(repeats: int) -> tuple[float, float]:
  splits = load_splits(val_split="random")
  model = MemN2N(len(splits.vocab), dim=50)
  params = model.init(jax.random.key(0), splits.train.stories[:2], splits.train.queries[:2])["params"]
  recipe = Recipe()
  tx = make_optimizer(recipe, 562)
  loss_fn = make_loss_fn(lambda p, s, q, t, lin, k: model.apply({"params": p}, s, q, t, linear=lin), recipe, 562, 50)
  step = jax.jit(make_train_step(loss_fn, tx))
  stream = BucketedBatches(splits.train, recipe.batch_size, seed=0, buckets=recipe.buckets)
  opt_state = tx.init(params)
  batches = [tuple(jnp.asarray(a) for a in next(stream)) for _ in range(200)]
  for memory in recipe.buckets:  # compile every bucket shape first
    b = next(x for x in batches if x[0].shape[1] == memory)
    jax.block_until_ready(step(params, opt_state, {}, b, jax.random.key(0), jnp.asarray(10**6, jnp.int32)))
  counter = [0]

  def one():
    counter[0] += 1
    return step(params, opt_state, {}, batches[counter[0] % len(batches)], jax.random.key(counter[0]),
                jnp.asarray(10**6, jnp.int32))[3]

  t = time_call(one, repeats=repeats, warmup=3)
  return recipe.batch_size / t, t


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--batch", type=int, default=256)
  parser.add_argument("--memory", type=int, default=50)
  parser.add_argument("--dim", type=int, default=50)
  parser.add_argument("--repeats", type=int, default=30)
  args = parser.parse_args()

  b, m, d = args.batch, args.memory, args.dim
  u = jax.random.normal(jax.random.key(1), (b, d))
  mem = jax.random.normal(jax.random.key(2), (b, m, d))
  fmt = FixedPoint(2, 5)
  qc, mc = to_codes(u, fmt), to_codes(mem, fmt)
  # Codes as stored by the hardware: sign and magnitude as small ints (int16 keeps M_a + M_b from wrapping).
  qc8 = tuple(c.astype(jnp.int16) for c in qc)
  mc8 = tuple(c.astype(jnp.int16) for c in mc)
  dot = jax.jit(lambda a, x: jnp.einsum("bd,bmd->bm", a, x))
  closed = jax.jit(lambda a, x: hamming_scores_int(a, x, 8, 5, 127))
  # The hardware's storage: one 8-bit sign-magnitude word per element, four to a uint32.
  qw, mw = pack_words(*qc, role="query"), pack_words(*mc, role="memory")
  ham = jax.jit(lambda a, x: hamming_words(a, x, d, 5, 127))
  pop = jax.jit(lambda a, x: hamming_popcount(a, x, 8))
  packed_u, packed_m = pack_bits(u < 0, -(-d // 32)), pack_bits(mem < 0, -(-d // 32))
  binary = jax.jit(lambda a, x: d - 2 * jax.lax.population_count(a[:, None, :] ^ x).astype(jnp.int32).sum(-1))
  t_dot = time_call(lambda: dot(u, mem), repeats=args.repeats)
  t_ham = time_call(lambda: ham(qw, mw), repeats=args.repeats)
  t_closed = time_call(lambda: closed(qc8, mc8), repeats=args.repeats)
  t_pop = time_call(lambda: pop(qc, mc), repeats=max(5, args.repeats // 3))
  t_bin = time_call(lambda: binary(packed_u, packed_m), repeats=args.repeats)
  qps, t_step = _train_throughput(args.repeats)
  reference = np.asarray(hamming_scores_int(qc, mc, 8, 5, 127))
  np.testing.assert_array_equal(np.asarray(closed(qc8, mc8)), reference)
  np.testing.assert_array_equal(np.asarray(ham(qw, mw)), reference)
  emit("mann", train_questions_per_s=qps, hamming_over_dot=t_ham / t_dot, closed_form_over_dot=t_closed / t_dot,
       popcount_over_dot=t_pop / t_dot, binary_over_dot=t_bin / t_dot, train_step_ms=1e3 * t_step,
       dot_ms=1e3 * t_dot, hamming_ms=1e3 * t_ham, closed_form_ms=1e3 * t_closed, popcount_ms=1e3 * t_pop,
       binary_ms=1e3 * t_bin, shape=[b, m, d])


if __name__ == "__main__":
  main()
