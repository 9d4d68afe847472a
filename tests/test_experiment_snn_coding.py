"""Smoke run of experiments/snn_coding.py: files written, figures sane."""

import json

import numpy as np

import jaxhw.experiments.snn_coding as study
from jaxhw.data.mnist import MnistConfig


def test_smoke_run_writes_files(tmp_path):
  config = study.get_config("smoke")
  assert isinstance(config.data, MnistConfig)  # the one shared MNIST data config
  assert study.get_config("quick").data.n_snn >= 2000
  summary = study.run(config, tmp_path)
  for name in ("summary.json", "report.md", "accuracy_vs_time.png", "metrics.jsonl", "latency_spikes_vs_depth.png"):
    assert (tmp_path / name).is_file(), name
  on_disk = json.loads((tmp_path / "summary.json").read_text())
  assert set(on_disk) >= {"ann_accuracy", "rows", "t2fsnn_vs_burst", "n_snn_images", "nets"}
  assert on_disk["n_snn_images"] == config.data.n_snn
  assert 0.3 < on_disk["ann_accuracy"] <= 1.0
  assert [r["coding"] for r in on_disk["rows"]] == list(config.snn.rows)
  for r in on_disk["rows"]:
    assert set(r) >= {"coding", "accuracy", "latency_steps", "latency_ci", "spikes_per_image", "synops",
                      "energy_uj", "spikes_per_image_at_latency", "synops_at_latency"}
    assert 0.0 <= r["accuracy"] <= 1.0 and r["spikes_per_image"] > 0 and r["synops"] > 0 and r["energy_uj"] > 0
    if r["latency_steps"] is not None:  # one definition for every coding: read from the curve
      assert 1 <= r["latency_steps"] <= r["T"]
      assert r["spikes_per_image_at_latency"] <= r["spikes_per_image"] + 1e-9
  by = {r["coding"]: r for r in on_disk["rows"]}
  # TTFS: at most one spike per hidden neuron (24*24*12 + 8*8*64 in the MNIST CNN), fewer than burst over T.
  ttfs, burst = by["ttfs+GO+EF"], by["burst"]
  assert ttfs["spikes_per_image"] <= 24 * 24 * 12 + 8 * 8 * 64
  assert ttfs["spikes_per_image"] < burst["spikes_per_image"]
  assert ttfs["T"] == 40 and ttfs["pipeline_length"] == 40 and len(ttfs["tau"]) == 3
  versus = on_disk["t2fsnn_vs_burst"]
  assert set(versus) >= {"latency_ratio", "latency_ratio_ci", "spike_ratio", "spike_ratio_ci"}
  if versus["latency_ratio"] is not None:
    assert np.isclose(versus["latency_ratio"], versus["t2fsnn_latency_steps"] / versus["burst_latency_steps"])
  nets = on_disk["nets"]
  assert [n["depth"] for n in nets] == [2] + list(config.depth.depths)
  for n in nets:
    assert set(n) >= {"depth", "ann_accuracy", "t2fsnn_vs_burst"}
    assert set(n["t2fsnn_vs_burst"]) >= {"latency_ratio", "latency_ratio_ci", "spike_ratio", "spike_ratio_ci"}
  assert np.isfinite(summary["wall_s"])
  # the ANN was trained by jaxhw.train with batch norm as model state, and checkpointed with it.
  assert (tmp_path / "checkpoints").is_dir()
  assert summary["converted_ann_accuracy"] >= summary["ann_accuracy"] - 0.05


def test_plain_cnn_layers_depth():
  for depth in (1, 2, 6, 10):
    layers = study.plain_cnn_layers(depth)
    assert sum(lay.kind == "conv" for lay in layers) == depth
