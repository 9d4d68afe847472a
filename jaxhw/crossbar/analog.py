"""Analog (multi-level) crossbar read noise for real-valued weights, as a forward effect on any Flax model.

A real-valued kernel is stored on a differential pair of analog devices, its largest |w| per layer mapped to the
full-scale conductance G_max. Each read of a device adds noise of std ``sigma`` x G_max, so the weight that a read
sees is ``w + sigma * max|w| * xi`` with xi ~ N(0, 1) drawn per weight and per forward pass (a fresh read each
call). Averaging T reads (T pulses) divides the std by sqrt(T). This is the additive read-noise model of analog
in-memory computing simulators, and it perturbs the weights themselves, so it probes how flat a trained minimum is.
The binary crossbar of GBO is `read_noise`; this is its counterpart for networks whose weights are not +-1.

References:
  Kim et al., "Gradient-based Bit Encoding Optimization for Noise-Robust Binary Memristive Crossbar", DATE 2022,
  arXiv:2201.01479 (read noise per device read); Joshi et al., "Accurate deep neural network inference using
  computational phase-change memory", Nature Communications, 2020, arXiv:1906.03138 (noise relative to G_max).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import jax
import jax.numpy as jnp

from jaxhw.effects import ForwardEffect, LayerCall, path_matches

__all__ = ["analog_read_noise"]


def analog_read_noise(sigma, *, pulses: int = 1, layers: Iterable[str | Sequence[str]] | None = None
                      ) -> ForwardEffect:
  """Per-read weight noise relative to each layer's full-scale weight, on the selected Dense/Conv layers.

  Args:
    sigma: read-noise std as a fraction of G_max (the layer's max |kernel|), >= 0; may be traced.
    pulses: reads averaged per inference (std / sqrt(pulses)), >= 1.
    layers: params paths of the layers on the crossbar (None: every Dense/Conv layer).

  Returns:
    A forward effect for `jaxhw.effects.attach`; apply with ``rngs={"noise": key}``. Biases are exact (digital).

  Raises:
    ValueError: a negative `sigma` or `pulses` < 1.
  """
  if isinstance(sigma, (int, float)) and sigma < 0:
    raise ValueError(f"sigma must be >= 0 (a fraction of G_max), got {sigma!r}")
  if int(pulses) < 1:
    raise ValueError(f"pulses must be >= 1, got {pulses!r}")
  layers = None if layers is None else tuple(layers)

  def effect(call: LayerCall):
    if not path_matches(call.path, layers) or "kernel" not in call.params:
      return call.next()
    w = call.params["kernel"]
    std = jnp.asarray(sigma, w.dtype) * jnp.max(jnp.abs(w)) / jnp.sqrt(jnp.asarray(pulses, w.dtype))
    noisy = w + std * jax.random.normal(call.make_rng("noise"), w.shape, w.dtype)
    return call.forward(call.inputs, {**call.params, "kernel": noisy})

  return effect
