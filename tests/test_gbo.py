"""Tests of GBO: relaxed gradients, budget repair, closed form, Gumbel straight-through, and the search run through
`jaxhw.train` (allocation logits and the multiplier as its params, the Stein sensitivity as its model state)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhw.crossbar import (
  GBOConfig,
  closed_form_allocation,
  fisher_sensitivity,
  gbo,
  gumbel_straight_through,
  noise_objectives,
  repair,
  round_ste,
  uniform_allocation,
)
from jaxhw.crossbar.gbo import DEFAULT_CANDIDATES
from jaxhw.models.binary_net import BinaryMLP, binary_layer_paths


@pytest.fixture(scope="module")
def tiny():
  """A frozen two-binary-layer MLP (population BN statistics over its data), the data, and GBO's objectives."""
  model = BinaryMLP(features=(32, 16), num_classes=10)
  rng = np.random.default_rng(1)
  x = rng.random((200, 64), np.float32)
  y = rng.integers(0, 10, 200).astype(np.int32)
  variables = model.init(jax.random.key(0), x[:1])
  _, upd = model.clone(bn_momentum=0.0).apply(variables, x, train=True, mutable=["batch_stats"])
  variables = {**variables, **upd}
  return variables, x, y, noise_objectives(model.apply, variables, binary_layer_paths(model))


