"""The binary net as a Flax module, and crossbar effects attached to Flax models from outside: read noise against
the same noise written into the forward pass by hand, per-pulse reads of programmed weights, keys, BN folding and
the Monte Carlo chip evaluator."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhw import crossbar, effects
from jaxhw.models.binary_net import BinaryCNN, BinaryMLP, binary_layer_paths

EPS = 1e-5


def _randomize_bn(variables, seed):
  """Random BN affine (negative scales included) and running statistics, so thresholds are non-trivial."""
  rng = np.random.default_rng(seed)
  params = jax.tree_util.tree_map_with_path(
      lambda p, a: jnp.asarray(rng.normal(size=a.shape), jnp.float32) if "BatchNorm" in str(p[0]) else a,
      variables["params"])
  stats = jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape) ** 2 * 50 + 1, jnp.float32),
                       variables["batch_stats"])
  stats = jax.tree_util.tree_map_with_path(
      lambda p, a: a - 25 if p[-1].key == "mean" else a, stats)
  return {"params": params, "batch_stats": stats}


def _np_sign(x):
  return np.where(x >= 0, 1.0, -1.0)


def _np_bn(y, params, stats, batch):
  if batch:
    axes = tuple(range(y.ndim - 1))
    mean, var = y.mean(axes), y.var(axes)
  else:
    mean, var = np.asarray(stats["mean"], np.float64), np.asarray(stats["var"], np.float64)
  return (y - mean) / np.sqrt(var + EPS) * np.asarray(params["scale"]) + np.asarray(params["bias"])


@pytest.fixture(scope="module")
def mlp():
  model = BinaryMLP(features=(48, 24), num_classes=10)
  x = np.random.default_rng(0).random((64, 100), np.float32)
  variables = _randomize_bn(jax.jit(model.init)(jax.random.key(0), x[:1]), 1)
  return model, variables, x


# -------------------------------------------------------------------------------------------- the binary net

@pytest.mark.parametrize("train", [False, True])
def test_binary_mlp_logits_equal_numpy_forward(mlp, train):
  model, variables, x = mlp
  p, s = variables["params"], variables["batch_stats"]
  h = _np_sign(x.astype(np.float64) - 0.5)
  for i in range(2):
    y = h @ _np_sign(np.asarray(p[f"Dense_{i}"]["kernel"], np.float64))
    h = _np_sign(_np_bn(y, p[f"BatchNorm_{i}"], s[f"BatchNorm_{i}"], train))
  ref = h @ np.asarray(p["Dense_2"]["kernel"], np.float64) + np.asarray(p["Dense_2"]["bias"])
  if train:
    out, new = jax.jit(lambda v, xx: model.apply(v, xx, train=True, mutable=["batch_stats"]))(variables, x)
    assert set(new["batch_stats"]) == {"BatchNorm_0", "BatchNorm_1"}
  else:
    out = jax.jit(model.apply)(variables, x)
  np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-4, atol=1e-4)
  assert binary_layer_paths(model) == (("Dense_0",), ("Dense_1",))


def test_binary_cnn_logits_equal_lax_forward():
  model = BinaryCNN(channels=(4,), dense=(8,), num_classes=3)
  x = np.random.default_rng(2).random((5, 8, 8, 2), np.float32)
  variables = _randomize_bn(jax.jit(model.init)(jax.random.key(1), x[:1]), 3)
  p, s = variables["params"], variables["batch_stats"]

  def conv(h, w):
    return jax.lax.conv_general_dilated(h, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))

  h = jnp.asarray(x)
  h = jnp.asarray(_np_sign(_np_bn(np.asarray(conv(h, p["Conv_0"]["kernel"])), p["BatchNorm_0"],
                                  s["BatchNorm_0"], False)), jnp.float32)          # digital first conv
  y = np.asarray(conv(h, jnp.asarray(_np_sign(np.asarray(p["Conv_1"]["kernel"])), jnp.float32)))
  h = _np_sign(_np_bn(y, p["BatchNorm_1"], s["BatchNorm_1"], False))
  h = h.reshape(5, 4, 2, 4, 2, 4).max(axis=(2, 4)).reshape(5, -1)                  # 2x2 max-pool, flatten
  h = _np_sign(_np_bn(h @ _np_sign(np.asarray(p["Dense_0"]["kernel"])), p["BatchNorm_2"], s["BatchNorm_2"], False))
  ref = h @ np.asarray(p["Dense_1"]["kernel"]) + np.asarray(p["Dense_1"]["bias"])
  np.testing.assert_allclose(np.asarray(jax.jit(model.apply)(variables, x)), ref, rtol=1e-4, atol=1e-4)
  assert binary_layer_paths(model) == (("Conv_1",), ("Dense_0",))


# ----------------------------------------------------------------------- read noise: from outside == by hand

class _PlainMLP(nn.Module):
  @nn.compact
  def __call__(self, x):
    h = nn.relu(nn.Dense(200)(x))
    h = nn.relu(nn.Dense(16)(h))
    return nn.Dense(3)(h)


class _NoisyDense(nn.Module):
  """A Dense layer with crossbar read noise (fast mode) written into its forward pass."""
  features: int
  std: float

  @nn.compact
  def __call__(self, x):
    k = self.param("kernel", nn.initializers.lecun_normal(), (x.shape[-1], self.features))
    b = self.param("bias", nn.initializers.zeros, (self.features,))
    y = x @ k + b
    xi = jax.random.normal(self.make_rng("noise"), (y.size,)).reshape(y.shape)
    return y + self.std * xi


class _HandNoisyMLP(nn.Module):
  stds: tuple

  @nn.compact
  def __call__(self, x):
    h = nn.relu(_NoisyDense(200, self.stds[0], name="Dense_0")(x))
    h = nn.relu(_NoisyDense(16, self.stds[1], name="Dense_1")(h))
    return nn.Dense(3, name="Dense_2")(h)


def test_read_noise_from_outside_equals_hand_written_noise():
  """crossbar.read_noise attached to a plain Flax MLP gives exactly the noise written into the forward pass by
  hand (same key, std = sigma sqrt(n_r / T)), under jit and vmap; the head stays exact."""
  model = _PlainMLP()
  x = np.random.default_rng(0).normal(size=(6, 300)).astype(np.float32)
  variables = model.init(jax.random.key(0), x)
  sigma, pulses = 0.7, {"Dense_0": 4, ("Dense_1",): 2}
  stds = (sigma * math.sqrt(math.ceil(300 / 128) / 4), sigma * math.sqrt(math.ceil(200 / 128) / 2))
  noisy = jax.jit(effects.attach(model.apply, crossbar.read_noise(sigma, pulses)))
  hand = jax.jit(_HandNoisyMLP(stds).apply)
  keys = jax.random.split(jax.random.key(7), 3)
  for k in keys:
    np.testing.assert_allclose(np.asarray(noisy(variables, x, rngs={"noise": k})),
                               np.asarray(hand(variables, x, rngs={"noise": k})), rtol=1e-5, atol=1e-5)
  batched = jax.vmap(lambda k: noisy(variables, x, rngs={"noise": k}))(keys)
  np.testing.assert_allclose(np.asarray(batched[1]), np.asarray(hand(variables, x, rngs={"noise": keys[1]})),
                             rtol=1e-5, atol=1e-5)
  assert not np.allclose(np.asarray(batched[0]), np.asarray(model.apply(variables, x)))
  with pytest.raises(ValueError, match="pulses"):
    crossbar.read_noise(1.0, {"Dense_0": 0})
  with pytest.raises(ValueError, match="sigma"):
    crossbar.read_noise(-1.0, 2)


class _Twin(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Dense(64, use_bias=False, name="a")(x), nn.Dense(64, use_bias=False, name="b")(x)


def test_read_noise_variance_follows_one_over_T_and_layers_uncorrelated():
  """Var(noisy - exact) = sigma^2 n_r / T per output; two layers' noise is uncorrelated (one key each)."""
  model = _Twin()
  x = np.where(np.random.default_rng(1).random((2000, 300)) < 0.5, 1.0, -1.0).astype(np.float32)
  variables = model.init(jax.random.key(0), x[:1])
  effect = crossbar.read_noise(1.5, {"a": 4, "b": 1}, config=crossbar.CrossbarConfig(tile_rows=64))  # n_r = 5
  ya, yb = jax.jit(effects.attach(model.apply, effect))(variables, x, rngs={"noise": jax.random.key(3)})
  ea = np.asarray(ya, np.float64) - x @ np.asarray(variables["params"]["a"]["kernel"], np.float64)
  eb = np.asarray(yb, np.float64) - x @ np.asarray(variables["params"]["b"]["kernel"], np.float64)
  for e, t in ((ea, 4), (eb, 1)):
    assert abs(e.var() / (1.5**2 * 5 / t) - 1) < 4 * math.sqrt(2 / e.size), t
  assert abs(np.corrcoef(ea.ravel(), eb.ravel())[0, 1]) < 0.02


