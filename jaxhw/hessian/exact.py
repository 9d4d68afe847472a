"""Dense Hessian of a loss over a (tiny) parameter pytree, on the ravelled parameter vector.

References:
  the exact Hessian used as the oracle of the Hessian tools (tiny models only).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
from jax.flatten_util import ravel_pytree

__all__ = ["exact_hessian"]


def exact_hessian(loss_fn: Callable, params) -> jax.Array:
  """The [n, n] Hessian of `loss_fn` at `params`, in `ravel_pytree(params)` order. Only for tiny models."""
  flat, unravel = ravel_pytree(params)
  return jax.hessian(lambda f: loss_fn(unravel(f)))(flat)
