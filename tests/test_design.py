"""The shape of the house: which packages import which, and that importing jaxhw changes no global state."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "jaxhw"
HARDWARE = ("faults", "hessian", "crossbar", "snn", "mann", "parallel", "storage")


def _imports(path: Path) -> set[str]:
  names = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      names |= {a.name for a in node.names}
    elif isinstance(node, ast.ImportFrom) and node.module:
      names.add(node.module)
      names |= {f"{node.module}.{a.name}" for a in node.names}
  return {n for n in names if n.startswith("jaxhw")}


def _package_files(name):
  return sorted((ROOT / name).rglob("*.py")) if (ROOT / name).is_dir() else []


def test_models_import_no_hardware_package():
  for f in _package_files("models"):
    bad = [n for n in _imports(f) if n.count(".") and n.split(".")[1] in HARDWARE]
    assert not bad, f"{f.relative_to(ROOT.parent)} imports {bad}; effects attach from outside (jaxhw.effects)"


def test_hardware_packages_import_no_model_and_no_private_module_of_another():
  for pkg in HARDWARE:
    for f in _package_files(pkg):
      for n in _imports(f):
        parts = n.split(".")
        if len(parts) < 2:
          continue
        assert parts[1] != "models", f"{f.relative_to(ROOT.parent)} imports {n}"
        other_private = parts[1] != pkg and any(p.startswith("_") for p in parts[2:])
        assert not other_private, f"{f.relative_to(ROOT.parent)} imports another package's private module {n}"


def test_effects_module_is_at_the_bottom():
  assert {n.split(".")[1] for n in _imports(ROOT / "effects.py") if "." in n} <= {"effects"}


def test_import_jaxhw_leaves_matplotlib_and_logging_alone():
  code = ("import logging, matplotlib; matplotlib.use('svg'); before = matplotlib.get_backend(); "
          "lvl = logging.getLogger('absl').level; import jaxhw, jaxhw.faults, jaxhw.report, jaxhw.checkpoint; "
          "assert matplotlib.get_backend() == before, matplotlib.get_backend(); "
          "assert logging.getLogger('absl').level == lvl; print('ok')")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
  assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]
