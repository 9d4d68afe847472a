"""Tests of the crossbar simulator: encodings, tiling, zero-noise exactness, noise laws, modes, static noise,
STE, cost accounting and argument validation. The effects on Flax models (read noise, programming, the chip
evaluator, keys, BN folding) are tested in test_crossbar_effects.py."""

import itertools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxhw.crossbar import (
  CrossbarConfig,
  adc_conversions,
  bitserial,
  budget,
  crossbar_conv,
  crossbar_matmul,
  decompose,
  energy_proxy,
  latency_proxy,
  layer_cost,
  level_energy,
  make_encoding,
  mixed,
  noise_factor,
  noise_factor_continuous,
  preset,
  program,
  thermometer,
  tile_grid,
)
from jaxhw.models.binary_net import ste_heaviside, ste_sign, ste_sign_sg


def _pm1(seed, shape):
  """+-1 test inputs from numpy (no jax.random compilation per shape)."""
  return np.where(np.random.default_rng(seed).random(shape) < 0.5, 1.0, -1.0).astype(np.float32)


# ------------------------------------------------------------------------------------------------ encodings

@pytest.mark.parametrize("kind,bits,pulses", [("bitserial", 4, 4), ("bitserial", 3, 6), ("thermometer", 4, 15),
                                              ("thermometer", 2, 6), ("mixed", 4, 6), ("mixed", 4, 10),
                                              ("mixed", 3, 5), ("thermometer", 1, 5)])
def test_decomposition_reconstructs_every_level(kind, bits, pulses):
  enc = make_encoding(kind, bits, pulses)
  assert enc.pulses == pulses
  levels = 2**bits - 1
  b = np.asarray(decompose(np.arange(levels + 1), enc))
  assert set(np.unique(b)) <= {0.0, 1.0}
  for u in range(levels + 1):  # explicit loop oracle
    assert math.isclose(sum(s * b[t, u] for t, s in enumerate(enc.significances)), u, abs_tol=1e-9)
  assert math.isclose(sum(enc.significances), levels)


def test_code_families_match_the_spec_table():
  table = {4: 85, 5: 53, 6: 41, 7: 35, 8: 29, 10: 25, 12: 21, 15: 15}
  for t, s2 in table.items():
    assert sum(s * s for s in mixed(4, t).base) == s2, t
  assert bitserial(4).pulses == 4 and bitserial(4).base == (1, 2, 4, 8)
  assert thermometer(15).pulses == 15
  assert math.isclose(noise_factor(make_encoding("thermometer", 1, 8)), 1 / 8)
  assert math.isclose(noise_factor(bitserial(4)), 85 / 225)
  # e(L) = c(s) for thermometer; e(u) = u / (T L) for thermometer + repeat
  e = level_energy(make_encoding("thermometer", 2, 6))
  np.testing.assert_allclose(e, np.arange(4) / (6 * 3))
  np.testing.assert_allclose(noise_factor_continuous(jnp.array([1.0, 4.0]), "thermometer"), [1.0, 0.25])
  np.testing.assert_allclose(noise_factor_continuous(jnp.array([6.0]), "mixed", 4), [41 / 225], rtol=1e-6)


# ------------------------------------------------------------------------------------------ zero-noise exactness

CONFIGS = [CrossbarConfig(tile_rows=r, tile_cols=c, mapping=m)
           for r, c, m in [(16, 8, "differential"), (7, 6, "offset"), (128, 128, "differential"), (50, 4, "offset")]]


