import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhw.data import synthetic_classification
from jaxhw.metrics import accuracy, cross_entropy
from jaxhw.models import mlp_apply, mlp_init
from jaxhw.train import NonFiniteLossError, TrainConfig, make_optimizer, train

SCRIPT = Path(__file__).with_name("_train_script.py")


def _start(workdir, steps, *extra):
  env = {**os.environ, "PYTHONUNBUFFERED": "1"}
  return subprocess.Popen([sys.executable, str(SCRIPT), str(workdir), str(steps), *map(str, extra)], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_checkpoint(workdir, step, proc, timeout=120):
  deadline = time.time() + timeout
  while time.time() < deadline:
    done = [int(p.name) for p in (Path(workdir) / "checkpoints").glob("[0-9]*") if p.name.isdigit()]
    if any(s >= step for s in done):
      return
    if proc.poll() is not None:
      raise AssertionError(f"process ended early: {proc.communicate()}")
    time.sleep(0.005)
  raise AssertionError("no checkpoint in time")


def _losses(workdir):
  lines = (Path(workdir) / "metrics.jsonl").read_text().splitlines()
  return [(r["step"], r["loss"]) for r in map(json.loads, lines)]


def _final(workdir):
  with np.load(Path(workdir) / "final.npz") as f:
    return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("full")
  proc = _start(workdir, 300)
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err
  return workdir


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_run_resumes_to_identical_result(uninterrupted, tmp_path, sig):
  proc = _start(tmp_path, 300)
  _wait_for_checkpoint(tmp_path, 50, proc)
  proc.send_signal(sig)
  out, err = proc.communicate(timeout=120)
  if sig == signal.SIGKILL:
    assert proc.returncode == -signal.SIGKILL
  else:
    assert "interrupted by SIGTERM" in err and proc.returncode != 0
  assert not (tmp_path / "final.npz").exists(), "the run finished before it was killed: test is void"
  steps_on_disk = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
  assert steps_on_disk and steps_on_disk[-1] < 300
  resumed = _start(tmp_path, 300)
  out, err = resumed.communicate(timeout=300)
  assert resumed.returncode == 0, err
  assert _losses(tmp_path) == _losses(uninterrupted)
  a, b = _final(tmp_path), _final(uninterrupted)
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])


def test_nan_loss_stops_with_step_and_last_checkpoint(tmp_path):
  x, y = synthetic_classification(0, 256, (8,), 3)

  def loss_fn(params, batch, key, step):
    loss = cross_entropy(mlp_apply(params, batch[0]), batch[1])
    return jnp.where(step >= 44, jnp.inf, loss), {}

  config = TrainConfig(steps=100, batch_size=32, checkpoint_every=20)
  with pytest.raises(NonFiniteLossError) as err:
    train(loss_fn, mlp_init(jax.random.key(0), (8, 3)), (x, y), config, tmp_path)
  assert err.value.step == 45
  assert "step 45" in str(err.value) and str(tmp_path / "checkpoints" / "40") in str(err.value)
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == ["20", "40"]


def test_training_learns_and_logs(tmp_path):
  x, y = synthetic_classification(0, 512, (8,), 3, noise=0.3)

  def loss_fn(params, batch, key, step):
    return cross_entropy(mlp_apply(params, batch[0]), batch[1]), {}

  config = TrainConfig(steps=60, batch_size=64, lr=1e-2, log_every=20)
  result = train(loss_fn, mlp_init(jax.random.key(0), (8, 16, 3)), (x, y), config, tmp_path,
                 eval_fn=lambda p: {"loss": float(cross_entropy(mlp_apply(p, x), y))})
  assert [r["step"] for r in result.history] == [20, 40, 60]
  assert result.final_eval["loss"] < 0.5 * result.history[0]["loss"] or result.final_eval["loss"] < 0.2
  assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 3
  # a rerun of the finished run resumes at the end and changes nothing
  again = train(loss_fn, mlp_init(jax.random.key(5), (8, 16, 3)), (x, y), config, tmp_path)
  jax.tree.map(np.testing.assert_array_equal, again.params, result.params)


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd", "momentum", "rmsprop", "sam"])
def test_every_optimizer_reduces_the_loss(name):
  x, y = synthetic_classification(1, 256, (8,), 3, noise=0.3)

  def loss_fn(params, batch, key, step):
    return cross_entropy(mlp_apply(params, batch[0]), batch[1]), {}

  config = TrainConfig(optimizer=name, lr=0.05 if name in ("sgd", "momentum") else 5e-3, steps=60,
                       batch_size=64, weight_decay=1e-4, log_every=60)
  params = mlp_init(jax.random.key(0), (8, 16, 3))
  before = float(cross_entropy(mlp_apply(params, x), y))
  result = train(loss_fn, params, (x, y), config)
  assert float(cross_entropy(mlp_apply(result.params, x), y)) < 0.7 * before
  # the caller's params are not donated away
  assert np.isfinite(np.asarray(params["Dense_0"]["kernel"])).all()