# ------------------------------------------------------------- programming, per-pulse reads, BN folding

def test_program_weights_and_per_pulse_reads_equal_the_model_without_noise(mlp):
  model, variables, x = mlp
  paths = binary_layer_paths(model)
  prog = crossbar.program_weights(crossbar.CrossbarConfig(), layers=paths)
  params, _ = prog.apply(variables["params"], prog.init(variables["params"]), jax.random.key(0))
  for p in paths:
    np.testing.assert_array_equal(np.asarray(params[p[0]]["kernel"]),
                                  _np_sign(np.asarray(variables["params"][p[0]]["kernel"])))
  assert params["Dense_2"] is variables["params"]["Dense_2"] or np.array_equal(
      np.asarray(params["Dense_2"]["kernel"]), np.asarray(variables["params"]["Dense_2"]["kernel"]))
  programmed = {**variables, "params": params}
  clean = model.apply(variables, x)
  for mode in ("per_pulse", "fast"):
    eff = crossbar.read_noise(0.0, {p: 3 for p in paths}, config=crossbar.CrossbarConfig(tile_rows=16), mode=mode,
                              sigma_p=0.0 if mode == "fast" else None)
    out = jax.jit(effects.attach(model.apply, eff))(programmed, x, rngs={"noise": jax.random.key(1)})
    np.testing.assert_allclose(np.asarray(out), np.asarray(clean), rtol=1e-5, atol=1e-5)
  # static device variation: per chip, deterministic, and read as is by a model that does not re-binarise
  varied = crossbar.program_weights(crossbar.CrossbarConfig(g_var=0.1), layers=paths)
  a, _ = varied.apply(variables["params"], (), jax.random.key(2))
  b, _ = varied.apply(variables["params"], (), jax.random.key(2))
  np.testing.assert_array_equal(np.asarray(a["Dense_0"]["kernel"]), np.asarray(b["Dense_0"]["kernel"]))
  assert not np.array_equal(np.asarray(a["Dense_0"]["kernel"]), np.asarray(params["Dense_0"]["kernel"]))
  raw = model.clone(binarize_weights=False)
  assert not np.allclose(np.asarray(raw.apply({**variables, "params": a}, x)), np.asarray(clean))


