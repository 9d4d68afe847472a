"""Binary neural network pieces: sign with straight-through estimators, latent weights, BN folding.

`ste_sign` follows larq: forward +1 where x >= 0 else -1 (never `jnp.sign`, which gives 0 at
0); backward g 1[|x| <= 1], boundary included. Latent real weights are binarised in the
forward pass and clipped to [-1, 1] after each optimizer update (`clip_latent`).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float


def _sign(x):
  return jnp.where(x >= 0, 1.0, -1.0).astype(jnp.result_type(x, jnp.float32))


@jax.custom_vjp
def ste_sign(x: Array) -> Array:
  """Sign with the straight-through estimator (clipped identity), larq semantics.

  Forward: +1 where x >= 0, else -1. Backward: g * 1[|x| <= 1].

  References:
    GBO spec, section 4 ("ste_sign follows larq semantics [V]").
  """
  return _sign(x)


def _ste_fwd(x):
  return _sign(x), x


def _ste_bwd(x, g):
  return (g * (jnp.abs(x) <= 1).astype(g.dtype),)


ste_sign.defvjp(_ste_fwd, _ste_bwd)


def ste_sign_sg(x: Array) -> Array:
  """The stop-gradient form of `ste_sign`: x_c + stop_gradient(sign(x_c) - x_c), x_c = clip(x, -1, 1).

  Same forward and gradient as `ste_sign`. The clip is written with `where` so that the
  gradient at |x| = 1 is exactly 1 (min/max split ties as 0.5 under jit).

  References:
    GBO spec, section 4.
  """
  xc = jnp.where(jnp.abs(x) <= 1, x, jax.lax.stop_gradient(jnp.clip(x, -1.0, 1.0)))
  return xc + jax.lax.stop_gradient(_sign(x) - xc)


@jax.custom_vjp
def ste_heaviside(x: Array) -> Array:
  """Heaviside with STE: forward 1 if x > 0 else 0; backward g * 1[|x| <= 1].

  References:
    GBO spec, section 4.
  """
  return (x > 0).astype(jnp.result_type(x, jnp.float32))


ste_heaviside.defvjp(lambda x: ((x > 0).astype(jnp.result_type(x, jnp.float32)), x), _ste_bwd)


@jax.custom_vjp
def approx_sign(x: Array) -> Array:
  """Sign with the ApproxSign gradient g * (2 - 2|x|) on |x| <= 1 (Bi-Real Net)."""
  return _sign(x)


approx_sign.defvjp(lambda x: (_sign(x), x),
                   lambda x, g: (g * jnp.where(jnp.abs(x) <= 1, 2 - 2 * jnp.abs(x), 0.0),))


def swish_sign(x: Array, beta: float = 5.0) -> Array:
  """Sign with the SwishSign gradient d/dx [2 sigma(beta x)(1 + beta x (1 - sigma(beta x))) - 1]."""
  def surrogate(z):
    s = jax.nn.sigmoid(beta * z)
    return 2 * s * (1 + beta * z * (1 - s)) - 1
  sur = surrogate(x)
  return sur + jax.lax.stop_gradient(_sign(x) - sur)


SIGNS: dict[str, Callable] = {"ste_sign": ste_sign, "ste_sign_sg": ste_sign_sg,
                              "approx_sign": approx_sign, "swish_sign": swish_sign}


def clip_latent(is_latent: Callable[[tuple, Array], bool] | None = None,
                bound: float = 1.0) -> optax.GradientTransformation:
  """Makes the update land the latent weights inside [-bound, bound] (apply after the optimizer).

  The update u is replaced by clip(p + u, -bound, bound) - p for the selected leaves, so
  `optax.apply_updates` yields clipped latent weights.

  Args:
    is_latent: predicate on (key path, leaf) selecting latent binary weights; default: every
      leaf whose last key is "w" under a key starting with "xb".
    bound: the clip bound.

  Returns:
    An optax GradientTransformation (needs params in `update`).

  References:
    GBO spec, section 4 ("clipped to [-1, 1] after each optax.apply_updates").
  """
  def default(path, leaf):
    names = [getattr(p, "key", getattr(p, "name", "")) for p in path]
    return bool(names) and names[-1] == "w" and any(str(n).startswith("xb") for n in names)

  pred = default if is_latent is None else is_latent

  def init(params):
    del params
    return optax.EmptyState()

  def update(updates, state, params=None):
    if params is None:
      raise ValueError("clip_latent needs params in update(updates, state, params)")
    new = jax.tree_util.tree_map_with_path(
        lambda path, u, p: jnp.clip(p + u, -bound, bound) - p if pred(path, p) else u, updates, params)
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

  References:
    GBO spec, section 4 ("Inference").
  """
  k = gamma * jax.lax.rsqrt(var + eps)
  return k, beta - k * mean


def bn_sign_threshold(k: Array, c: Array) -> tuple[Array, Array]:
  """sign(k y + c) = s * sign(y + theta) with s = sign(k), theta = c / k (k != 0).

  Returns:
    (s, theta). Ties (y + theta = 0 with s = -1) are the only disagreement with ste_sign.

  References:
    GBO spec, section 4 ("before a sign it becomes a threshold").
  """
  s = _sign(k)
  safe = jnp.where(k == 0, 1.0, k)
  theta = jnp.where(k == 0, jnp.where(c >= 0, jnp.inf, -jnp.inf), c / safe)
  return s, theta
