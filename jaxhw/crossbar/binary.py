"""Binary layers on a crossbar: latent-weight clipping and batch-norm folding into digital thresholds.

Latent real weights are binarised in the forward pass (`jaxhw.models.binary_net`) and clipped to [-1, 1] after
each optimizer update (`clip_latent`, selecting layers by params-tree path). At inference, batch norm folds into a
digital per-channel affine k y + c applied after the ADC (the read noise enters before it), and before a sign into
a threshold (`fold_bn`, `bn_sign_threshold`).

References:
  Kim, Kim, Kim, Kim, Panda, "Gradient-based Bit Encoding Optimization for Noise-Robust Binary Memristive
  Crossbar", DATE 2022, arXiv:2201.01479.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float

from jaxhw.effects import path_matches


def _sign(x):
  return jnp.where(x >= 0, 1.0, -1.0).astype(jnp.result_type(x, jnp.float32))


def clip_latent(layers: Iterable[str | Sequence[str]], bound: float = 1.0) -> optax.GradientTransformation:
  """Makes the update land the latent binary kernels inside [-bound, bound] (chain it after the optimizer).

  The update u is replaced by clip(p + u, -bound, bound) - p for the ``kernel`` leaves of the selected layers, so
  `optax.apply_updates` yields clipped latent weights.

  Args:
    layers: params-tree paths of the binary layers (``("Dense_0",)`` or ``"block/Conv_0"``), e.g.
      `jaxhw.models.binary_net.binary_layer_paths(model)`.
    bound: the clip bound.

  Returns:
    An optax GradientTransformation (needs params in `update`).
  """
  layers = tuple(layers)

  def pred(path) -> bool:
    names = tuple(str(getattr(p, "key", getattr(p, "name", p))) for p in path)
    return bool(names) and names[-1] == "kernel" and path_matches(names[:-1], layers)

  def init(params):
    del params
    return optax.EmptyState()

  def update(updates, state, params=None):
    if params is None:
      raise ValueError("clip_latent needs params in update(updates, state, params)")
    new = jax.tree_util.tree_map_with_path(
        lambda path, u, p: jnp.clip(p + u, -bound, bound) - p if pred(path) else u, updates, params)
    return new, state

  return optax.GradientTransformation(init, update)


def batch_norm(y: Array, gamma: Array, beta: Array, mean: Array, var: Array, eps: float = 1e-5) -> Array:
  """gamma (y - mean) / sqrt(var + eps) + beta, per channel (last axis)."""
  return gamma * (y - mean) * jax.lax.rsqrt(var + eps) + beta


def fold_bn(gamma: Float[Array, " c"], beta: Float[Array, " c"], mean: Float[Array, " c"],
            var: Float[Array, " c"], eps: float = 1e-5) -> tuple[Array, Array]:
  """Folds inference-mode BN into a digital affine k y + c applied after the ADC.

  Returns:
    (k, c) with BN(y) = k y + c.
  """
  k = gamma * jax.lax.rsqrt(var + eps)
  return k, beta - k * mean


def bn_sign_threshold(k: Array, c: Array) -> tuple[Array, Array]:
  """sign(k y + c) = s * sign(y + theta) with s = sign(k), theta = c / k (k != 0).

  Returns:
    (s, theta). Ties (y + theta = 0 with s = -1) are the only disagreement with ste_sign.
  """
  s = _sign(k)
  safe = jnp.where(k == 0, 1.0, k)
  theta = jnp.where(k == 0, jnp.where(c >= 0, jnp.inf, -jnp.inf), c / safe)
  return s, theta
