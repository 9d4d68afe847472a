"""jaxhw: hardware-aware deep learning in JAX, as composable pure functions.

Subpackages (import them as ``jaxhw.faults``, ``jaxhw.hessian``, ...):
  data       vendored MNIST / bAbI loaders, resumable batch iterator, synthetic sets, tfds adapter
  models     MLP, LeNet and other pure init/apply models
  faults     bit layouts, bit flips, single-bit sweeps and the bit-flip attack (HAT)
  hessian    hvp, Hutchinson trace, top eigenvalues, the HAT regularizer
  crossbar   binary memristive crossbar with read noise, pulse encodings, GBO
  snn        spiking neurons, codings, ANN-to-SNN conversion, T2FSNN, energy counts
Top level: the trainer (`train`, `TrainConfig`), checkpoints, metrics and reports.
"""

from jaxhw import crossbar, data, faults, hessian, models, snn
from jaxhw.checkpoint import Checkpointer, CheckpointError
from jaxhw.metrics import accuracy, cross_entropy
from jaxhw.report import Table, write_index, write_study_report
from jaxhw.train import NonFiniteLossError, TrainConfig, TrainingInterrupted, TrainResult, train

__version__ = "0.1.0"

__all__ = [
    "CheckpointError", "Checkpointer", "NonFiniteLossError", "Table", "TrainConfig", "TrainResult",
    "TrainingInterrupted", "accuracy", "cross_entropy", "crossbar", "data", "faults", "hessian", "models",
    "snn", "train", "write_index", "write_study_report",
]
