"""`full` presets run end to end at cut scale (second part; see test_full_presets.py): the spiking studies on tiny
CIFAR-10 / VOC 2007 prepared through the real tfds path. (Split by study so `pytest -n 2 --dist loadfile` can
balance the slow ones.)"""

import pytest
from _full_presets_cases import run_full
from _full_presets_data import prepare


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
  return prepare(tmp_path_factory.mktemp("tfds"), names=("cifar10", "voc/2007"))


def test_snn_coding_full_runs_vgg16_on_tiny_cifar10(tfds_dir, tmp_path, monkeypatch):
  summary, config, report = run_full("snn_coding", tmp_path, monkeypatch, tfds_dir)
  assert config["model"]["arch"] == "vgg16" and config["data"]["dataset"] == "cifar10"
  assert summary["n_snn_images"] == 8


def test_spiking_yolo_full_runs_tiny_yolo_on_tiny_voc(tfds_dir, tmp_path, monkeypatch):
  summary, config, report = run_full("spiking_yolo", tmp_path, monkeypatch, tfds_dir)
  assert config["data"]["dataset"] == "voc2007" and summary["n_eval_images"] == 4
  assert summary["interpolation"] == "11-point" and len(summary["rows"]) == 4
