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

Partial protection (a budget that is a continuous fraction): `unit_ranks` orders the units of the weights (runs of
`unit_size` consecutive weights of a flattened leaf, or checksum groups) without looking at any fault sweep, by
mean |w| or at random with a fixed seed; `fraction_mask` keeps the first fraction of them; `ecc_protect` and
`parity_protect` take it as `units=`, `group_checksum` as `groups=`, and the overhead then counts the check bits of
the protected units plus a 1-bit flag per unit saying which are protected (none when all or none
are). `residual_vs_fraction` and
`smallest_fraction` turn per-flip outcomes (which unit a catastrophic flip hits, and whether protecting that unit
removes it) into residual counts per fraction and the least fraction reaching a target, with no new evaluation.

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
    "activation_ranges", "ORDERS", "unit_ranks", "fraction_mask", "residual_vs_fraction", "smallest_fraction",
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


def ecc_protect(bits=(30,), *, leaves: Sequence[str] | None = None, units: list | None = None,
                unit_size: int = 1, unit_flags: bool = True) -> Defense:
  """Single-error-correcting code over bit positions `bits` of every selected parameter.

  A flip of one protected bit of a weight is corrected (the stored check bits give its position); two or more
  protected bits flipped in one weight are beyond a SEC code and left as they are. Flips of unprotected bits are
  untouched. The check bits themselves are assumed fault-free.

  Args:
    bits: protected bit positions (0 = LSB; 30 = float32 exponent MSB, 31 = sign, 7 = int8 MSB), or a named
      selection ("exponent", ...); () protects nothing (the identity, zero overhead).
    leaves: leaf-path prefixes to protect (None: every leaf).
    units: partial protection: per leaf, a bool array over its units of `unit_size` consecutive weights (as
      `fraction_mask` returns; None entries for unselected leaves); only weights of True units are protected.
      None: every weight of the selected leaves.
    unit_size: weights per unit of `units`.
    unit_flags: with a partial `units`, count a stored 1-bit flag per unit saying which units carry check bits;
      False when the protected set is implied at no storage (regenerated from a seed, or a prefix of layers).

  Returns:
    A Defense. Overhead: `hamming_check_bits(len(bits))` bits per protected weight, plus the unit flags; one
    syndrome per protected weight read.

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
      one = (jax.lax.population_count(diff) == 1) & _unit_weights(units, j, x, unit_size)
      return from_bits(jnp.where(one, jnp.bitwise_xor(u, diff), u), x.dtype)
    return _replace(params, _per_leaf(params, leaves, fix)), state

  def overhead(params):
    leaf0 = [x for x, u in zip(jax.tree.leaves(params), _tree.select_leaves(params, leaves)) if u]
    k = len(resolve_bits(bits, layout_of(leaf0[0]).name)) if leaf0 and len(np.atleast_1d(bits)) else 0
    r = hamming_check_bits(k)
    return _partial_overhead(params, leaves, units, unit_size, r, unit_flags)

  return Defense(init, apply, overhead)


def _unit_weights(units, j: int, x, unit_size: int):
  """Per weight of leaf j, whether its unit is protected (True everywhere without `units`)."""
  if units is None:
    return jnp.ones(x.shape, bool)
  if units[j] is None:
    raise ValueError(f"units[{j}] is None for a selected leaf; allowed: a bool array per selected leaf")
  return jnp.repeat(jnp.asarray(units[j], bool), unit_size)[: x.size].reshape(x.shape)


def _partial_overhead(params, leaves, units, unit_size: int, bits_per_protected: float,
                      unit_flags: bool = True) -> dict:
  """{"bits_per_weight", "map_bits_per_weight", "ops_per_weight", "protected_share"} of a code costing
  `bits_per_protected` per protected weight; with `units`, plus a 1-bit flag per unit of the selected leaves."""
  n = max(1, _n_params(params))
  sel = _tree.select_leaves(params, leaves)
  if units is None:
    prot, flags = _selected_count(params, leaves), 0
  else:
    prot = flags = on_units = 0
    for j, (x, u) in enumerate(zip(jax.tree.leaves(params), sel)):
      if u:
        m = np.repeat(np.asarray(units[j], bool), unit_size)[: int(np.size(x))]
        prot += int(m.sum())
        flags += len(units[j])
        on_units += int(np.sum(units[j]))
    if not unit_flags or on_units in (0, flags):  # none or all protected (no defense, the full code): no flags
      flags = 0
  on = bits_per_protected > 0
  map_bits = flags / n if on else 0.0
  return {"bits_per_weight": bits_per_protected * prot / n + map_bits, "map_bits_per_weight": map_bits,
          "ops_per_weight": (prot / n) if on else 0.0, "protected_share": prot / n}


def _uint(m: int, x):
  return jnp.asarray(m, to_bits(jnp.zeros((), x.dtype)).dtype)


def _parity(u):
  return jnp.bitwise_and(jax.lax.population_count(u), 1)


def parity_protect(bits=(30,), *, leaves: Sequence[str] | None = None, units: list | None = None,
                   unit_size: int = 1, unit_flags: bool = True) -> Defense:
  """One parity bit over bit positions `bits` of every selected parameter; a detected flip zeroes the weight.

  Any odd number of flips among the protected bits of a weight is detected (see `parity_check`); the weight is
  then set to 0 (no golden copy is kept). Flips of unprotected bits are untouched.

  Args:
    bits: protected bit positions, as `ecc_protect`; () is the identity.
    leaves: leaf-path prefixes (None: every leaf).
    units, unit_size, unit_flags: partial protection, as `ecc_protect`.

  Returns:
    A Defense. Overhead: 1 bit per protected weight (0 for no bits), plus, with `units`, a 1-bit flag per unit;
    one parity per protected weight read.
  """
  def init(params):
    return _per_leaf(params, leaves, lambda j, x: _parity(jnp.bitwise_and(to_bits(x), _uint(_mask(bits, x), x))))

  def apply(params, state, key=None):
    flags = parity_check(params, state, bits=bits, leaves=leaves)
    return _replace(params, [None if f is None else
                             jnp.where(f & _unit_weights(units, j, x, unit_size), jnp.zeros((), x.dtype), x)
                             for j, (x, f) in enumerate(zip(jax.tree.leaves(params), flags))]), state

  def overhead(params):
    return _partial_overhead(params, leaves, units, unit_size, 1.0 if len(np.atleast_1d(bits)) else 0.0,
                             unit_flags)

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
                   leaves: Sequence[str] | None = None, groups: list | None = None,
                   unit_flags: bool = True) -> Defense:
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
    groups: partial protection: per leaf, a bool array over its groups (`fraction_mask(unit_ranks(params,
      group_size, ...), f)`); only True groups have a signature, the others are never checked. None: all groups.
    unit_flags: with a partial `groups`, count a 1-bit flag per group (see `ecc_protect`).

  Returns:
    A Defense. Overhead: sig_bits per protected group, plus, with `groups`, a 1-bit flag per group; one XOR
    per checked weight per check.

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
      f = flags[j] if groups is None else flags[j] & jnp.asarray(groups[j], bool)
      per_w = jnp.repeat(f, group_size)[: x.size].reshape(x.shape)
      return jnp.where(per_w, jnp.zeros((), x.dtype), x)
    return _replace(params, _per_leaf(params, leaves, zero)), state

  def overhead(params):
    on = 1.0 if len(np.atleast_1d(bits)) else 0.0
    sel = _tree.select_leaves(params, leaves)
    n = max(1, _n_params(params))
    if groups is None:
      n_groups = sum(math.ceil(np.size(x) / group_size) for x, u in zip(jax.tree.leaves(params), sel) if u)
      return {"bits_per_weight": on * sig_bits * n_groups / n, "map_bits_per_weight": 0.0,
              "ops_per_weight": on * _selected_count(params, leaves) / n,
              "protected_share": _selected_count(params, leaves) / n}
    o = _partial_overhead(params, leaves, groups, group_size, on * sig_bits / group_size, unit_flags)
    # sig_bits per protected group (not per weight): a partial last group still costs a whole signature.
    prot_groups = sum(int(np.sum(groups[j])) for j, u in enumerate(sel) if u)
    o["bits_per_weight"] = on * sig_bits * prot_groups / n + o["map_bits_per_weight"]
    return o

  return Defense(init, apply, overhead)


def checksum_check(params, state, *, group_size: int = 64, sig_bits: int = 2, bits=ALL_BITS,
                   leaves: Sequence[str] | None = None) -> list:
  """Per selected leaf, a bool array [groups]: the group's signature differs from the stored one (None for
  unselected leaves). `state` is the matching `group_checksum(...).init(clean_params)`."""
  return _per_leaf(params, leaves,
                   lambda j, x: _signatures(x, group_size, sig_bits, _mask(bits, x)) != state[j])


# ---- partial protection ----------------------------------------------------------------------------------------

#: Orders of `unit_ranks`: "magnitude" (largest mean |w| first), "random" (a permutation from a fixed seed),
#: "small_layers" (the units of smaller leaves first, largest mean |w| first within a leaf).
ORDERS = ("magnitude", "random", "small_layers")


def unit_ranks(params, unit_size: int = 1, *, order: str = "magnitude", seed: int = 0, scores=None,
               leaves: Sequence[str] | None = None) -> list:
  """The place of every protection unit in one global protection order over the selected leaves.

  A unit is a run of `unit_size` consecutive weights of a flattened leaf (a leaf's last unit may be shorter); with
  `unit_size` = a checksum's `group_size` the units are its groups. The order uses only the weights (or given
  scores), never a fault sweep, so a protected subset chosen from it is what a deployment could choose.

  Args:
    params: the clean (trained) parameters.
    unit_size: weights per unit (>= 1).
    order: "magnitude": units by decreasing mean |w| (non-finite weights count as 0); "random": a uniformly random
      permutation of all units from `np.random.default_rng(seed)`; "small_layers": leaves by increasing size (a
      whole small layer, e.g. a conv kernel or a bias, is cheap to protect), units by decreasing mean |w| within a
      leaf. Ignored when `scores` is given.
    seed: the seed of the random order.
    scores: optional per-weight scores, a pytree of the structure of `params` (or a list, one array per leaf):
      units by decreasing mean score.
    leaves: leaf-path prefixes (None: every leaf).

  Returns:
    Per leaf (flatten order), an int64 array [ceil(size / unit_size)] of ranks 0 .. U-1 (0 = protected first; U
    = units of all selected leaves), None for unselected leaves. Ties keep leaf order, then unit index.
  """
  if unit_size < 1:
    raise ValueError(f"unit_size={unit_size}; allowed: >= 1")
  if scores is None and order not in ORDERS:
    raise ValueError(f"order={order!r}; allowed: {ORDERS}")
  xs = jax.tree.leaves(params)
  sel = _tree.select_leaves(params, leaves)
  sc = None if scores is None else [np.asarray(a, np.float64) for a in
                                    (scores if isinstance(scores, list) else jax.tree.leaves(scores))]
  per, sizes = [], []
  for j, (x, u) in enumerate(zip(xs, sel)):
    if not u:
      continue
    v = np.abs(np.asarray(x, np.float64).reshape(-1)) if sc is None else sc[j].reshape(-1)
    v = np.where(np.isfinite(v), v, 0.0)
    k = math.ceil(v.size / unit_size)
    tot = np.add.reduceat(v, np.arange(0, v.size, unit_size)) if v.size else np.zeros(0)
    cnt = np.minimum(unit_size, v.size - np.arange(k) * unit_size)
    per.append(tot / cnt)
    sizes.append(k)
  allv = np.concatenate(per) if per else np.zeros(0)
  if scores is None and order == "random":
    perm = np.random.default_rng(seed).permutation(len(allv))
  elif scores is None and order == "small_layers":
    leaf_size = np.concatenate([np.full(k, np.size(x)) for k, x in zip(sizes, [x for x, u in zip(xs, sel) if u])])
    perm = np.lexsort((np.arange(len(allv)), -allv, leaf_size))
  else:
    perm = np.argsort(-allv, kind="stable")
  rank = np.empty(len(allv), np.int64)
  rank[perm] = np.arange(len(allv))
  out, start, it = [], 0, iter(sizes)
  for u in sel:
    if not u:
      out.append(None)
      continue
    k = next(it)
    out.append(rank[start:start + k])
    start += k
  return out


def fraction_mask(ranks: list, fraction: float) -> list:
  """Per leaf, a bool array over its units: True for the first ceil(fraction x U) units of the order `ranks`
  (`unit_ranks`; U = all units). The `units=` / `groups=` argument of the defenses."""
  if not 0.0 <= fraction <= 1.0:
    raise ValueError(f"fraction={fraction}; allowed: [0, 1]")
  total = sum(len(r) for r in ranks if r is not None)
  k = math.ceil(fraction * total - 1e-9)
  return [None if r is None else np.asarray(r) < k for r in ranks]


def residual_vs_fraction(unit_rank, fixable, n_units: int, fractions) -> np.ndarray:
  """Faults that remain when the first fraction f of the units (in rank order) is protected, for each f.

  Args:
    unit_rank: int [faults], the rank (`unit_ranks`) of the unit each fault hits.
    fixable: bool [faults], whether protecting that unit removes the fault (e.g. the flipped bit is covered and
      the defended outcome, corrected or zeroed, is no longer catastrophic).
    n_units: U, the number of units ranked.
    fractions: the protected fractions f in [0, 1].

  Returns:
    int64 [len(fractions)]: #faults that are not fixable or whose unit's rank >= ceil(f x U).
  """
  r = np.asarray(unit_rank, np.int64)
  fx = np.asarray(fixable, bool)
  k = np.ceil(np.asarray(fractions, np.float64) * n_units - 1e-9).astype(np.int64)
  fixed_r = np.sort(r[fx])
  return (np.sum(~fx) + len(fixed_r) - np.searchsorted(fixed_r, k, side="left")).astype(np.int64)


def smallest_fraction(unit_rank, fixable, n_units: int, target: float) -> float | None:
  """The least protected fraction f = k / U (k whole units in rank order) with residual faults <= `target`.

  Args:
    unit_rank, fixable, n_units: as `residual_vs_fraction`.
    target: allowed residual faults (>= 0).

  Returns:
    k / U, or None when even full protection leaves more than `target` (the unfixable faults alone exceed it).
  """
  r = np.asarray(unit_rank, np.int64)
  fx = np.asarray(fixable, bool)
  slack = math.floor(target + 1e-9) - int(np.sum(~fx))
  if slack < 0:
    return None
  fixed_r = np.sort(r[fx])
  m = len(fixed_r)
  if slack >= m:
    return 0.0
  return float(fixed_r[m - slack - 1] + 1) / n_units


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
