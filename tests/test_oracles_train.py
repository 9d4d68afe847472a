"""Oracles for the trainer's per-step keys: a loss that draws from its key sees a fresh key at every step,
``fold_in(key(config.seed), step)``, and the same keys again after an interrupted run resumes."""

import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhw.train import TrainConfig, TrainingInterrupted, train

STEPS = 7


def _loss(params, batch, key, step):
  """A regression loss plus a draw from the step's key; the draw and the step are logged."""
  x, y = batch
  u = jax.random.uniform(key)
  return jnp.mean(jnp.square(x @ params["w"] - y)) + u, {"u": u, "step_seen": step.astype(jnp.float32)}


def _data():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(64, 3)).astype(np.float32)
  return x, (x @ np.array([1.0, -2.0, 0.5], np.float32)).astype(np.float32)


def _run(workdir, signal_at=None, seed=4, evals=None):
  evals = [] if evals is None else evals

  def eval_fn(params):
    evals.append(True)
    if signal_at is not None and len(evals) == 1:  # the first evaluation (step 3) of the first run: SIGTERM
      os.kill(os.getpid(), signal.SIGTERM)
    return {"w0": float(params["w"][0])}

  config = TrainConfig(optimizer="sgd", lr=0.05, batch_size=16, steps=STEPS, log_every=1, eval_every=3, seed=seed)
  return train(_loss, {"w": jnp.zeros(3, jnp.float32)}, _data(), config, workdir, eval_fn=eval_fn)


def test_every_step_gets_its_own_key_and_a_resume_gets_the_same_ones(tmp_path):
  full = _run(tmp_path / "full")
  u = np.array([r["u"] for r in full.history])
  assert [r["step"] for r in full.history] == list(range(1, STEPS + 1))
  np.testing.assert_array_equal([r["step_seen"] for r in full.history], np.arange(STEPS))
  # the documented derivation, as an explicit loop: key_t = fold_in(key(seed), t)
  want = [float(jax.random.uniform(jax.random.fold_in(jax.random.key(4), t))) for t in range(STEPS)]
  np.testing.assert_array_equal(u, np.asarray(want, np.float32))
  assert len(set(u.tolist())) == STEPS  # a different key at every step
  # another seed, other keys
  other = np.array([r["u"] for r in _run(tmp_path / "other", seed=5).history])
  assert not np.any(other == u)
  # interrupted by SIGTERM after step 3 (checkpoint saved), then resumed: the same keys, losses and params
  split = tmp_path / "split"
  with pytest.raises(TrainingInterrupted) as err:
    _run(split, signal_at=3)
  assert err.value.step == 3 and (split / "checkpoints" / "3").is_dir()
  evals = []
  resumed = _run(split, evals=evals)
  assert len(evals) == 2  # at step 6 and at the end: it went on from step 3 instead of starting again
  assert [r["step"] for r in resumed.history] == list(range(1, STEPS + 1))
  np.testing.assert_array_equal([r["u"] for r in resumed.history], u)
  np.testing.assert_array_equal([r["loss"] for r in resumed.history], [r["loss"] for r in full.history])
  np.testing.assert_array_equal(np.asarray(resumed.params["w"]), np.asarray(full.params["w"]))
