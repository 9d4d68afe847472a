"""Smoke run of experiments/snn_coding.py: files written, figures sane."""

import json

import numpy as np

import experiments.snn_coding as study


def test_smoke_run_writes_files(tmp_path):
  config = study.get_config("smoke")
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
  # TTFS: at most one spike per neuron, far fewer than rate coding.
  assert by["ttfs+GO+EF"]["spikes_per_image"] < by["rate-real"]["spikes_per_image"]
  assert by["ttfs+GO+EF"]["T"] == 40 and by["ttfs+GO+EF"]["tau"] and by["ttfs+GO+EF"]["t_d"]
  assert set(on_disk["t2fsnn_vs_burst"]) >= {"latency_ratio", "spike_ratio"}
  assert np.isfinite(summary["wall_s"])
