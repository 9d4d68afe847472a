"""Binary memristive crossbar simulator (tiles, pulse encodings, read noise, ADC, cost), its effects on any Flax
model, the Monte Carlo chip evaluator, and GBO.

Effects attach from outside (`jaxhw.effects`): `program_weights` is a parameter effect (weights onto devices, static
noise per chip), `read_noise` and `output_noise` are forward effects on Dense/Conv layers chosen by params-tree
path; `evaluate_chips` runs any model under them over simulated chips with common random numbers.

Example (crossbar read noise on a plain Flax MLP)::

    noisy = effects.attach(model.apply, crossbar.read_noise(2.0, {"Dense_0": 4, "Dense_1": 2}))
    acc = crossbar.evaluate_chips(model.apply, variables, x, y, chips=5, key=key,
                                  effect_factory=lambda s: crossbar.read_noise(s, 4), effect_args=(2.0,))

References:
  Kim et al., "Gradient-based Bit Encoding Optimization for Noise-Robust Binary Memristive Crossbar", DATE 2022,
  arXiv:2201.01479.
"""

from jaxhw.crossbar.analog import analog_read_noise
from jaxhw.crossbar.binary import batch_norm, bn_sign_threshold, clip_latent, fold_bn
from jaxhw.crossbar.chips import chip_keys, evaluate_chips, fixed_noise_evaluator
from jaxhw.crossbar.cost import (
  EnergyModel,
  LayerCost,
  adc_conversions,
  budget,
  energy_proxy,
  inference_cost,
  latency_proxy,
  layer_cost,
)
from jaxhw.crossbar.encoding import (
  ENCODINGS,
  Encoding,
  bitserial,
  decompose,
  level_energy,
  make_encoding,
  mixed,
  noise_factor,
  noise_factor_continuous,
  repeat,
  thermometer,
)
from jaxhw.crossbar.forward import (
  aggregate_noise_std,
  conv_patches,
  conv_weight_matrix,
  crossbar_conv,
  crossbar_matmul,
  noise_factor_of,
)
from jaxhw.crossbar.gbo import (
  DEFAULT_CANDIDATES,
  GBOConfig,
  GBOResult,
  closed_form_allocation,
  fisher_sensitivity,
  gbo,
  gumbel_straight_through,
  noise_objectives,
  repair,
  round_ste,
  round_to_candidates,
  search_allocation,
  stein_sensitivity,
  uniform_allocation,
)
from jaxhw.crossbar.noise import PRESETS, CrossbarConfig, adc_quantize, preset, program, program_weights
from jaxhw.crossbar.read_noise import layer_shapes, output_noise, output_shapes, read_noise
from jaxhw.crossbar.tiles import MAPPINGS, TileGrid, check_tile_size, split_inputs, split_rows, tile_grid

__all__ = [
    "analog_read_noise", "DEFAULT_CANDIDATES", "ENCODINGS", "MAPPINGS", "PRESETS", "CrossbarConfig", "Encoding",
    "EnergyModel",
    "GBOConfig", "GBOResult", "LayerCost", "TileGrid", "adc_conversions", "adc_quantize", "aggregate_noise_std",
    "batch_norm", "bitserial", "bn_sign_threshold", "budget", "check_tile_size", "chip_keys", "clip_latent",
    "closed_form_allocation", "conv_patches", "conv_weight_matrix", "crossbar_conv", "crossbar_matmul",
    "decompose", "energy_proxy", "evaluate_chips", "fisher_sensitivity", "fixed_noise_evaluator", "fold_bn", "gbo",
    "gumbel_straight_through", "inference_cost", "latency_proxy", "layer_cost", "layer_shapes", "level_energy",
    "make_encoding", "mixed", "noise_factor", "noise_factor_continuous", "noise_factor_of", "noise_objectives",
    "output_noise", "output_shapes", "preset", "program", "program_weights", "read_noise", "repair", "repeat",
    "round_ste", "round_to_candidates", "search_allocation", "split_inputs", "split_rows", "stein_sensitivity",
    "thermometer", "tile_grid", "uniform_allocation",
]
