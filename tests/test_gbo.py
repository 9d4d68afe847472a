"""Tests of GBO: relaxed gradients, budget repair, closed form, Gumbel straight-through (GBO spec section 7)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhw.crossbar import (GBOConfig, closed_form_allocation, fisher_sensitivity, gbo, gumbel_straight_through,
                            repair, round_ste, uniform_allocation)
from jaxhw.crossbar.gbo import DEFAULT_CANDIDATES
from jaxhw.models.binary_net import binary_mlp_init, binary_net_bn_stats, fold_binary_net, gbo_objectives


@pytest.fixture(scope="module")
def tiny():
  params = binary_mlp_init(jax.random.key(0), (64, 48, 32, 24, 10))
  x = np.asarray(jax.random.uniform(jax.random.key(1), (200, 64)))
  y = np.asarray(jax.random.randint(jax.random.key(2), (200,), 0, 10))
  folded = fold_binary_net(params, binary_net_bn_stats(params, x))
  return folded, x, y


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
    g_h = jax.grad(lambda a: jnp.sum(gumbel_straight_through(a, jax.random.key(0), 0.5)[0] * c))(alpha)
    g_p = jax.grad(lambda a: jnp.sum(gumbel_straight_through(a, jax.random.key(0), 0.5)[1] * c))(alpha)
    np.testing.assert_allclose(np.asarray(g_h), np.asarray(g_p), rtol=1e-5, atol=1e-7)
    assert float(self.variant(round_ste)(jnp.float32(2.6))) == 3.0
    assert float(jax.grad(round_ste)(jnp.float32(2.6))) == 1.0


@pytest.mark.parametrize("relaxation", ["gumbel", "continuous"])
def test_relaxed_gradients_finite_nonzero_and_zero_without_noise(tiny, relaxation):
  folded, x, y = tiny
  loss_fn, _ = gbo_objectives(folded)
  n_rows, reads = [1, 1, 1], [1.0, 1.0, 1.0]
  cand = jnp.asarray(DEFAULT_CANDIDATES, jnp.float32)
  batch = (x[:100], y[:100])

  def task(theta, sigma):
    if relaxation == "gumbel":
      h, _ = gumbel_straight_through(theta, jax.random.key(3), 1.0)
      stds = jnp.sum(h * sigma * jnp.sqrt(1.0 / cand), -1)
    else:
      t = 1.0 + jax.nn.softplus(theta)
      stds = sigma * jnp.sqrt(1.0 / round_ste(t))
    # average over a few noise draws so that every layer's gradient is non-zero
    return sum(loss_fn(stds, batch, jax.random.key(k)) for k in range(4))

  theta = jnp.zeros((3, len(cand))) if relaxation == "gumbel" else jnp.ones((3,))
  grad = jax.jit(jax.grad(task))
  g = np.asarray(grad(theta, 3.0))
  assert np.all(np.isfinite(g))
  per_layer = np.abs(g).reshape(3, -1).sum(-1)
  assert np.all(per_layer > 0), per_layer
  g0 = np.asarray(grad(theta, 0.0))
  np.testing.assert_array_equal(g0, 0.0)
  del n_rows, reads


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


def test_gbo_search_meets_budget_and_moves_alpha(tiny):
  folded, x, y = tiny
  loss_fn, grad_fn = gbo_objectives(folded)
  reads, n_rows = [4.0, 2.0, 1.0], [1, 1, 1]
  sens = fisher_sensitivity(lambda b, k: grad_fn(jnp.full((3,), 2.0), b, k), [(x[:50], y[:50])],
                            jax.random.key(0), n_rows)
  assert sens.shape == (3,) and np.all(sens > 0)
  for relaxation in ("gumbel", "continuous"):
    res = gbo(loss_fn, (x, y), reads=reads, n_rows=n_rows, mean_pulses=2, sigma=4.0, key=jax.random.key(1),
              config=GBOConfig(epochs=1, batch_size=100, relaxation=relaxation))
    assert res.energy <= res.budget + 1e-9 and res.budget == 2 * sum(reads)
    assert np.all(np.isfinite(res.logits)) and np.any(res.logits != res.logits.ravel()[0])
    assert len(res.history) == 2
  with pytest.raises(ValueError, match="candidates"):
    GBOConfig(candidates=(0, 1))
  with pytest.raises(ValueError, match="sigma"):
    gbo(loss_fn, (x, y), reads=reads, n_rows=n_rows, mean_pulses=2, sigma=-1.0, key=jax.random.key(1))
  with pytest.raises(ValueError, match="mean_pulses"):
    uniform_allocation(0, 3)
