"""System-level defenses against parameter bit flips, as pure transforms over a parameter pytree.

Each factory returns a `Defense`: an optax-style ``(init, apply)`` pair (so ``ParamTransform(d.init, d.apply)``
is a parameter effect like any other) plus ``overhead(params)``, the storage (extra bits per weight) and compute
(extra operations per weight and read) it costs. ``state = init(clean_params)`` stores what the hardware would
store beside the weights (check bits, signatures, ranges); ``apply(params, state, key)`` returns the params the
model computes with after the check (corrected, zeroed or clipped) and the unchanged state. Defenses work on the
bit patterns, so they apply to float (IEEE-754) and int8 (two's complement) leaves alike.

* `ecc_protect`: a single-error-correcting Hamming code over a chosen set of bit positions of every weight (for
  example the exponent MSB): a single flip there is undone.
* `parity_protect`: one parity bit over those positions: a flip there is detected and the weight zeroed.
* `range_restriction`: weights clipped to the per-leaf range of the trained weights (NaN -> 0); `clip_activations`
  does the same for the Dense/Conv outputs, with ranges from training data (`activation_ranges`).
* `group_checksum`: a RADAR-style signature per group of weights (XOR of the protected bit patterns of the group,
  folded to `sig_bits` bits): every single flip of a protected bit changes it, and the whole group is zeroed.

References:
  Li, Rakin, He, Fan, Chakrabarti, "RADAR: Run-time Adversarial Weight Attack Detection and Accuracy Recovery",
    DATE 2021, arXiv:2101.08254 (group checksums, zeroing the detected group).
  Prato, Kim, Chen, Hong, "Hessian-aware Training for Enhancing DNNs Resilience to Parameter Corruptions",
    arXiv:2504.01933, 2025 (HAT alongside hardware and system-level defenses).
  Hamming, "Error detecting and error correcting codes", Bell System Technical Journal, 1950.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxhw import pytree as _tree
from jaxhw.effects import LayerCall, path_matches, record_activations
from jaxhw.faults.bits import ALL_BITS, from_bits, layout_of, resolve_bits, to_bits

__all__ = [
    "Defense", "no_defense", "hamming_check_bits", "ecc_protect", "parity_protect", "parity_check",
    "range_restriction", "weight_ranges", "group_checksum", "checksum_check", "clip_activations",
    "activation_ranges",
]

PyTree = Any


class Defense(NamedTuple):
  """A defense: ``init(params) -> state``, ``apply(params, state, key) -> (params, state)`` and
  ``overhead(params) -> {"bits_per_weight", "ops_per_weight"}`` (averaged over all parameters of `params`)."""

  init: Callable[[PyTree], PyTree]
  apply: Callable[[PyTree, PyTree, Any], tuple[PyTree, PyTree]]
  overhead: Callable[[PyTree], dict]


def _n_params(params) -> int:
  return sum(int(np.size(x)) for x in jax.tree.leaves(params))


def _mask(bits, x) -> np.uint64:
  pos = resolve_bits(bits, layout_of(x, argname="params leaf").name) if len(np.atleast_1d(bits)) else ()
  m = 0
  for b in pos:
    m |= 1 << int(b)
  return m


def _per_leaf(params, leaves, fn):
  """Maps fn(leaf_id, x) over the selected leaves; the others map to None."""
  sel = _tree.select_leaves(params, leaves)
  return [fn(j, x) if u else None for j, ((_, x), u) in enumerate(zip(_tree.leaf_paths(params), sel))]


def _replace(params, new: list):
  flat, treedef = jax.tree.flatten(params)
  return jax.tree.unflatten(treedef, [x if n is None else n for x, n in zip(flat, new)])


def _selected_count(params, leaves) -> int:
  sel = _tree.select_leaves(params, leaves)
  return sum(int(np.size(x)) for x, u in zip(jax.tree.leaves(params), sel) if u)


def no_defense() -> Defense:
  """The identity (no storage, no compute)."""
  return Defense(lambda params: (), lambda params, state, key=None: (params, state),
                 lambda params: {"bits_per_weight": 0.0, "ops_per_weight": 0.0})


def hamming_check_bits(k: int) -> int:
  """Check bits r of a single-error-correcting Hamming code over k data bits: the least r with 2^r >= k + r + 1
  (0 for k = 0)."""
  if k < 0:
    raise ValueError(f"k={k}; allowed: >= 0")
  if k == 0:
    return 0
  r = 1
  while 2 ** r < k + r + 1:
    r += 1
  return r


def ecc_protect(bits=(30,), *, leaves: Sequence[str] | None = None) -> Defense:
  """Single-error-correcting code over bit positions `bits` of every selected parameter.

  A flip of one protected bit of a weight is corrected (the stored check bits give its position); two or more
  protected bits flipped in one weight are beyond a SEC code and left as they are. Flips of unprotected bits are
  untouched. The check bits themselves are assumed fault-free.

  Args:
    bits: protected bit positions (0 = LSB; 30 = float32 exponent MSB, 31 = sign, 7 = int8 MSB), or a named
      selection ("exponent", ...); () protects nothing (the identity, zero overhead).
    leaves: leaf-path prefixes to protect (None: every leaf).

  Returns:
    A Defense. Overhead: `hamming_check_bits(len(bits))` bits per protected weight; one syndrome per weight read.

  References:
    Hamming, "Error detecting and error correcting codes", Bell System Technical Journal, 1950.
  """
  def init(params):
    return _per_leaf(params, leaves, lambda j, x: jnp.bitwise_and(to_bits(x), _uint(_mask(bits, x), x)))

  def apply(params, state, key=None):
    def fix(j, x):
      m = _uint(_mask(bits, x), x)
      u = to_bits(x)
      diff = jnp.bitwise_and(jnp.bitwise_xor(u, state[j]), m)
      one = jax.lax.population_count(diff) == 1
      return from_bits(jnp.where(one, jnp.bitwise_xor(u, diff), u), x.dtype)
    return _replace(params, _per_leaf(params, leaves, fix)), state

  def overhead(params):
    leaf0 = [x for x, u in zip(jax.tree.leaves(params), _tree.select_leaves(params, leaves)) if u]
    k = len(resolve_bits(bits, layout_of(leaf0[0]).name)) if leaf0 and len(np.atleast_1d(bits)) else 0
    r = hamming_check_bits(k)
    share = _selected_count(params, leaves) / max(1, _n_params(params))
    return {"bits_per_weight": r * share, "ops_per_weight": (1.0 if r else 0.0) * share}

  return Defense(init, apply, overhead)


def _uint(m: int, x):
  return jnp.asarray(m, to_bits(jnp.zeros((), x.dtype)).dtype)


def _parity(u):
  return jnp.bitwise_and(jax.lax.population_count(u), 1)


def parity_protect(bits=(30,), *, leaves: Sequence[str] | None = None) -> Defense:
  """One parity bit over bit positions `bits` of every selected parameter; a detected flip zeroes the weight.

  Any odd number of flips among the protected bits of a weight is detected (see `parity_check`); the weight is
  then set to 0 (no golden copy is kept). Flips of unprotected bits are untouched.

  Args:
    bits: protected bit positions, as `ecc_protect`; () is the identity.
    leaves: leaf-path prefixes (None: every leaf).

  Returns:
    A Defense. Overhead: 1 bit per protected weight (0 for no bits); one parity per weight read.
  """
  def init(params):
    return _per_leaf(params, leaves, lambda j, x: _parity(jnp.bitwise_and(to_bits(x), _uint(_mask(bits, x), x))))

  def apply(params, state, key=None):
    flags = parity_check(params, state, bits=bits, leaves=leaves)
    return _replace(params, [None if f is None else jnp.where(f, jnp.zeros((), x.dtype), x)
                             for x, f in zip(jax.tree.leaves(params), flags)]), state

  def overhead(params):
    share = _selected_count(params, leaves) / max(1, _n_params(params))
    on = 1.0 if len(np.atleast_1d(bits)) else 0.0
    return {"bits_per_weight": on * share, "ops_per_weight": on * share}

  return Defense(init, apply, overhead)


def parity_check(params, state, *, bits=(30,), leaves: Sequence[str] | None = None) -> list:
  """Per selected leaf, a bool array: the weight's protected-bit parity differs from the stored one (None for
  unselected leaves). `state` is `parity_protect(bits, leaves=leaves).init(clean_params)`."""
  return _per_leaf(params, leaves,
                   lambda j, x: _parity(jnp.bitwise_and(to_bits(x), _uint(_mask(bits, x), x))) != state[j])


def weight_ranges(params, *, margin: float = 0.0, leaves: Sequence[str] | None = None) -> list:
  """Per selected leaf, (lo, hi) = the leaf's min and max widened by `margin` x (max - min) (None elsewhere)."""
  def rng(j, x):
    x = jnp.asarray(x, jnp.float32)
    lo, hi = jnp.min(x), jnp.max(x)
    w = (hi - lo) * margin
    return (lo - w, hi + w)
  return _per_leaf(params, leaves, rng)


