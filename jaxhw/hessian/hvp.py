"""Hessian-vector products and quadratic forms on pytrees.

References:
  Pearlmutter, "Fast exact multiplication by the Hessian", Neural Computation 1994.
  HAT spec (shared/specs/hat_bitflip.md), section 1 "Computing s_i" and section 3.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

__all__ = ["hvp", "quad_form", "tree_vdot", "rademacher_like"]

PyTree = object


def hvp(loss_fn: Callable[[PyTree], jax.Array], params: PyTree, v: PyTree) -> PyTree:
  """H v by forward-over-reverse differentiation, `jvp(grad(loss_fn), (params,), (v,))`.

  Args:
    loss_fn: scalar function of the parameter pytree (e.g. a closure over a batch).
    params: point at which the Hessian is taken.
    v: tangent pytree with the structure and dtypes of `params`.

  Returns:
    The pytree H(params) v.

  References:
    HAT spec, section 3.
  """
  return jax.jvp(jax.grad(loss_fn), (params,), (v,))[1]


def quad_form(loss_fn: Callable[[PyTree], jax.Array], params: PyTree, v: PyTree) -> jax.Array:
  """vᵀ H v as d²/dε² loss_fn(params + ε v) at ε = 0 (nested jvp, forward-over-forward).

  Differentiable with respect to `params` (the HAT gradient is reverse mode over this).

  References:
    HAT spec, section 1 "Computing s_i".
  """

  def first(p):
    return jax.jvp(loss_fn, (p,), (v,))[1]

  return jax.jvp(first, (params,), (v,))[1]


def tree_vdot(a: PyTree, b: PyTree) -> jax.Array:
  """Sum over leaves of vdot(a_leaf, b_leaf)."""
  return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def rademacher_like(key: jax.Array, params: PyTree, mask: PyTree | None = None) -> PyTree:
  """±1 probes with the structure and dtypes of `params` (one key per leaf); leaves with mask False get 0."""
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(key, len(leaves))
  mleaves = [True] * len(leaves) if mask is None else jax.tree.leaves(mask)
  out = [jax.random.rademacher(k, jnp.shape(x), jnp.int32).astype(jnp.result_type(x)) if m
         else jnp.zeros_like(x) for k, x, m in zip(keys, leaves, mleaves)]
  return jax.tree.unflatten(treedef, out)
