"""The SNN-conversion CNN as a Flax module: logits against an independent jax.lax / numpy forward, batch norm in
the batch_stats collection, exact population statistics, and the import rules of models/ and snn/."""

import ast
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from jaxhw import layers as L
from jaxhw.models.snn_cnn import MNIST_CNN, SequentialCNN, bn_population_stats, vgg16_layers

NET = (L.conv(3, 3, "SAME"), L.batch_norm(), L.relu(), L.max_pool(2),
       L.conv(5, 2, "VALID"), L.batch_norm(), L.relu(), L.avg_pool(1), L.flatten(), L.dense(4))


def _conv(h, w, padding):
  return jax.lax.conv_general_dilated(h, w, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _reference(p, bs, x, *, batch_stats_from_batch=False, eps=1e-5):
  """NET written by hand; BN from `bs` or (train mode) from the batch; returns logits and both BN inputs."""
  def bn(h, name):
    if batch_stats_from_batch:
      mean, var = h.mean((0, 1, 2)), h.var((0, 1, 2))
    else:
      mean, var = bs[name]["mean"], bs[name]["var"]
    return (h - mean) / np.sqrt(var + eps) * p[name]["scale"] + p[name]["bias"]

  z0 = _conv(x, p["Conv_0"]["kernel"], "SAME") + p["Conv_0"]["bias"]
  h = np.maximum(bn(np.asarray(z0), "BatchNorm_0"), 0.0)
  h = h.reshape(h.shape[0], h.shape[1] // 2, 2, h.shape[2] // 2, 2, h.shape[3]).max((2, 4))
  z1 = np.asarray(_conv(jnp.asarray(h, jnp.float32), p["Conv_1"]["kernel"], "VALID") + p["Conv_1"]["bias"])
  h = np.maximum(bn(z1, "BatchNorm_1"), 0.0)
  logits = h.reshape(h.shape[0], -1) @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"]
  return logits, np.asarray(z0), z1


def _setup(n=32):
  model = SequentialCNN(layers=NET)
  x = np.random.default_rng(0).uniform(size=(n, 8, 8, 2)).astype(np.float32)
  variables = model.init(jax.random.key(0), jnp.asarray(x[:1]))
  rng = np.random.default_rng(1)
  variables = jax.tree.map(lambda a: jnp.asarray(np.asarray(a) + rng.uniform(0.05, 0.3, a.shape), jnp.float32),
                           variables)
  return model, variables, x


def test_param_paths_are_the_flax_names():
  model, variables, x = _setup()
  assert set(variables["params"]) == {"Conv_0", "Conv_1", "BatchNorm_0", "BatchNorm_1", "Dense_0"}
  assert set(variables["batch_stats"]) == {"BatchNorm_0", "BatchNorm_1"}
  assert L.param_paths(NET) == (("Conv_0",), ("BatchNorm_0",), None, None, ("Conv_1",), ("BatchNorm_1",), None,
                                None, None, ("Dense_0",))
  assert variables["params"]["Conv_0"]["kernel"].shape == (3, 3, 2, 3)


def test_eval_logits_equal_an_independent_forward():
  model, variables, x = _setup()
  got = jax.jit(lambda v, xb: model.apply(v, xb))(variables, jnp.asarray(x))
  p = jax.tree.map(np.asarray, variables["params"])
  bs = jax.tree.map(np.asarray, variables["batch_stats"])
  want, _, _ = _reference(p, bs, x)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4)


def test_train_mode_uses_batch_statistics_and_updates_running_averages():
  model, variables, x = _setup()
  got, state = model.apply(variables, jnp.asarray(x), train=True, mutable=["batch_stats"])
  p = jax.tree.map(np.asarray, variables["params"])
  want, z0, _ = _reference(p, None, x, batch_stats_from_batch=True)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4)
  old = np.asarray(variables["batch_stats"]["BatchNorm_0"]["mean"])
  np.testing.assert_allclose(np.asarray(state["batch_stats"]["BatchNorm_0"]["mean"]),
                             0.9 * old + 0.1 * z0.mean((0, 1, 2)), rtol=1e-5, atol=1e-6)