def test_bn_folds_into_sign_thresholds(mlp):
  """sign(BN(y)) = s sign(y + theta) with (k, c) = fold_bn and (s, theta) = bn_sign_threshold (ties excluded)."""
  model, variables, x = mlp
  p, st = variables["params"]["BatchNorm_0"], variables["batch_stats"]["BatchNorm_0"]
  y = (_np_sign(x - 0.5) @ _np_sign(np.asarray(variables["params"]["Dense_0"]["kernel"]))).astype(np.float32)
  k, c = crossbar.fold_bn(p["scale"], p["bias"], st["mean"], st["var"])
  s, theta = crossbar.bn_sign_threshold(k, c)
  ref = _np_sign(_np_bn(y.astype(np.float64), p, st, False))
  folded = np.asarray(s) * _np_sign(y + np.asarray(theta))
  assert (folded == ref).mean() > 0.99


# ---------------------------------------------------------------------------------------- chip evaluator

def test_evaluate_chips_equals_explicit_loop_and_shares_draws(mlp):
  model, variables, x = mlp
  y = np.asarray(jnp.argmax(model.apply(variables, x), -1), np.int32)  # clean accuracy 1 by construction
  paths = binary_layer_paths(model)

  def factory(sigma, pulses):
    return crossbar.read_noise(sigma, dict(zip(paths, pulses)))

  key = jax.random.key(5)
  args = (jnp.float32(3.0), jnp.asarray([1.0, 2.0]))
  acc = crossbar.evaluate_chips(model.apply, variables, x, y, effect_factory=factory, chips=3, key=key,
                                effect_args=args, batch_size=40)
  noisy = jax.jit(effects.attach(model.apply, crossbar.read_noise(3.0, {paths[0]: 1, paths[1]: 2})))
  for c in range(3):  # explicit loop: chip c's read key, folded with the batch index
    read_key = jax.random.split(jax.random.fold_in(key, c))[1]
    correct = sum(int(jnp.sum(jnp.argmax(noisy(variables, x[i:i + 40], rngs={
        "noise": jax.random.fold_in(read_key, b)}), -1) == y[i:i + 40])) for b, i in enumerate(range(0, 64, 40)))
    assert acc[c] == correct / 64
  assert acc.shape == (3,) and np.all(acc < 1.0)
  again = crossbar.evaluate_chips(model.apply, variables, x, y, effect_factory=factory, chips=3, key=key,
                                  effect_args=args, batch_size=40)
  np.testing.assert_array_equal(acc, again)  # common random numbers
  clean = crossbar.evaluate_chips(model.apply, variables, x, y, effect_factory=factory, chips=2, key=key,
                                  effect_args=(jnp.float32(0.0), jnp.asarray([1.0, 1.0])))
  np.testing.assert_array_equal(clean, 1.0)
  with pytest.raises(ValueError, match="chips"):
    crossbar.evaluate_chips(model.apply, variables, x, y, effect_factory=factory, chips=0, key=key)


