"""The compose study end to end at smoke scale: files, table shapes and the figures' sanity (not their values)."""

import json

import numpy as np
import pytest

from jaxhw.config import ConfigError, apply_overrides
from jaxhw.experiments import compose


def test_smoke_end_to_end(tmp_path):
  config = compose.get_config("smoke")
  summary = compose.run(config, tmp_path)
  for name in ("summary.json", "report.md", "report.json", "snn_vs_ann.png", "mlp_noise_and_ber.png"):
    assert (tmp_path / name).is_file(), name
  saved = json.loads((tmp_path / "summary.json").read_text())
  s = saved["snn_vs_ann"]
  assert s["flips"] == 312  # Conv_0 of the MNIST CNN: 5x5x1x12 kernel + 12 biases, one bit each
  for net in ("ann", "snn"):
    assert 0.0 <= s[net]["clean_accuracy"] <= 1.0
    assert 0 <= s[net]["catastrophic"] <= s["flips"] and sum(s[net]["per_bit"]) == s[net]["catastrophic"]
    assert all(b in config.snn.bits for b, c in enumerate(s[net]["per_bit"]) if c)
  methods, sigmas, bers = config.mlp.methods, config.noise.sigmas, config.ber.bers
  assert [(r["method"], r["sigma"]) for r in saved["flatness_vs_noise"]] == [(m, v) for m in methods for v in sigmas]
  assert {(r["method"], r["ber"]) for r in saved["ber_sweep"]} == {(m, b) for m in methods for b in bers}
  for r in saved["ber_sweep"]:  # expected flips per draw: ber x 32 bits x 25,450 parameters
    assert r["flips_mean"] == pytest.approx(r["ber"] * 32 * 25450, rel=0.5, abs=3)
  noiseless = [r for r in saved["flatness_vs_noise"] if r["sigma"] == 0.0]
  for r in noiseless:  # no noise: every chip is the clean network
    assert r["accuracy_std"] == 0.0
  assert summary["wall_s"] > 0
  assert "Conv_0" in (tmp_path / "report.md").read_text()


def test_presets_and_bad_keys():
  quick = compose.get_config("quick")
  assert quick.snn.layers == ("Conv_0",) and quick.mlp.methods == ("plain", "sam", "hat")
  assert np.all(np.diff(quick.ber.bers) > 0)
  with pytest.raises(ConfigError, match="Valid keys"):
    apply_overrides(quick, {"snn.layer": "Conv_1"})
  with pytest.raises(ValueError, match="mlp.methods"):
    compose.MLPConfig(methods=("plain", "adamw"))