class TestZeroNoise(chex.TestCase):
  """Zero noise equals the exact matmul (numpy integer reference). Each test runs all its cases in one function,
  so a jit variant compiles once; the binary test also runs without jit (op by op)."""

  @chex.variants(with_jit=True, without_jit=True)
  def test_binary_all_modes_and_tiles(self):
    x = _pm1(1, (6, 45))
    w = _pm1(2, (45, 11))
    ref = x.astype(np.int64) @ w.astype(np.int64)
    cases = [(CONFIGS[0], "fast", 1), (CONFIGS[0], "per_pulse", 3), (CONFIGS[1], "fast", 2),
             (CONFIGS[3], "per_pulse", 2)]  # both mappings x both modes, three tile sizes
    if self.variant.type == chex.ChexVariantType.WITHOUT_JIT:  # op by op is slow to dispatch: one per mode
      cases = [cases[0], cases[3]]
    fn = self.variant(lambda xx, ww: [crossbar_matmul(xx, ww, pulses=t, read_key=jax.random.key(0), config=c,
                                                      mode=m) for c, m, t in cases])
    for y in fn(x, w):
      np.testing.assert_array_equal(np.asarray(y), ref)

  @chex.variants(with_jit=True)
  def test_multibit_every_encoding(self):
    u = np.random.default_rng(3).integers(0, 16, (5, 40))
    w = _pm1(4, (40, 9))
    ref = u @ w.astype(np.int64)  # integer reference; y = ref / L (jit may use x * (1/L): compare L y)
    cases = [("thermometer", 30, "per_pulse"), ("bitserial", 8, "per_pulse"), ("mixed", 6, "per_pulse"),
             ("mixed", 12, "fast")]
    fn = self.variant(lambda xx, ww: [crossbar_matmul(
        xx, ww, pulses=t, read_key=jax.random.key(0), config=CrossbarConfig(tile_rows=16, tile_cols=8, encoding=e),
        mode=m, input_bits=4) for e, t, m in cases])
    for y in fn(u / 15.0, w):
      ly = 15.0 * np.asarray(y, np.float64)
      np.testing.assert_array_equal(np.round(ly), ref)
      np.testing.assert_allclose(ly, ref, atol=1e-4)

  @chex.variants(with_jit=True)
  def test_conv_tiled_equals_lax_conv(self):
    x = _pm1(5, (1, 5, 5, 3))
    w = _pm1(6, (3, 3, 3, 4))
    ref = np.zeros((1, 5, 5, 4))
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    for i, j in itertools.product(range(5), range(5)):  # explicit-loop SAME convolution
      ref[0, i, j] = np.einsum("abc,abcd->d", xp[0, i:i + 3, j:j + 3], w)
    fn = self.variant(lambda xx, ww: [crossbar_conv(xx, ww, pulses=2, read_key=jax.random.key(0),
                                                    config=CrossbarConfig(tile_rows=8), mode=m)
                                      for m in ("fast", "per_pulse")])
    for y in fn(x, w):
      np.testing.assert_array_equal(np.asarray(y), ref)


def test_tiling_equals_untiled_matmul_without_noise():
  x = _pm1(7, (4, 300))
  w = _pm1(8, (300, 20))
  ref = x.astype(np.int64) @ w.astype(np.int64)
  rows = (1, 7, 128, 299, 512)  # 300, 43, 3, 2 and 1 row tiles

  @jax.jit
  def tiled(xx, ww):
    return [crossbar_matmul(xx, ww, pulses=2, read_key=jax.random.key(0), mode="per_pulse",
                            config=CrossbarConfig(tile_rows=r, tile_cols=64)) for r in rows]

  for y in tiled(x, w):
    np.testing.assert_array_equal(np.asarray(y), ref)
  assert tile_grid(300, 20, 128, 128).n_r == 3
  assert tile_grid(784, 512, 128, 128).n_c == 8
  assert tile_grid(784, 512, 128, 128, "offset").n_c == math.ceil(512 / 127)


# ------------------------------------------------------------------------------------------------ noise laws

N = 20000


def _errors(config, cases, *, n_in=40, input_bits=1, x_row=None):
  """Errors y_hat - y over N draws, one (N, 3) array per (pulses, key seed, mode) case, all cases in one jit
  (`config` one CrossbarConfig, or a list with one per case)."""
  w = _pm1(11, (n_in, 3))
  x = _pm1(12, (n_in,)) if x_row is None else np.asarray(x_row, np.float32)

  configs = config if isinstance(config, list) else [config] * len(cases)

  @jax.jit
  def run(xx, ww):
    xb = jnp.broadcast_to(xx, (N, n_in))
    return [crossbar_matmul(xb, ww, pulses=t, read_key=jax.random.key(k), config=c, mode=m,
                            input_bits=input_bits) for c, (t, k, m) in zip(configs, cases)]

  big_l = 2**input_bits - 1
  ref = x.astype(np.float64) @ w if input_bits == 1 else (np.round(x * big_l) @ w) / big_l
  return [np.asarray(y, np.float64) - ref for y in run(x, w)]


def test_noise_variance_follows_one_over_T():
  sigma = 1.3
  config = CrossbarConfig(tile_rows=16, sigma=sigma)  # n_r = 3
  ts = (1, 2, 4, 8, 16)
  modes = ("fast", "per_pulse")
  errs = _errors(config, [(t, 10 * i + t, m) for i, m in enumerate(modes) for t in ts])
  for i, mode in enumerate(modes):
    tv = []
    for t, err in zip(ts, errs[i * len(ts):(i + 1) * len(ts)]):
      err = err[:, 0]
      expected = sigma**2 * 3 / t
      assert abs(err.var() / expected - 1) < 4 * math.sqrt(2 / N), (mode, t, err.var(), expected)
      assert abs(err.mean()) < 4 * math.sqrt(expected / N), (mode, t)
      tv.append(t * err.var())
    assert np.ptp(tv) / np.mean(tv) < 8 * math.sqrt(2 / N), mode


