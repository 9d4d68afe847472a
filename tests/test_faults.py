"""Tests for jaxhw.faults: bit layouts, flips, random flips, metrics (HAT spec section 7, oracles 1-5, 7)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhw import faults as F

SPECIALS = np.array([0.0, -0.0, 1.0, -1.0, 0.5, 1.5, 2.5, np.inf, -np.inf, np.nan, 1e-45, -3e-39, 3.4e38,
                     0.1, -7.25], np.float32)


def _popcount(u):
  return int(np.unpackbits(np.ascontiguousarray(u).view(np.uint8)).sum())


def _params():
  rng = np.random.default_rng(0)
  return {"dense0": {"w": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32), "b": jnp.zeros(3, jnp.float32)},
          "dense1": {"w": jnp.asarray(rng.normal(size=(3, 2)), jnp.float16),
                     "b": jnp.asarray(rng.normal(size=2), jnp.bfloat16)},
          "q": jnp.asarray([0, 127, -1, 5, -128], jnp.int8)}


class FlipTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_double_flip_restores_bits_and_numpy_reference(self):
    x = jnp.asarray(SPECIALS)
    ii, bb = np.meshgrid(np.arange(len(SPECIALS)), np.arange(32), indexing="ij")
    ii, bb = ii.reshape(-1), bb.reshape(-1)
    f = self.variant(jax.vmap(F.flip_array, in_axes=(None, 0, 0)))
    y = f(x, jnp.asarray(ii), jnp.asarray(bb))
    z = jax.vmap(lambda a, i, b: F.flip_array(a, i, b))(y, jnp.asarray(ii), jnp.asarray(bb))
    for k, (i, b) in enumerate(zip(ii, bb)):
      ref = F.bits._np_flip(SPECIALS, int(i), int(b))
      np.testing.assert_array_equal(np.asarray(y[k]).view(np.uint32), ref.view(np.uint32))
      np.testing.assert_array_equal(np.asarray(z[k]).view(np.uint32), SPECIALS.view(np.uint32))

  def test_popcount_one_and_structure_preserved(self):
    p = _params()
    for path, idx, width in [("dense0/w", 7, 32), ("dense1/w", 4, 16), ("dense1/b", 1, 16), ("q", 3, 8)]:
      for b in range(width):
        out = F.flip_bit(p, path, idx, b)
        chex.assert_trees_all_equal_shapes_and_dtypes(out, p)
        for (pa, old), (_, new) in zip(jax.tree_util.tree_flatten_with_path(p)[0],
                                       jax.tree_util.tree_flatten_with_path(out)[0]):
          uo = np.asarray(F.to_bits(old)).reshape(-1)
          un = np.asarray(F.to_bits(new)).reshape(-1)
          pop = np.array([bin(int(v)).count("1") for v in (uo ^ un)])
          name = "/".join(k.key for k in pa)
          if name == path:
            assert pop.sum() == 1 and pop[idx] == 1
          else:
            assert pop.sum() == 0

  def test_float32_oracles(self):
    cases = [(31, 0.0, None), (30, 1.0, np.inf), (30, -1.0, -np.inf), (30, 0.5, 1.7014118e38), (30, 0.0, 2.0),
             (30, 2.5, 2.9387e-39), (23, 1.0, 0.5), (22, 1.0, 1.5)]
    for b, x, want in cases:
      y = float(F.flip_array(jnp.asarray([x], jnp.float32), 0, b)[0])
      ref = float(F.bits._np_flip(np.asarray([x], np.float32), 0, b)[0])
      if want is None:  # sign bit: 0.0 -> -0.0
        assert y == 0.0 and np.signbit(y)
      else:
        np.testing.assert_allclose(y, want, rtol=1e-4)
      assert y == ref or (np.isnan(y) and np.isnan(ref))
    assert np.isnan(float(F.flip_array(jnp.asarray([1.5], jnp.float32), 0, 30)[0]))
    v = jnp.asarray(SPECIALS[np.isfinite(SPECIALS)])
    for i in range(v.shape[0]):
      np.testing.assert_array_equal(np.asarray(F.flip_array(v, i, 31))[i], -np.asarray(v)[i])

  def test_int8_oracles_and_quantizer(self):
    q = jnp.asarray([0, 127, -1, 5], jnp.int8)
    assert int(F.flip_array(q, 0, 7)[0]) == -128
    assert int(F.flip_array(q, 1, 7)[1]) == -1
    assert int(F.flip_array(q, 2, 7)[2]) == 127
    assert int(F.flip_array(q, 3, 0)[3]) == 4
    w = jnp.asarray(0.3 * np.random.default_rng(0).normal(size=(16, 8)), jnp.float32)
    quant = jax.jit(lambda w: tuple((qt.q, qt.scale, F.dequantize_int8(qt.q, qt.scale)) for qt in
                                    (F.quantize_int8(w), F.quantize_int8(w, per_channel=True))))
    for q, scale, deq in quant(w):
      q, scale, deq = np.asarray(q), np.asarray(scale), np.asarray(deq)
      assert q.dtype == np.int8
      assert q.max() <= 127 and q.min() >= -127
      assert np.all(np.abs(deq - np.asarray(w)) <= scale / 2 + 1e-7)

  def test_flip_bits_masks_twice_restore(self):
    p = _params()
    rng = np.random.default_rng(1)
    masks = jax.tree.map(lambda x: jnp.asarray(rng.integers(0, 2 ** F.layout_of(x).width, size=x.shape,
                                                            dtype=np.uint64).astype(F.layout_of(x).uint)), p)
    out = F.flip_bits(F.flip_bits(p, masks), masks)
    for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(p)):
      np.testing.assert_array_equal(np.asarray(F.to_bits(a)), np.asarray(F.to_bits(b)))

  def test_bad_inputs_raise_value_error(self):
    p = _params()
    with pytest.raises(ValueError, match="bit"):
      F.flip_bit(p, "dense0/w", 0, 32)
    with pytest.raises(ValueError, match="bit"):
      F.flip_bit(p, "q", 0, 8)
    with pytest.raises(ValueError, match="path"):
      F.flip_bit(p, "dense9/w", 0, 1)
    with pytest.raises(ValueError, match="index"):
      F.flip_bit(p, "dense0/w", 12, 1)
    with pytest.raises(ValueError, match="ber"):
      F.random_bit_flips(1.5)
    with pytest.raises(ValueError, match="ber"):
      F.random_bit_flips(-0.1)
    with pytest.raises(ValueError, match="int32"):
      F.flip_bit({"a": jnp.arange(3)}, "a", 0, 1)
    with pytest.raises(ValueError, match="allowed"):
      F.resolve_bits("exponent", jnp.int8)
    with pytest.raises(ValueError, match="masks"):
      F.flip_bits(p, {"a": 1})
    t = F.random_bit_flips(0.1)
    with pytest.raises(ValueError, match="int32"):
      t.apply({"a": jnp.arange(3)}, t.init(None), jax.random.key(0))

  def test_bit_selections(self):
    assert F.resolve_bits("exponent", jnp.float32) == tuple(range(23, 31))
    assert F.resolve_bits("exponent_msb", jnp.float32) == (30,)
    assert F.resolve_bits("sign", jnp.bfloat16) == (15,)
    assert F.resolve_bits("exponent", jnp.bfloat16) == tuple(range(7, 15))
    assert F.resolve_bits("exponent", jnp.float16) == tuple(range(10, 15))
    assert F.resolve_bits("mantissa", jnp.float32) == tuple(range(23))
    assert F.resolve_bits([3, 1, 3], jnp.int8) == (1, 3)


class RandomFlipsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_ber_zero_identity_and_mean_count(self):
    p = {"w": jnp.asarray(np.random.default_rng(0).normal(size=(64, 32)), jnp.float32), "b": jnp.zeros(32)}
    t0 = F.random_bit_flips(0.0)
    out, st = self.variant(t0.apply)(p, t0.init(p), jax.random.key(1))
    chex.assert_trees_all_equal(out, p)
    assert int(st.last_count) == 0
    ber = 1e-3
    t = F.random_bit_flips(ber)
    apply = self.variant(t.apply)
    n_bits = (64 * 32 + 32) * 32
    counts, state = [], t.init(p)
    for k in jax.random.split(jax.random.key(2), 10):
      out, state = apply(p, state, k)
      diff = sum(_popcount(np.asarray(F.to_bits(a)) ^ np.asarray(F.to_bits(b)))
                 for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(p)))
      assert diff == int(state.last_count)
      counts.append(diff)
    mean, sd = ber * n_bits, np.sqrt(ber * (1 - ber) * n_bits / 10)
    assert abs(np.mean(counts) - mean) <= 4 * sd
    assert int(state.total) == sum(counts)

  def test_bit_subset_and_leaves(self):
    p = {"w": jnp.asarray(np.random.default_rng(0).normal(size=(32, 32)), jnp.float32), "b": jnp.ones(32)}
    t = F.random_bit_flips(0.05, bits="exponent_msb", leaves=["w"])
    out, _ = t.apply(p, t.init(p), jax.random.key(3))
    x = np.asarray(F.to_bits(out["w"])) ^ np.asarray(F.to_bits(p["w"]))
    assert np.all((x == 0) | (x == np.uint32(1 << 30))) and np.any(x)
    np.testing.assert_array_equal(np.asarray(out["b"]), np.asarray(p["b"]))


class MetricsTest(chex.TestCase):

  def test_rad_histogram_and_counts(self):
    rad = np.array([-0.2, 0.0, 0.049, 0.05, 0.5, 0.899, 0.9, 0.95, 1.0, 1.0])
    h = F.rad_histogram(rad)
    assert sum(h.values()) == len(rad)
    assert h["<0"] == 1 and h["[0,5)"] == 2 and h["[5,10)"] == 1 and h["[95,100]"] == 3
    assert F.catastrophic_bits(rad) == 4
    assert F.erratic_params(np.array([[0.0, 0.11], [0.05, 0.1]])) == 1
    assert F.counts_per_bit([1.0, 0.95, 0.0], [30, 30, 2], width=32)[30] == 2
    r = F.relative_accuracy_drop(0.8, [0.8, 0.0, np.nan, 0.9])
    np.testing.assert_allclose(r, [0.0, 1.0, 1.0, -0.125])

  def test_wilson_and_stratified(self):
    lo, hi = F.wilson_interval(0, 100)
    assert lo == 0 and 0.02 < hi < 0.05
    # Fully enumerated strata: exact count, zero width.
    s = F.stratified_total([10, 20], [10, 20], [3, 5])
    assert s["estimate"] == 8 and s["lo"] == s["hi"] == 8
    # Sampled strata: estimate scales up; CI covers the truth in repeated sampling most of the time.
    rng = np.random.default_rng(0)
    pop = rng.random(5000) < 0.1
    cover = 0
    for _ in range(200):
      idx = rng.choice(5000, 500, replace=False)
      c = F.stratified_total([5000], [500], [pop[idx].sum()])
      cover += c["lo"] <= pop.sum() <= c["hi"]
    assert cover >= 180

  def test_stratified_unit_total(self):
    # Fully enumerated strata: exact total, zero width; binary unit values give the stratified_total estimate.
    s = F.stratified_unit_total([3, 2], [[1, 0, 4], [2, 2]])
    assert s["estimate"] == 9 and s["lo"] == s["hi"] == 9
    b = F.stratified_unit_total([50], [np.r_[np.ones(4), np.zeros(6)]])
    assert b["estimate"] == F.stratified_total([50], [10], [4])["estimate"] == 20
    # Clustered population (units with correlated counts): the interval covers the true total ~95 % of the time.
    rng = np.random.default_rng(0)
    pop = rng.poisson(rng.gamma(0.3, 10, size=2000))
    cover = 0
    for _ in range(200):
      c = F.stratified_unit_total([2000], [pop[rng.choice(2000, 100, replace=False)]])
      cover += c["lo"] <= pop.sum() <= c["hi"]
    assert cover >= 175, cover
