"""Multi-layer perceptron as a pure ``init`` / ``apply`` pair on a plain-dict pytree."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

Params = dict[str, dict[str, Array]]


def dense_init(key: PRNGKeyArray, fan_in: int, fan_out: int, dtype=jnp.float32) -> dict[str, Array]:
  """LeCun-normal weights ``[fan_in, fan_out]`` and zero biases."""
  w = jax.random.normal(key, (fan_in, fan_out), dtype) * jnp.sqrt(1.0 / fan_in).astype(dtype)
  return {"w": w, "b": jnp.zeros((fan_out,), dtype)}


def mlp_init(key: PRNGKeyArray, sizes: Sequence[int], dtype=jnp.float32) -> Params:
  """Initialises an MLP.

  Args:
    key: PRNG key.
    sizes: layer widths including input and output, e.g. ``(784, 32, 10)``.
    dtype: parameter dtype.

  Returns:
    ``{"dense0": {"w", "b"}, "dense1": ...}``.
  """
  if len(sizes) < 2 or any(s < 1 for s in sizes):
    raise ValueError(f"sizes must list at least two positive widths, got {tuple(sizes)}.")
  keys = jax.random.split(key, len(sizes) - 1)
  return {f"dense{i}": dense_init(k, a, b, dtype) for i, (k, a, b) in enumerate(zip(keys, sizes[:-1], sizes[1:]))}


def mlp_apply(params: Params, x: Float[Array, "batch ..."],
              activation: Callable[[Array], Array] = jax.nn.relu) -> Float[Array, "batch out"]:
  """Applies the MLP: flattens ``x``, then dense layers with `activation` between them (none after the last).

  Returns:
    Logits ``[batch, out]``.
  """
  h = x.reshape(x.shape[0], -1)
  n = len(params)
  for i in range(n):
    layer = params[f"dense{i}"]
    h = h @ layer["w"] + layer["b"]
    if i < n - 1:
      h = activation(h)
  return h
