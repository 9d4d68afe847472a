"""Oracles for the HAT penalty: the probe top-p selection with an odd probe count, and the EMA threshold's
recursion (HAT spec section 1), on quadratic losses whose probe values vᵀHv are known in closed form."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhw import hessian as H

# A symmetric 4 x 4 "Hessian" with distinct Rademacher quadratic forms, so the three probe values differ.
A = np.array([[2.0, 0.7, -0.4, 0.1],
              [0.7, 1.0, 0.3, -0.9],
              [-0.4, 0.3, 3.0, 0.5],
              [0.1, -0.9, 0.5, 0.5]], np.float32)


def _quadratic(p):
  """0.5 wᵀ A w: the Hessian with respect to w is A, so vᵀHv = vᵀAv exactly."""
  return 0.5 * p["w"] @ (jnp.asarray(A) @ p["w"])


def _scaled_norm(p):
  """0.5 a |w|^2 with the scale a a leaf of its own, left out of the probes (layers=("w",)): vᵀHv = a * |w|."""
  return 0.5 * p["a"] * jnp.sum(jnp.square(p["w"]))


class TopPTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_odd_probe_count_keeps_ceil_p_m_largest(self):
    """m = 3 probes: p = 0.5 keeps ceil(1.5) = 2 (the mean of the 2 largest of 3), p = 0.34 keeps ceil(1.02) = 2,
    p = 0.3 keeps 1 (the largest), p = 0.67 keeps all 3 (round would keep 2). The probe values themselves are vᵀAv
    with the probes hat_penalty draws (`rademacher_like` of each key of `jax.random.split(key, m)`)."""
    key = jax.random.key(1)  # probe values (6.7, 10.7, 8.3): the two largest are neither the first two nor sorted
    params = {"w": jnp.asarray([0.3, -1.2, 0.8, 2.0], jnp.float32)}
    vs = [np.asarray(H.rademacher_like(k, params)["w"]) for k in jax.random.split(key, 3)]
    want = np.array([v @ A @ v for v in vs])
    assert len(set(want.round(4))) == 3, want  # distinct probe values: the selection matters
    top = np.sort(want)[::-1]
    cases = ((0.5, 2), (0.34, 2), (0.3, 1), (0.67, 3))
    assert all(keep == max(1, math.ceil(p * 3)) for p, keep in cases)

    def run(k, q):  # every case in one traced function (one compilation)
      pens = [H.hat_penalty(k, _quadratic, q, probes=3, top_p=p) for p, _ in cases]
      return pens, H.hat_penalty(k, _quadratic, q, probes=3, trunc="none")

    pens, plain = self.variant(run)(key, params)
    for (p, keep), pen in zip(cases, pens):
      np.testing.assert_allclose(np.asarray(pen.samples), want, rtol=1e-5)
      np.testing.assert_allclose(float(pen.value), top[:keep].mean(), rtol=1e-5, err_msg=f"top_p={p}")
    # trunc="none" is the plain mean of the same probe values
    np.testing.assert_allclose(float(plain.value), want.mean(), rtol=1e-5)


class EMAThresholdTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_tau_recursion_and_gate(self):
    """threshold="ema", beta = 0.9, tau_0 = 0: tau_1 = (1 - beta) R_1, tau_2 = beta tau_1 + (1 - beta) R_2, ...;
    the gate is 1[R_t > tau_{t-1}] and the term lam * gate * R_t. With 0.5 a |w|^2 and Rademacher probes every
    probe value is a * n exactly (n = 5 entries), so R_t is known: R = 10, 0.5 (below tau_1 = 1: gate off, term 0),
    then 20 (above tau_2 = 0.95: gate on)."""
    beta, lam, n = 0.9, 0.3, 5
    reg = H.hat_regularizer(lam=lam, probes=2, trunc="none", threshold="ema", ema_beta=beta, layers=("w",))
    apply = self.variant(lambda q, k, t, st: reg.apply(q, k, t, st, _scaled_norm))
    w = jnp.linspace(-1.0, 1.0, n, dtype=jnp.float32)
    state = reg.init()
    assert float(state["tau"]) == 0.0
    tau = 0.0
    for t, a in enumerate((2.0, 0.1, 4.0)):
      r = a * n
      term, state, aux = apply({"w": w, "a": jnp.float32(a)}, jax.random.key(t), t, state)
      gate = float(r > tau)
      tau = beta * tau + (1 - beta) * r
      assert float(aux["hat_penalty"]) == pytest.approx(r, rel=1e-6)
      assert float(aux["hat_gate"]) == gate
      assert float(state["tau"]) == pytest.approx(tau, rel=1e-6)
      assert float(term) == pytest.approx(lam * gate * r, rel=1e-6)
    assert tau == pytest.approx(beta * (beta * 0.1 * 10 + 0.1 * 0.5) + 0.1 * 20)