def test_bad_train_config_names_the_field():
  with pytest.raises(ValueError, match="train.optimizer must be one of"):
    TrainConfig(optimizer="lion")
  with pytest.raises(ValueError, match="train.batch_size"):
    TrainConfig(batch_size=0)
  assert make_optimizer(TrainConfig(schedule="warmup_cosine", warmup_steps=5), 50) is not None


class _BNNet(nn.Module):
  """Dense -> BatchNorm -> ReLU -> Dense: a model with a mutable ``batch_stats`` collection."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    h = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.8)(nn.Dense(16)(x)))
    return nn.Dense(3)(h)


class _SeededStream:
  """A resumable stream that is not an array iterator: batch k is drawn from (seed, k), position = k."""

  def __init__(self, seed: int, batch: int = 32):
    self.seed, self.batch, self.k = seed, batch, 0

  def __next__(self):
    rng = np.random.default_rng([self.seed, self.k])
    self.k += 1
    x = rng.normal(size=(self.batch, 8)).astype(np.float32)
    return {"x": x, "y": (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 1).astype(np.int32)}

  def get_state(self):
    return {"k": self.k}

  def set_state(self, state):
    self.k = int(state["k"])


def _bn_run(workdir, steps, total_for_fingerprint=24):
  model = _BNNet()
  variables = model.init(jax.random.key(0), jnp.zeros((1, 8)))

  def loss_fn(params, model_state, batch, key, step):
    logits, new = model.apply({"params": params, **model_state}, batch["x"], train=True, mutable=["batch_stats"])
    return cross_entropy(logits, batch["y"]), ({}, new)

  def eval_fn(params, model_state):
    stream = _SeededStream(99, 256)
    batch = next(stream)
    return {"accuracy": float(accuracy(model.apply({"params": params, **model_state}, batch["x"]), batch["y"]))}

  config = TrainConfig(steps=steps, lr=1e-2, log_every=4, checkpoint_every=4)
  return train(loss_fn, variables["params"], _SeededStream(7), config, workdir,
               model_state={"batch_stats": variables["batch_stats"]}, eval_fn=eval_fn,
               fingerprint={"run": "bn", "total": total_for_fingerprint})


def test_resume_carries_batch_norm_state_and_stream_position(tmp_path):
  full = _bn_run(tmp_path / "full", 24)
  _bn_run(tmp_path / "split", 12)   # stops after 12 steps, as an interrupted run would
  resumed = _bn_run(tmp_path / "split", 24)
  jax.tree.map(np.testing.assert_array_equal, resumed.params, full.params)
  jax.tree.map(np.testing.assert_array_equal, resumed.model_state, full.model_state)
  assert [r["loss"] for r in resumed.history] == [r["loss"] for r in full.history]
  # the running statistics really moved, and eval saw them
  assert not np.allclose(np.asarray(full.model_state["batch_stats"]["BatchNorm_0"]["var"]), 1.0)
  assert full.final_eval["accuracy"] > 0.6


def test_stream_without_size_needs_steps():
  with pytest.raises(ValueError, match="train.steps must be set"):
    train(lambda p, b, k, s: (jnp.sum(p["w"]), {}), {"w": jnp.zeros(2)}, _SeededStream(0),
          TrainConfig(epochs=1))
  with pytest.raises(TypeError, match="Stream"):
    train(lambda p, b, k, s: (jnp.sum(p["w"]), {}), {"w": jnp.zeros(2)}, iter([1, 2]), TrainConfig(steps=2))
