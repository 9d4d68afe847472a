"""Data-parallel layout: the `ParallelConfig`, the ``data`` mesh, and placing batches and state on it.

The trainer reads one `ParallelConfig`: passed to `jaxhw.train.train` as ``parallel=``, or set for every training
call inside a ``with use_parallel(...)`` block (how ``jaxhw run STUDY --set parallel.data=2`` reaches any study).
The batch's leading axis is sharded over the ``data`` axis with ``NamedSharding(mesh, P("data"))``; params,
optimizer and model state are replicated (``P()``); under ``jit`` XLA inserts the gradient all-reduce (GSPMD).

References:
  Na et al., "Scalable Smartphone Cluster for Deep Learning", arXiv:2110.12172 (synchronous data parallelism).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import os
import re
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

PyTree = Any
#: Name of the mesh axis the batch is split over.
DATA_AXIS = "data"
#: Data-parallel step implementations (`ParallelConfig.variant`): sharded batch under ``jit`` or explicit
#: ``shard_map``.
VARIANTS = ("gspmd", "shard_map")


@dataclasses.dataclass(frozen=True)
class ParallelConfig:
  """How training is spread over devices.

  Attributes:
    data: devices on the ``data`` mesh axis (1: single device, no mesh; 0: every device JAX sees). A
      multi-process run always uses every device of every process (1, 0 or that count).
    variant: ``gspmd`` (default: sharded batch under ``jit``, XLA inserts the all-reduce) or ``shard_map``
      (explicit per-device step: the gradient of ``pmean`` of the local mean loss).
  """

  data: int = 1
  variant: str = "gspmd"

  def __post_init__(self):
    if self.data < 0:
      raise ValueError(f"parallel.data must be >= 0 (0: all devices), got {self.data}.")
    if self.variant not in VARIANTS:
      raise ValueError(f"parallel.variant must be one of {VARIANTS}, got {self.variant!r}.")


_CURRENT: contextvars.ContextVar[ParallelConfig | None] = contextvars.ContextVar("jaxhw_parallel", default=None)


def current_parallel() -> ParallelConfig:
  """The `ParallelConfig` in effect (set by `use_parallel`; single-device by default)."""
  return _CURRENT.get() or ParallelConfig()


@contextlib.contextmanager
def use_parallel(config: ParallelConfig) -> Iterator[ParallelConfig]:
  """Every `jaxhw.train.train` call inside this block that gets no ``parallel=`` uses `config`."""
  token = _CURRENT.set(config)
  try:
    yield config
  finally:
    _CURRENT.reset(token)


def resolve_devices(config: ParallelConfig) -> int:
  """The number of devices `config` asks for, checked against what JAX sees (a clear error when too many)."""
  available = jax.device_count()
  n = available if config.data == 0 else config.data
  if n > available:
    raise ValueError(
        f"parallel.data={n} needs {n} devices, but JAX sees {available} ({jax.devices()[0].platform}). On CPU, "
        f"simulate them: run through `jaxhw run` (it sets jax_num_cpu_devices), or set "
        f"XLA_FLAGS=--xla_force_host_platform_device_count={n} before importing jax.")
  if jax.process_count() > 1:
    if config.data not in (0, 1, available):
      raise ValueError(f"parallel.data={n}: a multi-process run uses every device of every process "
                       f"({available} in all); set parallel.data={available} or 0.")
    return available
  return n


def data_mesh(n: int) -> Mesh:
  """A 1-D ``("data",)`` mesh (Auto axis) over the first `n` global devices, each process's devices contiguous."""
  devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
  if not 1 <= n <= len(devices):
    raise ValueError(f"n must be in [1, {len(devices)}] (the devices JAX sees), got {n}.")
  return Mesh(np.array(devices[:n]), (DATA_AXIS,), axis_types=(AxisType.Auto,))


def check_divisible(batch_size: int, n: int, what: str = "train.batch_size") -> None:
  """Raises a `ValueError` unless the global batch splits evenly over `n` devices."""
  if batch_size % n:
    raise ValueError(f"{what}={batch_size} is not divisible by parallel.data={n}: each device needs an equal shard "
                     f"of the global batch. Use a batch size that is a multiple of {n}.")


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
  """`tree` placed on every device of `mesh` (``P()``)."""
  sharding = NamedSharding(mesh, P())
  return jax.tree.map(lambda x: _put(np.asarray(x) if not isinstance(x, jax.Array) else x, sharding), tree)


def _put(x, sharding: NamedSharding):
  if jax.process_count() == 1 or (isinstance(x, jax.Array) and not x.is_fully_addressable):
    return jax.device_put(x, sharding)
  x = np.asarray(x)
  return jax.make_array_from_process_local_data(sharding, _local_rows(x, sharding), x.shape)


def _local_rows(x: np.ndarray, sharding: NamedSharding) -> np.ndarray:
  """The rows of global array `x` that this process's devices hold under `sharding` (each process loads its shard)."""
  if x.ndim == 0 or sharding.spec == P():
    return x
  index = sharding.addressable_devices_indices_map(x.shape).values()
  starts = [s[0].start or 0 for s in index]
  stops = [x.shape[0] if s[0].stop is None else s[0].stop for s in index]
  return x[min(starts): max(stops)]


def shard_batch(batch: PyTree, mesh: Mesh) -> PyTree:
  """Places a global batch on `mesh`, its leading axis split over ``data`` (scalars are replicated).

  In a multi-process run every process passes the same global batch and transfers only its own rows
  (`jax.make_array_from_process_local_data`).
  """
  n = mesh.shape[DATA_AXIS]
  sharded, replicated = NamedSharding(mesh, P(DATA_AXIS)), NamedSharding(mesh, P())

  def put(x):
    x = np.asarray(x)
    if x.ndim == 0:
      return _put(x, replicated)
    check_divisible(x.shape[0], n, what=f"the batch's leading axis ({x.shape})")
    return _put(x, sharded)

  return jax.tree.map(put, batch)


def to_host_local(tree: PyTree) -> PyTree:
  """Replicated global arrays as ordinary single-device arrays (what a study does next needs no mesh)."""
  return jax.tree.map(lambda x: jax.numpy.asarray(np.asarray(x)) if isinstance(x, jax.Array) else x, tree)


_COUNT_FLAG = re.compile(r"--xla_force_host_platform_device_count=\d+")


def with_cpu_device_count(env: dict[str, str], n: int) -> dict[str, str]:
  """A copy of `env` whose ``XLA_FLAGS`` simulate `n` CPU devices (any earlier count flag is replaced)."""
  env = dict(env)
  flags = _COUNT_FLAG.sub("", env.get("XLA_FLAGS", "")).strip()
  env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={n}".strip()
  return env


def request_cpu_devices(n: int) -> None:
  """Asks for at least `n` simulated CPU devices; must run before JAX's backend starts (no-op when it has)."""
  if n <= 1:
    return
  match = _COUNT_FLAG.search(os.environ.get("XLA_FLAGS", ""))
  if match and int(match.group(0).split("=")[1]) >= n:
    return
  try:
    jax.config.update("jax_num_cpu_devices", max(n, jax.config.jax_num_cpu_devices))
  except RuntimeError:  # the backend already started: resolve_devices reports the shortfall
    pass
