"""Inference thresholding: infinite thresholds give argmax, the vectorised scan equals the sequential loop."""

import chex
import jax
import numpy as np

from jaxhw.mann import threshold


class ThresholdTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_infinite_thresholds_are_argmax(self):
    logits = np.asarray(jax.random.normal(jax.random.key(0), (64, 20)))
    order = np.random.default_rng(0).permutation(20)
    fn = self.variant(threshold.thresholded_predict)
    pred, cost = fn(logits, order, np.full(20, np.inf, np.float32))
    np.testing.assert_array_equal(np.asarray(pred), logits.argmax(-1))
    np.testing.assert_array_equal(np.asarray(cost), 20)
    pred, cost = fn(logits, order, np.full(20, -np.inf, np.float32))
    np.testing.assert_array_equal(np.asarray(pred), order[0])
    np.testing.assert_array_equal(np.asarray(cost), 1)

  @chex.variants(with_jit=True, without_jit=True)
  def test_vectorised_equals_loop(self):
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(200, 15)).astype(np.float32)
    th = threshold.calibrate(rng.normal(size=(300, 15)) + 1.5 * np.eye(15)[rng.integers(0, 4, 300)], [0, 1, 2, 3])
    pred, cost = self.variant(threshold.thresholded_predict)(logits, th.order, th.tau)
    ref_pred, ref_cost = threshold.thresholded_predict_loop(logits, th.order, th.tau)
    np.testing.assert_array_equal(np.asarray(pred), ref_pred)
    np.testing.assert_array_equal(np.asarray(cost), ref_cost)


def test_calibration_agrees_with_argmax_on_its_own_data():
  rng = np.random.default_rng(2)
  labels = rng.integers(0, 5, 500)
  logits = rng.normal(size=(500, 30)) + 4 * np.eye(30)[labels]
  th = threshold.calibrate(logits, range(5))
  assert list(th.order[:5]) == sorted(range(5), key=lambda c: (-np.sum(logits.argmax(-1) == c), c))
  assert np.isinf(th.tau[5:]).all()
  rep = threshold.evaluate(logits, labels, th, 5)
  assert rep.agreement == 1.0 and rep.error_full == rep.error_thresholded
  assert rep.trigger_rate > 0.8 and rep.mean_cost < 10 and rep.skipped_fraction == 1 - rep.mean_cost / 30
  padded = threshold.evaluate(logits, labels, th, 5, vocab=256)
  assert padded.skipped_fraction > rep.skipped_fraction


def test_tolerance_takes_the_next_largest_wrong_logit():
  rng = np.random.default_rng(3)
  labels = rng.integers(0, 3, 400)
  logits = (rng.normal(size=(400, 10)) + 2 * np.eye(10)[labels]).astype(np.float32)
  exact = threshold.calibrate(logits, range(3))
  np.testing.assert_array_equal(threshold.calibrate(logits, range(3), tolerance=0.0).tau, exact.tau)
  loose = threshold.calibrate(logits, range(3), tolerance=0.01)  # 4 of 400 questions may trigger wrongly
  pred = logits.argmax(-1)
  for c in range(3):
    wrong = np.sort(logits[pred != c, c])[::-1]
    assert exact.tau[c] == np.float32(wrong[0]) and loose.tau[c] == np.float32(wrong[4])
    assert ((logits[:, c] > loose.tau[c]) & (pred != c)).sum() <= 4
  assert threshold.evaluate(logits, labels, loose, 3).trigger_rate >= threshold.evaluate(logits, labels, exact,
                                                                                          3).trigger_rate


class PrunedFallbackTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_pruned_fallback_is_exact_and_equals_loop(self):
    rng = np.random.default_rng(4)
    w = rng.normal(size=(30, 8)) * rng.uniform(0.2, 2.0, (30, 1))
    u = rng.normal(size=(200, 8))
    logits = (u @ w.T).astype(np.float32)
    norms, qn = np.linalg.norm(w, axis=1), np.linalg.norm(u, axis=1)
    th = threshold.calibrate(logits[:100], [0, 1, 2, 3])
    th = th._replace(tau=np.where(np.arange(30) < 4, th.tau, np.inf).astype(np.float32))
    rest = np.asarray(th.order[4:])
    rest = rest[np.argsort(-norms[rest], kind="stable")]
    pred, cost = self.variant(lambda z, q: threshold.pruned_argmax(z, th.order[:4], rest, norms, q))(logits, qn)
    np.testing.assert_array_equal(np.asarray(pred), logits.argmax(-1))  # exact
    assert np.all(np.asarray(cost) >= 5) and np.all(np.asarray(cost) <= 31)
    rep = threshold.evaluate(logits, logits.argmax(-1), th, 4, row_norms=norms, query_norms=qn)
    assert rep.agreement >= threshold.evaluate(logits, logits.argmax(-1), th, 4).agreement
    ref_pred, ref_cost = threshold.thresholded_predict_loop(logits, th.order, th.tau, num_candidates=4,
                                                            row_norms=norms, query_norms=qn)
    t_pred, t_cost = (np.asarray(a) for a in threshold.thresholded_predict(logits, th.order, th.tau))
    trig = t_cost < 30
    np.testing.assert_array_equal(np.where(trig, t_pred, np.asarray(pred)), ref_pred)
    np.testing.assert_array_equal(np.where(trig, t_cost, np.asarray(cost)), ref_cost)
