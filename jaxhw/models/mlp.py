"""Multi-layer perceptron as a Flax Linen module."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray


class MLP(nn.Module):
  """Flattens the input, then Dense layers with `activation` between them (none after the last).

  Params: ``{"Dense_0": {"kernel", "bias"}, ..., "Dense_{L-1}": ...}`` (LeCun-normal kernels, zero biases).

  Attributes:
    features: output widths of the layers, e.g. ``(32, 10)`` for a 784-32-10 MLP on MNIST.
    activation: hidden activation.

  References:
    Rumelhart, Hinton, Williams, "Learning representations by back-propagating errors", Nature, 1986.
  """

  features: Sequence[int]
  activation: Callable[[Array], Array] = nn.relu

  @nn.compact
  def __call__(self, x: Float[Array, "batch ..."]) -> Float[Array, "batch out"]:
    if not self.features or any(f < 1 for f in self.features):
      raise ValueError(f"MLP.features must list positive widths, got {tuple(self.features)}.")
    h = x.reshape(x.shape[0], -1)
    for i, width in enumerate(self.features):
      h = nn.Dense(width)(h)
      if i < len(self.features) - 1:
        h = self.activation(h)
    return h


def mlp(sizes: Sequence[int], activation: Callable[[Array], Array] = nn.relu) -> MLP:
  """The `MLP` for layer widths including the input, e.g. ``mlp((784, 32, 10))``."""
  if len(sizes) < 2 or any(s < 1 for s in sizes):
    raise ValueError(f"sizes must list at least two positive widths, got {tuple(sizes)}.")
  return MLP(tuple(sizes[1:]), activation)


def dense_paths(num_layers: int) -> list[str]:
  """The params paths of an `MLP`'s layers in forward order (``["Dense_0", ...]``)."""
  return [f"Dense_{i}" for i in range(num_layers)]


def mlp_init(key: PRNGKeyArray, sizes: Sequence[int]) -> dict:
  """``mlp(sizes).init(key, x)["params"]``: the params of an MLP with layer widths `sizes` (input first)."""
  return mlp(sizes).init(key, jnp.zeros((1, sizes[0]), jnp.float32))["params"]


def mlp_apply(params: dict, x: Float[Array, "batch ..."],
              activation: Callable[[Array], Array] = nn.relu) -> Float[Array, "batch out"]:
  """Logits of the `MLP` whose params are `params` (layer widths read from the biases), a pure function of
  ``(params, x)`` for code that takes an ``apply_fn(params, x)`` (sweeps, attacks, Hessian tools)."""
  features = tuple(params[p]["bias"].shape[0] for p in dense_paths(len(params)))
  return MLP(features, activation).apply({"params": params}, x)


__all__ = ["MLP", "mlp", "dense_paths", "mlp_init", "mlp_apply"]
