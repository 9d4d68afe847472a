"""Surrogate-gradient spike functions and a direct-training LIF layer scan, so spiking nets can be trained.

References:
  Neftci, Mostafa and Zenke, "Surrogate gradient learning in SNNs", IEEE SPM 2019; Zenke and Ganguli 2018
  (fast sigmoid); Fang et al. 2021 (arctan).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["SURROGATES", "spike_fn", "surrogate_grad", "lif_scan"]

#: Surrogate gradients of the spike function `spike_fn` accepts.
SURROGATES = ("fast_sigmoid", "arctan", "triangle", "straight_through")


def surrogate_grad(u, kind: str = "fast_sigmoid", k: float = 10.0, alpha: float = 2.0):
  """The surrogate derivative of ``heaviside(u)`` at ``u = v - theta``.

  fast sigmoid ``1/(1 + k|u|)^2``; arctan ``(alpha/2)/(1 + (pi alpha u/2)^2)``; triangle ``max(0, 1 - |u|)``;
  straight-through ``1``.
  """
  if kind == "fast_sigmoid":
    return 1.0 / (1.0 + k * jnp.abs(u)) ** 2
  if kind == "arctan":
    return (alpha / 2) / (1.0 + (math.pi * alpha * u / 2) ** 2)
  if kind == "triangle":
    return jnp.maximum(0.0, 1.0 - jnp.abs(u))
  if kind == "straight_through":
    return jnp.ones_like(u)
  raise ValueError(f"surrogate={kind!r}; valid surrogates: {SURROGATES}")


def spike_fn(kind: str = "fast_sigmoid", k: float = 10.0, alpha: float = 2.0):
  """A Heaviside step ``1[u >= 0]`` whose derivative is the chosen surrogate (``jax.custom_jvp``)."""
  if kind not in SURROGATES:
    raise ValueError(f"surrogate={kind!r}; valid surrogates: {SURROGATES}")

  @jax.custom_jvp
  def heaviside(u):
    return (u >= 0).astype(u.dtype)

  @heaviside.defjvp
  def _jvp(primals, tangents):
    (u,), (du,) = primals, tangents
    return heaviside(u), surrogate_grad(u, kind, k, alpha) * du

  return heaviside


@functools.partial(jax.jit, static_argnames=("surrogate", "detach_reset", "unroll"))
def lif_scan(currents, *, leak: float = 0.9, threshold: float = 1.0, surrogate: str = "fast_sigmoid",
             detach_reset: bool = True, unroll: int = 1):
  """A LIF layer over time with surrogate gradients, for direct (BPTT) training.

  Args:
    currents: ``[T, ...]`` input currents.
    leak: membrane decay per step.
    threshold: firing threshold (reset by subtraction).
    surrogate: one of ``SURROGATES``.
    detach_reset: stop the gradient through the reset term.
    unroll: scan unroll.

  Returns:
    ``[T, ...]`` spikes (float32, differentiable through the surrogate).
  """
  heaviside = spike_fn(surrogate)

  def step(v, z):
    v = leak * v + z
    s = heaviside(v - threshold)
    r = lax.stop_gradient(s) if detach_reset else s
    return v - r * threshold, s

  _, spikes = lax.scan(step, jnp.zeros(currents.shape[1:], currents.dtype), currents, unroll=unroll)
  return spikes
