"""`full` presets: the paper's settings, refused at once without their data, and run end to end on tiny data sets.

The tiny data sets are prepared in the test through the real tfds path (`_full_presets_data`: builders subclassing
the real ``cifar10`` / ``mnist`` / ``voc/2007`` builders, written in array_record) and read by the studies through
``$TFDS_DATA_DIR``; the scale is cut by ``--set`` (`_full_presets_cases.CUTS`), the rest of each config is the
paper's. This file: the refusals, ``reproduce``, the paper settings, and the MNIST / CIFAR-10 classification studies;
test_full_presets_2.py: the spiking, memory, storage and cluster studies.
"""

import time

import pytest
from _full_presets_cases import CUTS, NEEDS_DATA, SMOKE_SCALE_CUTS, run_full
from _full_presets_data import prepare

from jaxhw.cli import main
from jaxhw.config import apply_overrides
from jaxhw.experiments import (
  cluster,
  compose,
  gbo,
  hat,
  hat_lenet,
  ispml,
  mnist_baseline,
  qmann,
  snn_coding,
  spiking_yolo,
)
from jaxhw.studies import list_studies

# What makes each `full` preset the paper's setting (checked on get_config("full"), before any --set cut).
PAPER = {
    "mnist_baseline": (mnist_baseline, {"data.source": "tfds", "model.name": "lenet", "train.epochs": 40}),
    "hat": (hat, {"data.dataset": "cifar10", "model.arch": "resnet18", "model.width": 64, "train.epochs": 200,
                  "data.augment": True, "eval.sweep_params": 20000, "eval.sweep_bits": "exponent",
                  "seeds": (0, 1, 2), "methods.methods": hat.METHODS}),
    "hat_lenet": (hat_lenet, {"data.source": "tfds", "data.sweep_params": 0, "methods.hat_layers": (),
                              "seeds": (0, 1, 2)}),
    "gbo": (gbo, {"data.dataset": "cifar10", "model.kind": "cnn", "model.channels": (128, 256, 512),
                  "model.dense": (1024, 1024), "train.epochs": 200, "search.epochs": 10, "eval.chips": 10}),
    "snn_coding": (snn_coding, {"data.dataset": "cifar10", "model.arch": "vgg16", "snn.t_rate": 1000,
                                "data.train_size": 50000, "data.n_snn": 10000}),
    "spiking_yolo": (spiking_yolo, {"data.dataset": "voc2007", "data.image_size": 416, "snn.T": 8000,
                                    "eval.use_07_metric": True}),
    "qmann": (qmann, {"data.per_task": True, "data.tasks": tuple(range(1, 21)), "eval.seeds": 10}),
    "ispml": (ispml, {"hardware.channels": (8, 16, 32), "data.replication": 12}),
    "cluster": (cluster, {"measure.devices": (1, 2, 4, 8)}),
    "compose": (compose, {"data.eval_images": 10000, "snn.bits": tuple(range(32))}),
}


# Studies whose full preset runs end to end (at its cut) in test_full_presets*.py.
E2E_STUDIES = {"mnist_baseline", "hat", "hat_lenet", "gbo", "snn_coding", "spiking_yolo", "qmann", "ispml"}


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
  return prepare(tmp_path_factory.mktemp("tfds"), names=("cifar10", "mnist"))


def _get(config, key):
  for part in key.split("."):
    config = getattr(config, part)
  return config


def test_every_study_has_a_full_case():
  assert set(PAPER) == set(CUTS) == set(list_studies())


@pytest.mark.parametrize("study", sorted(CUTS))
def test_every_cut_applies_to_its_full_preset(study):
  """Every cut names real keys of the full config with values of their types (cheap: no run). The studies in
  SMOKE_SCALE_CUTS stop here: cut, their full preset is their smoke run, which their smoke test runs end to end."""
  module = PAPER[study][0]
  cut = apply_overrides(module.get_config("full"), dict(item.split("=", 1) for item in CUTS[study]))
  assert cut != module.get_config("full")
  assert (study in SMOKE_SCALE_CUTS) == (study not in E2E_STUDIES)


@pytest.mark.parametrize("study", sorted(PAPER))
def test_full_is_the_papers_setting(study):
  module, facts = PAPER[study]
  config = module.get_config("full")
  assert {k: _get(config, k) for k in facts} == facts
  assert "full" in (module.__doc__ or "") + (module.get_config.__doc__ or "")


