"""Oracles for the crossbar: the offset mapping's programmed weights, the continuous noise factor at integer pulse
counts, the closed-form allocation before rounding and repair, and the budget multiplier of GBO's search (GBO spec
sections 1 and 3). Every expected value is a numpy reference, a closed form or a hand computation."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhw.crossbar import (
  CrossbarConfig,
  GBOConfig,
  closed_form_allocation,
  gbo,
  make_encoding,
  noise_factor,
  noise_factor_continuous,
  program,
  uniform_allocation,
)


def _pm1(seed, shape):
  return np.where(np.random.default_rng(seed).random(shape) < 0.5, 1.0, -1.0).astype(np.float32)


def _identity_table(w_eff, key):
  """An error table that changes nothing: turns the static-noise path on with zero device variation."""
  return w_eff


class ProgramOffsetTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_offset_mapping_matches_numpy_reference(self):
    """offset: one device per weight, G = G_on (w = +1) or G_off (w = -1), times (1 + g_var delta), stuck at G_on
    where r < p_on and at G_off where p_on <= r < p_on + p_off; w_eff = (G - (G_on + G_off) / 2) / ((G_on - G_off)
    / 2), with G_on = 1, G_off = 1 / r_on_off. The draws are the documented ones: split(chip_key, 3) -> (variation,
    stuck, table), each drawn flat over (devices, *w.shape)."""
    w = _pm1(1, (6, 5))
    key = jax.random.key(7)
    config = CrossbarConfig(mapping="offset", g_var=0.1, p_stuck_on=0.1, p_stuck_off=0.15, on_off_ratio=8.0)
    got = np.asarray(self.variant(lambda ww, k: program(ww, k, config))(w, key))
    k_var, k_stuck, _ = jax.random.split(key, 3)
    delta = np.asarray(jax.random.normal(k_var, (w.size,), jnp.float32), np.float64).reshape(w.shape)
    r = np.asarray(jax.random.uniform(k_stuck, (w.size,), jnp.float32), np.float64).reshape(w.shape)
    g_on, g_off = 1.0, 1.0 / 8.0
    g = np.where(w > 0, g_on, g_off) * (1 + 0.1 * delta)
    g = np.where(r < 0.1, g_on, np.where(r < 0.25, g_off, g))
    want = (g - (g_on + g_off) / 2) / ((g_on - g_off) / 2)
    assert (r < 0.1).any() and ((r >= 0.1) & (r < 0.25)).any()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_zero_variation_gives_w_and_stuck_devices_their_closed_forms(self):
    """Without device variation (an identity error table keeps the conductance path on) both mappings give w;
    every device stuck at G_on gives w_eff = +1 (offset: (G_on - G_mid) / ((G_on - G_off) / 2)) and 0
    (differential: G+ = G- = G_on); every device stuck at G_off gives -1 (offset) and 0 (differential)."""
    w = _pm1(2, (4, 3))
    key = jax.random.key(0)
    for mapping in ("offset", "differential"):
      for config, want in (
          (CrossbarConfig(mapping=mapping), w),
          (CrossbarConfig(mapping=mapping, error_table=_identity_table), w),
          (CrossbarConfig(mapping=mapping, p_stuck_on=1.0), np.full_like(w, 1.0 if mapping == "offset" else 0.0)),
          (CrossbarConfig(mapping=mapping, p_stuck_off=1.0), np.full_like(w, -1.0 if mapping == "offset" else 0.0)),
      ):
        got = np.asarray(self.variant(lambda ww, k, c=config: program(ww, k, c))(w, key))
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, err_msg=f"{mapping} {config}")


@pytest.mark.parametrize("kind,bits", [("bitserial", 1), ("bitserial", 2), ("bitserial", 3), ("bitserial", 4),
                                       ("thermometer", 1), ("thermometer", 2), ("thermometer", 3),
                                       ("mixed", 2), ("mixed", 3), ("mixed", 4)])
def test_continuous_noise_factor_equals_discrete_code_at_integer_pulses(kind, bits):
  """c(T) of relaxation B at every integer T that the family can send (bitserial: multiples of B; thermometer:
  multiples of L; mixed: B..L, then multiples of L) equals sum_t s_t^2 / L^2 of the code `make_encoding` builds
  (e.g. bitserial B = 4 at T = 8: 85 / 225 / 2)."""
  levels = 2**bits - 1
  if kind == "bitserial":
    ts = [bits * k for k in range(1, 5)]
  elif kind == "thermometer":
    ts = [levels * k for k in range(1, 4)]
  else:
    ts = list(range(bits, levels + 1)) + [2 * levels, 3 * levels]
  want = np.array([noise_factor(make_encoding(kind, bits, t)) for t in ts])
  got = np.asarray(noise_factor_continuous(jnp.asarray(ts, jnp.float32), kind, bits))
  np.testing.assert_allclose(got, want, rtol=1e-6)
  if kind == "bitserial":
    assert noise_factor(make_encoding("bitserial", bits, 2 * bits)) == pytest.approx(
        sum(4**t for t in range(bits)) / levels**2 / 2)


def test_closed_form_meets_budget_with_equality_before_rounding():
  """T_l* (discrete=False) spends the budget exactly, sum_l R_l T_l* = B_E, and is the constrained optimum of
  sum_l S_l / T_l: the Lagrange condition S_l / (R_l T_l^2) is the same for every layer, and any feasible move along
  the budget plane raises the objective."""
  rng = np.random.default_rng(0)
  for _ in range(5):
    n = int(rng.integers(2, 6))
    reads = rng.integers(1, 60, n).astype(float)
    sens = np.exp(rng.normal(0, 1.0, n))
    budget = float(rng.choice([1.5, 2, 4]) * reads.sum())
    t = closed_form_allocation(sens, reads, budget, discrete=False)
    assert isinstance(t, np.ndarray) and t.shape == (n,)
    assert float(np.dot(reads, t)) == pytest.approx(budget, rel=1e-12)
    kkt = sens / (reads * t**2)
    np.testing.assert_allclose(kkt, kkt[0], rtol=1e-10)
    obj = np.sum(sens / t)
    for _ in range(5):
      d = rng.normal(size=n)
      d -= reads * np.dot(reads, d) / np.dot(reads, reads)  # stay on the budget plane
      step = 0.1 * np.min(t) / np.max(np.abs(d))
      assert np.sum(sens / (t + step * d)) > obj


def test_closed_form_is_uniform_when_sensitivity_per_read_is_equal():
  """S_l = c R_l (c != 1) gives T_l* = B_E / sum R = T_bar for every layer, before rounding (also a non-integer
  T_bar) and after (an integer T_bar among the candidates)."""
  reads = np.array([56.0, 16.0, 4.0, 1.0])
  for c in (0.2, 3.0):
    for tb in (1.0, 2.7, 5.0, 16.0):
      t = closed_form_allocation(c * reads, reads, tb * reads.sum(), discrete=False)
      np.testing.assert_allclose(t, tb, rtol=1e-12)
    for tb in (1, 2, 4, 8, 16):
      assert closed_form_allocation(c * reads, reads, tb * reads.sum()) == uniform_allocation(tb, 4)


def _quadratic(stds, batch, key):
  """Task loss sum_l S_l std_l^2 with S_l carried by the data (every row is S)."""
  return jnp.sum(jnp.mean(batch[0], 0) * jnp.square(stds))


def _search(sens, reads, mean_pulses, rows, key):
  cfg = GBOConfig(epochs=1, batch_size=4)
  data = (np.tile(np.asarray(sens, np.float32), (rows, 1)),)
  res = gbo(_quadratic, data, reads=reads, n_rows=(1,) * len(reads), mean_pulses=mean_pulses, sigma=1.0,
            key=jax.random.key(key), config=cfg)
  return cfg, res


def _check_search(cfg, res, reads, mean_pulses):
  lam = np.array([cfg.lam_init] + [h["lambda"] for h in res.history])
  ratio = np.array([h["cost_ratio"] for h in res.history])
  # first step: alpha = 0 and tau = 1 give the uniform distribution over candidates, E_p = mean(T) sum R
  assert ratio[0] == pytest.approx(np.mean(cfg.candidates) / mean_pulses, rel=1e-6)
  # the multiplier rises exactly while the expected cost is over budget: d lambda = dual_lr (E_p / B_E - 1)
  np.testing.assert_allclose(np.diff(lam), cfg.dual_lr * (ratio - 1.0), atol=1e-5)
  clear = np.abs(ratio - 1.0) > 1e-4
  np.testing.assert_array_equal(np.sign(np.diff(lam))[clear], np.sign(ratio - 1.0)[clear])
  assert (ratio > 1.0 + 1e-4).any() and (ratio < 1.0 - 1e-4).any()  # both signs exercised
  # the raw expected cost at the end, recomputed from the final logits at tau_end
  p = jax.nn.softmax(jnp.asarray(res.logits) / cfg.tau_end, -1)
  e_p = float(np.sum(np.asarray(p, np.float64) @ np.asarray(cfg.candidates, np.float64) * np.asarray(reads)))
  assert e_p / res.budget == pytest.approx(ratio[-1], rel=0.02)
  return ratio[-1], e_p / res.budget


def test_gbo_expected_cost_is_the_tau_sharpened_mix_of_candidates():
  """The expected cost the search logs at step k is E_p = sum_l softmax(alpha_l / tau) . T R_l with the alpha the
  search holds before step k: with a constant tau (so the schedule does not depend on the run's length) the alpha
  a 10-step search returns is the one an 11-step search uses at its last step, and E_p / B_E recomputed from it
  in numpy equals that step's logged ratio (alpha is not saturated here, so a missing 1 / tau or R_l would show)."""
  cfg = GBOConfig(epochs=1, batch_size=4, tau_start=0.5, tau_end=0.5)
  sens, reads, tb = (2.0, 1.0, 3.0), (3.0, 2.0, 1.0), 4
  kw = dict(reads=reads, n_rows=(1, 1, 1), mean_pulses=tb, sigma=1.0, key=jax.random.key(2), config=cfg)
  short = gbo(_quadratic, (np.tile(np.asarray(sens, np.float32), (40, 1)),), **kw)
  longer = gbo(_quadratic, (np.tile(np.asarray(sens, np.float32), (44, 1)),), **kw)
  assert len(short.history) == 10 and len(longer.history) == 11
  np.testing.assert_allclose([h["cost_ratio"] for h in longer.history[:10]], [h["cost_ratio"] for h in short.history],
                             rtol=1e-6)
  alpha = np.asarray(short.logits, np.float64)
  z = alpha / 0.5
  p = np.exp(z - z.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  e_p = float(np.sum(p @ np.asarray(cfg.candidates, np.float64) * np.asarray(reads)))
  assert np.max(p) < 0.9  # not saturated
  assert longer.history[-1]["cost_ratio"] == pytest.approx(e_p / (tb * sum(reads)), rel=1e-5)


def test_gbo_search_multiplier_follows_the_budget_and_ends_near_it():
  """Gumbel search, equality budget, on a toy with known sensitivities (600 steps): lambda moves by
  dual_lr (E_p / B_E - 1) at every step (up while over budget, down while under), and the raw expected cost
  E_p = sum_l softmax(alpha_l / tau) . T R_l ends within 5 % of the budget."""
  reads = (3.0, 2.0, 1.0)
  cfg, res = _search((2.0, 1.0, 3.0), reads, 4, 2400, key=0)
  last, e_final = _check_search(cfg, res, reads, 4)
  assert abs(last - 1.0) <= 0.05 and abs(e_final - 1.0) <= 0.05, (last, e_final)
  assert res.energy <= res.budget + 1e-9


@pytest.mark.xfail(strict=True, reason="known: once softmax(alpha / tau) is sharp, the expected-cost gradient "
                   "vanishes while the Gumbel-perturbed task gradient does not, so the search can end far over "
                   "budget although lambda keeps rising (here E_p / B_E = 1.6 after 300 steps, lambda ~ 7)")
def test_gbo_search_ends_near_budget_two_layer_toy():
  reads = (4.0, 1.0)
  cfg, res = _search((1.0, 4.0), reads, 3, 1200, key=3)
  last, e_final = _check_search(cfg, res, reads, 3)
  assert abs(last - 1.0) <= 0.1 and abs(e_final - 1.0) <= 0.1, (last, e_final)
