"""Each Flax model's logits against an independent forward written here with jax.lax / numpy on the same weights."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhw import models


def _conv(x, p, stride=1, padding="SAME", bias=True):
  pad = [(1, 1), (1, 1)] if padding == 1 else padding
  y = jax.lax.conv_general_dilated(x, p["kernel"], (stride, stride), pad, dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return y + p["bias"] if bias else y


def _pool(x):
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


def _bn(x, p, s, eps=1e-5):
  return (x - s["mean"]) / np.sqrt(s["var"] + eps) * p["scale"] + p["bias"]


def _random_stats(variables, seed):
  """Replaces the batch-norm statistics with random ones, so the inference path is really exercised."""
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map_with_path(
      lambda path, a: jnp.asarray(rng.uniform(0.5, 2.0, a.shape) if path[-1].key == "var" else rng.normal(size=a.shape),
                                  a.dtype), variables["batch_stats"])


def test_mlp_matches_numpy():
  x = np.random.default_rng(0).normal(size=(5, 4, 4, 1)).astype(np.float32)
  model = models.mlp((16, 7, 3))
  params = model.init(jax.random.key(0), x)["params"]
  h = np.maximum(x.reshape(5, -1) @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"], 0)
  ref = h @ params["Dense_1"]["kernel"] + params["Dense_1"]["bias"]
  np.testing.assert_allclose(model.apply({"params": params}, x), ref, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(models.mlp_apply(params, x), ref, rtol=1e-5, atol=1e-5)
  assert models.dense_paths(2) == list(params)
  with pytest.raises(ValueError, match="sizes"):
    models.mlp((16,))


def test_lenet_matches_lax():
  x = jnp.asarray(np.random.default_rng(1).uniform(size=(3, 28, 28, 1)), jnp.float32)
  model = models.LeNet5()
  p = model.init(jax.random.key(1), x)["params"]
  h = _pool(jax.nn.relu(_conv(x, p["Conv_0"])))
  h = _pool(jax.nn.relu(_conv(h, p["Conv_1"], padding="VALID"))).reshape(3, -1)
  h = jax.nn.relu(h @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
  h = jax.nn.relu(h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"])
  ref = h @ p["Dense_2"]["kernel"] + p["Dense_2"]["bias"]
  np.testing.assert_allclose(model.apply({"params": p}, x), ref, rtol=1e-4, atol=1e-5)


def test_resnet_matches_lax_and_trains_batch_stats():
  x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 8, 8, 3)), jnp.float32)
  model = models.ResNet(stage_sizes=(1, 1), width=4, num_classes=5)
  variables = model.init(jax.random.key(2), x)
  p, s = variables["params"], _random_stats(variables, 3)

  def block(h, p, s, stride):
    out = jax.nn.relu(_bn(_conv(h, p["Conv_0"], stride, 1, bias=False), p["BatchNorm_0"], s["BatchNorm_0"]))
    out = _bn(_conv(out, p["Conv_1"], 1, 1, bias=False), p["BatchNorm_1"], s["BatchNorm_1"])
    if "Conv_2" in p:
      h = _bn(_conv(h, p["Conv_2"], stride, "VALID", bias=False), p["BatchNorm_2"], s["BatchNorm_2"])
    return jax.nn.relu(out + h)

  h = jax.nn.relu(_bn(_conv(x, p["Conv_0"], 1, 1, bias=False), p["BatchNorm_0"], s["BatchNorm_0"]))
  h = block(h, p["BasicBlock_0"], s["BasicBlock_0"], 1)
  h = block(h, p["BasicBlock_1"], s["BasicBlock_1"], 2)
  ref = h.mean((1, 2)) @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"]
  np.testing.assert_allclose(model.apply({"params": p, "batch_stats": s}, x), ref, rtol=1e-4, atol=1e-4)
  _, new = model.apply({"params": p, "batch_stats": s}, x, train=True, mutable=["batch_stats"])
  assert not np.allclose(new["batch_stats"]["BatchNorm_0"]["mean"], s["BatchNorm_0"]["mean"])
  shapes = jax.eval_shape(models.resnet18().init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  assert sum(a.size for a in jax.tree.leaves(shapes["params"])) == 11_173_962  # ResNet-18 (CIFAR), no compute


def test_vgg_matches_lax_with_dropout_off_at_inference():
  x = jnp.asarray(np.random.default_rng(4).normal(size=(2, 8, 8, 3)), jnp.float32)
  model = models.VGG(plan=(4, "M", 6, "M"), num_classes=3, hidden=5)
  variables = model.init(jax.random.key(4), x)
  p, s = variables["params"], _random_stats(variables, 5)
  h = _pool(jax.nn.relu(_bn(_conv(x, p["Conv_0"], padding=1), p["BatchNorm_0"], s["BatchNorm_0"])))
  h = _pool(jax.nn.relu(_bn(_conv(h, p["Conv_1"], padding=1), p["BatchNorm_1"], s["BatchNorm_1"]))).reshape(2, -1)
  h = jax.nn.relu(h @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
  h = jax.nn.relu(h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"])
  ref = h @ p["Dense_2"]["kernel"] + p["Dense_2"]["bias"]
  np.testing.assert_allclose(model.apply({"params": p, "batch_stats": s}, x), ref, rtol=1e-4, atol=1e-4)
  train_out, _ = model.apply({"params": p, "batch_stats": s}, x, train=True, mutable=["batch_stats"],
                             rngs={"dropout": jax.random.key(0)})
  assert train_out.shape == ref.shape
