import dataclasses
import json

import pytest

from jaxhw.experiments import ispml


def test_smoke_end_to_end(tmp_path):
  summary = ispml.run(ispml.get_config("smoke"), tmp_path)
  for name in ("summary.json", "report.md", "report.json", "metrics.jsonl", "accuracy_vs_time.png",
               "ihp_isp_ratio.png"):
    assert (tmp_path / name).is_file(), name
  saved = json.loads((tmp_path / "summary.json").read_text())
  assert saved["isp_speedup_at_25pct_memory"] == pytest.approx(summary["isp_speedup_at_25pct_memory"])
  rows = saved["rows"]
  keys = {"placement", "algorithm", "host_memory_fraction", "channels", "time_to_target_s", "final_test_accuracy",
          "host_link_bytes"}
  assert all(keys <= set(r) for r in rows)
  placements = {(r["placement"], r["algorithm"]) for r in rows}
  assert {("isp", "sync"), ("isp", "downpour"), ("isp", "easgd"), ("ihp", "sgd")} <= placements
  assert {r["tau"] for r in rows if r["algorithm"] == "easgd"} == {1, 4}
  for r in rows:
    assert 0.5 < r["final_test_accuracy"] <= 1.0, r  # well above chance after 2 small epochs
  ihp = {r["host_memory_fraction"]: r for r in rows if r["algorithm"] == "sgd"}
  isp = [r for r in rows if r["placement"] == "isp"]
  # Page traffic: with the whole data set cached IHP reads it once; at 25 % it reads it every epoch; ISP sends
  # only the model over the host link.
  assert ihp[0.25]["host_link_bytes"] == 2 * ihp[1.0]["host_link_bytes"]
  assert ihp[1.0]["misses_per_epoch"][1] == 0
  assert all(r["host_link_bytes"] < ihp[1.0]["host_link_bytes"] / 10 for r in isp)
  assert 0 <= saved["event_vs_analytic_error_pct"] < 2.0
  assert saved["min_final_test_accuracy"] == min(r["final_test_accuracy"] for r in rows)
  lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
  times = {}
  for line in lines:
    rec = json.loads(line)
    times.setdefault(rec["setting"], []).append(rec["sim_time_s"])
  assert all(t == sorted(t) for t in times.values())  # simulated time never runs backwards
  report = (tmp_path / "report.md").read_text()
  assert "Page traffic explains the gap" in report and "MNIST, 1,000 train images" in report


def test_presets_and_validation():
  quick, full, smoke = (ispml.get_config(p) for p in ("quick", "full", "smoke"))
  assert quick != smoke and max(full.hardware.channels) >= 32 and full.data.replication > 1
  assert quick.hardware.channels == (4, 8, 16) and quick.hardware.memory_fractions == (1.0, 0.75, 0.5, 0.25)
  with pytest.raises(dataclasses.FrozenInstanceError):
    quick.seed = 1
  with pytest.raises(ValueError, match="unknown preset"):
    ispml.get_config("huge")
  with pytest.raises(ValueError, match="hardware.channels"):
    ispml.HardwareConfig(channels=(0,))
  with pytest.raises(ValueError, match="tau"):
    ispml.TrainConfig(tau=0)
