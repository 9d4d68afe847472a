"""Hutchinson estimates of the Hessian trace (total and per leaf).

References:
  Hutchinson, "A stochastic estimator of the trace of the influence matrix", 1990; PyHessian (Yao et al. 2020).
  Hutchinson, "A stochastic estimator of the trace of the influence matrix", 1990; Yao et al., "PyHessian",
    IEEE BigData 2020, arXiv:1912.07145.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxhw.hessian.hvp import hvp, rademacher_like

__all__ = ["TraceEstimate", "hutchinson_trace"]


class TraceEstimate(NamedTuple):
  """mean: trace estimate; stderr: std(samples)/sqrt(m); samples: vᵢᵀHvᵢ [m]; per_leaf: pytree of blockwise
  trace estimates (v_ℓᵀ(Hv)_ℓ averaged over the same probes), which sum to `mean`."""

  mean: jax.Array
  stderr: jax.Array
  samples: jax.Array
  per_leaf: object


def hutchinson_trace(key: jax.Array, loss_fn: Callable, params, num_probes: int, *,
                     chunk: int | None = None) -> TraceEstimate:
  """Tr(H) ≈ mean over Rademacher probes v of vᵀHv, probes vmapped in chunks.

  Args:
    key: PRNG key (split per probe).
    loss_fn: scalar loss of the parameter pytree.
    params: the point.
    num_probes: m >= 1 (static).
    chunk: probes per vmapped batch (static; default min(m, 16)).

  Returns:
    TraceEstimate. Jit-able (with `loss_fn`, `num_probes` and `chunk` static).

  References:
    Hutchinson, "A stochastic estimator of the trace of the influence matrix", 1990; Yao et al., "PyHessian",
      IEEE BigData 2020, arXiv:1912.07145.
  """
  if not isinstance(num_probes, int) or num_probes < 1:
    raise ValueError(f"num_probes={num_probes!r}; allowed: an int >= 1")
  chunk = min(num_probes, chunk or 16)
  if chunk < 1:
    raise ValueError(f"chunk={chunk!r}; allowed: an int >= 1")
  keys = jax.random.split(key, num_probes)

  def one(k):
    v = rademacher_like(k, params)
    hv = hvp(loss_fn, params, v)
    return jax.tree.map(lambda a, b: jnp.vdot(a, b), v, hv)

  per = jax.lax.map(one, keys, batch_size=chunk)  # pytree of [m]
  samples = sum(jax.tree.leaves(per))
  m = samples.shape[0]
  mean = jnp.mean(samples)
  stderr = jnp.std(samples, ddof=1) / jnp.sqrt(m) if m > 1 else jnp.zeros_like(mean)
  return TraceEstimate(mean, stderr, samples, jax.tree.map(jnp.mean, per))
