"""LeNet-5-style CNN as a pure ``init`` / ``apply`` pair (NHWC inputs, HWIO kernels)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from jaxhw.models.mlp import dense_init

Params = dict[str, dict[str, Array]]


def conv2d(x: Array, w: Array, b: Array, padding: str = "SAME") -> Array:
  """2-D convolution, stride 1, NHWC x HWIO."""
  y = jax.lax.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return y + b


def max_pool(x: Array, size: int = 2) -> Array:
  """Non-overlapping ``size`` x ``size`` max pooling."""
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, size, size, 1), (1, size, size, 1), "VALID")


def conv_init(key: PRNGKeyArray, k: int, c_in: int, c_out: int, dtype=jnp.float32) -> dict[str, Array]:
  fan_in = k * k * c_in
  w = jax.random.normal(key, (k, k, c_in, c_out), dtype) * jnp.sqrt(1.0 / fan_in).astype(dtype)
  return {"w": w, "b": jnp.zeros((c_out,), dtype)}


def lenet_init(key: PRNGKeyArray, num_classes: int = 10, in_channels: int = 1, image_size: int = 28,
               dtype=jnp.float32) -> Params:
  """Initialises LeNet-5: conv5x5-6 (SAME), pool, conv5x5-16 (VALID), pool, 120-84-classes.

  Args:
    key: PRNG key.
    num_classes: output classes.
    in_channels: input channels.
    image_size: input height = width (28 for MNIST, 32 for CIFAR).

  Returns:
    ``{"conv0", "conv1", "dense0", "dense1", "dense2"}``, each ``{"w", "b"}``.

  References:
    LeCun et al., *Gradient-based learning applied to document recognition*, 1998.
  """
  k = jax.random.split(key, 5)
  side = ((image_size // 2) - 4) // 2
  return {
      "conv0": conv_init(k[0], 5, in_channels, 6, dtype),
      "conv1": conv_init(k[1], 5, 6, 16, dtype),
      "dense0": dense_init(k[2], side * side * 16, 120, dtype),
      "dense1": dense_init(k[3], 120, 84, dtype),
      "dense2": dense_init(k[4], 84, num_classes, dtype),
  }


def lenet_apply(params: Params, x: Float[Array, "batch h w c"]) -> Float[Array, "batch classes"]:
  """Applies LeNet-5 with ReLU activations; returns logits."""
  h = max_pool(jax.nn.relu(conv2d(x, params["conv0"]["w"], params["conv0"]["b"], "SAME")))
  h = max_pool(jax.nn.relu(conv2d(h, params["conv1"]["w"], params["conv1"]["b"], "VALID")))
  h = h.reshape(h.shape[0], -1)
  h = jax.nn.relu(h @ params["dense0"]["w"] + params["dense0"]["b"])
  h = jax.nn.relu(h @ params["dense1"]["w"] + params["dense1"]["b"])
  return h @ params["dense2"]["w"] + params["dense2"]["b"]
