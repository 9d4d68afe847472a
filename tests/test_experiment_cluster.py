"""The cluster study's smoke preset end to end: files, table keys and the figures' sanity."""

import json

import numpy as np
import pytest

from jaxhw.experiments._cluster_calibrate import median_of_rounds
from jaxhw.experiments.cluster import MeasureConfig, get_config, run
from jaxhw.parallel import cost


def test_smoke_preset_end_to_end(tmp_path):
  """The smoke preset, with per-device compute from measured single-device steps (``measure.compute=measured``, the
  default; the FLOPs form is predicted beside it from the same timings)."""
  config = get_config("smoke")
  assert config.measure.compute == "measured" and config.measure.rounds == 1
  summary = run(config, tmp_path)
  for name in ("summary.json", "report.md", "measured.png", "scaling.png", "wifi_sensitivity.png", "large_batch.png"):
    assert (tmp_path / name).is_file(), name
  saved = json.loads((tmp_path / "summary.json").read_text())
  for key in ("measured", "model_error_pct", "wifi_ceiling_devices", "ethernet_speedup_138", "wifi_sensitivity",
              "large_batch"):
    assert key in saved, key
  rows = summary["measured"]
  assert [(r["devices"], r["processes"]) for r in rows] == [(1, 1), (2, 1), (2, 2)]
  assert all(r["step_ms"] > 0 and r["predicted_step_ms"] > 0 for r in rows)
  assert summary["two_process_loss_max_rel_diff"] <= 1e-5
  assert 20 <= summary["wifi_ceiling_devices"] <= 40
  assert 0.85 <= summary["resnet50_138_over_p100"] <= 0.95
  assert 100 < summary["ethernet_speedup_138"] < 138
  assert {r["method"] for r in summary["large_batch"]} == {"unscaled", "linear", "linear+warmup", "lars", "lamb"}
  assert all(0 <= r["test_accuracy"] <= 1 for r in summary["large_batch"])
  assert "reconstructed" in (tmp_path / "report.md").read_text()

  # compute="measured": a held-out data-parallel step is p x the measured single-device step of the same model at
  # batch B/p plus the fitted all-reduce of its gradient (the spec's p t(B/p) + T_ar).
  fit = summary["calibration_fit"]
  single = {(r["width"], r["per_device_batch"]): r["ms"] for r in fit["single_steps"]}
  m, mc = fit["model"], config.measure
  held = [r for r in summary["calibration_rows"] if r["held_out"]]
  assert held and m["compute"] == "measured" and m["rounds"] == 1
  for r in held:
    w, p = r["width"], r["devices"]
    grad_bytes = 4 * (784 * w + w + w * w + w + w * 10 + 10)
    expect = p * single[w, mc.batch // p] + 1e3 * cost.host_allreduce_time(
        grad_bytes, p, m["allreduce_latency_s"], m["allreduce_bandwidth_Bps"])
    np.testing.assert_allclose(r["predicted_step_ms"], expect, rtol=1e-9)
    assert r["predicted_flops_compute_ms"] != r["predicted_step_ms"]
  with pytest.raises(ValueError, match="measure.compute must be one of"):
    MeasureConfig(compute="guess")
  with pytest.raises(ValueError, match="measure.rounds must be >= 1"):
    MeasureConfig(rounds=0)


def test_rounds_combine_by_per_call_median():
  """Three rounds: each call's median, an outlier round moves nothing; the quick preset calibrates over three."""
  rounds = [{"a": 1.0, ("step", 2): 5.0}, {"a": 9.0, ("step", 2): 4.0}, {"a": 2.0, ("step", 2): 6.0}]
  assert median_of_rounds(rounds) == {"a": 2.0, ("step", 2): 5.0}
  assert median_of_rounds(rounds[:1]) == rounds[0]
  assert get_config("quick").measure.rounds == 3