def test_dropout_needs_train_and_a_key():
  model = SequentialCNN(layers=(L.flatten(), L.dropout(0.5), L.dense(3)))
  x = jnp.ones((4, 2, 2, 1))
  v = model.init(jax.random.key(0), x)
  np.testing.assert_array_equal(np.asarray(model.apply(v, x)), np.asarray(model.apply(v, x)))
  a = model.apply(v, x, train=True, rngs={"dropout": jax.random.key(1)})
  b = model.apply(v, x, train=True, rngs={"dropout": jax.random.key(2)})
  assert not np.allclose(np.asarray(a), np.asarray(b))


def test_population_stats_are_exact():
  model, variables, x = _setup(n=40)
  stats = bn_population_stats(model, variables, x, batch_size=16)
  p = jax.tree.map(np.asarray, variables["params"])
  # BatchNorm_0 over its inputs; BatchNorm_1 over its inputs with BatchNorm_0 normalised by its own population.
  _, z0, _ = _reference(p, jax.tree.map(np.asarray, variables["batch_stats"]), x)
  bs0 = {"mean": z0.astype(np.float64).mean((0, 1, 2)), "var": z0.astype(np.float64).var((0, 1, 2))}
  ref_bs = {"BatchNorm_0": bs0, "BatchNorm_1": {"mean": np.zeros(5), "var": np.ones(5)}}
  _, _, z1 = _reference(p, ref_bs, x)
  np.testing.assert_allclose(np.asarray(stats["BatchNorm_0"]["mean"]), bs0["mean"], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(stats["BatchNorm_0"]["var"]), bs0["var"], rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(np.asarray(stats["BatchNorm_1"]["mean"]), z1.mean((0, 1, 2)), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(np.asarray(stats["BatchNorm_1"]["var"]), z1.var((0, 1, 2)), rtol=1e-4, atol=1e-5)


def test_presets_build():
  assert sum(s.kind == "conv" for s in MNIST_CNN) == 2 and MNIST_CNN[-1] == L.dense(10)
  vgg = vgg16_layers(100)
  assert sum(s.kind == "conv" for s in vgg) == 13 and sum(s.kind == "dense" for s in vgg) == 3
  assert vgg[-1] == L.dense(100)
  shape = jax.eval_shape(lambda: SequentialCNN(layers=MNIST_CNN).init(jax.random.key(0), jnp.ones((1, 28, 28, 1))))
  assert shape["params"]["Dense_0"]["kernel"].shape == (4 * 4 * 64, 10)


def _imports(path):
  tree = ast.parse(pathlib.Path(path).read_text())
  names = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and node.module:
      names.add(node.module)
      names.update(f"{node.module}.{a.name}" for a in node.names)
    elif isinstance(node, ast.Import):
      names.update(a.name for a in node.names)
  return names


def test_import_rules():
  root = pathlib.Path(__file__).resolve().parents[1] / "jaxhw"
  hardware = ("jaxhw.snn", "jaxhw.crossbar", "jaxhw.faults", "jaxhw.hessian", "jaxhw.mann")
  for name in _imports(root / "models" / "snn_cnn.py") | _imports(root / "layers.py"):
    assert not name.startswith(hardware), name
  for f in (root / "snn").glob("*.py"):
    assert not any(n.startswith("jaxhw.models") for n in _imports(f)), f
  assert not any(n.startswith("jaxhw.models") for n in _imports(root / "layers.py"))


def test_population_stats_of_one_batch_equal_the_passes():
  """Data that fits in one batch takes the single-pass path; it agrees with the multi-batch passes."""
  model, variables, x = _setup(n=40)
  one = bn_population_stats(model, variables, x, batch_size=40)
  passes = bn_population_stats(model, variables, x, batch_size=16)
  assert jax.tree.structure(one) == jax.tree.structure(passes)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6),
               one, passes)
