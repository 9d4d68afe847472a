"""Test setup: 2 fake CPU devices (set before jax is imported), a `key` fixture, a `strict_dtypes` fixture.

Strict dtype promotion is not switched on globally: optax's Adam (bias correction, ``b1 ** count``) mixes a Python
float with an int32 count and fails under it. Tests of jaxhw's own pure functions use the `strict_dtypes` fixture.
"""

import os
import shutil
import tempfile

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip()
# Tests check results, not speed, and much of their time is XLA compiling programs they run once or twice. LLVM
# optimization level 1 instead of XLA's default 2 (the XLA passes are unchanged; IEEE semantics kept, no fast-math):
# whole suite on 2 cores, back to back, 529 s at level 2, 502 s at level 1, 508 s at level 0. Level 0 was not taken:
# it slows loops over fused code up to 15x (40 LeNet SGD steps: 1.4 s -> 22 s; level 1: 1.5 s).
# Benchmarks and `make run` keep XLA's default. JAXHW_TEST_XLA_OPT=2 restores it for the tests.
if "xla_backend_optimization_level" not in os.environ["XLA_FLAGS"]:
  os.environ["XLA_FLAGS"] += " --xla_backend_optimization_level=" + os.environ.get("JAXHW_TEST_XLA_OPT", "1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent XLA compilation cache per test session, shared by the xdist workers and every subprocess the tests
# start (they inherit the environment): the CLI, resume and multi-process tests compile the same programs again in
# fresh processes. A cache hit is the executable the same compiler made from the same HLO, so results are unchanged.
# On a subset of the subprocess-heavy files a cold cache cut 47.7 s to 39.4 s. Removed when the session ends.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="jaxhw-test-xla-cache-")
  os.environ["JAXHW_TEST_OWNS_XLA_CACHE"] = str(os.getpid())
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")

import jax  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def strict_dtypes():
  with jax.numpy_dtype_promotion("strict"):
    yield


@pytest.fixture
def key():
  return jax.random.key(0)


# The heaviest test files (worker-seconds on 2 cores, measured with --durations), scheduled first: `make test` runs
# pytest-xdist with --dist loadfile --no-loadscope-reorder, which hands out files in collection order, so starting
# with the longest ones lets the two workers finish together (by default xdist orders files by test count, which
# left the end-to-end files for last and one worker idle for minutes).
HEAVY_FIRST = ("test_full_presets.py", "test_hat_lenet.py", "test_snn.py", "test_full_presets_2.py",
               "test_full_presets_3.py", "test_experiment_qmann.py", "test_readme_examples.py",
               "test_mann_similarity.py", "test_experiment_cluster.py", "test_experiment_snn_coding.py",
               "test_train.py", "test_crossbar.py", "test_hessian.py", "test_crossbar_effects.py",
               "test_experiment_compose.py", "test_wheel.py", "test_experiment_spiking_yolo.py",
               "test_experiment_hat.py", "test_detection.py")


def pytest_collection_modifyitems(config, items):
  rank = {name: i for i, name in enumerate(HEAVY_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: other files keep their order


def pytest_sessionfinish(session, exitstatus):
  if os.environ.get("JAXHW_TEST_OWNS_XLA_CACHE") == str(os.getpid()):  # the process that made it (xdist controller)
    shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
