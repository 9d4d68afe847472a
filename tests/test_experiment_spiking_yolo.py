"""Smoke run of experiments/spiking_yolo.py (files, summary keys, sane figures) and the full preset's refusal
without prepared VOC data."""

import json

import numpy as np
import pytest

import jaxhw.experiments.spiking_yolo as study
from jaxhw.data.tfds_adapter import DatasetNotPreparedError


def test_smoke_run_writes_files(tmp_path):
  summary = study.run(study.get_config("smoke"), tmp_path)
  for name in ("summary.json", "report.md", "map_vs_time.png", "detections.png", "channel_ranges.png",
               "metrics.jsonl", "config.json"):
    if name == "config.json" and not (tmp_path / name).exists():
      continue  # written by the CLI, not by run()
    assert (tmp_path / name).is_file(), name
  on_disk = json.loads((tmp_path / "summary.json").read_text())
  assert set(on_disk) >= {"ann_map", "rows", "channelwise_speedup"}
  assert 0.0 <= on_disk["ann_map"] <= 1.0
  assert [(r["normalization"], r["neuron"]) for r in on_disk["rows"]] == [
      ("layer-wise", "IF"), ("layer-wise", "IBT"), ("channel-wise", "IF"), ("channel-wise", "IBT")]
  T = study.get_config("smoke").snn.T
  for r in on_disk["rows"]:
    assert set(r) >= {"normalization", "neuron", "map", "steps_to_90pct", "spikes_per_image",
                      "energy_ratio_snn_over_ann"}
    assert 0.0 <= r["map"] <= 1.0 and r["spikes_per_image"] > 0 and r["energy_ratio_snn_over_ann"] > 0
    assert r["steps_to_90pct"] is None or 1 <= r["steps_to_90pct"] <= T
  # the float converted network is the ANN (batch norm folded, rescaled): same mAP
  for v in on_disk["converted_ann_map"].values():
    assert abs(v - on_disk["ann_map"]) <= 0.02
  assert np.isfinite(summary["wall_s"]) and (tmp_path / "checkpoints").is_dir()
  ranges = on_disk["channel_ranges"]
  assert [r["channels"] for r in ranges[:-1]] == list(study.get_config("smoke").model.widths)
  for r in ranges:
    assert 0 < r["min"] <= r["p10"] <= r["median"] and 0 <= r["below_half"] <= 1
    assert len(r["ratios"]) == r["channels"] and min(r["ratios"]) == r["min"]


def test_channel_ranges_against_hand_computed_ratios():
  """lambda_c / lambda_layer per conv/dense op (pools skipped): [1, 2, 4] / 4 -> min 0.25, median 0.5."""
  from types import SimpleNamespace as NS
  ops = [NS(kind="conv", path=("c",)), NS(kind="maxpool", path=("p",)), NS(kind="dense", path=("head", "d"))]
  channel = NS(ops=ops, lambdas={"c": np.array([1.0, 2.0, 4.0]), "head": {"d": np.array([3.0, 3.0])}})
  layer = NS(ops=ops, lambdas={"c": np.full(3, 4.0), "head": {"d": np.full(2, 1.5)}})
  rows = study.channel_ranges(layer, channel)
  assert [r["layer"] for r in rows] == ["c", "head/d"]
  np.testing.assert_allclose([rows[0]["min"], rows[0]["p10"], rows[0]["median"], rows[0]["below_half"]],
                             [0.25, 0.3, 0.5, 1 / 3])
  assert rows[1]["min"] == rows[1]["median"] == 2.0 and rows[1]["below_half"] == 0.0
  assert rows[0]["ratios"] == [0.25, 0.5, 1.0]


def test_full_preset_refuses_without_voc(tmp_path, monkeypatch):
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "no_data"))
  with pytest.raises(DatasetNotPreparedError, match=r"voc/2007.*no_data[\s\S]*tfds build voc/2007"):
    study.run(study.get_config("full"), tmp_path / "run")
  from jaxhw import cli
  assert cli.main(["run", "spiking_yolo", "--preset", "full", "--workdir", str(tmp_path / "run2")]) == 1


def test_config_validation():
  with pytest.raises(ValueError, match="data.dataset"):
    study.DataConfig(dataset="coco")
  with pytest.raises(ValueError, match="eval_every"):
    study.SNNConfig(T=16, eval_every=32)
  with pytest.raises(ValueError, match="snn.layer_norm='channel_max'; valid: layer_p99.9, layer_max"):
    study.SNNConfig(layer_norm="channel_max")
  with pytest.raises(ValueError, match="unknown preset"):
    study.get_config("huge")
