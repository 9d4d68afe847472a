"""Trains a small MLP on synthetic data into a workdir; used by test_train.py as a separate process.

Usage: python _train_script.py WORKDIR STEPS [nan_at_step]
Writes WORKDIR/final.npz with the final params.
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np

from jaxhw.data import synthetic_classification
from jaxhw.metrics import cross_entropy
from jaxhw.models import mlp_apply, mlp_init
from jaxhw.train import TrainConfig, train


def main():
  workdir, steps = sys.argv[1], int(sys.argv[2])
  nan_at = int(sys.argv[3]) if len(sys.argv) > 3 else -1
  x, y = synthetic_classification(0, 512, (16,), 4)

  def loss_fn(params, batch, key, step):
    logits = mlp_apply(params, batch[0] + 0.01 * jax.random.normal(key, batch[0].shape))
    loss = cross_entropy(logits, batch[1])
    return jnp.where(step == nan_at, jnp.nan, loss), {}

  config = TrainConfig(steps=steps, batch_size=32, lr=1e-2, log_every=10, checkpoint_every=20, keep_checkpoints=3)
  result = train(loss_fn, mlp_init(jax.random.key(1), (16, 64, 4)), (x, y), config, workdir)
  flat = {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(result.params)[0]}
  np.savez(f"{workdir}/final.npz", **flat)


if __name__ == "__main__":
  main()
