import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhw.checkpoint import Checkpointer, CheckpointError
from jaxhw.data import synthetic_classification
from jaxhw.metrics import cross_entropy
from jaxhw.models import mlp_apply, mlp_init
from jaxhw.train import TrainConfig, train


def _state(seed=0, width=4):
  return {"params": mlp_init(jax.random.key(seed), (3, width, 2)), "step": jnp.asarray(seed, jnp.int32)}


def _largest_file(step_dir):
  return max((p for p in step_dir.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def test_roundtrip_and_keep_last_k(tmp_path):
  ck = Checkpointer(tmp_path, max_to_keep=2, fingerprint={"lr": 0.1})
  for s in (1, 2, 3):
    ck.save(s, _state(s), {"note": s})
  assert ck.all_steps() == [2, 3]
  state, extra, step = ck.restore(_state(0))
  assert step == 3 and extra == {"note": 3}
  jax.tree.map(np.testing.assert_array_equal, state, jax.device_get(_state(3)))


def test_truncated_checkpoint_is_refused_and_kept(tmp_path):
  ck = Checkpointer(tmp_path, max_to_keep=3)
  ck.save(1, _state(1))
  ck.save(2, _state(2))
  victim = _largest_file(tmp_path / "2")
  size = victim.stat().st_size
  with open(victim, "r+b") as f:
    f.truncate(size // 2)
  with pytest.raises(CheckpointError, match=r"Refusing checkpoint step 2.*left untouched.*\[1\]"):
    ck.restore(_state(0))
  assert victim.stat().st_size == size // 2  # not repaired, not deleted
  assert ck.all_steps() == [1, 2]
  state, _, step = ck.restore(_state(0), step=1)  # the previous good step is still loadable
  assert step == 1
  jax.tree.map(np.testing.assert_array_equal, state, jax.device_get(_state(1)))
  with pytest.raises(CheckpointError, match="never overwritten"):
    ck.save(2, _state(5))


def test_altered_bytes_are_caught_by_the_digest(tmp_path):
  ck = Checkpointer(tmp_path)
  ck.save(1, {"w": jnp.arange(4096, dtype=jnp.float32)})
  victim = _largest_file(tmp_path / "1")
  data = bytearray(victim.read_bytes())
  data[len(data) // 2] ^= 0xFF
  victim.write_bytes(bytes(data))
  with pytest.raises(CheckpointError, match="Refusing checkpoint step 1"):
    ck.restore({"w": jnp.zeros(4096, jnp.float32)})


def test_other_config_or_shape_is_refused(tmp_path):
  Checkpointer(tmp_path, fingerprint={"lr": 0.1}).save(1, _state(1))
  with pytest.raises(CheckpointError, match=r"different config:\n  lr: checkpoint has 0.1, this run has 0.2"):
    Checkpointer(tmp_path, fingerprint={"lr": 0.2}).restore(_state(0))
  with pytest.raises(CheckpointError, match=r"(?s)do not match this model.*Dense_0.*\(3, 4\).*\(3, 8\)"):
    Checkpointer(tmp_path, fingerprint={"lr": 0.1}).restore(_state(0, width=8))
  assert (tmp_path / "1").is_dir()


def test_trainer_refuses_a_mismatched_workdir_without_touching_it(tmp_path):
  x, y = synthetic_classification(0, 128, (3,), 2)

  def loss_fn(params, batch, key, step):
    return cross_entropy(mlp_apply(params, batch[0]), batch[1]), {}

  train(loss_fn, mlp_init(jax.random.key(0), (3, 4, 2)), (x, y), TrainConfig(steps=4, batch_size=32), tmp_path)
  before = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
  with pytest.raises(CheckpointError, match="different config"):
    train(loss_fn, mlp_init(jax.random.key(0), (3, 4, 2)), (x, y), TrainConfig(steps=8, batch_size=32), tmp_path)
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == before
