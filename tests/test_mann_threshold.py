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