def range_restriction(*, margin: float = 0.0, leaves: Sequence[str] | None = None) -> Defense:
  """Clips every selected weight to its leaf's range in the trained (clean) params; NaN becomes 0.

  `init(clean_params)` records the ranges (`weight_ranges`); `apply` clips, in the float domain (int8 leaves are
  clipped in their integer range). In-range weights are returned unchanged, bit for bit.

  Args:
    margin: widen each range by this fraction of its width.
    leaves: leaf-path prefixes (None: every leaf).

  Returns:
    A Defense. Overhead: 2 stored numbers of the leaf's width per leaf; 2 comparisons per weight read.
  """
  def init(params):
    return weight_ranges(params, margin=margin, leaves=leaves)

  def apply(params, state, key=None):
    def clip(j, x):
      lo, hi = state[j]
      xf = x.astype(jnp.float32)
      inside = (xf >= lo) & (xf <= hi)
      clipped = jnp.where(jnp.isnan(xf), 0.0, jnp.clip(xf, lo, hi))
      if jnp.issubdtype(x.dtype, jnp.integer):
        clipped = jnp.round(clipped)
      return jnp.where(inside, x, clipped.astype(x.dtype))
    return _replace(params, _per_leaf(params, leaves, clip)), state

  def overhead(params):
    sel = [x for x, u in zip(jax.tree.leaves(params), _tree.select_leaves(params, leaves)) if u]
    bits = sum(2 * layout_of(x).width for x in sel)
    share = _selected_count(params, leaves) / max(1, _n_params(params))
    return {"bits_per_weight": bits / max(1, _n_params(params)), "ops_per_weight": 2.0 * share}

  return Defense(init, apply, overhead)


