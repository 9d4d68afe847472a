"""Smoke test of the HAT study: `run(get_config("smoke"), tmp_path)` end to end, plus its seed aggregation."""

import json

import numpy as np
import pytest

import experiments.hat as study


@pytest.mark.slow
def test_hat_smoke(tmp_path):
  summary = study.run(study.get_config("smoke"), tmp_path)
  assert summary["wall_s"] > 0
  for name in ("summary.json", "report.md", "rad_histogram.png", "per_bit.png", "attack.png"):
    assert (tmp_path / name).is_file(), name
  on_disk = json.loads((tmp_path / "summary.json").read_text())
  config = study.get_config("smoke")
  assert [r["method"] for r in on_disk["rows"]] == list(config.methods.methods)
  assert {"plain", "hat"} <= set(config.methods.methods) <= set(study.METHODS)
  keys = {"method", "clean_accuracy", "hessian_trace", "catastrophic_bits", "catastrophic_bits_ci",
          "erratic_params", "attack_flips_to_20pct", "train_time_ratio"}
  for r in on_disk["rows"]:
    assert keys <= set(r)
    assert 0.3 < r["clean_accuracy"] <= 1.0  # 15 steps on 4,500 images learn something
    assert np.isfinite(r["hessian_trace"]) and r["hessian_trace"] > 0
    lo, hi = r["catastrophic_bits_ci"]
    assert 0 <= lo <= r["catastrophic_bits"] <= hi
    assert r["train_time_ratio"] > 0
  assert "catastrophic_reduction" in on_disk and on_disk["paired"]["n_seeds"] == 1
  assert set(on_disk["paired"]) >= {"difference_plain_minus_hat", "difference_ci", "resolved"}
  assert on_disk["rows"][0]["train_time_ratio"] == 1.0
  report = (tmp_path / "report.md").read_text()
  assert "HAT" in report and "resolved" in report
  assert summary["rows"][0]["method"] == "plain"


def _fake(cat, err=10, acc=0.9, trace=5.0, lo=None, hi=None):
  c = {"estimate": cat, "lo": cat if lo is None else lo, "hi": cat if hi is None else hi, "se": 0.0}
  e = {"estimate": err, "lo": err, "hi": err, "se": 0.0}
  return {"catastrophic": c, "erratic": e, "vulnerable_10": e, "nonfinite": e, "clean_accuracy": acc,
          "hessian_trace": trace, "lambda_max": 1.0, "erratic_fraction": 0.1, "attack_flips_to_20pct": 3.0,
          "random_flip_accuracy": 0.9, "train_time_ratio": 1.0, "lam": 0.0, "sweep_s": 1.0}


def test_aggregate_paired_over_seeds():
  per_seed = [{"plain": _fake(100), "hat": _fake(70)}, {"plain": _fake(120), "hat": _fake(80)},
              {"plain": _fake(90), "hat": _fake(75)}]
  out = study.aggregate(per_seed, ("plain", "hat"), sampled=False)
  by = {r["method"]: r for r in out["rows"]}
  assert by["plain"]["catastrophic_bits"] == pytest.approx(310 / 3)
  assert by["plain"]["catastrophic_bits_std"] == pytest.approx(np.std([100, 120, 90], ddof=1))
  lo, hi = by["plain"]["catastrophic_bits_ci"]
  half = 4.303 * np.std([100, 120, 90], ddof=1) / np.sqrt(3)  # t(0.975, 2 dof)
  assert lo == pytest.approx(310 / 3 - half) and hi == pytest.approx(310 / 3 + half)
  assert out["catastrophic_reduction"] == pytest.approx(1 - 225 / 310)
  np.testing.assert_allclose(out["reduction_per_seed"], [0.3, 1 / 3, 1 / 6])
  d = np.array([30, 40, 15])
  assert out["paired"]["difference_plain_minus_hat"] == pytest.approx(d.mean())
  assert out["paired"]["resolved"] == bool(d.mean() - 4.303 * d.std(ddof=1) / np.sqrt(3) > 0)
  # Not resolved when the per-seed differences change sign.
  per_seed[2]["hat"] = _fake(130)
  assert not study.aggregate(per_seed, ("plain", "hat"), sampled=False)["paired"]["resolved"]
  # One seed, sampled: the sampling CIs are kept, and overlapping CIs are not resolved.
  one = [{"plain": _fake(100, lo=80, hi=120), "hat": _fake(70, lo=50, hi=90)}]
  out1 = study.aggregate(one, ("plain", "hat"), sampled=True)
  assert out1["rows"][0]["catastrophic_bits_ci"] == [80, 120]
  assert out1["paired"]["difference_ci"] == [80 - 90, 120 - 50] and not out1["paired"]["resolved"]


def test_config_presets():
  quick = study.get_config("quick")
  assert quick.eval.sweep_params == 0 or quick.eval.sweep_params >= 2000  # exhaustive, or >= 2,000 sampled
  assert quick.data.sweep_images == 1000 and len(quick.seeds) >= 1
  assert study.get_config("smoke").eval.sweep_params > 0  # the smoke test covers the sampled path
  assert study.get_config("full").eval.sweep_params == 0
  with pytest.raises(ValueError, match="preset"):
    study.get_config("huge")
