"""Energy, latency and ADC accounting per crossbar layer (pulses x reads x columns).

Proxies (Kim et al., arXiv:2201.01479): R_l = n_r n_c P_l array reads per pulse per image (P_l =
output positions, 1 for dense); energy proxy E(T) = sum_l T_l R_l; latency proxy
Lambda = sum_l T_l P_l (tiles in parallel, layers in sequence); ADC conversions
sum_l T_l n_r (physical columns) P_l. Physical units come from an `EnergyModel` whose
constants are user-set placeholders, not measurements of a specific chip.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from jaxhw.crossbar.noise import CrossbarConfig
from jaxhw.crossbar.tiles import TileGrid, tile_grid


@dataclass(frozen=True)
class EnergyModel:
  """Per-event constants for converting the proxies to pJ and ns.

  Attributes:
    e_array_read_pj: energy of one pulse read of one R x C array, drivers and columns
      included. Default 1.0 pJ: an illustrative placeholder [R]; set it from your technology
      (NeuroSim or a measured macro).
    e_adc_pj: energy per ADC conversion. Default 2.0 pJ: an illustrative placeholder [R] of
      the order of few-bit SAR ADCs in B. Murmann's public ADC performance survey; set your own.
    t_read_ns: duration of one pulse read (incl. ADC). Default 10 ns, placeholder [R].
  """

  e_array_read_pj: float = 1.0
  e_adc_pj: float = 2.0
  t_read_ns: float = 10.0


class LayerCost(NamedTuple):
  """Cost constants of one crossbar layer.

  Attributes:
    grid: its TileGrid.
    positions: P_l, output positions per image (1 for dense).
    reads: R_l = n_r n_c P_l array reads per pulse per image.
    adc: ADC conversions per pulse per image, n_r x physical columns x P_l.
  """

  grid: TileGrid
  positions: int
  reads: int
  adc: int


def layer_cost(fan_in: int, fan_out: int, config: CrossbarConfig, positions: int = 1) -> LayerCost:
  """Cost constants of a layer with fan-in N, fan-out M and P output positions.

  References:
    Kim et al., "Gradient-based Bit Encoding Optimization for Noise-Robust Binary Memristive Crossbar",
    DATE 2022, arXiv:2201.01479.
  """
  if positions < 1:
    raise ValueError(f"positions must be >= 1, got {positions}")
  g = tile_grid(fan_in, fan_out, config.tile_rows, config.tile_cols, config.mapping)
  return LayerCost(g, positions, g.n_r * g.n_c * positions, g.n_r * g.physical_columns * positions)


def _check_T(pulses, costs):
  t = np.asarray(pulses, np.float64)
  if t.shape != (len(costs),):
    raise ValueError(f"pulses must have one entry per layer ({len(costs)}), got shape {t.shape}")
  if np.any(t < 1):
    raise ValueError(f"pulses must be >= 1 for every layer, got {t.tolist()}")
  return t


def energy_proxy(pulses: Sequence[float], costs: Sequence[LayerCost]) -> float:
  """E(T) = sum_l T_l R_l (array reads per image)."""
  t = _check_T(pulses, costs)
  return float(sum(ti * c.reads for ti, c in zip(t, costs)))


def latency_proxy(pulses: Sequence[float], costs: Sequence[LayerCost]) -> float:
  """Lambda = sum_l T_l P_l (sequential read steps per image)."""
  t = _check_T(pulses, costs)
  return float(sum(ti * c.positions for ti, c in zip(t, costs)))


def adc_conversions(pulses: Sequence[float], costs: Sequence[LayerCost]) -> float:
  """sum_l T_l n_r (physical columns) P_l per image."""
  t = _check_T(pulses, costs)
  return float(sum(ti * c.adc for ti, c in zip(t, costs)))


def budget(mean_pulses: float, costs: Sequence[LayerCost]) -> float:
  """B_E = T_bar E(1), met exactly by the uniform allocation T_l = T_bar."""
  if not mean_pulses >= 1:
    raise ValueError(f"mean_pulses must be >= 1, got {mean_pulses!r}")
  return float(mean_pulses) * energy_proxy([1.0] * len(costs), costs)


def inference_cost(pulses: Sequence[float], costs: Sequence[LayerCost],
                   model: EnergyModel = EnergyModel()) -> dict[str, float]:
  """Energy and latency per inference of one image.

  Returns:
    dict with `reads` (E), `latency_steps` (Lambda), `adc_conversions`, `energy_pj`
    (reads x e_array_read + conversions x e_adc) and `latency_ns` (Lambda x t_read).
  """
  e = energy_proxy(pulses, costs)
  lam = latency_proxy(pulses, costs)
  adc = adc_conversions(pulses, costs)
  return {"reads": e, "latency_steps": lam, "adc_conversions": adc,
          "energy_pj": e * model.e_array_read_pj + adc * model.e_adc_pj,
          "latency_ns": lam * model.t_read_ns}
