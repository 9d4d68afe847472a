"""`full` presets run end to end at cut scale (third part; see test_full_presets.py): the studies whose paper
setting needs only the vendored data (Q-MANN on bAbI, ISP-ML; the cluster and compose studies' cuts are their smoke
runs, see `_full_presets_cases.SMOKE_SCALE_CUTS`)."""

from _full_presets_cases import run_full


def test_qmann_full_runs_cut(tmp_path, monkeypatch):
  summary, config, report = run_full("qmann", tmp_path, monkeypatch)
  assert config["data"]["per_task"] is True and summary


def test_ispml_full_runs_cut(tmp_path, monkeypatch):
  summary, config, report = run_full("ispml", tmp_path, monkeypatch)
  assert config["hardware"]["channels"] == [16, 32] and summary

