import json

from jaxhw.experiments import mnist_baseline


def test_smoke_end_to_end(tmp_path):
  summary = mnist_baseline.run(mnist_baseline.get_config("smoke"), tmp_path)
  for name in ("summary.json", "report.md", "report.json", "metrics.jsonl", "training.png"):
    assert (tmp_path / name).is_file(), name
  saved = json.loads((tmp_path / "summary.json").read_text())
  assert saved["steps"] == 20 and 0.3 < saved["test_accuracy"] <= 1.0  # 20 steps: well above chance
  assert summary["test_accuracy"] == saved["test_accuracy"]
  assert "MNIST, 512 train images" in (tmp_path / "report.md").read_text()


def test_presets_are_frozen_and_distinct():
  quick, smoke = mnist_baseline.get_config("quick"), mnist_baseline.get_config("smoke")
  assert quick != smoke and quick.train.epochs >= 5
  import dataclasses

  import pytest
  with pytest.raises(dataclasses.FrozenInstanceError):
    quick.seed = 1
