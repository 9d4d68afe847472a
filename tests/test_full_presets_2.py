"""`full` presets run end to end at cut scale (second half; see test_full_presets.py): the spiking studies on tiny
CIFAR-10 / VOC 2007 prepared through the real tfds path, and the studies whose paper setting needs only the
vendored data (Q-MANN on bAbI, ISP-ML, the cluster model)."""

import json

import pytest
from _full_presets_cases import CUTS
from _full_presets_data import prepare

from jaxhw.cli import main


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
  return prepare(tmp_path_factory.mktemp("tfds"), names=("cifar10", "voc/2007"))


def run_full(study, tmp_path, monkeypatch, data_dir=None):
  if data_dir is not None:
    monkeypatch.setenv("TFDS_DATA_DIR", str(data_dir))
  sets = [a for item in CUTS[study] for a in ("--set", item)]
  assert main(["run", study, "--preset", "full", "--quiet", "--workdir", str(tmp_path), *sets]) == 0
  summary = json.loads((tmp_path / "summary.json").read_text())
  config = json.loads((tmp_path / "config.json").read_text())
  return summary, config, (tmp_path / "report.md").read_text()


def test_snn_coding_full_runs_vgg16_on_tiny_cifar10(tfds_dir, tmp_path, monkeypatch):
  summary, config, report = run_full("snn_coding", tmp_path, monkeypatch, tfds_dir)
  assert config["model"]["arch"] == "vgg16" and config["data"]["dataset"] == "cifar10"
  assert summary["n_snn_images"] == 8


def test_spiking_yolo_full_runs_tiny_yolo_on_tiny_voc(tfds_dir, tmp_path, monkeypatch):
  summary, config, report = run_full("spiking_yolo", tmp_path, monkeypatch, tfds_dir)
  assert config["data"]["dataset"] == "voc2007" and summary["n_eval_images"] == 4
  assert summary["interpolation"] == "11-point" and len(summary["rows"]) == 4


def test_qmann_full_runs_cut(tmp_path, monkeypatch):
  summary, config, report = run_full("qmann", tmp_path, monkeypatch)
  assert config["data"]["per_task"] is True and summary


def test_ispml_full_runs_cut(tmp_path, monkeypatch):
  summary, config, report = run_full("ispml", tmp_path, monkeypatch)
  assert config["hardware"]["channels"] == [16, 32] and summary


def test_cluster_full_runs_cut(tmp_path, monkeypatch):
  summary, config, report = run_full("cluster", tmp_path, monkeypatch)
  assert 138 in config["model"]["devices"] and summary
