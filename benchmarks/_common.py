"""Shared timing helpers for the benchmarks: median wall time of a blocking call, device description."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np


def time_call(fn: Callable[[], Any], *, repeats: int = 20, warmup: int = 2) -> float:
  """Median seconds of ``fn()`` (its result blocked on) over `repeats` runs after `warmup` runs."""
  for _ in range(warmup):
    jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return float(np.median(times))


def device_fields() -> dict[str, str]:
  """``{"backend", "device"}`` for the JSON line."""
  dev = jax.devices()[0]
  if dev.platform == "cpu":
    return {"backend": "cpu", "device": f"{os.cpu_count()}-core CPU"}
  return {"backend": dev.platform, "device": getattr(dev, "device_kind", dev.platform)}


def emit(bench: str, **fields: Any) -> None:
  """Prints the benchmark's one JSON line (last line of stdout)."""
  rounded = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in fields.items()}
  print(json.dumps({"bench": bench, **device_fields(), **rounded}), flush=True)
