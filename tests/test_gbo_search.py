"""GBO's search meets its budget itself: a toy with known per-layer sensitivities where the raw search (no repair)
reaches the closed-form optimum, raw allocations within budget without repair, the Stein sensitivity against the
exact trace of the output Hessian on a tiny net, and the fixed-draw chip evaluator."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxhw.crossbar import GBOConfig, closed_form_allocation, gbo, noise_objectives, output_noise
from jaxhw.crossbar.chips import fixed_noise_evaluator
from jaxhw.crossbar.gbo import round_to_candidates, stein_sensitivity
from jaxhw.effects import attach


def _quadratic(stds, batch, key):
  """Task loss sum_l S_l std_l^2, the local model of noise sensitivity, with S_l known exactly: every example of the
  batch carries S (data, not a closure, so every toy search reuses one compilation)."""
  return jnp.sum(jnp.mean(batch[0], 0) * jnp.square(stds))


def _data(sens):
  return (np.tile(np.asarray(sens, np.float32), (1000, 1)),)


_SIMPLEX = GBOConfig(relaxation="continuous", epochs=1, batch_size=10)


@pytest.mark.parametrize("sens,reads,mean_pulses,optimum", [
    ((1.0, 4.0), (4.0, 1.0), 3.2, (2, 8)),                  # T* = B sqrt(S/R) / sum sqrt(S R) = (2, 8)
    ((8.0, 8.0, 16.0), (8.0, 2.0, 1.0), 32 / 11, (2, 4, 8)),    # T* = 32 (1, 2, 4) / 16 = (2, 4, 8)
])
def test_raw_search_reaches_closed_form_optimum(sens, reads, mean_pulses, optimum):
  """Without any repair the search's allocation is the closed-form optimum and spends exactly the budget."""
  budget = mean_pulses * sum(reads)
  assert closed_form_allocation(sens, reads, budget) == optimum
  res = gbo(_quadratic, _data(sens), reads=reads, n_rows=[1] * len(reads), mean_pulses=mean_pulses, sigma=1.0,
            key=jax.random.key(0), config=_SIMPLEX, sensitivity=sens)
  assert res.raw_pulses == optimum
  assert float(np.dot(res.raw_pulses, reads)) == pytest.approx(budget)
  assert res.search_pulses == res.raw_pulses                     # the repair had nothing to do
  # the simplex parametrisation holds the budget as an equality at every step
  np.testing.assert_allclose([h["cost_ratio"] for h in res.history], 1.0, rtol=1e-5)


def test_raw_search_meets_budget_without_repair():
  """Random toys: the raw allocation is made of candidates, within budget, and spends most of it; the search also
  lands next to the continuous optimum B_E sqrt(S/R) / sum sqrt(S R)."""
  rng = np.random.default_rng(0)
  cand = GBOConfig().candidates
  for trial in range(4):
    n = int(rng.integers(2, 4))
    reads = rng.integers(1, 30, n).astype(float)
    sens = np.exp(rng.normal(0, 1.5, n))
    tb = int(rng.choice([2, 4]))
    budget = tb * reads.sum()
    res = gbo(_quadratic, _data(sens), reads=reads, n_rows=[1] * n, mean_pulses=tb, sigma=1.0,
              key=jax.random.key(trial), config=_SIMPLEX, sensitivity=sens)
    e_raw = float(np.dot(res.raw_pulses, reads))
    assert all(t in cand for t in res.raw_pulses)
    assert e_raw <= budget + 1e-9, (res.raw_pulses, reads, budget)
    t_star = np.clip(budget * np.sqrt(sens / reads) / np.sum(np.sqrt(sens * reads)), 1, 16)
    assert np.all(np.abs(np.log2(res.raw_pulses) - np.log2(t_star)) <= 1.0 + 1e-6), (res.raw_pulses, t_star)


def test_round_to_candidates_stays_within_budget():
  reads = np.array([28.0, 2.0, 1.0])
  assert round_to_candidates((2.0, 8.0, 16.0), reads, 2.0 * 28 + 32) == (2, 8, 16)
  for t in [(1.3, 9.7, 14.0), (3.0, 1.0, 1.0), (1.0, 16.0, 16.0)]:
    budget = float(np.dot(t, reads))
    r = round_to_candidates(t, reads, budget)
    assert float(np.dot(r, reads)) <= budget + 1e-9


