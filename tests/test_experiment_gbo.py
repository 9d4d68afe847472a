"""Smoke test of the GBO study: runs the smoke preset end to end and checks files and sanity."""

import json

import experiments.gbo as study


def test_gbo_smoke(tmp_path):
  summary = study.run(study.get_config("smoke"), tmp_path)
  for name in ("summary.json", "report.md", "results.csv", "accuracy_vs_noise.png", "pulses_per_layer.png"):
    assert (tmp_path / name).is_file(), name
  saved = json.loads((tmp_path / "summary.json").read_text())
  assert {"curves", "allocations", "gbo_gain_at_severe_noise"} <= set(saved)
  assert summary["sigma_ref"] > 0 and len(summary["sigmas"]) >= 6
  uni = summary["curves"]["uniform@T1"]
  assert uni["mean"][0] > 0.5                     # noise-free accuracy well above chance
  assert uni["mean"][-1] < uni["mean"][0] - 0.2   # collapses at the most severe sigma
  assert len(uni["std"]) == len(uni["sigma"])
  for tb, alloc in summary["allocations"].items():
    budget = summary["search"][tb]["budget_E"]
    reads = [l["reads_per_pulse"] for l in summary["layers"]]
    assert sum(t * r for t, r in zip(alloc["gbo"], reads)) <= budget + 1e-9
    assert sum(t * r for t, r in zip(alloc["closed_form"], reads)) <= budget + 1e-9
  assert isinstance(summary["gbo_gain_at_severe_noise"]["best_points"], float)
