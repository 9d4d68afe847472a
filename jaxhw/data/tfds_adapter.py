"""Adapter for datasets a user has already prepared with tensorflow-datasets (CIFAR-10/100, VOC, ...).

jaxhw never downloads: the adapter reads an existing ``data_dir`` through `tfds.data_source` with
``download=False`` and fails at once, naming the directory, when the dataset is not there.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from jaxhw.data._files import MissingDataError

DEFAULT_DATA_DIR_ENV = "TFDS_DATA_DIR"


class DatasetNotPreparedError(MissingDataError):
  """The requested tfds dataset is not prepared in the data directory.

  Attributes:
    dataset: the tfds name asked for (e.g. ``"cifar10"``, ``"voc/2007"``).
    data_dir: the directory that was searched.
    command: the ``tfds build`` command that prepares it.
  """

  def __init__(self, message: str, *, dataset: str = "", data_dir: Path | None = None, command: str = ""):
    super().__init__(message)
    self.dataset, self.data_dir, self.command = dataset, data_dir, command


def build_command(name: str, data_dir: str | os.PathLike | None = None) -> str:
  """The ``tfds build`` command that prepares dataset `name` into `data_dir` in the array_record format.

  Args:
    name: tfds name, optionally with config and version (``"voc/2007"``, ``"cifar10:3.0.2"``).
    data_dir: target directory; defaults to ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``.

  Returns:
    The shell command, e.g. ``tfds build cifar10 --data_dir=/data/tfds --file_format=array_record``.
  """
  data_dir = Path(data_dir) if data_dir is not None else _default_data_dir()
  return f"tfds build {name.split(':')[0]} --data_dir={data_dir} --file_format=array_record"


def require_tfds(name: str, data_dir: str | os.PathLike | None = None) -> Path:
  """Checks that tfds dataset `name` is prepared in `data_dir` (in well under a second, without importing tfds).

  Studies call it for every dataset they need before any training, so a missing dataset is refused at once.

  Args:
    name: tfds name, e.g. ``"cifar10"`` or ``"voc/2007"``.
    data_dir: the prepared data directory; defaults to ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``.

  Returns:
    The data directory.

  Raises:
    DatasetNotPreparedError: the dataset is not there; the message names it, the directory searched and the
      ``tfds build`` command.
  """
  data_dir = Path(data_dir) if data_dir is not None else _default_data_dir()
  if not _prepared_versions(data_dir, name):
    command = build_command(name, data_dir)
    raise DatasetNotPreparedError(
        f"tfds dataset {name!r} is not prepared in {data_dir} (searched {data_dir / name.split(':')[0]}). "
        "jaxhw never downloads. Prepare it once on a machine with network access, in the array_record format:\n"
        f"  {command}\n"
        "then copy the directory here, or point data_dir / $TFDS_DATA_DIR at it.",
        dataset=name.split(":")[0], data_dir=data_dir, command=command)
  return data_dir


def _default_data_dir() -> Path:
  return Path(os.environ.get(DEFAULT_DATA_DIR_ENV, Path.home() / "tensorflow_datasets"))


def _prepared_versions(data_dir: Path, name: str) -> list[Path]:
  base, _, config = name.partition(":")[0].partition("/")
  root = data_dir / base / config if config else data_dir / base
  if not root.is_dir():
    return []
  return sorted(p.parent for p in root.glob("**/dataset_info.json"))


def tfds_source(name: str, split: str, data_dir: str | os.PathLike | None = None) -> Any:
  """Opens a prepared tfds dataset as a random-access data source (no download, no TensorFlow).

  Args:
    name: tfds name, optionally with config and version, e.g. ``"cifar10"`` or ``"cifar10:3.0.2"``.
    split: split expression, e.g. ``"train"`` or ``"test[:1000]"``.
    data_dir: the directory the dataset was prepared into; defaults to ``$TFDS_DATA_DIR`` or
      ``~/tensorflow_datasets``.

  Returns:
    A sequence of example dicts (``source[i]``), as returned by `tfds.data_source`.

  Raises:
    DatasetNotPreparedError: the dataset is not in ``data_dir``; the message says how to prepare it.
  """
  data_dir = require_tfds(name, data_dir)
  import tensorflow_datasets as tfds  # imported lazily: slow to import and only needed here

  return tfds.data_source(name, split=split, data_dir=os.fspath(data_dir), download=False, try_gcs=False)


def tfds_arrays(name: str, split: str, data_dir: str | os.PathLike | None = None,
                keys: tuple[str, ...] = ("image", "label"), limit: int | None = None) -> tuple[np.ndarray, ...]:
  """Reads a prepared tfds split into stacked numpy arrays (for small image-classification sets).

  Args:
    name: tfds dataset name.
    split: split expression.
    data_dir: prepared data directory (see `tfds_source`).
    keys: feature keys to stack, in order.
    limit: read at most this many examples.

  Returns:
    One numpy array per key, stacked over examples.
  """
  source = tfds_source(name, split, data_dir)
  n = len(source) if limit is None else min(limit, len(source))
  rows = [source[i] for i in range(n)]
  return tuple(np.stack([np.asarray(r[k]) for r in rows]) for k in keys)
