"""Sequential CNNs with batch norm, as a Flax Linen module, for ANN-to-SNN conversion.

`SequentialCNN(layers=...)` builds ``nn.Conv``, ``nn.Dense``, ``nn.BatchNorm``, ``nn.Dropout`` and pooling from a
static tuple of `jaxhw.layers.LayerSpec`; it is used through its pure ``init(key, x)`` and
``apply(variables, x, train=..., mutable=["batch_stats"], rngs={"dropout": key})``. Parameters are a plain nested
dict in ``variables["params"]`` keyed by the layers' paths (``Conv_0``, ``BatchNorm_0``, ``Dense_0``, see
`jaxhw.layers.param_paths`); batch-norm statistics live in ``variables["batch_stats"]``.

Batch norm uses the batch's statistics in training and keeps running averages; `bn_population_stats` replaces them
afterwards with the exact statistics over a data set (one pass per batch-norm layer).

References:
  Park et al., "T2FSNN: Deep Spiking Neural Networks with Time-to-first-spike Coding", DAC 2020,
  arXiv:2003.11741, and Park et al., "Fast and Efficient Information Transmission with Burst Spikes in Deep
  Spiking Neural Networks", DAC 2019, arXiv:1809.03142 (the MNIST CNN of their code, and VGG-16).
  Ioffe and Szegedy, "Batch Normalization", ICML 2015, arXiv:1502.03167.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from jaxhw import layers as L

__all__ = ["SequentialCNN", "MNIST_CNN", "vgg16_layers", "bn_population_stats"]

#: Official MNIST CNN of the T2FSNN / burst-coding code: conv5x5-12, BN, ReLU, pool, conv5x5-64, BN, ReLU, pool,
#: dropout 0.5, FC10.
MNIST_CNN: tuple[L.LayerSpec, ...] = (
    L.conv(12, 5), L.batch_norm(), L.relu(), L.max_pool(2),
    L.conv(64, 5), L.batch_norm(), L.relu(), L.max_pool(2),
    L.flatten(), L.dropout(0.5), L.dense(10),
)


def vgg16_layers(num_classes: int) -> tuple[L.LayerSpec, ...]:
  """VGG-16 with batch norm and dropout (3x3 SAME convs, 5 max-pools, FC 512-512-classes)."""
  out: list[L.LayerSpec] = []
  for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"):
    out += [L.max_pool(2)] if v == "M" else [L.conv(v, 3, "SAME"), L.batch_norm(), L.relu()]
  out.append(L.flatten())
  for _ in range(2):
    out += [L.dense(512), L.batch_norm(), L.relu(), L.dropout(0.5)]
  return tuple(out) + (L.dense(num_classes),)


_HE_NORMAL = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


class SequentialCNN(nn.Module):
  """A sequential network described by `layers` (see `jaxhw.layers`).

  Attributes:
    layers: the layer specs, in order.
    bn_momentum: momentum of the batch-norm running averages (training only).
  """

  layers: Sequence[L.LayerSpec]
  bn_momentum: float = 0.9

  @nn.compact
  def __call__(self, x: Float[Array, "batch ..."], train: bool = False) -> Float[Array, "batch out"]:
    """Runs the network.

    Args:
      x: NHWC input.
      train: batch statistics in batch norm (pass ``mutable=["batch_stats"]``) and dropout on (pass
        ``rngs={"dropout": key}``).

    Returns:
      The last layer's output (logits).
    """
    h = x
    for layer, path in zip(self.layers, L.param_paths(self.layers)):
      kind = layer.kind
      if kind == "conv":
        h = nn.Conv(layer.features, (layer.kernel, layer.kernel), padding=layer.padding, kernel_init=_HE_NORMAL,
                    name=path[-1])(h)
      elif kind == "dense":
        h = nn.Dense(layer.features, kernel_init=_HE_NORMAL, name=path[-1])(h.reshape(h.shape[0], -1))
      elif kind == "bn":
        h = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, epsilon=layer.eps,
                         name=path[-1])(h)
      elif kind == "relu":
        h = nn.relu(h)
      elif kind == "leaky_relu":
        h = nn.leaky_relu(h, layer.alpha)
      elif kind == "maxpool":
        h = nn.max_pool(h, (layer.window, layer.window), strides=(layer.window, layer.window))
      elif kind == "avgpool":
        h = nn.avg_pool(h, (layer.window, layer.window), strides=(layer.window, layer.window))
      elif kind == "flatten":
        h = h.reshape(h.shape[0], -1)
      elif kind == "dropout":
        h = nn.Dropout(layer.rate, deterministic=not train)(h)
    return h


def _bn_input_recorder(next_fun, args, kwargs, context):
  if isinstance(context.module, nn.BatchNorm) and context.method_name == "__call__":
    context.module.sow("bn_inputs", "x", args[0])
  return next_fun(*args, **kwargs)


def _one_batch_stats(model: nn.Module, variables: dict, stats: dict, x: np.ndarray, apply_kwargs: dict) -> dict:
  """`bn_population_stats` of data that fits in one batch: a single forward pass in which every batch-norm layer
  first sets its statistics to those of its own input (so the layers after it see the population-normalised
  values)."""

  def set_then_call(next_fun, args, kwargs, context):
    if isinstance(context.module, nn.BatchNorm) and context.method_name == "__call__":
      h = args[0].reshape(-1, args[0].shape[-1])
      mean = h.mean(0)
      context.module.put_variable("batch_stats", "mean", mean)
      context.module.put_variable("batch_stats", "var", jnp.square(h - mean).mean(0))
    return next_fun(*args, **kwargs)

  @jax.jit
  def run(variables, stats, xb):
    with nn.intercept_methods(set_then_call):
      _, state = model.apply({**variables, "batch_stats": stats}, xb, train=False, mutable=["batch_stats"],
                             **apply_kwargs)
    return state["batch_stats"]

  return run(variables, stats, jnp.asarray(x))


def bn_population_stats(model: nn.Module, variables: dict, x: np.ndarray, *, batch_size: int = 500,
                        **apply_kwargs: Any) -> dict:
  """Exact population mean and variance of every batch-norm layer's input over `x`.

  The input of a batch-norm layer depends on the statistics of the ones before it. When `x` fits in one batch,
  one forward pass does it: each batch-norm layer's statistics are taken from its input (float32, two-pass
  variance) and used at once. Otherwise the statistics are computed in passes over the batches: after pass ``k``
  the first ``k`` batch-norm layers of the forward pass are exact, and the loop stops when a pass changes nothing
  (at most one pass per batch-norm layer); sums are accumulated in float64 on the host.

  Args:
    model: a Linen module whose ``apply(variables, x, train=False, ...)`` runs batch norm from
      ``variables["batch_stats"]``.
    variables: its variables (``params`` and ``batch_stats``).
    x: data (e.g. the training images).
    batch_size: examples per forward pass.
    **apply_kwargs: extra keyword arguments of ``model.apply``.

  Returns:
    A ``batch_stats`` tree of the shape of ``variables["batch_stats"]``.
  """
  stats = variables.get("batch_stats", {})
  n_bn = len(jax.tree.leaves(stats)) // 2
  if n_bn == 0:
    return stats

  x = np.asarray(x)
  if len(x) <= batch_size:
    return _one_batch_stats(model, variables, stats, x, apply_kwargs)

  @jax.jit
  def bn_inputs(variables, stats, xb):
    with nn.intercept_methods(_bn_input_recorder):
      _, state = model.apply({**variables, "batch_stats": stats}, xb, train=False, mutable=["bn_inputs"],
                             **apply_kwargs)
    return state["bn_inputs"]

  for _ in range(n_bn):
    s1 = s2 = None
    count = None
    for start in range(0, len(x), batch_size):
      rec = bn_inputs(variables, stats, jnp.asarray(x[start:start + batch_size]))
      h = jax.tree.map(lambda a: np.asarray(a, np.float64).reshape(-1, a.shape[-1]), rec)
      b1 = jax.tree.map(lambda a: a.sum(0), h)
      b2 = jax.tree.map(lambda a: (a * a).sum(0), h)
      c = jax.tree.map(lambda a: a.shape[0], h)
      s1 = b1 if s1 is None else jax.tree.map(np.add, s1, b1)
      s2 = b2 if s2 is None else jax.tree.map(np.add, s2, b2)
      count = c if count is None else jax.tree.map(np.add, count, c)

    def finish(t1, t2, cnt):
      mean = t1 / cnt
      return {"mean": jnp.asarray(mean, jnp.float32),
              "var": jnp.asarray(np.maximum(t2 / cnt - mean * mean, 0.0), jnp.float32)}

    # The recorded tree is {path...: {"x": (value,)}}; map each BN's sums to {"mean", "var"}.
    is_rec = lambda t: isinstance(t, dict) and set(t) == {"x"}  # noqa: E731
    new = jax.tree.map(lambda a, b, c: finish(a["x"][0], b["x"][0], c["x"][0]), s1, s2, count, is_leaf=is_rec)
    same = jax.tree.structure(new) == jax.tree.structure(stats) and all(
        np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(stats)))
    stats = new
    if same:
      break
  return stats