class _HandNoisyDense(nn.Module):
  """A Dense layer with analog read noise written into its own forward pass (same scope, same key draw)."""

  features: int
  sigma: float
  pulses: int

  @nn.compact
  def __call__(self, x):
    w = self.param("kernel", nn.initializers.lecun_normal(), (x.shape[-1], self.features))
    b = self.param("bias", nn.initializers.zeros, (self.features,))
    std = self.sigma * jnp.max(jnp.abs(w)) / jnp.sqrt(float(self.pulses))
    return x @ (w + std * jax.random.normal(self.make_rng("noise"), w.shape)) + b


def test_analog_read_noise_equals_the_noise_written_by_hand():
  model = nn.Dense(3)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 5)), jnp.float32)
  v = model.init(jax.random.key(0), x)
  key = jax.random.key(5)
  out = jax.jit(effects.attach(model.apply, crossbar.analog_read_noise(0.3, pulses=4)))(v, x, rngs={"noise": key})
  ref = _HandNoisyDense(3, 0.3, 4).apply(v, x, rngs={"noise": key})
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
  w, b = v["params"]["kernel"], v["params"]["bias"]
  zero = effects.attach(model.apply, crossbar.analog_read_noise(0.0))(v, x, rngs={"noise": key})
  np.testing.assert_allclose(zero, x @ w + b, rtol=1e-5, atol=1e-6)
  # statistics: on unit inputs the read weight is w + N(0, (sigma max|w| / sqrt(pulses))^2)
  draws = jax.vmap(lambda k: effects.attach(model.apply, crossbar.analog_read_noise(0.3, pulses=4))(
      v, jnp.eye(5), rngs={"noise": k}))(jax.random.split(jax.random.key(1), 4000))
  std = float(np.std(np.asarray(draws) - np.asarray(w + b)[None]))
  np.testing.assert_allclose(std, 0.3 * float(jnp.max(jnp.abs(w))) / 2, rtol=0.05)
  with pytest.raises(ValueError, match="sigma"):
    crossbar.analog_read_noise(-1.0)
