"""Flat random draws for the crossbar simulator.

Threefry draws of rank >= 3 compile slowly on XLA:CPU (seconds per shape), so every draw is taken
flat and reshaped. The generator is the key's: `jax.random.key(seed)` (threefry, default) or
`jax.random.key(seed, impl="rbg")` / "unsafe_rbg" chosen by the caller.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def normal(key, shape) -> jax.Array:
  """Standard normal float32 array of `shape`, drawn flat."""
  shape = tuple(int(s) for s in shape)
  return jax.random.normal(key, (math.prod(shape),), jnp.float32).reshape(shape)


def uniform(key, shape, minval: float = 0.0, maxval: float = 1.0) -> jax.Array:
  """Uniform float32 array of `shape` on [minval, maxval), drawn flat."""
  shape = tuple(int(s) for s in shape)
  return jax.random.uniform(key, (math.prod(shape),), jnp.float32, minval, maxval).reshape(shape)
