"""Smoke run of experiments/snn_coding.py: files written, figures sane."""

import json

import numpy as np

import experiments.snn_coding as study
from jaxhw.data.mnist import MnistConfig


def test_smoke_run_writes_files(tmp_path):
  config = study.get_config("smoke")
  assert isinstance(config.data, MnistConfig)  # the one shared MNIST data config
  summary = study.run(config, tmp_path)
  for name in ("summary.json", "report.md", "accuracy_vs_time.png", "metrics.jsonl"):
    assert (tmp_path / name).is_file(), name
  on_disk = json.loads((tmp_path / "summary.json").read_text())
  assert set(on_disk) >= {"ann_accuracy", "rows", "t2fsnn_vs_burst"}
  assert 0.3 < on_disk["ann_accuracy"] <= 1.0
  assert [r["coding"] for r in on_disk["rows"]] == list(config.snn.rows)
  for r in on_disk["rows"]:
    assert set(r) >= {"coding", "accuracy", "latency_steps", "spikes_per_image", "synops", "energy_uj"}
    assert 0.0 <= r["accuracy"] <= 1.0 and r["spikes_per_image"] > 0 and r["synops"] > 0 and r["energy_uj"] > 0
  by = {r["coding"]: r for r in on_disk["rows"]}
  # TTFS: at most one spike per hidden neuron (24*24*12 + 8*8*64 in the MNIST CNN), fewer than burst over T.
  ttfs, burst = by["ttfs+GO+EF"], by["burst"]
  assert ttfs["spikes_per_image"] <= 24 * 24 * 12 + 8 * 8 * 64
  assert ttfs["spikes_per_image"] < burst["spikes_per_image"]
  assert ttfs["T"] == 40 and len(ttfs["tau"]) == 3 and len(ttfs["t_d"]) == 3  # 2 * T_s + T_w; input + 2 layers
  versus = on_disk["t2fsnn_vs_burst"]
  assert set(versus) >= {"latency_ratio", "spike_ratio"}
  assert versus["t2fsnn_latency_steps"] == 40
  assert np.isclose(versus["spike_ratio_vs_burst_at_T"], ttfs["spikes_per_image"] / burst["spikes_per_image"])
  if burst["latency_steps"] is not None:
    assert np.isclose(versus["latency_ratio"], 40 / burst["latency_steps"])
    assert np.isclose(versus["spike_ratio"], ttfs["spikes_per_image"] / burst["spikes_per_image_at_latency"])
  else:
    assert versus["latency_ratio"] is None
  assert np.isfinite(summary["wall_s"])
  # the ANN was trained by jaxhw.train with batch norm as model state, and checkpointed with it.
  assert (tmp_path / "checkpoints").is_dir()
  assert summary["converted_ann_accuracy"] >= summary["ann_accuracy"] - 0.05
