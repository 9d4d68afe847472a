"""Smoke test of the HAT study: `run(get_config("smoke"), tmp_path)` end to end."""

import json

import numpy as np
import pytest

import experiments.hat as study


@pytest.mark.slow
def test_hat_smoke(tmp_path):
  summary = study.run(study.get_config("smoke"), tmp_path)
  for name in ("summary.json", "report.md", "rad_histogram.png", "per_bit.png", "attack.png"):
    assert (tmp_path / name).is_file(), name
  on_disk = json.loads((tmp_path / "summary.json").read_text())
  assert [r["method"] for r in on_disk["rows"]] == list(study.METHODS)
  keys = {"method", "clean_accuracy", "hessian_trace", "catastrophic_bits", "catastrophic_bits_ci",
          "erratic_params", "attack_flips_to_20pct", "train_time_ratio"}
  for r in on_disk["rows"]:
    assert keys <= set(r)
    assert 0.3 < r["clean_accuracy"] <= 1.0  # one epoch on 4,500 images learns something
    assert np.isfinite(r["hessian_trace"]) and r["hessian_trace"] > 0
    lo, hi = r["catastrophic_bits_ci"]
    assert 0 <= lo <= r["catastrophic_bits"] <= hi
    assert r["train_time_ratio"] > 0
  assert "catastrophic_reduction" in on_disk
  assert on_disk["rows"][0]["train_time_ratio"] == 1.0
  assert "HAT" in (tmp_path / "report.md").read_text()
  assert summary["rows"][0]["method"] == "plain"


def test_config_presets():
  assert study.get_config("quick").eval.sweep_params >= 2000
  assert study.get_config("full").eval.sweep_params == 0
  with pytest.raises(ValueError, match="preset"):
    study.get_config("huge")
