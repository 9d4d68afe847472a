"""Studies from other distributions: the ``jaxhw.studies`` entry-point group, found by `jaxhw list` and `jaxhw run`.

The "distribution" is real to `importlib.metadata`: a ``*.dist-info`` directory with ``METADATA`` and
``entry_points.txt`` on ``sys.path``, beside the study modules it names.
"""

import json
import sys
import textwrap
import warnings

import pytest

from jaxhw import studies
from jaxhw.cli import main
from jaxhw.studies import StudyWarning, list_studies, load_study

_STUDY = '''
"""Demo external study: doubles a number (registered through an entry point)."""

import dataclasses
import json
from pathlib import Path

from jaxhw.report import Table, write_study_report


@dataclasses.dataclass(frozen=True)
class Config:
  value: float = 1.0


def get_config(preset: str = "quick") -> Config:
  return Config(value={"smoke": 2.0, "quick": 3.0, "full": 4.0}[preset])


def run(config: Config, workdir, *, quiet: bool = True) -> dict:
  workdir = Path(workdir)
  summary = {"doubled": 2 * config.value}
  (workdir / "summary.json").write_text(json.dumps(summary))
  write_study_report(workdir, study="ext_demo", title="External demo", setup={"value": config.value},
                     tables=[Table("Result", ["doubled"], [[summary["doubled"]]])])
  return summary
'''

_ENTRY_POINTS = """
[jaxhw.studies]
ext_demo = jaxhw_ext_demo
ext_broken = jaxhw_ext_no_such_module
ext_not_a_study = jaxhw_ext_plain
hat = jaxhw_ext_demo
"""


@pytest.fixture
def external_dist(tmp_path, monkeypatch):
  """Installs a distribution `jaxhw-ext-demo` with four studies: one good, one whose module does not exist, one
  without get_config/run, one named like the built-in `hat`."""
  site = tmp_path / "site"
  info = site / "jaxhw_ext_demo-1.0.dist-info"
  info.mkdir(parents=True)
  (info / "METADATA").write_text("Metadata-Version: 2.1\nName: jaxhw-ext-demo\nVersion: 1.0\n")
  (info / "entry_points.txt").write_text(textwrap.dedent(_ENTRY_POINTS))
  (site / "jaxhw_ext_demo.py").write_text(_STUDY)
  (site / "jaxhw_ext_plain.py").write_text('"""Not a study."""\n\nVALUE = 1\n')
  monkeypatch.syspath_prepend(str(site))  # also invalidates the import caches
  monkeypatch.setattr(studies, "_WARNED", set())  # each warning is issued once per process: start afresh
  yield site
  for name in ("jaxhw_ext_demo", "jaxhw_ext_plain"):
    sys.modules.pop(name, None)


def _messages(record) -> str:
  return "\n".join(str(w.message) for w in record if issubclass(w.category, StudyWarning))


def test_list_shows_the_external_study_and_names_the_broken_ones(external_dist, capsys):
  with warnings.catch_warnings(record=True) as record:
    warnings.simplefilter("always")
    assert main(["list"]) == 0
  out = capsys.readouterr().out
  assert "ext_demo" in out and "Demo external study: doubles a number" in out
  assert "mnist_baseline" in out and "hat " in out
  assert "ext_broken" not in out and "ext_not_a_study" not in out
  text = _messages(record)
  assert "'ext_broken'" in text and "jaxhw_ext_no_such_module" in text and "ModuleNotFoundError" in text
  assert "jaxhw-ext-demo 1.0" in text and "Skipped" in text
  assert "'ext_not_a_study'" in text and "must define get_config(preset) and run" in text
  assert "'hat'" in text and "built-in jaxhw.experiments.hat wins" in text


def test_run_runs_the_external_study(external_dist, tmp_path, capsys):
  workdir = tmp_path / "run"
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", StudyWarning)
    assert main(["run", "ext_demo", "--preset", "smoke", "--workdir", str(workdir), "--quiet"]) == 0
  assert json.loads((workdir / "summary.json").read_text())["doubled"] == 4.0
  assert json.loads((workdir / "config.json").read_text()) == {"study": "ext_demo", "value": 2.0}
  assert (workdir / "report.md").is_file() and (workdir / "index.html").is_file()
  assert "[ext_demo] done" in capsys.readouterr().out


def test_run_of_a_broken_entry_point_names_it(external_dist, capsys):
  assert main(["run", "ext_broken", "--preset", "smoke"]) == 2
  err = capsys.readouterr().err
  assert "ext_broken = jaxhw_ext_no_such_module" in err and "ModuleNotFoundError" in err


def test_builtin_study_wins_a_name_clash(external_dist):
  with pytest.warns(StudyWarning, match="built-in jaxhw.experiments.hat wins"):
    module = load_study("hat")
  assert module.__name__ == "jaxhw.experiments.hat"


def test_without_external_studies_nothing_warns():
  with warnings.catch_warnings():
    warnings.simplefilter("error", StudyWarning)
    names = list_studies()
  assert "mnist_baseline" in names and "ext_demo" not in names


def test_study_warnings_print_as_one_short_line(monkeypatch):
  from jaxhw import cli

  monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # restored after the test
  cli._short_study_warnings()
  line = warnings.formatwarning(StudyWarning("entry point 'x' skipped"), StudyWarning, "studies.py", 1)
  assert line == "jaxhw: warning: entry point 'x' skipped\n"
  assert "UserWarning" in warnings.formatwarning(UserWarning("other"), UserWarning, "f.py", 1)


def test_list_survives_a_study_that_fails_to_load(monkeypatch, capsys):
  from jaxhw import cli

  real = studies.load_study

  def flaky(name):
    if name == "gbo":
      raise ImportError("no module named 'missing_dependency'")
    return real(name)

  monkeypatch.setattr(studies, "load_study", flaky)
  assert cli.main(["list"]) == 0
  out = capsys.readouterr().out
  assert "gbo" in out and "cannot be loaded: ImportError" in out and "hat_lenet" in out
