"""Test setup: 2 fake CPU devices (set before jax is imported), a `key` fixture, a `strict_dtypes` fixture.

Strict dtype promotion is not switched on globally: optax's Adam (bias correction, ``b1 ** count``) mixes a Python
float with an int32 count and fails under it. Tests of jaxhw's own pure functions use the `strict_dtypes` fixture.
"""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def strict_dtypes():
  with jax.numpy_dtype_promotion("strict"):
    yield


@pytest.fixture
def key():
  return jax.random.key(0)
