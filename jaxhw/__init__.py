"""jaxhw: hardware-aware deep learning in JAX, as composable pure functions.

Subpackages (``jaxhw.faults``, ``jaxhw.hessian``, ...; each is imported on first use):
  effects    the one mechanism that attaches hardware effects to any Flax model from outside
  layers     static layer descriptions (LayerSpec) shared by sequential models and the SNN converter
  pytree     params-tree path helpers
  data       vendored MNIST / bAbI loaders, resumable streams, synthetic sets, tfds adapter
  models     Flax Linen models: MLP, LeNet-5, ResNet-18, VGG, the SNN-conversion CNN, the binary crossbar net
  faults     bit layouts, bit flips, single-bit sweeps and the bit-flip attack (HAT)
  hessian    hvp, Hutchinson trace, top eigenvalues, the HAT regularizer
  crossbar   binary memristive crossbar with read noise, pulse encodings, GBO
  snn        spiking neurons, codings, ANN-to-SNN conversion, T2FSNN, energy counts
  mann       memory-augmented networks on bAbI, Q-MANN quantization, inference thresholding
  parallel   meshes, data-parallel steps, multi-process launch, the cluster cost model
  storage    SSD simulator for in-storage SGD (ISP-ML)
  detection  boxes, YOLO loss and decoding, NMS, VOC mAP, a seeded shapes detection set (Spiking-YOLO)
Top level: the trainer (`train`, `TrainConfig`), checkpoints, metrics and reports.
"""

import importlib

from jaxhw.checkpoint import Checkpointer, CheckpointError
from jaxhw.metrics import accuracy, cross_entropy
from jaxhw.report import Table, write_index, write_study_report
from jaxhw.train import NonFiniteLossError, TrainConfig, TrainingInterrupted, TrainResult, train

__version__ = "0.1.0"

_SUBPACKAGES = ("effects", "layers", "pytree", "data", "models", "faults", "hessian", "crossbar", "snn", "mann",
                "parallel", "storage", "detection")


def __getattr__(name: str):
  if name in _SUBPACKAGES:
    return importlib.import_module(f"jaxhw.{name}")
  raise AttributeError(f"module 'jaxhw' has no attribute {name!r}")


def __dir__():
  return sorted(list(globals()) + list(_SUBPACKAGES))


__all__ = [
    "CheckpointError", "Checkpointer", "NonFiniteLossError", "Table", "TrainConfig", "TrainResult",
    "TrainingInterrupted", "accuracy", "cross_entropy", "train", "write_index", "write_study_report",
    *_SUBPACKAGES,
]