def test_noise_variance_multibit_codes_follow_c_of_s():
  sigma = 0.7
  x = np.random.default_rng(0).integers(0, 16, 40) / 15.0
  codes = [("bitserial", 4), ("mixed", 6), ("thermometer", 15)]
  errs = _errors([CrossbarConfig(tile_rows=16, sigma=sigma, encoding=e) for e, _ in codes],
                 [(t, 3, "per_pulse") for _, t in codes], input_bits=4, x_row=x)
  for (enc, t), err in zip(codes, errs):
    expected = sigma**2 * 3 * noise_factor(make_encoding(enc, 4, t))
    assert abs(err[:, 0].var() / expected - 1) < 4 * math.sqrt(2 / N), enc


def test_fast_and_per_pulse_agree_in_distribution():
  t = 3
  configs = {"additive": CrossbarConfig(tile_rows=16, sigma=1.0),
             "proportional": CrossbarConfig(tile_rows=16, sigma_p=0.3),
             "offset": CrossbarConfig(tile_rows=16, tile_cols=5, sigma=1.0, mapping="offset"),
             "adc_as_noise": CrossbarConfig(tile_rows=16, sigma=0.5, adc_bits=5)}
  errs = _errors([c for c in configs.values() for _ in range(2)],
                 [(t, 21 + 2 * i, "fast") if j == 0 else (t, 22 + 2 * i, "per_pulse")
                  for i in range(len(configs)) for j in range(2)])
  for i, (name, config) in enumerate(configs.items()):
    a, b = errs[2 * i], errs[2 * i + 1]
    for j in range(a.shape[1]):
      assert stats.ks_2samp(a[:, j], b[:, j]).pvalue > 1e-3, name
      assert abs(a[:, j].var() / b[:, j].var() - 1) < 6 * math.sqrt(2 / N), name
      assert abs(a[:, j].mean() - b[:, j].mean()) < 5 * math.sqrt(a[:, j].var() * 2 / N), name
    if config.mapping == "offset":  # shared reference-column noise correlates columns of one tile
      assert np.corrcoef(a[:, 0], a[:, 1])[0, 1] > 0.3 and np.corrcoef(b[:, 0], b[:, 1])[0, 1] > 0.3


def test_proportional_variance_counts_active_rows():
  config = CrossbarConfig(tile_rows=16, sigma_p=0.5)
  x = _pm1(12, (40,))
  for t, err in zip((1, 4), _errors(config, [(1, 1, "per_pulse"), (4, 4, "per_pulse")], x_row=x)):
    expected = 0.25 * float((x > 0).sum()) / t
    assert abs(err[:, 0].var() / expected - 1) < 4 * math.sqrt(2 / N)


def test_per_read_adc_quantises_each_read():
  config = CrossbarConfig(tile_rows=8, adc_bits=2, adc_mode="per_read", adc_range=4.0)
  x = _pm1(1, (3, 16))
  w = _pm1(2, (16, 5))
  y = jax.jit(lambda xx, ww: crossbar_matmul(xx, ww, pulses=1, read_key=jax.random.key(0), config=config))(x, w)
  # (the default fast mode is forced to per_pulse by the per-read ADC)
  d = 8.0 / 3
  ref = sum(np.clip(np.round((x[:, i:i + 8] @ w[i:i + 8]) / d) * d, -4, 4) for i in (0, 8))
  np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-6)


# --------------------------------------------------------------------------------------------- static noise

def test_static_noise_is_per_chip_and_independent_of_T():
  config = CrossbarConfig(g_var=0.1, p_stuck_on=0.02, p_stuck_off=0.02)
  w = _pm1(1, (60, 8))
  x = _pm1(2, (5, 60))
  cases = [(1, 0, "fast"), (1, 1, "fast"), (4, 2, "per_pulse"), (8, 3, "fast")]

  @jax.jit
  def run(xx, ww):
    w_eff = program(ww, jax.random.key(10), config)
    outs = [crossbar_matmul(xx, w_eff, pulses=t, read_key=jax.random.key(k), config=config, mode=m)
            for t, k, m in cases]
    other = crossbar_matmul(xx, program(ww, jax.random.key(11), config), pulses=1, read_key=jax.random.key(0),
                            config=config)
    return w_eff, outs, other, program(ww, jax.random.key(10), CrossbarConfig())

  w_eff, outs, other, ideal = run(x, w)
  assert not np.array_equal(np.asarray(w_eff), w)
  for o in outs[1:]:
    np.testing.assert_allclose(np.asarray(o), np.asarray(outs[0]), rtol=1e-6, atol=1e-5)
  assert not np.allclose(np.asarray(other), np.asarray(outs[0]))
  np.testing.assert_array_equal(np.asarray(ideal), w)


