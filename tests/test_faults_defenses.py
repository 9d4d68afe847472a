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
  o = d.overhead(params)
  assert (o["bits_per_weight"], o["ops_per_weight"], o["map_bits_per_weight"]) == (3.0, 1.0, 0.0)
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


# ---- partial protection ----------------------------------------------------------------------------------------

def test_unit_ranks_orders_units_by_mean_magnitude_or_seeded_permutation(params):
  leaves = [np.asarray(a).reshape(-1) for a in jax.tree.leaves(params)]
  r1 = D.unit_ranks(params, 1)
  allw = np.concatenate([np.abs(a) for a in leaves])
  np.testing.assert_array_equal(np.concatenate(r1), np.argsort(np.argsort(-allw, kind="stable"), kind="stable"))
  r4 = D.unit_ranks(params, 4)
  assert [len(r) for r in r4] == [-(-a.size // 4) for a in leaves]
  means = [np.mean(np.abs(a[i:i + 4])) for a in leaves for i in range(0, a.size, 4)]  # a loop, not reduceat
  flat = np.concatenate(r4)
  assert sorted(flat) == list(range(len(means)))
  ordered = [means[u] for u in np.argsort(flat)]
  assert all(x >= y for x, y in zip(ordered, ordered[1:]))
  ra, rb = D.unit_ranks(params, 4, order="random", seed=3), D.unit_ranks(params, 4, order="random", seed=3)
  np.testing.assert_array_equal(np.concatenate(ra), np.concatenate(rb))
  assert sorted(np.concatenate(ra)) == list(range(len(means)))
  rs = D.unit_ranks(params, 4, order="small_layers")  # leaves of 3, 6, 18, 48 weights, in that order
  assert [sorted(r.tolist()) for r in rs] == [[1, 2], list(range(8, 20)), [0], list(range(3, 8))]
  w = np.abs(leaves[3])
  assert [int(r) for r in rs[3]] == list(3 + np.argsort(np.argsort(
      -np.asarray([w[i:i + 4].mean() for i in range(0, 18, 4)]), kind="stable")))
  for f, k in ((0.0, 0), (0.25, 5), (0.26, 6), (1.0, 20)):
    assert sum(int(m.sum()) for m in D.fraction_mask(r4, f)) == k
  with pytest.raises(ValueError, match="order"):
    D.unit_ranks(params, 4, order="oracle")
  with pytest.raises(ValueError, match="fraction"):
    D.fraction_mask(r4, 1.5)


def _dense1_first(params):
  """Scores that rank Dense_1 (bias, then kernel) above Dense_0: leaves in flatten order are Dense_0/bias (6),
  Dense_0/kernel (48), Dense_1/bias (3), Dense_1/kernel (18)."""
  return [np.zeros(6), np.zeros(48), np.full(3, 2.0), np.ones(18)]


def test_partial_ecc_and_parity_protect_only_the_chosen_units(params):
  # Units of 4: 2 + 12 + 1 + 5 = 20; a quarter = 5 units = Dense_1/bias (3 weights) and the first 4 units of
  # Dense_1/kernel (16 weights): 19 protected weights.
  ranks = D.unit_ranks(params, 4, scores=_dense1_first(params))
  units = D.fraction_mask(ranks, 0.25)
  assert [int(u.sum()) for u in units] == [0, 0, 1, 4]
  ecc = D.ecc_protect((30,), units=units, unit_size=4)
  par = D.parity_protect((30,), units=units, unit_size=4)
  # Hand-computed: ECC 2 check bits x 19 weights + 20 unit flags over 75 weights; parity 1 x 19 + 20.
  assert ecc.overhead(params)["bits_per_weight"] == pytest.approx((2 * 19 + 20) / 75)
  assert ecc.overhead(params)["map_bits_per_weight"] == pytest.approx(20 / 75)
  assert par.overhead(params)["bits_per_weight"] == pytest.approx((19 + 20) / 75)
  st_e, st_p = ecc.init(params), par.init(params)
  fix = jax.jit(lambda p: ecc.apply(p, st_e)[0])
  zero = jax.jit(lambda p: par.apply(p, st_p)[0])
  for j, i, protected in ((3, 0, True), (3, 15, True), (3, 16, False), (3, 17, False), (2, 2, True),
                          (1, 0, False), (0, 5, False)):
    bad = _np_flip(params, j, i, 30)
    _same_bits(fix(bad), params if protected else bad)  # corrected / untouched
    ref = jax.tree.map(np.array, bad)
    if protected:
      jax.tree.leaves(ref)[j].reshape(-1)[i] = 0.0
    _same_bits(zero(bad), ref)
  bad = _np_flip(params, 3, 0, 29)  # an unprotected bit of a protected weight: untouched
  _same_bits(fix(bad), bad)


def test_partial_checksum_checks_only_the_chosen_groups(params):
  ranks = D.unit_ranks(params, 4, scores=_dense1_first(params))
  groups = D.fraction_mask(ranks, 0.25)
  d = D.group_checksum(4, sig_bits=2, groups=groups)
  # 5 signatures of 2 bits + 20 group flags over 75 weights.
  assert d.overhead(params)["bits_per_weight"] == pytest.approx((2 * 5 + 20) / 75)
  st = d.init(params)
  apply = jax.jit(lambda p: d.apply(p, st)[0])
  bad = _np_flip(params, 3, 5, 30)  # group 1 of Dense_1/kernel: protected, zeroed
  ref = jax.tree.map(np.array, bad)
  jax.tree.leaves(ref)[3].reshape(-1)[4:8] = 0.0
  _same_bits(apply(bad), ref)
  bad = _np_flip(params, 3, 17, 30)  # the last (short) group: not protected
  _same_bits(apply(bad), bad)
  full = D.group_checksum(4, sig_bits=2, groups=D.fraction_mask(ranks, 1.0))
  assert full.overhead(params)["bits_per_weight"] == pytest.approx(2 * 20 / 75)  # all groups: no flags needed
  assert full.overhead(params) == D.group_checksum(4, sig_bits=2).overhead(params)


def test_residual_vs_fraction_and_smallest_fraction_match_a_loop():
  rng = np.random.default_rng(0)
  n_units = 50
  rank = rng.integers(0, n_units, 200)
  fixable = rng.random(200) < 0.8
  fr = np.linspace(0, 1, 23)

  def loop(f):
    k = int(np.ceil(f * n_units - 1e-9))
    return sum(1 for r, x in zip(rank, fixable) if not x or r >= k)
  np.testing.assert_array_equal(D.residual_vs_fraction(rank, fixable, n_units, fr), [loop(f) for f in fr])
  for target in (0, 3, 40, 41, 100, 200):
    got = D.smallest_fraction(rank, fixable, n_units, target)
    ok = [k / n_units for k in range(n_units + 1) if loop(k / n_units) <= target]
    assert got == (min(ok) if ok else None), target
  assert D.smallest_fraction(rank, fixable, n_units, int(np.sum(~fixable)) - 1) is None
