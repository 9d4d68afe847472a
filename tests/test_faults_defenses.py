"""Tests for jaxhw.faults.defenses against hand-written references on a tiny model (numpy bit patterns)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhw import faults as F
from jaxhw.effects import ParamTransform
from jaxhw.faults import defenses as D


def _tiny(seed=0):
  rng = np.random.default_rng(seed)
  return {"Dense_0": {"kernel": (0.5 * rng.normal(size=(8, 6))).astype(np.float32),
                      "bias": (0.1 * rng.normal(size=6)).astype(np.float32)},
          "Dense_1": {"kernel": (0.5 * rng.normal(size=(6, 3))).astype(np.float32),
                      "bias": (0.1 * rng.normal(size=3)).astype(np.float32)}}


def _np_flip(params, leaf, index, bit):
  out = jax.tree.map(np.array, params)
  flat = jax.tree.leaves(out)[leaf].reshape(-1)
  u = flat.view(np.uint32 if flat.dtype == np.float32 else np.uint8)
  u[index] ^= (1 << bit)
  return out


def _leaves(p):
  return [np.asarray(a) for a in jax.tree.leaves(p)]


def _same_bits(a, b):
  for x, y in zip(_leaves(a), _leaves(b)):
    assert x.dtype == y.dtype and x.shape == y.shape
    w = np.uint32 if x.dtype == np.float32 else np.uint8
    np.testing.assert_array_equal(x.view(w), y.view(w))


@pytest.fixture(scope="module")
def params():
  return _tiny()


@pytest.fixture(scope="module")
def flips():
  """Random single flips (leaf, index, bit) of the tiny model, plus every bit-30 flip of one leaf."""
  p = _tiny()
  sizes = [a.size for a in jax.tree.leaves(p)]
  rng = np.random.default_rng(1)
  out = []
  for _ in range(60):
    j = int(rng.integers(len(sizes)))
    out.append((j, int(rng.integers(sizes[j])), int(rng.integers(32))))
  out += [(1, i, 30) for i in range(sizes[1])]
  return out


def test_hamming_check_bits():
  assert [D.hamming_check_bits(k) for k in (0, 1, 2, 4, 8, 11, 26)] == [0, 2, 3, 3, 4, 4, 5]


def test_ecc_corrects_protected_flips_only(params, flips):
  bset = (30, 31)
  d = D.ecc_protect(bset)
  st = d.init(params)
  apply = jax.jit(lambda p: d.apply(p, st)[0])
  for j, i, b in flips:
    bad = _np_flip(params, j, i, b)
    out = apply(bad)
    _same_bits(out, params if b in bset else bad)  # protected: undone; else untouched
  # Two protected bits of one weight: beyond a SEC code, left as they are.
  two = _np_flip(_np_flip(params, 0, 3, 30), 0, 3, 31)
  _same_bits(apply(two), two)
  assert d.overhead(params) == {"bits_per_weight": 3.0, "ops_per_weight": 1.0}
  assert D.ecc_protect((30,)).overhead(params)["bits_per_weight"] == 2.0


def test_parity_flags_and_zeroes_protected_flips(params, flips):
  bset = (23, 24, 25, 26, 27, 28, 29, 30)
  d = D.parity_protect(bset)
  st = d.init(params)
  check = jax.jit(lambda p: D.parity_check(p, st, bits=bset))
  apply = jax.jit(lambda p: d.apply(p, st)[0])
  assert not any(np.any(np.asarray(f)) for f in check(params))
  for j, i, b in flips:
    bad = _np_flip(params, j, i, b)
    flags = [np.asarray(f).reshape(-1) for f in check(bad)]
    want = [np.zeros(f.size, bool) for f in flags]
    if b in bset:
      want[j][i] = True
    for f, w in zip(flags, want):
      np.testing.assert_array_equal(f, w)
    ref = jax.tree.map(np.array, bad)
    if b in bset:
      jax.tree.leaves(ref)[j].reshape(-1)[i] = 0.0
    _same_bits(apply(bad), ref)
  assert d.overhead(params)["bits_per_weight"] == 1.0


def test_range_restriction_keeps_in_range_weights_and_clips_the_rest(params, flips):
  d = D.range_restriction()
  st = d.init(params)
  apply = jax.jit(lambda p: d.apply(p, st)[0])
  _same_bits(apply(params), params)  # every trained weight is in its own leaf's range
  for j, i, b in flips:
    bad = _np_flip(params, j, i, b)
    leaf = jax.tree.leaves(params)[j]
    lo, hi = leaf.min(), leaf.max()
    v = jax.tree.leaves(bad)[j].reshape(-1)[i]
    ref = jax.tree.map(np.array, bad)
    with np.errstate(invalid="ignore"):
      jax.tree.leaves(ref)[j].reshape(-1)[i] = 0.0 if np.isnan(v) else np.clip(v, lo, hi)
    _same_bits(apply(bad), ref)
  n = sum(a.size for a in jax.tree.leaves(params))
  assert d.overhead(params)["bits_per_weight"] == pytest.approx(4 * 64 / n)


def test_checksum_detects_every_single_flip_in_its_group_only(params):
  g = 4
  d = D.group_checksum(g, sig_bits=2)
  st = d.init(params)
  check = jax.jit(lambda p: D.checksum_check(p, st, group_size=g, sig_bits=2))
  apply = jax.jit(lambda p: d.apply(p, st)[0])
  assert not any(np.any(np.asarray(f)) for f in check(params))
  rng = np.random.default_rng(2)
  sizes = [a.size for a in jax.tree.leaves(params)]
  for j, size in enumerate(sizes):
    for i in range(size):  # every weight, all 32 bits in turn (a random bit per weight keeps it fast) ...
      for b in (int(rng.integers(32)), 30):
        bad = _np_flip(params, j, i, b)
        flags = [np.asarray(f) for f in check(bad)]
        for jj, f in enumerate(flags):
          want = np.zeros(-(-sizes[jj] // g), bool)
          if jj == j:
            want[i // g] = True
          np.testing.assert_array_equal(f, want)
  # ... and all 32 bits of one weight; the detected group is zeroed, nothing else changes.
  for b in range(32):
    bad = _np_flip(params, 1, 5, b)
    ref = jax.tree.map(np.array, bad)
    grp = jax.tree.leaves(ref)[1].reshape(-1)
    grp[4:8] = 0.0
    _same_bits(apply(bad), ref)
  assert d.overhead(params)["bits_per_weight"] == pytest.approx(2 * sum(-(-s // g) for s in sizes) / sum(sizes))


def test_zero_overhead_defense_is_no_defense(params, flips):
  for d in (D.ecc_protect(()), D.parity_protect(()), D.group_checksum(16, bits=()), D.no_defense()):
    assert d.overhead(params)["bits_per_weight"] == 0.0
    st = d.init(params)
    for j, i, b in flips[:10]:
      bad = _np_flip(params, j, i, b)
      _same_bits(d.apply(bad, st)[0], bad)
    pt = ParamTransform(d.init, d.apply)  # a defense is a parameter effect
    _same_bits(pt.apply(params, pt.init(params), jax.random.key(0))[0], params)


def test_int8_leaves(params):
  q = {"w": jnp.asarray(np.array([[5, -3], [127, -128]], np.int8))}
  bad = {"w": q["w"].at[0, 0].set(np.int8(-123))}  # bit 7 of 5 -> -123
  d = D.ecc_protect((7,))
  np.testing.assert_array_equal(np.asarray(d.apply(bad, d.init(q))[0]["w"]), np.asarray(q["w"]))
  c = D.group_checksum(2)
  out = np.asarray(c.apply(bad, c.init(q))[0]["w"])
  np.testing.assert_array_equal(out, np.array([[0, 0], [127, -128]], np.int8))


def test_clip_activations_effect():
  from jaxhw.effects import attach
  from jaxhw.models import MLP
  model = MLP(features=(6, 3))
  x = jnp.asarray(np.random.default_rng(0).normal(size=(16, 8)).astype(np.float32))
  v = model.init(jax.random.key(0), x)
  bounds = D.activation_ranges(model.apply, v, x)
  assert set(bounds) == {"Dense_0", "Dense_1"}
  clipped = attach(model.apply, D.clip_activations(bounds))
  np.testing.assert_array_equal(np.asarray(clipped(v, x)), np.asarray(model.apply(v, x)))  # in range: unchanged
  tight = {k: (0.0, 0.1) for k in bounds}
  out = np.asarray(attach(model.apply, D.clip_activations(tight))(v, x))
  assert out.min() >= 0.0 and out.max() <= 0.1


def test_flip_helper_matches_library(params):
  bad = _np_flip(params, 1, 7, 30)
  _same_bits(bad, F.flip_bit(params, "Dense_0/kernel", 7, 30))