def test_conductance_formula_matches_numpy_reference():
  config = CrossbarConfig(g_var=0.05)
  w = _pm1(1, (4, 3))
  key = jax.random.key(5)
  w_eff = np.asarray(program(w, key, config))
  k_var = jax.random.split(key, 3)[0]
  delta = 0.05 * np.asarray(jax.random.normal(k_var, (24,))).reshape(2, 4, 3)
  g_on, g_off = 1.0, 0.1
  gp = np.where(w > 0, g_on, g_off) * (1 + delta[0])
  gm = np.where(w > 0, g_off, g_on) * (1 + delta[1])
  np.testing.assert_allclose(w_eff, (gp - gm) / (g_on - g_off), rtol=1e-5)


# ------------------------------------------------------------------------------------------------------ STE

class TestSTE(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_gradient_is_clipped_identity(self):
    x = jnp.array([-2.0, -1.0, -0.5, 0.0, 0.3, 1.0, 1.0001, 3.0])
    g = jnp.arange(1.0, 9.0)
    for fn in (ste_sign, ste_sign_sg, ste_heaviside):
      grad = self.variant(jax.grad(lambda z, fn=fn: jnp.sum(g * fn(z))))(x)
      np.testing.assert_array_equal(np.asarray(grad), np.asarray(g) * (np.abs(np.asarray(x)) <= 1))
    np.testing.assert_array_equal(np.asarray(self.variant(ste_sign)(x)), np.where(np.asarray(x) >= 0, 1, -1))
    np.testing.assert_array_equal(np.asarray(self.variant(ste_sign_sg)(x)), np.asarray(ste_sign(x)))
    np.testing.assert_array_equal(np.asarray(self.variant(ste_heaviside)(x)), (np.asarray(x) > 0).astype(float))
    assert float(ste_sign(jnp.float32(0.0))) == 1.0


# ----------------------------------------------------------------------------------------------------- cost

def test_cost_accounting():
  config = CrossbarConfig()
  costs = [layer_cost(784, 512, config), layer_cost(512, 256, config), layer_cost(256, 128, config),
           layer_cost(27, 64, config, positions=100)]
  assert [c.reads for c in costs] == [7 * 8, 4 * 4, 2 * 2, 1 * 1 * 100]
  t = [1, 2, 4, 3]
  assert energy_proxy(t, costs) == 56 + 32 + 16 + 300
  assert latency_proxy(t, costs) == 1 + 2 + 4 + 300
  assert adc_conversions(t, costs) == 7 * 1024 + 2 * 4 * 512 + 4 * 2 * 256 + 3 * 128 * 100
  assert budget(2, costs) == 2 * energy_proxy([1] * 4, costs)


# ----------------------------------------------------------------------------------------------- bad input

def test_bad_input_raises_value_error():
  x, w = jnp.ones((2, 8)), jnp.ones((8, 3))
  key = jax.random.key(0)
  with pytest.raises(ValueError, match="pulses"):
    crossbar_matmul(x, w, pulses=0, read_key=key, config=CrossbarConfig())
  with pytest.raises(ValueError, match="pulses"):
    make_encoding("thermometer", 1, 0)
  with pytest.raises(ValueError, match="tile_cols"):
    CrossbarConfig(tile_cols=7)
  with pytest.raises(ValueError, match="tile_rows"):
    CrossbarConfig(tile_rows=0)
  with pytest.raises(ValueError, match="sigma"):
    CrossbarConfig(sigma=-1.0)
  with pytest.raises(ValueError, match="sigma"):
    crossbar_matmul(x, w, pulses=1, read_key=key, config=CrossbarConfig(), sigma=-0.5)
  with pytest.raises(ValueError, match="g_var"):
    CrossbarConfig(g_var=-0.1)
  with pytest.raises(ValueError, match="mapping"):
    CrossbarConfig(mapping="single")
  with pytest.raises(ValueError, match="pulses"):
    make_encoding("bitserial", 4, 6)
  with pytest.raises(ValueError, match="preset"):
    preset("nonexistent")
  assert preset("compat_aihwkit").tile_rows == 512
