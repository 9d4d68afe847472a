"""Memory-augmented networks on bAbI: the bAbI parser and padded arrays, the MemN2N training recipe, sign-magnitude
fixed-point quantizers, Q-MANN's bounded Hamming addressing (integer XOR/popcount and a training surrogate),
inference thresholding of the output layer, and the accelerator cost model."""

from jaxhw.mann.accelerator import (
                                    PHASES,
                                    DataflowModel,
                                    EnergyTable,
                                    OpCounts,
                                    count_ops,
                                    energy_pj,
                                    flops_per_kj,
)
from jaxhw.mann.babi import (
                                    NIL,
                                    NUM_TASKS,
                                    UNK,
                                    BabiArrays,
                                    BabiFormatError,
                                    BabiSplits,
                                    VectorizeStats,
                                    Vocab,
                                    build_vocab,
                                    format_task_text,
                                    load_splits,
                                    load_task,
                                    parse_task_text,
                                    vectorize,
)
from jaxhw.mann.batches import BucketedBatches
from jaxhw.mann.encoding import random_time_indices, time_indices
from jaxhw.mann.quantize import (
                                    BINARY,
                                    FixedPoint,
                                    activation_quantizer,
                                    fixed_point,
                                    per_hop_formats,
                                    quantize,
                                    quantize_params,
                                    quantize_value,
                                    saturated_fraction,
                                    to_codes,
)
from jaxhw.mann.recipe import Recipe, fit, make_loss_fn, make_optimizer, predict, task_errors
from jaxhw.mann.similarity import (
                                    bounded_hamming_similarity,
                                    dot_similarity,
                                    hamming_inference_scores,
                                    hamming_popcount,
                                    hamming_scores_int,
                                    hamming_terms,
                                    hamming_words,
                                    naive_similarity,
                                    pack_words,
)
from jaxhw.mann.threshold import (
                                    ThresholdReport,
                                    Thresholds,
                                    calibrate,
                                    evaluate,
                                    thresholded_predict,
                                    thresholded_predict_loop,
)

__all__ = [
    "PHASES", "DataflowModel", "EnergyTable", "OpCounts", "count_ops", "energy_pj", "flops_per_kj",
    "NIL", "NUM_TASKS", "UNK", "BabiArrays", "BabiFormatError", "BabiSplits", "VectorizeStats", "Vocab",
    "build_vocab", "format_task_text", "load_splits", "load_task", "parse_task_text", "vectorize",
    "BucketedBatches", "random_time_indices", "time_indices",
    "BINARY", "FixedPoint", "activation_quantizer", "fixed_point", "per_hop_formats", "quantize", "quantize_params",
    "quantize_value", "saturated_fraction", "to_codes",
    "Recipe", "fit", "make_loss_fn", "make_optimizer", "predict", "task_errors",
    "bounded_hamming_similarity", "dot_similarity", "hamming_inference_scores", "hamming_popcount",
    "hamming_scores_int", "hamming_terms", "hamming_words", "naive_similarity", "pack_words",
    "ThresholdReport", "Thresholds", "calibrate", "evaluate", "thresholded_predict", "thresholded_predict_loop",
]
