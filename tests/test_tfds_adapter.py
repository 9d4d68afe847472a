import time

import numpy as np
import pytest

from jaxhw.data import DatasetNotPreparedError, tfds_arrays, tfds_source


def test_missing_dataset_fails_fast_with_instructions(tmp_path):
  t0 = time.perf_counter()
  with pytest.raises(DatasetNotPreparedError) as err:
    tfds_source("cifar10", "train", data_dir=tmp_path)
  assert time.perf_counter() - t0 < 1.0
  msg = str(err.value)
  assert "cifar10" in msg and str(tmp_path) in msg and "tfds build" in msg and "never downloads" in msg


def test_reads_a_dataset_prepared_locally(tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")

  class TinyDigits(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          "image": tfds.features.Tensor(shape=(4, 4, 1), dtype=np.uint8),
          "label": tfds.features.ClassLabel(num_classes=3)}))

    def _split_generators(self, dl_manager):
      return {"train": self._generate_examples(6)}

    def _generate_examples(self, n):
      for i in range(n):
        yield i, {"image": np.full((4, 4, 1), i, np.uint8), "label": i % 3}

  builder = TinyDigits(data_dir=str(tmp_path), file_format="array_record")
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  images, labels = tfds_arrays("tiny_digits", "train", data_dir=tmp_path)
  assert images.shape == (6, 4, 4, 1) and sorted(labels.tolist()) == [0, 0, 1, 1, 2, 2]
  assert sorted(images[:, 0, 0, 0].tolist()) == list(range(6))
