"""Crossbar configuration, named noise presets, static (per-chip) device noise and the ADC.

Units: every noise std is referred to the decoded output y = W a, in units of one row's
contribution (|w| = |a| = 1). Physical factors (G_on - G_off, the +-1 -> {0, 1} remap) are
folded into sigma. Dynamic (per-read) noise is drawn from a `read_key`; static noise
(conductance variation, stuck-at faults, a measured error table) from a `chip_key`, once per
chip, so more pulses cannot average it out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import traverse_util
from jaxtyping import Array, Float, PRNGKeyArray

from jaxhw.crossbar._random import normal, uniform
from jaxhw.crossbar.encoding import ENCODINGS
from jaxhw.crossbar.tiles import check_tile_size
from jaxhw.effects import ParamTransform, path_matches

MODES = ("fast", "per_pulse")
ADC_MODES = ("as_noise", "per_read")


@dataclass(frozen=True)
class CrossbarConfig:
  """Static description of a crossbar and its non-idealities (hashable, use as a static arg).

  Attributes:
    tile_rows: R, rows per array (default 128 [R]).
    tile_cols: C, physical columns per array (default 128 [R]).
    mapping: "differential" (two devices per weight, default) or "offset" (one device plus a
      per-tile reference column whose read noise is shared by the tile's columns).
    encoding: pulse code family for multi-bit inputs: "thermometer" (default), "bitserial",
      "mixed". Binary (L = 1) inputs always use thermometer + repeat (T = k).
    sigma: additive per-read noise std (per tile column read), default 0.
    sigma_p: proportional per-read noise std per active row (read variance sigma_p^2 x
      active rows), default 0.
    on_off_ratio: r = G_on / G_off (default 10 [R]); G_on = 1, G_off = 1 / r.
    g_var: device-to-device conductance variation, G (1 + delta), delta ~ N(0, g_var^2)
      (NeuroSim's `--vari`; 5 % is 0.05). Static.
    p_stuck_on: probability a device is stuck at G_on (LRS). Static.
    p_stuck_off: probability a device is stuck at G_off (HRS). Static.
    error_table: optional hook `error_table(w_eff, chip_key) -> w_eff` for measured errors.
    adc_bits: ADC resolution per tile-column read; None (default) means ideal.
    adc_mode: "as_noise" (adds Delta^2/12 per read, keeps the fast path) or "per_read"
      (exact quantisation, forces the per-pulse path).
    adc_range: y_max of the ADC per read, in row units; None means tile_rows (full range).
    mode: "fast" (default, closed-form aggregate noise) or "per_pulse" (every read simulated).

  References:
    Kim et al., "Gradient-based Bit Encoding Optimization for Noise-Robust Binary Memristive Crossbar",
    DATE 2022, arXiv:2201.01479.
  """

  tile_rows: int = 128
  tile_cols: int = 128
  mapping: str = "differential"
  encoding: str = "thermometer"
  sigma: float = 0.0
  sigma_p: float = 0.0
  on_off_ratio: float = 10.0
  g_var: float = 0.0
  p_stuck_on: float = 0.0
  p_stuck_off: float = 0.0
  error_table: Callable | None = None
  adc_bits: int | None = None
  adc_mode: str = "as_noise"
  adc_range: float | None = None
  mode: str = "fast"

  def __post_init__(self):
    check_tile_size(self.tile_rows, self.tile_cols, self.mapping)
    if self.encoding not in ENCODINGS:
      raise ValueError(f"encoding must be one of {ENCODINGS}, got {self.encoding!r}")
    for name in ("sigma", "sigma_p", "g_var"):
      v = getattr(self, name)
      if not v >= 0:
        raise ValueError(f"{name} must be >= 0 (a noise std), got {v!r}")
    for name in ("p_stuck_on", "p_stuck_off"):
      v = getattr(self, name)
      if not 0 <= v <= 1:
        raise ValueError(f"{name} must be a probability in [0, 1], got {v!r}")
    if self.p_stuck_on + self.p_stuck_off > 1:
      raise ValueError(f"p_stuck_on + p_stuck_off must be <= 1, got {self.p_stuck_on + self.p_stuck_off}")
    if not self.on_off_ratio > 1:
      raise ValueError(f"on_off_ratio must be > 1, got {self.on_off_ratio!r}")
    if self.adc_bits is not None and (not isinstance(self.adc_bits, int) or self.adc_bits < 1):
      raise ValueError(f"adc_bits must be None or an integer >= 1, got {self.adc_bits!r}")
    if self.adc_mode not in ADC_MODES:
      raise ValueError(f"adc_mode must be one of {ADC_MODES}, got {self.adc_mode!r}")
    if self.adc_range is not None and not self.adc_range > 0:
      raise ValueError(f"adc_range must be None or > 0, got {self.adc_range!r}")
    if self.mode not in MODES:
      raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")

  def replace(self, **kw) -> "CrossbarConfig":
    """Returns a copy with fields replaced (validated)."""
    return dataclasses.replace(self, **kw)

  @property
  def has_static_noise(self) -> bool:
    return bool(self.g_var or self.p_stuck_on or self.p_stuck_off or self.error_table is not None)

  @property
  def adc_step(self) -> float | None:
    """Delta = 2 y_max / (2**bits - 1), or None without an ADC."""
    if self.adc_bits is None:
      return None
    y_max = self.adc_range if self.adc_range is not None else float(self.tile_rows)
    return 2.0 * y_max / (2**self.adc_bits - 1)

  @property
  def adc_read_variance(self) -> float:
    """Delta^2 / 12 per read in `as_noise` mode, else 0."""
    d = self.adc_step
    return 0.0 if d is None or self.adc_mode != "as_noise" else d * d / 12.0


#: Named presets [R]: absolute sigma values in row units. For a 128-row binary tile a column
#: partial sum spans [-128, 128] with a typical magnitude of ~sqrt(128) = 11, so "severe" is a
#: read error comparable to the signal. `compat_aihwkit` maps aihwkit's forward `out_noise`
#: (0.06, normalised so that max |w| = max |x| = 1, i.e. our units) to additive sigma with
#: 512-row tiles and its 7-bit DAC / 9-bit ADC defaults (ADC as noise).
PRESETS: dict[str, CrossbarConfig] = {
    "ideal": CrossbarConfig(),
    "low": CrossbarConfig(sigma=0.5),
    "medium": CrossbarConfig(sigma=2.0),
    "high": CrossbarConfig(sigma=5.0),
    "severe": CrossbarConfig(sigma=10.0),
    "proportional": CrossbarConfig(sigma_p=0.2),
    "variation_5pct": CrossbarConfig(sigma=2.0, g_var=0.05),
    "stuck_1pct": CrossbarConfig(sigma=2.0, p_stuck_on=0.005, p_stuck_off=0.005),
    "compat_aihwkit": CrossbarConfig(tile_rows=512, tile_cols=512, sigma=0.06, adc_bits=9,
                                     adc_range=10.0),
}


def preset(name: str, **overrides) -> CrossbarConfig:
  """Returns a named CrossbarConfig preset, with optional field overrides.

  Args:
    name: one of PRESETS ("ideal", "low", "medium", "high", "severe", "proportional",
      "variation_5pct", "stuck_1pct", "compat_aihwkit").
    **overrides: CrossbarConfig fields to replace.

  Returns:
    The CrossbarConfig.

  References:
    Kim et al., "Gradient-based Bit Encoding Optimization for Noise-Robust Binary Memristive Crossbar",
    DATE 2022, arXiv:2201.01479.
  """
  if name not in PRESETS:
    raise ValueError(f"preset name must be one of {sorted(PRESETS)}, got {name!r}")
  return dataclasses.replace(PRESETS[name], **overrides)


def program(w: Float[Array, "n m"], chip_key: PRNGKeyArray, config: CrossbarConfig) -> Float[Array, "n m"]:
  """Programs binary weights onto devices once per chip: static variation and stuck-at faults.

  `differential`: (G+, G-) = (G_on, G_off) for w = +1, (G_off, G_on) for w = -1, and
  w_eff = (G+ - G-) / (G_on - G_off). `offset`: one device, w_eff = (G - G_mid) / ((G_on -
  G_off) / 2) with an ideal reference G_mid = (G_on + G_off) / 2. Without static noise the
  result is exactly w.

  Args:
    w: weights in {-1, +1}.
    chip_key: the chip's key (static noise).
    config: the crossbar config.

  Returns:
    w_eff (float32), same shape.

  References:
    Kim et al., "Gradient-based Bit Encoding Optimization for Noise-Robust Binary Memristive Crossbar",
    DATE 2022, arXiv:2201.01479.
  """
  w = jnp.asarray(w, jnp.float32)
  if not config.has_static_noise:
    return w
  g_on, g_off = 1.0, 1.0 / config.on_off_ratio
  n_dev = 2 if config.mapping == "differential" else 1
  k_var, k_stuck, k_tab = jax.random.split(chip_key, 3)
  pos = w > 0
  if n_dev == 2:
    g = jnp.stack([jnp.where(pos, g_on, g_off), jnp.where(pos, g_off, g_on)])
  else:
    g = jnp.where(pos, g_on, g_off)[None]
  if config.g_var:
    g = g * (1.0 + config.g_var * normal(k_var, g.shape))
  if config.p_stuck_on or config.p_stuck_off:
    r = uniform(k_stuck, g.shape)
    g = jnp.where(r < config.p_stuck_on, g_on, g)
    g = jnp.where((r >= config.p_stuck_on) & (r < config.p_stuck_on + config.p_stuck_off), g_off, g)
  if n_dev == 2:
    w_eff = (g[0] - g[1]) / (g_on - g_off)
  else:
    w_eff = (g[0] - 0.5 * (g_on + g_off)) / (0.5 * (g_on - g_off))
  if config.error_table is not None:
    w_eff = config.error_table(w_eff, k_tab)
  return w_eff.astype(jnp.float32)


def adc_quantize(y: Array, config: CrossbarConfig) -> Array:
  """clip(round(y / Delta) Delta, +-y_max) per tile-column read; identity without an ADC.

  References:
    Kim et al., "Gradient-based Bit Encoding Optimization for Noise-Robust Binary Memristive Crossbar",
    DATE 2022, arXiv:2201.01479.
  """
  d = config.adc_step
  if d is None:
    return y
  y_max = config.adc_range if config.adc_range is not None else float(config.tile_rows)
  return jnp.clip(jnp.round(y / d) * d, -y_max, y_max)


def program_weights(config: CrossbarConfig, *, layers: Iterable[str | Sequence[str]] | None = None
                    ) -> ParamTransform:
  """Programming a model's weights onto binary crossbar devices, as a parameter effect.

  Every ``kernel`` leaf under a selected layer path (any Flax Dense/Conv) is binarised (+1 where >= 0, else -1,
  as a binary crossbar stores it) and programmed with `program`, layer i (in sorted path order) with
  ``fold_in(key, i)`` as its chip key, so layers get independent device noise. Biases and other leaves pass
  through. Without static noise in `config` the result is the binarised kernel exactly.

  Args:
    config: the crossbar config (its static-noise fields matter here).
    layers: params-tree paths of the crossbar layers (``("Dense_0",)`` or ``"Dense_0"``); None selects every
      kernel.

  Returns:
    A `jaxhw.effects.ParamTransform`; ``apply(params, state, chip_key)`` returns params holding the effective
    weights w_eff.
    A model that binarises its kernels itself should read them as they are (e.g. ``binarize_weights=False``).

  References:
    Kim et al., "Gradient-based Bit Encoding Optimization for Noise-Robust Binary Memristive Crossbar", DATE 2022,
    arXiv:2201.01479.
  """
  layers = None if layers is None else tuple(layers)

  def apply(params, state, key):
    flat = traverse_util.flatten_dict(params)
    kernels = sorted(k for k in flat if k[-1] == "kernel" and path_matches(tuple(k[:-1]), layers))
    for i, k in enumerate(kernels):
      w = jnp.where(flat[k] >= 0, 1.0, -1.0).astype(jnp.float32)
      flat[k] = program(w, jax.random.fold_in(key, i), config)
    return traverse_util.unflatten_dict(flat), state

  return ParamTransform(lambda params: (), apply)
