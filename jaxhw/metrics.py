"""Pure metric functions and the JSON / JSONL writers every run uses."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, Int


def cross_entropy(logits: Float[Array, "batch classes"], labels: Int[Array, " batch"]) -> Float[Array, ""]:
  """Mean softmax cross-entropy with integer labels."""
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def accuracy(logits: Float[Array, "batch classes"], labels: Int[Array, " batch"]) -> Float[Array, ""]:
  """Top-1 accuracy; an example whose logits are not all finite counts as wrong."""
  finite = jnp.all(jnp.isfinite(logits), axis=-1)
  pred = jnp.argmax(jnp.where(jnp.isfinite(logits), logits, -jnp.inf), axis=-1)
  return jnp.mean((pred == labels) & finite)


def batched_accuracy(apply_fn, params, x: np.ndarray, y: np.ndarray, batch_size: int = 1000) -> float:
  """Accuracy of ``apply_fn(params, x)`` over a whole dataset, in fixed-size batches (last one padded)."""
  n = len(x)
  correct = 0.0
  for start in range(0, n, batch_size):
    xb, yb = x[start : start + batch_size], y[start : start + batch_size]
    correct += float(accuracy(apply_fn(params, jnp.asarray(xb)), jnp.asarray(yb))) * len(xb)
  return correct / n


def to_jsonable(obj: Any) -> Any:
  """Converts numpy / jax scalars and arrays, tuples and dataclasses-as-dicts into JSON values."""
  if isinstance(obj, dict):
    return {str(k): to_jsonable(v) for k, v in obj.items()}
  if isinstance(obj, list | tuple):
    return [to_jsonable(v) for v in obj]
  if isinstance(obj, jax.Array | np.ndarray | np.generic):
    arr = np.asarray(obj)
    return to_jsonable(arr.item() if arr.ndim == 0 else arr.tolist())
  if isinstance(obj, float) and not math.isfinite(obj):
    return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
  if isinstance(obj, Path):
    return str(obj)
  return obj


def write_json(path: str | os.PathLike, obj: Any) -> None:
  """Writes `obj` as indented JSON atomically (temp file, then rename)."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(path.suffix + ".tmp")
  tmp.write_text(json.dumps(to_jsonable(obj), indent=2) + "\n")
  os.replace(tmp, path)


def append_jsonl(path: str | os.PathLike, record: dict[str, Any]) -> None:
  """Appends one JSON line to `path`."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with path.open("a") as f:
    f.write(json.dumps(to_jsonable(record)) + "\n")


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
  """Reads a JSONL file (missing file: empty list)."""
  path = Path(path)
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_jsonl(path: str | os.PathLike, records: list[dict[str, Any]]) -> None:
  """Rewrites `path` with `records`, one JSON line each, atomically."""
  path = Path(path)
  tmp = path.with_suffix(path.suffix + ".tmp")
  tmp.write_text("".join(json.dumps(to_jsonable(r)) + "\n" for r in records))
  os.replace(tmp, path)
