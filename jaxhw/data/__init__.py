"""Datasets: vendored MNIST and bAbI, a resumable batch iterator, augmentation, synthetic sets, tfds adapter."""

from jaxhw.data._files import MissingDataError, vendored_path
from jaxhw.data.augment import random_shift
from jaxhw.data.babi import BabiExample, load_babi, parse_babi, tokenize
from jaxhw.data.iterator import BatchIterator, Stream
from jaxhw.data.mnist import MnistConfig, MnistSplits, load_mnist, load_mnist_splits, train_val_split
from jaxhw.data.synthetic import synthetic_classification
from jaxhw.data.tfds_adapter import DatasetNotPreparedError, build_command, require_tfds, tfds_arrays, tfds_source

__all__ = [
    "BabiExample", "BatchIterator", "DatasetNotPreparedError", "MissingDataError", "MnistConfig", "MnistSplits",
    "Stream", "build_command", "load_babi", "load_mnist", "load_mnist_splits", "parse_babi", "random_shift",
    "require_tfds", "synthetic_classification", "tfds_arrays", "tfds_source", "tokenize", "train_val_split",
    "vendored_path",
]