def _fold(v, sig_bits: int, width: int):
  """XOR of the `sig_bits`-wide slices of v (unsigned ints of `width` bits)."""
  out = jnp.zeros_like(v)
  m = jnp.asarray((1 << sig_bits) - 1, v.dtype)
  for s in range(0, width, sig_bits):
    out = jnp.bitwise_xor(out, jnp.bitwise_and(jnp.right_shift(v, jnp.asarray(s, v.dtype)), m))
  return out


def _signatures(x, group_size: int, sig_bits: int, mask: int):
  lay = layout_of(x)
  u = jnp.bitwise_and(to_bits(x).reshape(-1), _uint(mask, x))
  n = u.shape[0]
  pad = (-n) % group_size
  u = jnp.concatenate([u, jnp.zeros(pad, u.dtype)]).reshape(-1, group_size)
  g = jax.lax.reduce(u, jnp.zeros((), u.dtype), jax.lax.bitwise_xor, (1,))
  return _fold(g, sig_bits, lay.width)


def group_checksum(group_size: int = 64, *, sig_bits: int = 2, bits=ALL_BITS,
                   leaves: Sequence[str] | None = None) -> Defense:
  """RADAR-style run-time detection: a `sig_bits`-bit signature per group of `group_size` consecutive weights
  (of the flattened leaf); a group whose signature no longer matches is zeroed.

  The signature is the XOR of the group's bit patterns restricted to `bits`, folded to `sig_bits` bits by XOR of
  its slices. A single flip of a protected bit toggles exactly one bit of the fold, so every single flip is
  detected, and only in its own group (an even number of flips that cancel in the fold is missed). RADAR sums the
  int8 weights of interleaved groups under a secret mask and keeps 2 bits; the XOR fold keeps its storage and
  detects every single flip.

  Args:
    group_size: weights per group (the last group of a leaf is zero-padded).
    sig_bits: signature bits per group (>= 1).
    bits: bit positions covered; () covers none (the identity, zero overhead).
    leaves: leaf-path prefixes (None: every leaf).

  Returns:
    A Defense. Overhead: sig_bits / group_size bits per weight; one XOR per weight per check.

  References:
    Li, Rakin, He, Fan, Chakrabarti, "RADAR: Run-time Adversarial Weight Attack Detection and Accuracy Recovery",
      DATE 2021, arXiv:2101.08254.
  """
  if group_size < 1 or sig_bits < 1:
    raise ValueError(f"group_size={group_size}, sig_bits={sig_bits}; allowed: both >= 1")

  def init(params):
    return _per_leaf(params, leaves, lambda j, x: _signatures(x, group_size, sig_bits, _mask(bits, x)))

  def apply(params, state, key=None):
    flags = checksum_check(params, state, group_size=group_size, sig_bits=sig_bits, bits=bits, leaves=leaves)

    def zero(j, x):
      per_w = jnp.repeat(flags[j], group_size)[: x.size].reshape(x.shape)
      return jnp.where(per_w, jnp.zeros((), x.dtype), x)
    return _replace(params, _per_leaf(params, leaves, zero)), state

  def overhead(params):
    on = 1.0 if len(np.atleast_1d(bits)) else 0.0
    sel = _tree.select_leaves(params, leaves)
    groups = sum(math.ceil(np.size(x) / group_size) for x, u in zip(jax.tree.leaves(params), sel) if u)
    share = _selected_count(params, leaves) / max(1, _n_params(params))
    return {"bits_per_weight": on * sig_bits * groups / max(1, _n_params(params)), "ops_per_weight": on * share}

  return Defense(init, apply, overhead)