class TestRelaxation(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_gumbel_st_is_one_hot_forward_with_softmax_gradient(self):
    alpha = jnp.array([[0.3, -0.2, 1.0], [0.0, 0.0, 0.0]])
    h, p = self.variant(gumbel_straight_through)(alpha, jax.random.key(0), 0.5)
    np.testing.assert_allclose(np.asarray(h).sum(-1), 1.0, atol=1e-6)
    assert set(np.round(np.asarray(h), 6).ravel().tolist()) <= {0.0, 1.0}
    np.testing.assert_array_equal(np.argmax(np.asarray(h), -1), np.argmax(np.asarray(p), -1))
    # d/dalpha of sum(c * h) equals d/dalpha of sum(c * p) (straight-through)
    c = jnp.array([1.0, 2.0, 5.0])
    g_h, g_p = self.variant(lambda a: [jax.grad(lambda z, i=i: jnp.sum(
        gumbel_straight_through(z, jax.random.key(0), 0.5)[i] * c))(a) for i in (0, 1)])(alpha)
    np.testing.assert_allclose(np.asarray(g_h), np.asarray(g_p), rtol=1e-5, atol=1e-7)
    assert float(self.variant(round_ste)(jnp.float32(2.6))) == 3.0
    assert float(jax.grad(round_ste)(jnp.float32(2.6))) == 1.0


def test_relaxed_gradients_finite_nonzero_and_zero_without_noise(tiny):
  """dL/dalpha (Gumbel ST) and dL/dtheta (continuous T) are finite and non-zero for every layer at sigma > 0, and
  exactly 0 at sigma = 0 (spec oracle 6); both relaxations in one compiled function."""
  _, x, y, (loss_fn, _) = tiny
  cand = jnp.asarray(DEFAULT_CANDIDATES, jnp.float32)
  batch = (x[:100], y[:100])

  def task(theta, sigma, relaxation):
    if relaxation == "gumbel":
      h, _ = gumbel_straight_through(theta, jax.random.key(3), 1.0)
      stds = jnp.sum(h * sigma * jnp.sqrt(1.0 / cand), -1)
    else:
      t = 1.0 + jax.nn.softplus(theta)
      stds = sigma * jnp.sqrt(1.0 / round_ste(t))
    # average over a few noise draws so that every layer's gradient is non-zero
    return jnp.sum(jax.vmap(lambda k: loss_fn(stds, batch, k))(jax.random.split(jax.random.key(5), 4)))

  grad = jax.jit(lambda alpha, theta, sigma: (jax.grad(task)(alpha, sigma, "gumbel"),
                                             jax.grad(task)(theta, sigma, "continuous")))
  alpha, theta = jnp.zeros((2, len(cand))), jnp.ones((2,))
  for g in grad(alpha, theta, 3.0):
    g = np.asarray(g)
    assert np.all(np.isfinite(g))
    per_layer = np.abs(g).reshape(2, -1).sum(-1)
    assert np.all(per_layer > 0), per_layer
  for g0 in grad(alpha, theta, 0.0):
    np.testing.assert_array_equal(np.asarray(g0), 0.0)


def test_repair_and_closed_form_respect_budget():
  rng = np.random.default_rng(0)
  for _ in range(50):
    n = rng.integers(2, 6)
    reads = rng.integers(1, 60, n).astype(float)
    s = rng.random(n) + 1e-3
    tb = rng.choice([1, 2, 3, 4, 8])
    b = tb * reads.sum()
    cf = closed_form_allocation(s, reads, b)
    assert np.dot(cf, reads) <= b + 1e-9
    start = tuple(rng.choice(DEFAULT_CANDIDATES, n))
    rep = repair(start, s, reads, b)
    assert np.dot(rep, reads) <= b + 1e-9
    assert all(t in DEFAULT_CANDIDATES for t in rep)
  # equal S / R across layers -> uniform allocation
  reads = np.array([56.0, 16.0, 4.0])
  for tb in (1, 2, 4, 8, 16):
    assert closed_form_allocation(3.0 * reads, reads, tb * reads.sum()) == uniform_allocation(tb, 3)
  # a clearly more sensitive cheap layer gets more pulses
  assert closed_form_allocation(np.array([1.0, 1.0, 50.0]), reads, 2 * reads.sum())[2] > 2
  with pytest.raises(ValueError, match="budget_e"):
    repair((1, 1, 1), [1, 1, 1], reads, 0.5 * reads.sum())


def test_gbo_search_meets_budget_and_moves_alpha(tiny, tmp_path):
  folded, x, y, (loss_fn, grad_fn) = tiny
  reads, n_rows = [4.0, 1.0], [1, 1]
  sens = fisher_sensitivity(lambda b, k: grad_fn(jnp.full((2,), 2.0), b, k), [(x[:50], y[:50])],
                            jax.random.key(0), n_rows)
  assert sens.shape == (2,) and np.all(sens > 0)
  kw0 = dict(reads=reads, n_rows=n_rows, mean_pulses=2, sigma=4.0, key=jax.random.key(1), model=folded)
  for relaxation in ("gumbel", "continuous"):
    res = gbo(loss_fn, (x, y), config=GBOConfig(epochs=1, batch_size=100, relaxation=relaxation),
              workdir=tmp_path if relaxation == "gumbel" else None, **kw0)
    assert res.energy <= res.budget + 1e-9 and res.budget == 2 * sum(reads)
    assert np.all(np.isfinite(res.logits)) and np.any(res.logits != res.logits.ravel()[0])
    assert len(res.history) == 2 and res.pulses == res.search_pulses and res.validation == {}
    # the multiplier is the trainer's second parameter: signed gradient ascent on the budget violation (Gumbel);
    # the continuous search lives on the budget simplex and needs none
    lam = 0.0
    for h in res.history:
      if relaxation == "gumbel":
        lam = lam + GBOConfig().dual_lr * (h["cost_ratio"] - 1.0)
      else:
        assert h["cost_ratio"] == pytest.approx(1.0, rel=1e-5)
      assert abs(h["lambda"] - lam) < 1e-5
    if relaxation == "gumbel":
      first = res
  # a search with a workdir resumes from its checkpoint: the rerun ends where the first one did
  again = gbo(loss_fn, (x, y), config=GBOConfig(epochs=1, batch_size=100), workdir=tmp_path, **kw0)
  np.testing.assert_array_equal(first.logits, again.logits)
  np.testing.assert_allclose(first.sensitivity, again.sensitivity, rtol=1e-6)
  assert (tmp_path / "metrics.jsonl").is_file()
  # soft budget: the multiplier stays fixed; a held-out score that prefers the uniform allocation replaces the
  # search result
  # the spec's inequality budget: lambda projected on >= 0
  hard = gbo(loss_fn, (x, y), config=GBOConfig(epochs=1, batch_size=100, budget_mode="hard"), **kw0)
  lam = 0.0
  for h in hard.history:
    lam = max(0.0, lam + GBOConfig().dual_lr * (h["cost_ratio"] - 1.0))
    assert abs(h["lambda"] - lam) < 1e-5
  soft = gbo(loss_fn, (x, y), config=GBOConfig(epochs=1, batch_size=100, budget_mode="soft", soft_lambda=0.3),
             validate_fn=lambda p: 0.0 if p == (2, 2) else 1.0, **kw0)
  assert all(h["lambda"] == pytest.approx(0.3) for h in soft.history)
  assert soft.pulses == (2, 2) and set(soft.validation) == {"search", "uniform"}
  if soft.search_pulses != (2, 2):
    assert soft.validation["search"] == 1.0
  with pytest.raises(ValueError, match="candidates"):
    GBOConfig(candidates=(0, 1))
  with pytest.raises(ValueError, match="sigma"):
    gbo(loss_fn, (x, y), reads=reads, n_rows=n_rows, mean_pulses=2, sigma=-1.0, key=jax.random.key(1))
  with pytest.raises(ValueError, match="mean_pulses"):
    uniform_allocation(0, 3)
