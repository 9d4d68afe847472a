"""Pytree path helpers every package shares: leaf paths as tuples of strings, finding and selecting leaves by path."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np

Path = tuple[str, ...]


def key_name(k) -> str:
  """The string name of one `jax.tree_util` key-path entry (a dict key, attribute name or sequence index)."""
  for attr in ("key", "name", "idx"):
    if hasattr(k, attr):
      return str(getattr(k, attr))
  return str(k)


def leaf_paths(tree) -> list[tuple[Path, object]]:
  """[(path, leaf)] in `jax.tree` flatten order, paths as tuples of strings."""
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  return [(tuple(key_name(k) for k in p), leaf) for p, leaf in flat]


def path_str(path: Path) -> str:
  """A leaf path as a ``"a/b/c"`` string (the inverse of `norm_path` on strings)."""
  return "/".join(path)


def norm_path(path, *, argname: str = "path") -> Path:
  """A leaf path given as ``"a/b"`` or a tuple/list of keys, as a tuple of strings.

  Raises:
    ValueError: `path` is neither, named as `argname` in the message.
  """
  if isinstance(path, str):
    return tuple(p for p in path.split("/") if p)
  if isinstance(path, (tuple, list)):
    return tuple(str(p) for p in path)
  raise ValueError(f"{argname}={path!r} is not a leaf path; allowed: 'a/b' strings or tuples of keys")


def find_leaf(tree, path, *, argname: str = "path") -> int:
  """Index (flatten order) of the leaf at `path`; ValueError listing the valid paths if absent."""
  p = norm_path(path, argname=argname)
  paths = [q for q, _ in leaf_paths(tree)]
  if p not in paths:
    raise ValueError(f"{argname}={path_str(p)!r} does not exist; allowed: {[path_str(q) for q in paths]}")
  return paths.index(p)


def select_leaves(tree, prefixes: Sequence | None, *, argname: str = "leaves") -> list[bool]:
  """Per-leaf membership of `prefixes` (None: all). Each prefix must match at least one leaf."""
  paths = [q for q, _ in leaf_paths(tree)]
  if prefixes is None:
    return [True] * len(paths)
  if isinstance(prefixes, str):
    prefixes = [prefixes]
  pres = [norm_path(p, argname=argname) for p in prefixes]
  for pre in pres:
    if not any(q[: len(pre)] == pre for q in paths):
      raise ValueError(f"{argname} contains {path_str(pre)!r}, which matches no leaf; allowed prefixes of: "
                       f"{[path_str(q) for q in paths]}")
  return [any(q[: len(pre)] == pre for pre in pres) for q in paths]


def replace_leaf(tree, i: int, new):
  """A copy of `tree` with its `i`-th leaf (flatten order, see `find_leaf`) replaced by `new`."""
  leaves, treedef = jax.tree.flatten(tree)
  leaves = list(leaves)
  leaves[i] = new
  return jax.tree.unflatten(treedef, leaves)


def flat_index(shape, index, *, argname: str = "index"):
  """Flat index of `index` (int, tuple of ints, or traced array) in an array of `shape`."""
  size = int(np.prod(shape)) if len(shape) else 1
  if isinstance(index, (tuple, list)):
    if len(index) != len(shape):
      raise ValueError(f"{argname}={index!r} has {len(index)} coordinates; allowed: {len(shape)} for shape {shape}")
    for c, n in zip(index, shape):
      if isinstance(c, (int, np.integer)) and not -n <= int(c) < n:
        raise ValueError(f"{argname}={index!r} is outside shape {shape}")
    return np.ravel_multi_index(tuple(int(c) % n for c, n in zip(index, shape)), shape) if all(
        isinstance(c, (int, np.integer)) for c in index) else _traced_ravel(index, shape)
  if isinstance(index, (int, np.integer)):
    if not -size <= int(index) < size:
      raise ValueError(f"{argname}={int(index)} is outside the leaf's {size} elements; allowed: [0, {size})")
    return int(index) % size
  return index


def _traced_ravel(index, shape):
  import jax.numpy as jnp
  flat = jnp.asarray(0, jnp.int32)
  for c, n in zip(index, shape):
    flat = flat * n + jnp.asarray(c, jnp.int32)
  return flat
