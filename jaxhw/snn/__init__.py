"""Spiking neural networks: lax.scan neurons, ANN-to-SNN conversion of Flax models, rate/phase/burst/hybrid/TTFS
(T2FSNN) codings, a pure simulator, and spike, synaptic-operation and energy counters.

``net = convert(model, variables, x_train)`` converts a Flax model; ``simulate(net, x, coding, T)`` is pure (jit,
vmap, grad); ``params, apply_fn = logits_fn(net, coding, T)`` hands it to sweeps such as
`jaxhw.faults.single_bit_sweep`, and ``ann_logits_fn(net)`` does the same for the source ANN on the same params.
``latency_stats`` reads one latency definition off any coding's accuracy curve (TTFS included), with paired
bootstrap intervals over the images.
"""

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
from jaxhw.snn.convert import NORMS, activation_scales, convert, fold_batchnorm, snn_ops
from jaxhw.snn.detection_ops import conv_head_as_dense
from jaxhw.snn.energy import (
                               HOROWITZ_45NM,
                               EnergyModel,
                               ann_energy_uj,
                               snn_energy_uj,
                               spikes_per_image,
                               synops_per_image,
)
from jaxhw.snn.latency import LatencyStats, bootstrap_weights, curve_latencies, latency_stats
from jaxhw.snn.network import SNNet, SNNOp, ann_logits_fn, ann_macs, snn_ann_apply, with_params
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
                               logits_fn,
                               simulate,
                               spiking_maxpool,
)
from jaxhw.snn.surrogate import SURROGATES, lif_scan, spike_fn, surrogate_grad
from jaxhw.snn.t2fsnn import (
                               GO_IMPLS,
                               closed_form,
                               decode,
                               go_loss,
                               go_step_analytic,
                               go_step_grad,
                               go_transform,
                               optimize_kernels,
                               pipeline_length,
                               quantize,
                               spike_time,
)

__all__ = [
    "conv_head_as_dense",
    "CODING_PRESETS", "HIDDEN_CODINGS", "INPUT_CODINGS", "Coding", "Encoder", "bias_gate", "get_coding",
    "hidden_neuron", "input_encoder",
    "NORMS", "activation_scales", "convert", "fold_batchnorm", "snn_ops",
    "LatencyStats", "bootstrap_weights", "curve_latencies", "latency_stats",
    "SNNet", "SNNOp", "ann_logits_fn", "ann_macs", "snn_ann_apply", "with_params",
    "HOROWITZ_45NM", "EnergyModel", "ann_energy_uj", "snn_energy_uj", "spikes_per_image", "synops_per_image",
    "Neuron", "State", "burst_neuron", "ibt_neuron", "if_neuron", "init_state", "integrator", "lif_neuron",
    "phase_neuron", "ttfs_neuron",
    "MODES", "RECORD_OPTIONS", "SimResult", "accuracy_curve", "latency_steps", "logits_fn", "simulate",
    "spiking_maxpool",
    "SURROGATES", "lif_scan", "spike_fn", "surrogate_grad",
    "GO_IMPLS", "closed_form", "decode", "go_loss", "go_step_analytic", "go_step_grad", "go_transform",
    "optimize_kernels",
    "pipeline_length", "quantize", "spike_time",
]
