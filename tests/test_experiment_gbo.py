"""Smoke test of the GBO study: runs the smoke preset end to end and checks files and sanity."""

import json

import jaxhw.experiments.gbo as study


def test_gbo_smoke(tmp_path):
  summary = study.run(study.get_config("smoke"), tmp_path)
  for name in ("summary.json", "report.md", "results.csv", "accuracy_vs_noise.png", "pulses_per_layer.png"):
    assert (tmp_path / name).is_file(), name
  saved = json.loads((tmp_path / "summary.json").read_text())
  assert {"gain_no_fallback", "search_equals_closed_form", "raw_search_within_budget", "nets"} <= set(saved)
  net = summary["nets"]["tapered"]
  assert net["sigma_ref"] > 0 and len(net["sigmas"]) == 6 and max(net["sigmas"]) == 4 * net["sigma_ref"]
  uni = net["curves"]["uniform@T1"]
  assert uni["mean"][0] > 0.5                     # noise-free accuracy well above chance
  assert uni["mean"][-1] < uni["mean"][0] - 0.2   # collapses at the most severe sigma
  assert len(uni["std"]) == len(uni["sigma"])
  reads = [l["reads_per_pulse"] for l in net["layers"]]
  for rec in net["allocations"]:
    assert rec["budget_E"] == rec["budget"] * sum(reads)
    for method in ("gbo", "closed_form", "gbo_fallback"):
      pulses = rec[method]
      assert len(pulses) == len(reads) and min(pulses) >= 1
      assert sum(t * r for t, r in zip(pulses, reads)) <= rec["budget_E"] + 1e-9
    assert rec["raw_within_budget"] == (rec["raw_E"] <= rec["budget_E"] + 1e-9)
  g = summary["gain_no_fallback"]["tapered"]
  assert isinstance(g["best_points"], float) and g["sigma_over_sigma_ref"] >= 2
  assert 0.0 <= summary["raw_search_within_budget"] <= 1.0
  assert summary["search_equals_closed_form"]["of"] == len(net["allocations"])