def checksum_check(params, state, *, group_size: int = 64, sig_bits: int = 2, bits=ALL_BITS,
                   leaves: Sequence[str] | None = None) -> list:
  """Per selected leaf, a bool array [groups]: the group's signature differs from the stored one (None for
  unselected leaves). `state` is the matching `group_checksum(...).init(clean_params)`."""
  return _per_leaf(params, leaves,
                   lambda j, x: _signatures(x, group_size, sig_bits, _mask(bits, x)) != state[j])


# ---- activations ---------------------------------------------------------------------------------------------

def clip_activations(bounds: dict, *, nan_to: float = 0.0) -> Callable[[LayerCall], jax.Array]:
  """A forward effect (`jaxhw.effects.attach`) clipping each listed Dense/Conv output to its training range.

  Args:
    bounds: {layer path string "a/b": (lo, hi)}; layers not listed are untouched.
    nan_to: value replacing NaN outputs.

  Returns:
    A forward effect. Overhead: 2 comparisons per activation; 2 stored numbers per layer.
  """
  def effect(call: LayerCall):
    out = call.next()
    name = "/".join(call.path)
    if name not in bounds:
      return out
    lo, hi = bounds[name]
    return jnp.where(jnp.isnan(out), nan_to, jnp.clip(out, lo, hi))
  return effect


def activation_ranges(apply_fn: Callable, variables, x, *, layers=None, margin: float = 0.0) -> dict:
  """{layer path: (lo, hi)} of each Dense/Conv output over inputs `x` (training data), widened by `margin`."""
  from jaxhw.effects import attach

  _, rec = attach(apply_fn, record_activations("ranges", layers=layers))(variables, x, mutable=["ranges"])
  out = {}
  for path, v in _tree.leaf_paths(rec["ranges"]):
    names = [p for p in path]
    layer = "/".join(names[:-2]) if len(names) >= 2 else names[0]
    if layers is not None and not path_matches(tuple(layer.split("/")), layers):
      continue
    a = jnp.asarray(v[0] if isinstance(v, tuple) else v)
    lo, hi = float(jnp.min(a)), float(jnp.max(a))
    w = (hi - lo) * margin
    out[layer] = (lo - w, hi + w)
  return out
