"""jaxhw.parallel: data-parallel steps equal single-device ones, resume across device counts, bad input, the large-
batch options, and the cluster cost model's closed forms (oracles independent of the code under test)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import lax
from jax.sharding import PartitionSpec as P

from jaxhw.config import ConfigError
from jaxhw.data import synthetic_classification
from jaxhw.metrics import cross_entropy
from jaxhw.models import mlp_apply, mlp_init
from jaxhw.parallel import ParallelConfig, cost, data_mesh, shard_batch, use_parallel
from jaxhw.parallel.launch import check_port_free, check_process_count, max_local_processes
from jaxhw.studies import split_parallel
from jaxhw.train import TrainConfig, make_optimizer, peak_lr, train

RTOL, ATOL = 1e-5, 1e-6


def _problem(n=64):
  x, y = synthetic_classification(0, n, (16,), 4)
  params = mlp_init(jax.random.key(1), (16, 32, 4))

  def loss_fn(params, batch, key, step):
    return cross_entropy(mlp_apply(params, batch[0]), batch[1]), {}

  return loss_fn, params, (x, y)


def _loss(params, x, y):
  return cross_entropy(mlp_apply(params, x), y)


def _close(a, b, rtol=RTOL, atol=ATOL):
  jax.tree.map(lambda u, v: np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=rtol, atol=atol), a, b)


def test_gspmd_gradient_equals_single_device():
  _, params, (x, y) = _problem()
  mesh = data_mesh(2)
  xs, ys = shard_batch((x, y), mesh)
  assert xs.sharding.spec == P("data")
  ref = jax.grad(_loss)(params, jnp.asarray(x), jnp.asarray(y))
  got = jax.jit(jax.grad(_loss))(params, xs, ys)
  _close(got, ref)


def test_shard_map_patterns_correct_and_wrong():
  _, params, (x, y) = _problem()
  mesh = data_mesh(2)
  xs, ys = shard_batch((x, y), mesh)
  ref = jax.grad(_loss)(params, jnp.asarray(x), jnp.asarray(y))
  spec = dict(mesh=mesh, in_specs=(P(), P("data"), P("data")), out_specs=P())

  def right(p, xb, yb):  # (a): the gradient of pmean(local mean loss)
    return jax.grad(lambda q: lax.pmean(_loss(q, xb, yb), "data"))(p)

  def wrong(p, xb, yb):  # grad of the local loss is already psummed (invariant params); pmean of it is a no-op
    return lax.pmean(jax.grad(_loss)(p, xb, yb), "data")

  _close(jax.jit(jax.shard_map(right, **spec))(params, xs, ys), ref)
  bad = jax.jit(jax.shard_map(wrong, **spec))(params, xs, ys)
  ratio = float(optax.tree.norm(bad) / optax.tree.norm(ref))
  assert ratio == pytest.approx(2.0, rel=1e-4)


@pytest.mark.parametrize("variant", ["gspmd", "shard_map"])
def test_train_data_parallel_equals_single_device(variant):
  loss_fn, params, data = _problem(256)
  config = TrainConfig(optimizer="momentum", lr=0.1, batch_size=32, steps=6, log_every=1)
  ref = train(loss_fn, params, data, config)
  got = train(loss_fn, params, data, config, parallel=ParallelConfig(data=2, variant=variant))
  np.testing.assert_allclose([r["loss"] for r in got.history], [r["loss"] for r in ref.history], rtol=RTOL)
  _close(got.params, ref.params)
  with use_parallel(ParallelConfig(data=2)):  # the ambient setting (how --set parallel.data reaches studies)
    amb = train(loss_fn, params, data, config)
  _close(amb.params, got.params)


def test_sync_sgd_on_p_workers_equals_large_batch_sgd():
  _, params, (x, y) = _problem(64)
  lr, p = 0.5, 4
  # p workers, each a batch of 16: plain Python loop, averaged gradients, one SGD update.
  grads = [jax.grad(_loss)(params, jnp.asarray(x[i * 16:(i + 1) * 16]), jnp.asarray(y[i * 16:(i + 1) * 16]))
           for i in range(p)]
  workers = jax.tree.map(lambda w, *g: w - lr * sum(np.asarray(v) for v in g) / p, params, *grads)
  # One worker on the concatenated batch of 64, through the trainer on 2 devices.
  config = TrainConfig(optimizer="sgd", lr=lr, batch_size=64, steps=1)
  stream = _Fixed((x, y))
  got = train(lambda q, b, k, s: (_loss(q, b[0], b[1]), {}), params, stream, config,
              parallel=ParallelConfig(data=2))
  _close(got.params, workers)


class _Fixed:
  """A stream that yields one fixed batch."""

  def __init__(self, batch):
    self.batch = batch

  def __next__(self):
    return self.batch

  def get_state(self):
    return {}

  def set_state(self, state):
    pass


@pytest.mark.parametrize("first,second", [(2, 1), (1, 2)])
def test_sharded_checkpoint_resume_on_another_device_count(tmp_path, first, second):
  loss_fn, params, data = _problem(256)
  config = TrainConfig(optimizer="adam", lr=1e-2, batch_size=32, steps=8, log_every=1)
  full = train(loss_fn, params, data, config, parallel=ParallelConfig(data=2))
  half = TrainConfig(optimizer="adam", lr=1e-2, batch_size=32, steps=4, log_every=1)
  fp = {"run": "resume-test"}  # the identity of the run, without the step count
  train(loss_fn, params, data, half, tmp_path, fingerprint=fp, parallel=ParallelConfig(data=first))
  resumed = train(loss_fn, params, data, config, tmp_path, fingerprint=fp, parallel=ParallelConfig(data=second))
  later = [r["loss"] for r in resumed.history if r["step"] > 4]
  np.testing.assert_allclose(later, [r["loss"] for r in full.history[4:]], rtol=RTOL)
  _close(resumed.params, full.params)


def test_bad_input_is_a_clear_error():
  loss_fn, params, data = _problem(64)
  with pytest.raises(ValueError, match="not divisible by parallel.data=2"):
    train(loss_fn, params, data, TrainConfig(batch_size=15, steps=1), parallel=ParallelConfig(data=2))
  with pytest.raises(ValueError, match="needs 64 devices"):
    train(loss_fn, params, data, TrainConfig(batch_size=16, steps=1), parallel=ParallelConfig(data=64))
  with pytest.raises(ValueError, match="parallel.variant"):
    ParallelConfig(variant="pmap")
  with pytest.raises(ValueError, match="cannot run on this machine"):
    check_process_count(max_local_processes() + 1)
  import socket

  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    s.listen()
    with pytest.raises(ValueError, match="is in use"):
      check_port_free(s.getsockname()[1])


def test_parallel_overrides_for_any_study():
  par, rest = split_parallel({"parallel.data": "2", "train.lr": "0.1"})
  assert par == ParallelConfig(data=2) and rest == {"train.lr": "0.1"}
  with pytest.raises(ConfigError, match="parallel.data, parallel.variant"):
    split_parallel({"parallel.devices": "2"})
  from jaxhw.studies import make_config

  with pytest.raises(ConfigError, match="parallel.data"):  # an unknown study key lists the parallel keys too
    make_config("mnist_baseline", "smoke", {"train.nope": "1"})


def test_large_batch_recipe_options():
  assert peak_lr(TrainConfig(lr=0.1, batch_size=1024, lr_scaling="linear", base_batch_size=256)) == pytest.approx(0.4)
  assert peak_lr(TrainConfig(lr=0.1, batch_size=1024)) == pytest.approx(0.1)
  _, params, _ = _problem()
  for name in ("lars", "lamb"):
    tx = make_optimizer(TrainConfig(optimizer=name, weight_decay=1e-4, schedule="warmup_constant",
                                    warmup_steps=3), 10)
    updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), tx.init(params), params)
    assert all(np.isfinite(np.asarray(u)).all() for u in jax.tree.leaves(updates))
  from jaxhw.train import make_schedule

  s = make_schedule(TrainConfig(lr=0.4, schedule="warmup_constant", warmup_steps=4), 100)
  assert [float(s(i)) for i in (0, 2, 4, 50)] == pytest.approx([0.0, 0.2, 0.4, 0.4])
  with pytest.raises(ValueError, match="lr_scaling"):
    TrainConfig(lr_scaling="sqrt")


# --- cost model ------------------------------------------------------------------------------------------------------


def test_ring_allreduce_monotone_and_limit():
  b, a = 110e6, 5e-4
  ts = [cost.ring_allreduce_time(1e8, p, b, a) for p in range(1, 200)]
  assert ts[0] == 0 and all(u < v for u, v in zip(ts, ts[1:]))
  sizes = [cost.ring_allreduce_time(s, 8, b, a) for s in (1e3, 1e5, 1e7, 1e9)]
  assert all(u < v for u, v in zip(sizes, sizes[1:]))
  assert cost.ring_allreduce_time(1e8, 10**6, b, 0.0) == pytest.approx(2e8 / b, rel=1e-5)
  ps = [cost.parameter_server_time(1e8, p, b, b, a) for p in (10, 20, 30)]  # a single server grows linearly in p
  assert ps[2] - ps[1] == pytest.approx(ps[1] - ps[0]) and ps[1] > ps[0]
  assert cost.parameter_server_time(cost.RESNET50.grad_bytes, 138, b, b, a) == pytest.approx(256, rel=0.01)


def test_wifi_saturates_without_contention_and_peaks_with_it():
  model, dev, batch = cost.MOBILENET_V1, cost.GALAXY_S10, cost.BATCH_WIFI
  cell0 = cost.WifiSpec("c", 40e6, 0.0, 0.0, 2, "test")
  x = cost.scaling(range(1, 400), model, dev, "wifi", batch, cell=cell0)["throughput"]
  assert np.all(np.diff(x) >= -1e-9) and x.max() <= batch * cell0.goodput / (2 * model.grad_bytes) + 1e-9
  cell = cost.WifiSpec("c", 40e6, 0.0, 0.03, 2, "test")
  tc = cost.compute_time(batch, model, dev)
  p_half = tc * cell.goodput / (2 * model.grad_bytes)  # the closed forms, written out here
  x = cost.scaling(range(1, 400), model, dev, "wifi", batch, cell=cell)["throughput"]
  assert int(np.argmax(x)) + 1 == pytest.approx(math.sqrt(p_half / 0.03), abs=1.5)
  assert cost.wifi_peak_devices(tc, model.grad_bytes, cell) == pytest.approx(math.sqrt(p_half / 0.03))


def test_default_presets_land_near_the_paper():
  r = cost.scaling([138], cost.RESNET50, cost.GALAXY_S10, "ring", cost.BATCH_ETHERNET)
  assert 0.85 <= r["throughput"][0] / 220 <= 0.95
  assert 20 <= cost.wifi_ceiling(cost.MOBILENET_V1, cost.GALAXY_S10, cost.BATCH_WIFI, cost.WIFI5) <= 40


def test_calibration_fitters_recover_synthetic_constants():
  rng = np.random.default_rng(0)
  sizes = np.repeat([2**14, 2**18, 2**20, 2**22], 3)
  devs = np.tile([2, 4, 8], 4)
  times = devs * (25e-6 + sizes / 19e9) * (1 + 1e-3 * rng.standard_normal(len(sizes)))
  a, bw = cost.fit_host_allreduce(sizes, devs, times)
  assert a == pytest.approx(25e-6, rel=0.05) and bw == pytest.approx(19e9, rel=0.02)
  t0, r = cost.fit_compute([1e6, 2e6, 4e6], [1e-4 + f / 5e9 for f in (1e6, 2e6, 4e6)])
  assert t0 == pytest.approx(1e-4) and r == pytest.approx(5e9)


def test_launch_fit_recovers_a_per_step_cost_and_predicts_by_hand():
  # T(p) = L + p (t0 + c_p) + A_p with L = 3e-4, t0 = 1e-4: the single-device intercept is L + t0 = 4e-4.
  L, t0 = 3e-4, 1e-4
  p = np.array([2, 4, 8])
  c = np.array([5e-4, 2.5e-4, 1.25e-4])
  a = np.array([1e-4, 2e-4, 4e-4])
  times = L + p * (t0 + c) + a
  assert cost.fit_launch(p, times, c, a, L + t0) == pytest.approx(L)
  assert cost.fit_launch(p, p * (L + t0 + c) + a, c, a, L + t0) == pytest.approx(0.0, abs=1e-12)  # spec form
  assert cost.fit_launch(p, times + 1.0, c, a, L + t0) == 0.0  # clipped at 0 (a negative launch cost)
  got = cost.host_step_time(4, 2.5e-4 * 5e9, 19e9 * 1e-4, t0=t0, flops_rate=5e9, latency=0.0, bandwidth=19e9,
                            launch=L)
  assert got == pytest.approx(L + 4 * (t0 + 2.5e-4) + 4 * 1e-4)
