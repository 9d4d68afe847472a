import json
import subprocess
import sys

import pytest

from jaxhw.cli import main


def test_help_lists_commands(capsys):
  with pytest.raises(SystemExit) as e:
    main(["--help"])
  assert e.value.code == 0
  out = capsys.readouterr().out
  for cmd in ("list", "run", "reproduce", "sweep", "report", "exit codes"):
    assert cmd in out


@pytest.mark.parametrize("cmd", ["run", "reproduce", "sweep", "report", "list"])
def test_each_command_has_help(cmd, capsys):
  with pytest.raises(SystemExit) as e:
    main([cmd, "--help"])
  assert e.value.code == 0 and "usage: jaxhw " + cmd in capsys.readouterr().out


def test_list_names_the_studies(capsys):
  assert main(["list"]) == 0
  assert "mnist_baseline" in capsys.readouterr().out


def test_unknown_study_lists_known_ones(capsys):
  assert main(["run", "no_such_study"]) == 2
  err = capsys.readouterr().err
  assert "unknown study 'no_such_study'" in err and "mnist_baseline" in err


def test_unknown_set_key_lists_valid_keys(capsys, tmp_path):
  assert main(["run", "mnist_baseline", "--set", "train.lrr=0.1", "--workdir", str(tmp_path)]) == 2
  err = capsys.readouterr().err
  assert "unknown config key 'train.lrr'" in err and "train.lr" in err and "model.name" in err


def test_wrong_type_names_the_expected_type(capsys, tmp_path):
  assert main(["run", "mnist_baseline", "--set", "train.batch_size=big", "--workdir", str(tmp_path)]) == 2
  assert "expects int" in capsys.readouterr().err
  assert main(["run", "mnist_baseline", "--set", "train.optimizer=lion", "--workdir", str(tmp_path)]) == 2
  assert "train.optimizer must be one of" in capsys.readouterr().err
  assert main(["run", "mnist_baseline", "--set", "noequals"]) == 2


def test_bad_preset_is_a_usage_error(capsys):
  with pytest.raises(SystemExit) as e:
    main(["run", "mnist_baseline", "--preset", "huge"])
  assert e.value.code == 2


def test_report_on_empty_dir_fails_clearly(capsys, tmp_path):
  assert main(["report", str(tmp_path)]) == 1
  assert "no study report" in capsys.readouterr().err


def test_sweep_runs_points_then_skips_them(tmp_path, capsys):
  args = ["sweep", "mnist_baseline", "--preset", "smoke", "--quiet", "--grid", "train.lr=0.002,0.004",
          "--set", "train.steps=4", "--set", "model.name=mlp", "--set", "data.test_size=200",
          "--workdir", str(tmp_path)]
  assert main(args) == 0
  rows = json.loads((tmp_path / "sweep.json").read_text())
  assert [r["train.lr"] for r in rows] == ["0.002", "0.004"] and all(r["steps"] == 4 for r in rows)
  assert (tmp_path / "index.html").is_file()
  capsys.readouterr()
  assert main(args) == 0
  assert capsys.readouterr().out.count("finished, skipped") == 2


def test_python_m_jaxhw_entry_point():
  out = subprocess.run([sys.executable, "-m", "jaxhw", "--help"], capture_output=True, text=True, timeout=60)
  assert out.returncode == 0 and "jaxhw list" in out.stdout


def test_no_resume_refuses_an_existing_workdir(tmp_path, capsys):
  (tmp_path / "checkpoints").mkdir()
  assert main(["run", "mnist_baseline", "--no-resume", "--workdir", str(tmp_path)]) == 2
  assert "already holds a run" in capsys.readouterr().err
  assert [p.name for p in tmp_path.iterdir()] == ["checkpoints"]
