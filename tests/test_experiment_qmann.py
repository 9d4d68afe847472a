import dataclasses
import json
import math

import jax
import numpy as np
import pytest

from jaxhw.experiments import qmann
from jaxhw.mann.recipe import predict


def test_smoke_end_to_end(tmp_path):
  summary = qmann.run(qmann.get_config("smoke"), tmp_path)
  for name in ("summary.json", "report.md", "report.json", "per_task_error.png", "error_vs_bits.png"):
    assert (tmp_path / name).is_file(), name
  saved = json.loads((tmp_path / "summary.json").read_text())
  assert [r["variant"] for r in saved["rows"]] == list(qmann.VARIANTS)
  for row in saved["rows"]:
    assert len(row["per_task_error"]) == 20 and 0 <= row["mean_error"] <= 100
    assert row["per_task_error"][0] is not None and row["per_task_error"][1] is None  # tasks 1 and 6 only
  for key in ("qmann_improvement_8bit", "qmann_improvement_binary"):
    assert math.isfinite(saved[key])
  thr = saved["thresholding"]
  assert 0 <= thr["skipped_fraction"] <= 1 and 0 <= thr["argmax_agreement"] <= 1 and math.isfinite(thr["error_delta"])
  assert set(saved["energy"]) >= {"float", "naive-8", "qmann-8", "naive-bin", "qmann-bin"}
  assert saved["energy"]["float"] > saved["energy"]["qmann-8"] > 0
  assert saved["integer_kernel_agreement"] == {"qmann-8": 1.0, "qmann-bin": 1.0}
  addr = saved["addressing"]
  assert set(addr) == {"float", "naive-8", "qmann-8"} and addr["qmann-8"]["zero_products"] is None
  assert addr["naive-8"]["addressing_format"] == "Q(1.5.2)" and addr["qmann-8"]["addressing_format"] == "Q(1.2.5)"
  assert addr["float"]["zero_operands"] is None
  for a in addr.values():
    assert 0 < a["top_attention"] <= 1 + 1e-6
  for a in (addr["naive-8"], addr["qmann-8"]):
    assert all(0 <= a[k] <= 1 for k in ("zero_operands", "saturated_scores"))
  assert 0 <= addr["naive-8"]["zero_products"] <= 1
  assert summary["rows"] == saved["rows"]
  assert (tmp_path / "joint_float_seed0" / "metrics.jsonl").is_file()  # the float run logs and checkpoints
  report = (tmp_path / "report.md").read_text()
  assert "bAbI 1k" in report and "a model" in report


def test_presets_are_frozen_and_distinct():
  quick, smoke, full = (qmann.get_config(p) for p in ("quick", "smoke", "full"))
  assert quick.data.joint and len(quick.data.tasks) == 20 and quick.eval.seeds == 1
  assert full.data.per_task and full.eval.seeds == 10 and full.hardware.qat_init == "scratch"
  assert smoke != quick
  with pytest.raises(dataclasses.FrozenInstanceError):
    quick.seed = 1
  with pytest.raises(ValueError, match="preset"):
    qmann.get_config("huge")


def test_output_norms_bound_the_logits():
  """The pruned fallback's Cauchy-Schwarz bound holds for the float and the quantized (qmann-8) output layers."""
  config = qmann.get_config("smoke")
  splits = qmann.load_splits(config.data.tasks, **qmann._split_kwargs(config, True))
  for variant in (qmann.Variant("float", None, False), qmann.Variant("qmann-8", 8, True)):
    transform, sim, act, _ = qmann.variant_parts(variant, config.hardware, config.model.hops)
    model = qmann._model(splits, config.model.dim, config, sim, act)
    params = model.init(jax.random.key(0), splits.train.stories[:2], splits.train.queries[:2])["params"]
    params = jax.tree.map(lambda p: p * 20, params)  # large enough for the formats to matter
    rows, query = qmann._output_norms(model, transform, params, splits.val, config.model.hops)
    logits = predict(qmann._evaluator(model, transform), params, splits.val)
    bound = rows[None, :] * query[:, None]
    assert np.all(np.abs(logits) <= bound * (1 + 1e-5) + 1e-6)
    assert np.max(np.abs(logits) / np.maximum(bound, 1e-9)) > 0.3  # the captured u is the output layer's input


def test_score_shift_scales_qmann_8bit_scores_only():
  """`hardware.score_shift=k` multiplies Q-MANN's 8-bit scores (training and integer inference) by 2^k; other
  columns and word lengths keep theirs."""
  hw0 = qmann.get_config("smoke").hardware
  hw2 = dataclasses.replace(hw0, score_shift=2)
  u = jax.random.normal(jax.random.key(0), (3, 20))
  m = jax.random.normal(jax.random.key(1), (3, 5, 20))
  for v in (qmann.Variant("qmann-8", 8, True), qmann.Variant("naive-8", 8, False), qmann.Variant("q4", 4, True)):
    s0, s2 = (np.asarray(qmann.variant_parts(v, hw, 3)[1](u, m)) for hw in (hw0, hw2))
    assert np.abs(s0).max() > 0
    np.testing.assert_array_equal(s2, s0 * (4 if v.name == "qmann-8" else 1))
  v = qmann.Variant("qmann-8", 8, True)
  i0, i2 = (np.asarray(qmann._inference_similarity(v, hw)(u, m)) for hw in (hw0, hw2))
  np.testing.assert_array_equal(i2, 4 * i0)
