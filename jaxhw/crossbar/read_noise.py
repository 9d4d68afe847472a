"""Crossbar read noise as forward effects on any Flax model's Dense/Conv layers, selected by params-tree path.

`read_noise` runs the selected layers on the simulated crossbar: per-layer pulse counts T_l, tiling, additive (and
proportional) read noise and the ADC of a `CrossbarConfig`. In the default fast mode, for binary inputs and the
differential mapping, it needs only the layer's own output: y + std * xi with std^2 = (sigma^2 + Delta^2/12) n_r /
T (n_r row tiles of the layer's fan-in), so it fits any Dense/Conv layer, whatever its weights. Per-pulse reads,
the per-read ADC, proportional noise, the offset mapping and multi-bit inputs read the layer's stored kernel (the
programmed weights, see `program_weights`). `output_noise` adds Gaussian noise of a given std per layer (GBO's
relaxed noise) with optional offsets for gradients with respect to a layer's noisy output. Keys come from
``rngs={"noise": key}`` at ``apply``; every layer draws its own.

Example (a plain Flax MLP trained elsewhere)::

    noisy = effects.attach(model.apply, crossbar.read_noise(2.0, {"Dense_0": 4, "Dense_1": 2}))
    logits = jax.jit(noisy)(variables, x, rngs={"noise": key})

References:
  Kim et al., "Gradient-based Bit Encoding Optimization for Noise-Robust Binary Memristive Crossbar", DATE 2022,
  arXiv:2201.01479.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array

from jaxhw.crossbar._random import normal
from jaxhw.crossbar.forward import aggregate_noise_std, crossbar_conv, crossbar_matmul
from jaxhw.crossbar.noise import CrossbarConfig
from jaxhw.effects import ForwardEffect, LayerCall, attach, path_matches

__all__ = ["layer_shapes", "output_noise", "read_noise"]

Path = tuple[str, ...]
PathKey = str | Sequence[str]


def _path(p: PathKey) -> Path:
  return tuple(p.split("/")) if isinstance(p, str) else tuple(p)


def _per_layer(value, name: str) -> Callable[[Path], Any]:
  """A lookup path -> value for a scalar (every layer) or a mapping of paths (None for unlisted layers)."""
  if isinstance(value, Mapping):
    table = {_path(k): v for k, v in value.items()}
    return table.get
  return lambda path: value


def _is_zero(v) -> bool:
  return isinstance(v, (int, float)) and v == 0


def _check_nonneg(name, v):
  if isinstance(v, (int, float)) and not v >= 0:
    raise ValueError(f"{name} must be >= 0 (a noise std), got {v!r}")


def _conv_stride(module) -> int:
  s = getattr(module, "strides", 1)
  s = 1 if s is None else s
  s = tuple(s) if isinstance(s, Sequence) else (s, s)
  if len(set(s)) != 1 or not isinstance(module.padding, str):
    raise ValueError(f"the crossbar conv path needs equal strides and a string padding, got strides={s}, "
                     f"padding={module.padding!r} at layer {'/'.join(module.path)}")
  return int(s[0])


def read_noise(sigma, pulses: Mapping[PathKey, Any] | Any = 1, *, config: CrossbarConfig | None = None,
               encoding: str | None = None, layers: Iterable[PathKey] | None = None,
               input_bits: Mapping[PathKey, int] | int = 1, mode: str | None = None,
               sigma_p=None) -> ForwardEffect:
  """A forward effect running the selected Dense/Conv layers on a noisy crossbar with T_l input pulses.

  Args:
    sigma: additive per-read noise std in row units (one row's contribution |w a| = 1); may be traced.
    pulses: T for every selected layer, or a mapping from layer path (``("Dense_0",)`` or ``"Dense_0"``) to T_l;
      layers missing from a mapping are left exact. Python ints, or traced scalars in fast mode (no recompile
      per allocation).
    config: tiling, mapping, ADC, proportional noise and mode (default `CrossbarConfig()`); `sigma` replaces
      ``config.sigma``.
    encoding: pulse code for multi-bit inputs ("thermometer", "bitserial", "mixed"); default the config's.
    layers: paths to put on the crossbar (None: every layer `pulses` names, or every Dense/Conv layer).
    input_bits: 1 for +-1 inputs, B for unsigned B-bit inputs in [0, 1]; scalar or per path.
    mode: "fast" or "per_pulse" (default the config's); a per-read ADC forces per_pulse.
    sigma_p: proportional per-read std (default the config's).

  Returns:
    A forward effect for `jaxhw.effects.attach`; apply with ``rngs={"noise": key}``.

  References:
    Kim et al., "Gradient-based Bit Encoding Optimization for Noise-Robust Binary Memristive Crossbar", DATE 2022,
    arXiv:2201.01479.
  """
  config = CrossbarConfig() if config is None else config
  _check_nonneg("sigma", sigma)
  _check_nonneg("sigma_p", sigma_p)
  if isinstance(pulses, Mapping):
    for k, v in pulses.items():
      if isinstance(v, (int, float)) and not v >= 1:
        raise ValueError(f"pulses[{k!r}] must be >= 1, got {v!r}")
  elif isinstance(pulses, (int, float)) and not pulses >= 1:
    raise ValueError(f"pulses must be >= 1, got {pulses!r}")
  if mode is not None and mode not in ("fast", "per_pulse"):
    raise ValueError(f"mode must be 'fast' or 'per_pulse', got {mode!r}")
  if encoding is not None:
    config = config.replace(encoding=encoding)
  layers = None if layers is None else tuple(layers)
  pulses_of = _per_layer(pulses, "pulses")
  bits_of = _per_layer(input_bits, "input_bits")
  sp = config.sigma_p if sigma_p is None else sigma_p
  m = config.mode if mode is None else mode
  per_read_adc = config.adc_bits is not None and config.adc_mode == "per_read"

  def effect(call: LayerCall) -> Array:
    t = pulses_of(call.path)
    if t is None or not path_matches(call.path, layers):
      return call.next()
    bits = bits_of(call.path) or 1
    key = call.make_rng("noise")
    kernel = call.params["kernel"]
    fan_in = math.prod(kernel.shape[:-1])
    if m == "fast" and not per_read_adc and config.mapping == "differential" and _is_zero(sp) and bits == 1:
      y = call.next()
      return y + aggregate_noise_std(fan_in, t, config, sigma=sigma) * normal(key, y.shape)
    kw = dict(pulses=t, read_key=key, config=config, sigma=sigma, sigma_p=sp, input_bits=bits, mode=m)
    if call.kind == "conv":
      y = crossbar_conv(call.inputs, kernel, stride=_conv_stride(call.module), padding=call.module.padding, **kw)
    else:
      y = crossbar_matmul(call.inputs, kernel, **kw)
    bias = call.params.get("bias")
    return y if bias is None else y + bias

  return effect


def output_noise(stds: Mapping[PathKey, Any], offsets: Mapping[PathKey, Array] | None = None) -> ForwardEffect:
  """A forward effect adding N(0, std_l^2) to the output of each layer in `stds` (and ``offsets[l]``, if given).

  This is the fast-mode read noise with the std given directly: GBO's relaxed noise, and, with zero `offsets`,
  a tap for gradients with respect to a layer's noisy output.

  Args:
    stds: layer path -> noise std (may be traced).
    offsets: layer path -> array added to the layer's output (same shape).

  Returns:
    A forward effect; apply with ``rngs={"noise": key}``.
  """
  std_of = _per_layer(stds, "stds")
  off_of = _per_layer(offsets or {}, "offsets")

  def effect(call: LayerCall) -> Array:
    std = std_of(call.path)
    if std is None:
      return call.next()
    y = call.next()
    y = y + std * normal(call.make_rng("noise"), y.shape)
    off = off_of(call.path)
    return y if off is None else y + off

  return effect


def layer_shapes(apply_fn: Callable[..., Any], variables, x: Array, layers: Iterable[PathKey] | None = None,
                 **apply_kwargs) -> dict[Path, tuple[int, int, int]]:
  """``{path: (fan_in, fan_out, output positions)}`` of the selected Dense/Conv layers, in call order.

  Found by tracing `apply_fn` abstractly (no computation); the crossbar's tiling and cost use these.
  """
  layers = None if layers is None else tuple(layers)
  found: dict[Path, tuple[int, int, int]] = {}

  def record(call: LayerCall) -> Array:
    y = call.next()
    if path_matches(call.path, layers):
      k = call.params["kernel"].shape
      found[call.path] = (math.prod(k[:-1]), int(k[-1]), math.prod(y.shape[1:-1]))
    return y

  jax.eval_shape(lambda v, xx: attach(apply_fn, record)(v, xx, **apply_kwargs), variables, x)
  return found


def output_shapes(apply_fn: Callable[..., Any], variables, x: Array, layers: Iterable[PathKey],
                  **apply_kwargs) -> dict[Path, jax.ShapeDtypeStruct]:
  """``{path: ShapeDtypeStruct}`` of the outputs of the selected layers for input `x` (abstract trace)."""
  layers = tuple(layers)
  found = {}

  def record(call: LayerCall) -> Array:
    y = call.next()
    if path_matches(call.path, layers):
      found[call.path] = jax.ShapeDtypeStruct(y.shape, y.dtype)
    return y

  jax.eval_shape(lambda v, xx: attach(apply_fn, record)(v, xx, **apply_kwargs), variables, x)
  return found


def zeros_like_outputs(shapes: Mapping[Path, jax.ShapeDtypeStruct]) -> dict[Path, Array]:
  """Zero offsets for `output_noise` with the given output shapes."""
  return {p: jnp.zeros(s.shape, s.dtype) for p, s in shapes.items()}
