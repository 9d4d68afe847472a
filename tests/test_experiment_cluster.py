"""The cluster study's smoke preset end to end: files, table keys and the figures' sanity."""

import json

from jaxhw.experiments.cluster import get_config, run


def test_smoke_preset_end_to_end(tmp_path):
  summary = run(get_config("smoke"), tmp_path)
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


def test_measured_compute_predicts_p_single_device_steps_plus_allreduce():
  """``compute="measured"``: a held-out data-parallel step is predicted as p x the measured single-device step of the
  same model at batch B/p, plus the fitted all-reduce of its gradient (the spec's p t(B/p) + T_ar)."""
  import numpy as np
  import pytest

  from jaxhw.experiments import _cluster_calibrate as cal
  from jaxhw.experiments.cluster import MeasureConfig
  from jaxhw.parallel import cost

  r = cal.calibrate(fit_width=16, heldout_widths=(8,), batch=8, devices=(1, 2), psum_sizes=(1024, 4096), repeats=2,
                    statistic="min", compute="measured")
  single = {(s["width"], s["per_device_batch"]): s["ms"] for s in r["single_steps"]}
  (row,) = [x for x in r["rows"] if x["held_out"]]
  m = r["model"]
  _, params, _ = cal.mlp_problem(8, 1)
  expect = 2 * single[8, 4] + 1e3 * cost.host_allreduce_time(cal.grad_bytes(params), 2, m["allreduce_latency_s"],
                                                              m["allreduce_bandwidth_Bps"])
  np.testing.assert_allclose(row["predicted_step_ms"], expect, rtol=1e-9)
  assert row["predicted_flops_compute_ms"] != row["predicted_step_ms"]
  with pytest.raises(ValueError, match="measure.compute must be one of"):
    MeasureConfig(compute="guess")