def test_equality_multiplier_takes_either_sign():
  """Gumbel search with the equality budget: lambda follows lambda + dual_lr (E_p / B_E - 1) without projection, so
  an overspending start drives it positive and an underspending one negative."""
  cfg = GBOConfig(epochs=1, batch_size=100)
  for tb, sign in ((1.05, 1.0), (12, -1.0)):  # E(uniform init) = 6.6 R vs a budget of 1.05 R (over) / 12 R (under)
    res = gbo(_quadratic, _data((1.0, 4.0)), reads=(4.0, 1.0), n_rows=(1, 1), mean_pulses=tb, sigma=1.0,
              key=jax.random.key(1), config=cfg)
    lam = 0.0
    for h in res.history:
      lam = lam + cfg.dual_lr * (h["cost_ratio"] - 1.0)
      assert h["lambda"] == pytest.approx(lam, abs=1e-5)
    assert np.sign(res.history[0]["lambda"]) == sign


class _Smooth(nn.Module):
  @nn.compact
  def __call__(self, x):
    h = jnp.tanh(nn.Dense(6)(x))
    return nn.Dense(3)(h)


def test_stein_sensitivity_matches_exact_hessian_trace():
  """E[dL/dstd_l] / std_l (what the search accumulates) equals E[tr d^2L/dy_l^2] at the noisy point (Stein's lemma),
  the trace computed exactly with `jax.hessian` on a tiny smooth net."""
  model = _Smooth()
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(4, 5)), jnp.float32)
  y = jnp.asarray(rng.integers(0, 3, 4), jnp.int32)
  variables = model.init(jax.random.key(0), x)
  paths = (("Dense_0",), ("Dense_1",))
  loss_fn, _ = noise_objectives(model.apply, variables, paths)
  stds = jnp.array([0.6, 0.8], jnp.float32)
  keys = jax.random.split(jax.random.key(1), 10_000)
  estimate = stein_sensitivity(loss_fn, stds, (x, y), keys)

  def traces(key):
    def loss_at(offs):
      logits = attach(model.apply, output_noise(dict(zip(paths, stds)), offs))(variables, x, rngs={"noise": key})
      return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))

    offs = {("Dense_0",): jnp.zeros((4, 6)), ("Dense_1",): jnp.zeros((4, 3))}
    hess = jax.hessian(loss_at)(offs)
    return jnp.stack([jnp.trace(hess[p][p].reshape(offs[p].size, offs[p].size)) for p in paths])

  exact = np.asarray(jnp.mean(jax.jit(jax.vmap(traces))(jax.random.split(jax.random.key(2), 1000)), 0))
  g = np.asarray(jax.vmap(lambda k: jax.grad(loss_fn)(stds, (x, y), k))(keys)) / np.asarray(stds)
  se = g.std(0) / np.sqrt(len(keys))
  assert np.all(exact > 0)
  np.testing.assert_array_less(np.abs(estimate - exact), 4 * se + 0.03 * exact)


def test_fixed_noise_evaluator():
  """Zero noise gives the clean accuracy; caching the first layer changes nothing; repeated calls reuse the draws."""
  model = _Smooth()
  rng = np.random.default_rng(0)
  x = rng.normal(size=(60, 5)).astype(np.float32)
  y = rng.integers(0, 3, 60).astype(np.int32)
  variables = model.init(jax.random.key(0), x[:1])
  clean = float(np.mean(np.argmax(model.apply(variables, x), -1) == y))
  kw = dict(layers=("Dense_0", "Dense_1"), chips=3, key=jax.random.key(4), batch_size=25)
  ev = fixed_noise_evaluator(model.apply, variables, x, y, **kw)
  ev_nocache = fixed_noise_evaluator(model.apply, variables, x, y, reuse_first_layer=False, **kw)
  np.testing.assert_allclose(ev(jnp.zeros(2)), clean)
  noisy = ev(jnp.array([1.0, 2.0]))
  np.testing.assert_array_equal(noisy, ev(jnp.array([1.0, 2.0])))
  np.testing.assert_array_equal(noisy, ev_nocache(jnp.array([1.0, 2.0])))
  assert noisy.shape == (3,) and len(set(noisy.tolist())) > 1   # chips differ
  with pytest.raises(ValueError, match="stds"):
    ev(jnp.zeros(3))
