"""Tests for jaxhw.hessian on the spec's tiny model, MLP 8-6-3 tanh in float64 (HAT spec section 7, 8-13)."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from jaxhw import hessian as H


def _tiny(dtype):
  ks = jax.random.split(jax.random.key(0), 6)
  p = {"dense0": {"w": jax.random.normal(ks[0], (8, 6), dtype) * 0.8, "b": 0.1 * jax.random.normal(ks[1], (6,), dtype)},
       "dense1": {"w": jax.random.normal(ks[2], (6, 3), dtype) * 0.8, "b": 0.1 * jax.random.normal(ks[3], (3,), dtype)}}
  x = jax.random.normal(ks[4], (32, 8), dtype)
  y = jax.random.randint(ks[5], (32,), 0, 3)
  return p, x, y


def _logits(p, x):
  return jnp.tanh(x @ p["dense0"]["w"] + p["dense0"]["b"]) @ p["dense1"]["w"] + p["dense1"]["b"]


def _loss(p, x, y):
  return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(_logits(p, x)), y[:, None], axis=1))


@pytest.fixture(scope="module")
def f64():
  with jax.enable_x64(True):
    p, x, y = _tiny(jnp.float64)
    f = lambda q: _loss(q, x, y)  # noqa: E731
    Hm = np.asarray(jax.jit(H.exact_hessian, static_argnums=0)(f, p))
  return p, x, y, f, Hm


def test_hvp_vs_finite_differences_and_exact(f64):
  p, x, y, f, Hm = f64
  with jax.enable_x64(True):
    flat, unravel = ravel_pytree(p)
    assert Hm.shape == (75, 75)
    v = jax.random.normal(jax.random.key(1), flat.shape, jnp.float64)
    hv = ravel_pytree(H.hvp(f, p, unravel(v)))[0]
    g = lambda z: ravel_pytree(jax.grad(f)(unravel(z)))[0]  # noqa: E731
    eps = 1e-5
    fd = (g(flat + eps * v) - g(flat - eps * v)) / (2 * eps)
    assert float(jnp.linalg.norm(hv - fd) / jnp.linalg.norm(hv)) <= 1e-6
    np.testing.assert_allclose(np.asarray(hv), Hm @ np.asarray(v), rtol=0, atol=1e-10 * np.abs(Hm).max() * 10)
    q = H.quad_form(f, p, unravel(v))
    np.testing.assert_allclose(float(q), float(jnp.vdot(v, hv)), rtol=1e-10)


def test_hvp_float32_vs_exact():
  p, x, y = _tiny(jnp.float32)
  f = lambda q: _loss(q, x, y)  # noqa: E731
  flat, unravel = ravel_pytree(p)
  v = jax.random.normal(jax.random.key(1), flat.shape)
  Hm = np.asarray(H.exact_hessian(f, p), np.float64)
  hv = np.asarray(ravel_pytree(jax.jit(H.hvp, static_argnums=0)(f, p, unravel(v)))[0])
  ref = Hm @ np.asarray(v, np.float64)
  assert np.linalg.norm(hv - ref) / np.linalg.norm(ref) <= 1e-4


def test_hutchinson_converges_and_per_leaf(f64):
  p, x, y, f, Hm = f64
  tr = np.trace(Hm)
  with jax.enable_x64(True):
    ht = jax.jit(H.hutchinson_trace, static_argnums=(1, 3), static_argnames="chunk")
    est = ht(jax.random.key(3), f, p, 2000, chunk=500)
    for m in (10, 100):  # prefixes of independent probes are themselves Hutchinson estimates with m probes
      sm = np.asarray(est.samples[:m])
      assert abs(sm.mean() - tr) <= 4 * sm.std(ddof=1) / math.sqrt(m)
    assert abs(float(est.mean) - tr) <= 4 * float(est.stderr)
    assert abs(float(est.mean) - tr) <= 0.05 * abs(tr)
    se_theory = math.sqrt(2 * (np.sum(Hm ** 2) - np.sum(np.diag(Hm) ** 2)) / 2000)
    assert abs(float(est.stderr) - se_theory) <= 0.2 * se_theory
    np.testing.assert_allclose(sum(float(v) for v in jax.tree.leaves(est.per_leaf)), float(est.mean), rtol=1e-10)
    # Per-leaf block traces are unbiased for the blocks of the exact Hessian.
    sizes = [a.size for a in jax.tree.leaves(p)]
    offs = np.concatenate([[0], np.cumsum(sizes)])
    for k, v in enumerate(jax.tree.leaves(est.per_leaf)):
      block = np.trace(Hm[offs[k]:offs[k + 1], offs[k]:offs[k + 1]])
      assert abs(float(v) - block) <= 0.1 * abs(tr) + 1e-3


def test_top_eigenvalues_and_lanczos(f64):
  p, x, y, f, Hm = f64
  ev = np.linalg.eigvalsh(Hm)
  top_abs = ev[np.argsort(-np.abs(ev))]
  with jax.enable_x64(True):
    r = H.top_eigenvalues(jax.random.key(0), f, p, k=2, max_iters=1000, tol=1e-9)
    np.testing.assert_allclose(float(r.eigenvalues[0]), top_abs[0], rtol=1e-3)
    np.testing.assert_allclose(float(r.eigenvalues[1]), top_abs[1], rtol=1e-2)
    r1 = H.top_eigenvalues(jax.random.key(0), f, p, k=1)  # defaults: 100 iterations, rel. tol 1e-3
    np.testing.assert_allclose(float(r1.eigenvalues[0]), top_abs[0], rtol=1e-2)
    rv = jax.jit(H.lanczos, static_argnums=(1, 3))(jax.random.key(1), f, p, 75)
    np.testing.assert_allclose(np.asarray(rv[:5]), np.sort(ev)[::-1][:5], rtol=1e-6, atol=1e-9)


def test_ggn_nonnegative_and_equals_hessian_for_linear_model():
  with jax.enable_x64(True):
    ks = jax.random.split(jax.random.key(2), 4)
    W = {"w": jax.random.normal(ks[0], (5, 3), jnp.float64), "b": jax.random.normal(ks[1], (3,), jnp.float64)}
    x = jax.random.normal(ks[2], (20, 5), jnp.float64)
    y = jax.random.randint(ks[3], (20,), 0, 3)
    logits = lambda q: x @ q["w"] + q["b"]  # noqa: E731
    loss = lambda q: -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits(q)), y[:, None], 1))  # noqa: E731
    for i in range(5):
      v = H.rademacher_like(jax.random.key(10 + i), W)
      g = float(H.ggn_quad_form(logits, W, v))
      assert g >= 0
      np.testing.assert_allclose(g, float(H.quad_form(loss, W, v)), rtol=1e-10)
    p, xx, yy = _tiny(jnp.float64)
    for i in range(5):
      v = H.rademacher_like(jax.random.key(20 + i), p)
      assert float(H.ggn_quad_form(lambda q: _logits(q, xx), p, v)) >= 0


class HATTest(chex.TestCase):

  def test_penalty_truncation_and_layers(self):
    p, x, y = _tiny(jnp.float32)
    f = lambda q: _loss(q, x, y)  # noqa: E731
    key = jax.random.key(5)
    pen = jax.jit(H.hat_penalty, static_argnums=1, static_argnames=("probes", "trunc", "top_p", "layers"))
    full = pen(key, f, p, probes=4, trunc="none")
    top = pen(key, f, p, probes=4, trunc="probe_top_p", top_p=0.5)
    s = np.sort(np.asarray(full.samples))[::-1]
    np.testing.assert_allclose(float(full.value), s.mean(), rtol=1e-5)
    np.testing.assert_allclose(float(top.value), s[:2].mean(), rtol=1e-5)
    # Samples equal vᵀHv with the same probes.
    ks = jax.random.split(key, 4)
    qf = jax.jit(lambda k: jnp.vdot(ravel_pytree(H.rademacher_like(k, p))[0],
                                    ravel_pytree(H.hvp(f, p, H.rademacher_like(k, p)))[0]))
    for k, sv in zip(ks, full.samples):
      np.testing.assert_allclose(float(qf(k)), float(sv), rtol=1e-4)
    # Layer restriction: only the dense1 block contributes.
    last = pen(key, f, p, probes=4, trunc="none", layers=("dense1",))
    sub = {"dense1": p["dense1"]}
    f1 = lambda s: _loss({"dense0": p["dense0"], **s}, x, y)  # noqa: E731
    q1 = jax.jit(lambda k: H.quad_form(f1, sub, H.rademacher_like(k, sub)))
    for k, sv in zip(ks, last.samples):
      np.testing.assert_allclose(float(q1(k)), float(sv), rtol=1e-4)
    g = jax.jit(jax.grad(lambda q: H.hat_penalty(key, f, q, probes=2).value))(p)
    assert all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(g))
    with pytest.raises(ValueError, match="trunc"):
      H.hat_penalty(key, f, p, trunc="bogus")
    with pytest.raises(ValueError, match="top_p"):
      H.hat_penalty(key, f, p, top_p=0.0)
    with pytest.raises(ValueError, match="threshold"):
      H.hat_loss(lambda q, b: f(q), threshold="ema")

  def test_regularizer_options(self):
    p, x, y = _tiny(jnp.float32)
    f = lambda q: _loss(q, x, y)  # noqa: E731
    reg = H.hat_regularizer(lam=0.5, warmup_steps=10, every_k=2, threshold="ema", ema_beta=0.5)
    st = reg.init()
    apply = jax.jit(reg.apply, static_argnums=(4,))
    t0, st, aux = apply(p, jax.random.key(0), 4, st, f)
    np.testing.assert_allclose(float(t0), 0.5 * 0.4 * float(aux["hat_penalty"]), rtol=1e-5)  # gate on: tau 0
    np.testing.assert_allclose(float(st["tau"]), 0.5 * float(aux["hat_penalty"]), rtol=1e-5)
    t1, st1, _ = apply(p, jax.random.key(1), 5, st, f)  # odd step: off
    assert float(t1) == 0 and float(st1["tau"]) == float(st["tau"])


@pytest.mark.slow
def test_hat_lam_zero_matches_plain_and_hat_lowers_trace():
  from jaxhw.train import TrainConfig, train
  ks = jax.random.split(jax.random.key(7), 3)
  n = 256
  x = np.asarray(jax.random.normal(ks[0], (n, 8)))
  centers = np.asarray(jax.random.normal(ks[1], (3, 8)))
  y = np.argmin(((x[:, None] - centers[None]) ** 2).sum(-1), 1).astype(np.int32)
  p0, _, _ = _tiny(jnp.float32)
  cfg = TrainConfig(optimizer="adam", lr=1e-2, batch_size=64, steps=50, seed=0)
  plain = lambda q, b, r, s: (_loss(q, b[0], b[1]), {})  # noqa: E731
  r_plain = train(plain, p0, (x, y), cfg)
  r_zero = train(H.hat_loss(lambda q, b: _loss(q, b[0], b[1]), lam=0.0), p0, (x, y), cfg)
  for a, b in zip(jax.tree.leaves(r_plain.params), jax.tree.leaves(r_zero.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
  cfg2 = TrainConfig(optimizer="adam", lr=1e-2, batch_size=64, steps=100, seed=0)
  r_h = train(H.hat_loss(lambda q, b: _loss(q, b[0], b[1]), lam=0.1, probes=2), p0, (x, y), cfg2)
  r_p = train(plain, p0, (x, y), cfg2)
  f_eval = lambda q: _loss(q, jnp.asarray(x), jnp.asarray(y))  # noqa: E731
  ht = jax.jit(lambda q: H.hutchinson_trace(jax.random.key(9), f_eval, q, 100, chunk=100).mean)
  tp, th = ht(r_p.params), ht(r_h.params)
  assert float(th) < float(tp)
