"""Binary memristive crossbar simulator (tiles, pulse encodings, read noise, ADC, cost) and GBO."""

from jaxhw.crossbar.binary import (
                                   SIGNS,
                                   approx_sign,
                                   batch_norm,
                                   bn_sign_threshold,
                                   clip_latent,
                                   fold_bn,
                                   ste_heaviside,
                                   ste_sign,
                                   ste_sign_sg,
                                   swish_sign,
)
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
                                   repair,
                                   round_ste,
                                   uniform_allocation,
)
from jaxhw.crossbar.noise import PRESETS, CrossbarConfig, adc_quantize, preset, program
from jaxhw.crossbar.tiles import MAPPINGS, TileGrid, check_tile_size, split_inputs, split_rows, tile_grid

__all__ = [
    "DEFAULT_CANDIDATES", "ENCODINGS", "MAPPINGS", "PRESETS", "SIGNS", "CrossbarConfig", "Encoding", "EnergyModel",
    "GBOConfig", "GBOResult", "LayerCost", "TileGrid", "adc_conversions", "adc_quantize", "aggregate_noise_std",
    "approx_sign", "batch_norm", "bitserial", "bn_sign_threshold", "budget", "check_tile_size", "clip_latent",
    "closed_form_allocation", "conv_patches", "conv_weight_matrix", "crossbar_conv", "crossbar_matmul",
    "decompose", "energy_proxy", "fisher_sensitivity", "fold_bn", "gbo", "gumbel_straight_through",
    "inference_cost", "latency_proxy", "layer_cost", "level_energy", "make_encoding", "mixed", "noise_factor",
    "noise_factor_continuous", "noise_factor_of", "preset", "program", "repair", "repeat", "round_ste",
    "split_inputs", "split_rows", "ste_heaviside", "ste_sign", "ste_sign_sg", "swish_sign", "thermometer",
    "tile_grid", "uniform_allocation",
]
