"""Exact and random bit flips on parameter pytrees.

References:
  Prato, Kim, Chen, Hong, "Hessian-aware Training for Enhancing DNNs Resilience to Parameter Corruptions",
    arXiv:2504.01933, 2025.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Int

from jaxhw import pytree as _tree
from jaxhw.effects import ParamTransform
from jaxhw.faults.bits import ALL_BITS, bit_mask, from_bits, layout_of, resolve_bits, to_bits

__all__ = ["flip_bit", "flip_bits", "flip_array", "random_bit_flips", "RandomBitFlipsState", "ParamTransform"]

_MAX_DRAWS = 1 << 24  # Bernoulli draws materialized at once

PyTree = object


def _check_bit(bit, width: int) -> None:
  if isinstance(bit, (int, np.integer)) and not isinstance(bit, bool):
    if not 0 <= int(bit) < width:
      raise ValueError(f"bit={int(bit)} is outside the dtype width; allowed: integers in [0, {width})")
  elif isinstance(bit, bool):
    raise ValueError(f"bit={bit!r} is not a bit position; allowed: integers in [0, {width})")


def flip_array(x: Array, index: Int[Array, ""] | int, bit: Int[Array, ""] | int) -> Array:
  """Flips bit `bit` of the element at flat `index` of `x` (float or int8), keeping shape and dtype.

  Args:
    x: float32/float16/bfloat16/float64/int8 array.
    index: flat element index (may be traced).
    bit: bit position from the LSB (may be traced).

  Returns:
    A copy of `x` with exactly that bit inverted.
  """
  lay = layout_of(x, argname="x")
  _check_bit(bit, lay.width)
  u = to_bits(x).reshape(-1)
  u = u.at[index].set(jnp.bitwise_xor(u[index], bit_mask(bit, x.dtype)))
  return from_bits(u, x.dtype).reshape(x.shape)


def flip_bit(params: PyTree, path: str | Sequence[str], index, bit) -> PyTree:
  """Returns `params` with one bit of one parameter inverted.

  Args:
    params: pytree of float or int8 arrays.
    path: leaf path, "dense0/w" or ("dense0", "w").
    index: flat index, or a coordinate tuple, into that leaf (ints or traced arrays).
    bit: bit position from the LSB, in [0, width).

  Returns:
    New pytree; all other elements and leaves are untouched (same structure, shapes and dtypes).

  Raises:
    ValueError: unknown `path`, `bit` outside the dtype width, `index` outside the leaf, or a leaf dtype without
      a bit layout (e.g. int32).

  References:
    Prato, Kim, Chen, Hong, "Hessian-aware Training for Enhancing DNNs Resilience to Parameter Corruptions",
      arXiv:2504.01933, 2025.
  """
  i = _tree.find_leaf(params, path)
  leaf = jax.tree.leaves(params)[i]
  layout_of(leaf, argname=f"leaf {_tree.path_str(_tree.norm_path(path))}")
  flat = _tree.flat_index(jnp.shape(leaf), index)
  return _tree.replace_leaf(params, i, flip_array(jnp.asarray(leaf), flat, bit))


def flip_bits(params: PyTree, masks: PyTree) -> PyTree:
  """XORs every leaf's bit pattern with the matching unsigned mask leaf.

  Args:
    params: pytree of float or int8 arrays.
    masks: pytree with the same structure; each leaf an unsigned integer array of the leaf's bit width
      (uint32 for float32, uint8 for int8) broadcastable to the leaf's shape.

  Returns:
    The flipped pytree (applying the same masks twice restores `params` exactly).

  Raises:
    ValueError: structure mismatch or a mask dtype that does not match the leaf's width.
  """
  p_def = jax.tree.structure(params)
  m_def = jax.tree.structure(masks)
  if p_def != m_def:
    raise ValueError(f"masks has structure {m_def}; allowed: the structure of params, {p_def}")

  def one(path, x, m):
    lay = layout_of(x, argname=f"params leaf {_tree.path_str(tuple(_tree.key_name(k) for k in path))}")
    if jnp.dtype(jnp.asarray(m).dtype) != lay.uint:
      raise ValueError(f"masks leaf {_tree.path_str(tuple(_tree.key_name(k) for k in path))} has dtype "
                       f"{jnp.asarray(m).dtype}; allowed: {lay.uint.name} for a {lay.name} leaf")
    return from_bits(jnp.bitwise_xor(to_bits(x), m), x.dtype)

  return jax.tree_util.tree_map_with_path(one, params, masks)


class RandomBitFlipsState(NamedTuple):
  """`last_count`: number of bits flipped by the last `apply`; `total`: flips since `init`."""

  last_count: Array
  total: Array


def random_bit_flips(ber: float, *, bits=ALL_BITS, leaves: Sequence[str] | None = None) -> ParamTransform:
  """Flips each selected bit of every selected parameter independently with probability `ber`.

  Independent Bernoulli(ber) per bit is the same distribution as K ~ Binomial(n_bits, ber) followed by K distinct
  positions drawn uniformly.

  Args:
    ber: bit-error rate per bit, in [0, 1].
    bits: which bit positions may flip ("all", "sign", "exponent", "exponent_msb", "mantissa" or positions).
    leaves: leaf-path prefixes to corrupt (None: every leaf).

  Returns:
    A ParamTransform; `apply(params, state, key)` returns (corrupted params, RandomBitFlipsState).

  Raises:
    ValueError: `ber` outside [0, 1]; at `apply`, a selected leaf without a bit layout (e.g. int32), a bit
      outside a leaf's width, or a prefix that matches no leaf.

  References:
    Prato, Kim, Chen, Hong, "Hessian-aware Training for Enhancing DNNs Resilience to Parameter Corruptions",
      arXiv:2504.01933, 2025.
  """
  if not isinstance(ber, (int, float, np.floating, np.integer)) or not 0.0 <= float(ber) <= 1.0:
    raise ValueError(f"ber={ber!r} is outside [0, 1]; allowed: a float in [0, 1]")
  ber = float(ber)

  def init(params):
    del params
    return RandomBitFlipsState(jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))

  def apply(params, state, key):
    sel = _tree.select_leaves(params, leaves)
    flat, treedef = jax.tree.flatten(params)
    paths = [p for p, _ in _tree.leaf_paths(params)]
    # Segments (leaf, bit positions), packed into batches of at most 2^24 Bernoulli draws; one draw per batch
    # (a single threefry call for small models, which keeps the jit compile short).
    segs, masks = [], {}
    for j, (x, use) in enumerate(zip(flat, sel)):
      if not use:
        continue
      lay = layout_of(x, argname=f"params leaf {_tree.path_str(paths[j])}")
      pos = resolve_bits(bits, x.dtype)
      masks[j] = jnp.zeros(jnp.shape(x), lay.uint)
      group = max(1, min(len(pos), _MAX_DRAWS // max(1, int(np.size(x)))))
      segs += [(j, pos[g:g + group]) for g in range(0, len(pos), group)]
    batches, cur, size = [], [], 0
    for j, bpos in segs:
      n = int(np.size(flat[j])) * len(bpos)
      if cur and size + n > _MAX_DRAWS:
        batches.append(cur)
        cur, size = [], 0
      cur.append((j, bpos))
      size += n
    if cur:
      batches.append(cur)
    count = jnp.zeros((), jnp.int32)
    for batch in batches:
      key, sub = jax.random.split(key)
      sizes = [int(np.size(flat[j])) * len(bpos) for j, bpos in batch]
      hits = jax.random.bernoulli(sub, ber, (sum(sizes),))
      count = count + jnp.sum(hits, dtype=jnp.int32)
      off = 0
      for (j, bpos), n in zip(batch, sizes):
        x = flat[j]
        uint = masks[j].dtype
        hit = hits[off:off + n].reshape(*jnp.shape(x), len(bpos)).astype(uint)
        masks[j] = masks[j] | jnp.sum(hit << jnp.asarray(bpos, uint), axis=-1, dtype=uint)
        off += n
    out = [from_bits(jnp.bitwise_xor(to_bits(x), masks[j]), x.dtype) if j in masks else x
           for j, x in enumerate(flat)]
    new = jax.tree.unflatten(treedef, out)
    return new, RandomBitFlipsState(count, state.total + count)

  return ParamTransform(init, apply)
