"""Spiking neural networks: lax.scan neurons, ANN-to-SNN conversion, rate/phase/burst/hybrid/TTFS (T2FSNN)
codings, and spike, synaptic-operation and energy counters."""

from jaxhw.snn.codings import (
                               CODING_PRESETS,
                               HIDDEN_CODINGS,
                               INPUT_CODINGS,
                               Coding,
                               Encoder,
                               bias_gate,
                               get_coding,
                               hidden_neuron,
                               input_encoder,
)
from jaxhw.snn.convert import (
                               NORMS,
                               SNNet,
                               SNNOp,
                               activation_scales,
                               ann_macs,
                               convert,
                               fold_batchnorm,
                               snn_ann_apply,
)
from jaxhw.snn.energy import (
                               HOROWITZ_45NM,
                               EnergyModel,
                               ann_energy_uj,
                               snn_energy_uj,
                               spikes_per_image,
                               synops_per_image,
)
from jaxhw.snn.neurons import (
                               Neuron,
                               State,
                               burst_neuron,
                               ibt_neuron,
                               if_neuron,
                               init_state,
                               integrator,
                               lif_neuron,
                               phase_neuron,
                               ttfs_neuron,
)
from jaxhw.snn.simulate import (
                               MODES,
                               RECORD_OPTIONS,
                               SimResult,
                               accuracy_curve,
                               latency_steps,
                               simulate,
                               spiking_maxpool,
)
from jaxhw.snn.surrogate import SURROGATES, lif_scan, spike_fn, surrogate_grad
from jaxhw.snn.t2fsnn import (
                               GO_IMPLS,
                               closed_form,
                               decode,
                               go_step_analytic,
                               go_step_grad,
                               optimize_kernels,
                               pipeline_length,
                               quantize,
                               spike_time,
)

__all__ = [
    "CODING_PRESETS", "HIDDEN_CODINGS", "INPUT_CODINGS", "Coding", "Encoder", "bias_gate", "get_coding",
    "hidden_neuron", "input_encoder",
    "NORMS", "SNNet", "SNNOp", "activation_scales", "ann_macs", "convert", "fold_batchnorm", "snn_ann_apply",
    "HOROWITZ_45NM", "EnergyModel", "ann_energy_uj", "snn_energy_uj", "spikes_per_image", "synops_per_image",
    "Neuron", "State", "burst_neuron", "ibt_neuron", "if_neuron", "init_state", "integrator", "lif_neuron",
    "phase_neuron", "ttfs_neuron",
    "MODES", "RECORD_OPTIONS", "SimResult", "accuracy_curve", "latency_steps", "simulate", "spiking_maxpool",
    "SURROGATES", "lif_scan", "spike_fn", "surrogate_grad",
    "GO_IMPLS", "closed_form", "decode", "go_step_analytic", "go_step_grad", "optimize_kernels",
    "pipeline_length", "quantize", "spike_time",
]
