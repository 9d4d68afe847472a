"""Orbax checkpoints that refuse what they cannot trust.

A wrapper around `orbax.checkpoint.CheckpointManager` that stores, beside the array state, a JSON record with
the run's config fingerprint, the state's tree signature (paths, shapes, dtypes) and a sha256 digest of every
array. Restoring checks all three: a checkpoint of another config or shape, or one whose files were truncated or
altered, raises `CheckpointError` and is left on disk untouched; earlier good steps stay loadable.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


@contextlib.contextmanager
def _quiet_orbax():
  """Silences orbax's absl INFO lines for the duration of one call, then restores the caller's level."""
  logger = logging.getLogger("absl")
  level = logger.level
  logger.setLevel(max(level, logging.ERROR))
  try:
    yield
  finally:
    logger.setLevel(level)

PyTree = Any


class CheckpointError(RuntimeError):
  """A checkpoint cannot be used: corrupt, or made by a different config or model."""


def tree_signature(tree: PyTree) -> list[list[str]]:
  """``[[path, shape, dtype], ...]`` for every leaf, in a stable order."""
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  return [[jax.tree_util.keystr(p), str(tuple(np.shape(x))), str(np.asarray(x).dtype if not hasattr(x, "dtype")
                                                                       else x.dtype)] for p, x in flat]


def tree_digest(tree: PyTree) -> str:
  """sha256 over the bytes of every leaf (host copies), in tree order."""
  h = hashlib.sha256()
  for leaf in jax.tree.leaves(tree):
    arr = np.ascontiguousarray(np.asarray(leaf))
    h.update(str(arr.dtype).encode())
    h.update(str(arr.shape).encode())
    h.update(arr.tobytes())
  return h.hexdigest()


def _diff_fingerprint(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
  keys = sorted(set(saved) | set(current))
  return [f"{k}: checkpoint has {saved.get(k, '<absent>')!r}, this run has {current.get(k, '<absent>')!r}"
          for k in keys if saved.get(k) != current.get(k)]


class Checkpointer:
  """Keeps the last `max_to_keep` checkpoints of one run in `directory`.

  Args:
    directory: where step folders are written (created if needed).
    max_to_keep: how many of the newest steps to keep.
    fingerprint: JSON-able dict identifying the run (its config); restoring a checkpoint saved with another
      fingerprint is refused.
  """

  def __init__(self, directory: str | os.PathLike, *, max_to_keep: int = 2,
               fingerprint: dict[str, Any] | None = None):
    if max_to_keep < 1:
      raise ValueError(f"max_to_keep must be >= 1, got {max_to_keep}.")
    self.directory = Path(directory).resolve()
    self.fingerprint = fingerprint or {}
    # In a multi-process run each process keeps its own copy of the (replicated, host-gathered) state in its own
    # directory: orbax then neither waits on nor writes for the other processes.
    extra = {"create": True}
    if jax.process_count() > 1:
      me = jax.process_index()
      self.directory.mkdir(parents=True, exist_ok=True)
      extra = {"create": False, "multiprocessing_options": ocp.options.MultiprocessingOptions(
          primary_host=me, active_processes={me})}
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, enable_async_checkpointing=False, **extra)
    with _quiet_orbax():
      self._manager = ocp.CheckpointManager(self.directory, options=options)

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    steps = self.all_steps()
    return steps[-1] if steps else None

  def step_path(self, step: int) -> Path:
    return self.directory / str(step)

  def save(self, step: int, state: PyTree, extra: dict[str, Any] | None = None) -> Path:
    """Saves `state` (a pytree of arrays) and `extra` (JSON) as `step`; returns the step folder."""
    if step in self._manager.all_steps():
      raise CheckpointError(f"step {step} already exists at {self.step_path(step)}; it is never overwritten.")
    host_state = jax.device_get(state)
    meta = {"fingerprint": self.fingerprint, "signature": tree_signature(host_state),
            "digest": tree_digest(host_state), "extra": extra or {}}
    with _quiet_orbax():
      self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(host_state),
                                                       meta=ocp.args.JsonSave(meta)))
    self._manager.wait_until_finished()
    return self.step_path(step)

  def _read_meta(self, step: int) -> dict[str, Any]:
    try:
      with _quiet_orbax():
        restored = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
      return restored["meta"]
    except Exception as e:  # noqa: BLE001 - any failure to read means the checkpoint is unusable
      raise CheckpointError(self._refusal(step, f"its metadata cannot be read ({type(e).__name__}: {e})")) from e

  def _refusal(self, step: int, reason: str) -> str:
    others = [s for s in self.all_steps() if s != step]
    hint = (f" Other steps on disk: {others} (restore one with `step=`)." if others else "")
    return (f"Refusing checkpoint step {step} at {self.step_path(step)}: {reason}. It was left untouched."
            f"{hint} To start afresh, use another workdir.")

  def restore(self, target: PyTree, step: int | None = None) -> tuple[PyTree, dict[str, Any], int]:
    """Restores `step` (default: the latest) into the structure of `target`.

    Args:
      target: a pytree with the expected structure, shapes and dtypes (e.g. the freshly initialised state).
      step: which step; None for the latest.

    Returns:
      ``(state, extra, step)``.

    Raises:
      CheckpointError: no checkpoint, a fingerprint or shape mismatch, unreadable files or a digest mismatch.
    """
    if step is None:
      step = self.latest_step()
      if step is None:
        raise CheckpointError(f"no checkpoint in {self.directory}.")
    if step not in self.all_steps():
      raise CheckpointError(f"no checkpoint step {step} in {self.directory}; steps on disk: {self.all_steps()}.")
    meta = self._read_meta(step)
    diff = _diff_fingerprint(meta.get("fingerprint", {}), self.fingerprint)
    if diff:
      raise CheckpointError(self._refusal(step, "it was made by a different config:\n  " + "\n  ".join(diff[:10])))
    target = jax.device_get(target)
    expected = tree_signature(target)
    if meta.get("signature") != expected:
      saved = {p: f"{s} {d}" for p, s, d in meta.get("signature", [])}
      now = {p: f"{s} {d}" for p, s, d in expected}
      lines = [f"{p}: checkpoint {saved.get(p, '<absent>')}, model {now.get(p, '<absent>')}"
               for p in sorted(set(saved) | set(now)) if saved.get(p) != now.get(p)]
      raise CheckpointError(self._refusal(step, "its arrays do not match this model:\n  " + "\n  ".join(lines[:10])))
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    try:
      with _quiet_orbax():
        restored = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
      state = jax.device_get(restored["state"])
    except Exception as e:  # noqa: BLE001
      raise CheckpointError(self._refusal(step, f"its array files cannot be read ({type(e).__name__}: {e})")) from e
    if tree_digest(state) != meta.get("digest"):
      raise CheckpointError(self._refusal(step, "its array data does not match the digest saved with it "
                                                "(the files were truncated or altered)"))
    return state, meta.get("extra", {}), step

  def close(self) -> None:
    self._manager.close()
