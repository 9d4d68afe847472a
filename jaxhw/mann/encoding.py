"""Temporal-encoding indices of End-To-End Memory Networks, with random empty memories (RN) for training.

The position encoding (PE) is part of the model (`jaxhw.models.memn2n.position_encoding`); the learned temporal
tables T_A, T_C are too. This module makes the indices fed to them.

References:
  Sukhbaatar et al., "End-To-End Memory Networks", NeurIPS 2015, arXiv:1503.08895, section 4.1 (PE, temporal
  encoding, random noise).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Int, PRNGKeyArray


def time_indices(story_len: Int[Array, " batch"], memory_size: int) -> Int[Array, "batch memory"]:
  """The plain temporal indices: slot i (newest first) has index i; used at evaluation."""
  return jnp.broadcast_to(jnp.arange(memory_size, dtype=jnp.int32), (story_len.shape[0], memory_size))


def random_time_indices(key: PRNGKeyArray, story_len: Int[Array, " batch"], memory_size: int,
                        noise: float = 0.1, *, slots: int | None = None) -> Int[Array, "batch slots"]:
  """Temporal indices with random empty memories (RN), for training only.

  For a story of n statements, draw b uniformly from {0, ..., ceil(noise n) - 1}, then n sorted distinct values
  from {0, ..., n + b - 1}, capped at ``memory_size - 1``: the gaps mimic about 10 % empty memories.

  Args:
    key: PRNG key.
    story_len: statements in each memory.
    memory_size: memory slots M.
    noise: the fraction of empty memories to mimic.
    slots: memory slots in the batch (default `memory_size`; fewer for a batch cut to its longest story).

  Returns:
    ``[batch, slots]`` indices; slot i (i < n) gets the i-th smallest draw; slots past n keep i.
  """
  batch = story_len.shape[0]
  slots = memory_size if slots is None else slots
  k_b, k_perm = jax.random.split(key)
  n = story_len.astype(jnp.int32)
  extra_max = jnp.ceil(noise * n).astype(jnp.int32)
  b = jnp.floor(jax.random.uniform(k_b, (batch,)) * jnp.maximum(extra_max, 1)).astype(jnp.int32)
  b = jnp.where(extra_max > 0, b, 0)
  pool = jnp.arange(2 * slots + 1)
  # A random subset of size n of {0..n+b-1}: rank random scores, keep those inside the pool, take the n smallest.
  scores = jax.random.uniform(k_perm, (batch, 2 * slots + 1))
  scores = jnp.where(pool[None] < (n + b)[:, None], scores, 2.0)
  chosen_rank = jnp.argsort(jnp.argsort(scores, axis=-1), axis=-1) < n[:, None]
  values = jnp.where(chosen_rank, pool[None], 10 * memory_size)
  picked = jnp.sort(values, axis=-1)[:, :slots]
  slot = jnp.arange(slots)[None]
  out = jnp.where(slot < n[:, None], jnp.minimum(picked, memory_size - 1), slot)
  return out.astype(jnp.int32)