@pytest.mark.parametrize("study", sorted(NEEDS_DATA))
def test_full_without_data_exits_1_names_the_data_and_writes_nothing(study, tmp_path, monkeypatch, capsys):
  empty = tmp_path / "no_data"
  empty.mkdir()
  monkeypatch.setenv("TFDS_DATA_DIR", str(empty))
  workdir = tmp_path / "run"
  t0 = time.perf_counter()
  assert main(["run", study, "--preset", "full", "--quiet", "--workdir", str(workdir)]) == 1
  assert time.perf_counter() - t0 < 30  # refused before any training
  err = capsys.readouterr().err
  for name in NEEDS_DATA[study]:
    assert f"'{name}' is not prepared in {empty}" in err
    assert f"tfds build {name} --data_dir={empty}" in err
  assert "missing data" in err and "Traceback" not in err
  assert not workdir.exists()  # no summary.json, no config.json: nothing marked finished or half-started


def test_refusal_keeps_an_existing_workdir(tmp_path, monkeypatch, capsys):
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "no_data"))
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "notes.txt").write_text("mine")
  assert main(["run", "gbo", "--preset", "full", "--quiet", "--workdir", str(workdir)]) == 1
  assert (workdir / "notes.txt").read_text() == "mine" and not (workdir / "summary.json").exists()


def test_reproduce_full_without_data_lists_the_missing_sets(tmp_path, monkeypatch, capsys):
  empty = tmp_path / "no_data"
  monkeypatch.setenv("TFDS_DATA_DIR", str(empty))
  only = ",".join(sorted(NEEDS_DATA))
  assert main(["reproduce", "--preset", "full", "--only", only, "--quiet", "--workdir", str(tmp_path / "r")]) == 1
  err = capsys.readouterr().err
  listing = err[err.index("not run, missing data"):]
  assert f"({len(NEEDS_DATA)} of {len(NEEDS_DATA)} studies" in listing
  for study, names in NEEDS_DATA.items():
    assert f"  {study}: tfds dataset '{names[0]}' not prepared in {empty}" in listing
  for name in {n for names in NEEDS_DATA.values() for n in names}:
    assert f"tfds build {name} --data_dir={empty} --file_format=array_record" in listing
  assert not list((tmp_path / "r").glob("*/summary.json"))
  assert not [p for p in (tmp_path / "r").iterdir() if p.is_dir()]


def test_mnist_baseline_full_runs_on_tiny_mnist(tfds_dir, tmp_path, monkeypatch):
  summary, config, report = run_full("mnist_baseline", tmp_path, monkeypatch, tfds_dir)
  assert config["data"]["source"] == "tfds" and summary["steps"] == 2
  assert 0.0 <= summary["test_accuracy"] <= 1.0
  assert "16 train images (full MNIST through tfds), 8 test images" in report


def test_hat_full_runs_resnet18_on_tiny_cifar10(tfds_dir, tmp_path, monkeypatch):
  summary, config, report = run_full("hat", tmp_path, monkeypatch, tfds_dir)
  assert config["model"]["arch"] == "resnet18" and config["data"]["dataset"] == "cifar10"
  assert [r["method"] for r in summary["rows"]] == ["hat"]
  assert summary["n_train"] == 12 and summary["n_params"] > 100_000  # ResNet-18 at width 8
  row = summary["per_seed"][0]["hat"]
  assert row["sweep_population"] > 0 and row["sweep_flips_evaluated"] > 0
  assert "CIFAR-10" in report and "ResNet-18" in report and "cut from the paper's setting" in report


def test_hat_lenet_full_runs_on_tiny_mnist(tfds_dir, tmp_path, monkeypatch):
  summary, config, report = run_full("hat_lenet", tmp_path, monkeypatch, tfds_dir)
  assert config["data"]["source"] == "tfds"
  assert set(summary["lenet"]) == {"hat"} and config["methods"]["hat_layers"] == []
  assert "MNIST (tfds, full)" in report


def test_gbo_full_runs_vgg9_on_tiny_cifar10(tfds_dir, tmp_path, monkeypatch):
  summary, config, report = run_full("gbo", tmp_path, monkeypatch, tfds_dir)
  assert "skipped" not in summary and list(summary["nets"]) == ["vgg9"]
  assert summary["scale"].startswith("cifar10, 12 train / 4 val / 8 test images")
  assert "a reduced setting" in report and "the paper's setting (" not in report  # cut: 1 epoch, not 200


