"""Bit-flip faults on parameter pytrees: bit layouts, exact and random flips, vectorized single-bit sweeps with
stratified confidence intervals, the int8 bit-flip attack, vulnerability metrics (RAD, catastrophic bits), and
system-level defenses (selective ECC / parity, range restriction, RADAR-style group checksums)."""

from jaxhw.faults.attack import (
                                 AttackResult,
                                 bit_flip_attack,
                                 dequantize_params,
                                 flips_to_accuracy,
                                 quantize_params,
                                 random_int8_flips,
)
from jaxhw.faults.bits import (
                                 ALL_BITS,
                                 EXPONENT_BITS,
                                 EXPONENT_MSB,
                                 LAYOUTS,
                                 MANTISSA_BITS,
                                 SIGN_BIT,
                                 BitLayout,
                                 QuantizedTensor,
                                 bit_mask,
                                 dequantize_int8,
                                 from_bits,
                                 layout_of,
                                 quantize_int8,
                                 resolve_bits,
                                 to_bits,
)
from jaxhw.faults.defenses import (
                                 Defense,
                                 activation_ranges,
                                 checksum_check,
                                 clip_activations,
                                 ecc_protect,
                                 group_checksum,
                                 hamming_check_bits,
                                 no_defense,
                                 parity_check,
                                 parity_protect,
                                 range_restriction,
                                 weight_ranges,
)
from jaxhw.faults.flips import (
                                 ParamTransform,
                                 RandomBitFlipsState,
                                 flip_array,
                                 flip_bit,
                                 flip_bits,
                                 random_bit_flips,
)
from jaxhw.faults.metrics import (
                                 HIST_LABELS,
                                 catastrophic_bits,
                                 counts_per_bit,
                                 erratic_params,
                                 rad_histogram,
                                 relative_accuracy_drop,
                                 stratified_total,
                                 stratified_unit_total,
                                 wilson_interval,
)
from jaxhw.faults.sweep import (
                                 Flips,
                                 SampledSweep,
                                 SweepResult,
                                 all_flips,
                                 dense_chain,
                                 mlp_layers,
                                 sample_flips,
                                 sampled_sweep,
                                 single_bit_sweep,
)

__all__ = [
    "ALL_BITS", "SIGN_BIT", "EXPONENT_BITS", "EXPONENT_MSB", "MANTISSA_BITS", "BitLayout", "LAYOUTS",
    "QuantizedTensor", "layout_of", "resolve_bits", "to_bits", "from_bits", "bit_mask", "quantize_int8",
    "dequantize_int8", "ParamTransform", "RandomBitFlipsState", "flip_array", "flip_bit", "flip_bits",
    "random_bit_flips", "HIST_LABELS", "relative_accuracy_drop", "catastrophic_bits", "erratic_params",
    "rad_histogram", "counts_per_bit", "wilson_interval", "stratified_total",
    "stratified_unit_total", "Flips", "SweepResult",
    "SampledSweep", "all_flips", "sample_flips", "single_bit_sweep", "sampled_sweep", "mlp_layers", "dense_chain",
    "AttackResult", "quantize_params", "dequantize_params", "bit_flip_attack", "random_int8_flips",
    "flips_to_accuracy", "Defense", "no_defense", "hamming_check_bits", "ecc_protect", "parity_protect",
    "parity_check", "range_restriction", "weight_ranges", "group_checksum", "checksum_check", "clip_activations",
    "activation_ranges",
]
