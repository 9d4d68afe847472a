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
  reads = [l["reads_per_pulse"] for l in summary["layers"]]
  for tb, alloc in summary["allocations"].items():
    budget = summary["search"][tb]["budget_E"]
    assert budget == int(tb) * sum(reads)
    assert len(alloc["gbo"]) == len(alloc["closed_form"]) == len(summary["sigmas"])  # one allocation per sigma
    for method in ("gbo", "closed_form", "gbo_search_result"):
      for pulses in alloc[method]:
        assert len(pulses) == len(reads) and min(pulses) >= 1
        assert sum(t * r for t, r in zip(pulses, reads)) <= budget + 1e-9
  assert isinstance(summary["gbo_gain_at_severe_noise"]["best_points"], float)
