"""Oracles for the fault sweeps' bookkeeping: screening, and the stratified estimators' standard errors.

Each test checks a property of the method (HAT spec section 4), computed by hand or in plain numpy, never a snapshot
of the library's output: screened flips keep correct = accuracy x examples, flips are re-scored exactly when their
screened RAD reaches the threshold, and the stratified totals follow Cochran's formulas.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhw import faults as F

SIZES = (8, 6, 3)
CHUNK = 64


def _apply(p, x):
  h = jax.nn.relu(x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
  return h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]


@pytest.fixture(scope="module")
def net():
  """A tiny 8-6-3 MLP, 360 examples labelled by its own prediction (every fourth one wrong), and 400 flips."""
  rng = np.random.default_rng(0)
  p = {f"Dense_{i}": {"kernel": (rng.normal(size=(a, b)) / np.sqrt(a)).astype(np.float32),
                      "bias": (0.1 * rng.normal(size=b)).astype(np.float32)}
       for i, (a, b) in enumerate(zip(SIZES[:-1], SIZES[1:]))}
  p = jax.tree.map(jnp.asarray, p)
  x = rng.normal(size=(360, SIZES[0])).astype(np.float32)
  pred = np.argmax(np.asarray(_apply(p, jnp.asarray(x))), -1)
  y = np.where(np.arange(360) % 4 == 0, (pred + 1) % SIZES[-1], pred).astype(np.int32)
  fl = F.all_flips(p)
  pick = np.sort(rng.choice(len(fl.leaf), 400, replace=False))
  flips = F.Flips(*(a[pick] for a in fl))
  return p, jnp.asarray(x), jnp.asarray(y), flips


def _sweep(net, x, y, **kw):
  p, _, _, flips = net
  return F.single_bit_sweep(_apply, p, x, y, flips=flips, structure="mlp", with_loss=False, chunk=CHUNK, **kw)


def test_screened_sweep_rescales_unscreened_flips_and_rescores_the_rest(net):
  """Screening (spec section 4, step 3): a flip whose RAD on the first 90 examples is >= the threshold is
  re-scored on all examples (identical to the full sweep); every other flip keeps its screened accuracy and RAD,
  and its correct count is that accuracy times the number of examples. The threshold is set to a RAD value some
  flip reaches exactly, with a full-set outcome that differs from its rescaled screened one, so `>` in place of
  `>=` would show."""
  _, x, y, flips = net
  n, screen = int(x.shape[0]), 90  # one screening size: each example count compiles its own drivers
  full = _sweep(net, x, y)
  head = _sweep(net, x[:screen], y[:screen])          # the screening pass, run on its own
  scaled = np.round(head.correct * n / screen)
  ties = [r for r in np.unique(head.rad) if 0 < r < 0.5 and np.any((head.rad == r) & (full.correct != scaled))]
  assert ties, "no RAD value usable as an exact threshold"
  thr = float(ties[0])
  res = _sweep(net, x, y, screen_examples=screen, screen_threshold=thr)
  redo = head.rad >= thr
  assert 0 < redo.sum() < len(redo)
  # re-scored flips: exactly the full sweep
  np.testing.assert_array_equal(res.correct[redo], full.correct[redo])
  np.testing.assert_array_equal(res.accuracy[redo], full.accuracy[redo])
  np.testing.assert_array_equal(res.rad[redo], full.rad[redo])
  # the rest: screened accuracy and RAD; correct count = accuracy x examples (360 / 90 = 4: an integer)
  keep = ~redo
  np.testing.assert_array_equal(res.accuracy[keep], head.correct[keep] / screen)
  np.testing.assert_array_equal(res.rad[keep], head.rad[keep])
  np.testing.assert_array_equal(res.correct[keep], res.accuracy[keep] * n)
  assert res.n_examples == n and res.clean_accuracy == full.clean_accuracy


def test_stratified_unit_total_se_is_cochran_with_sample_variance():
  """Hand-made example: N = (10, 4), sampled unit values (1, 0, 3) and (2, 2).
  total = 10 * 4/3 + 4 * 2 = 64/3; s_1^2 = ((1/3)^2 + (4/3)^2 + (5/3)^2) / (3 - 1) = 7/3 (n - 1 in the denominator),
  var = 10^2 (1 - 3/10) (7/3) / 3 + 4^2 (1 - 2/4) * 0 / 2 = 490/9."""
  s = F.stratified_unit_total([10, 4], [[1, 0, 3], [2, 2]])
  se = math.sqrt(490 / 9)
  assert s["estimate"] == pytest.approx(64 / 3, rel=1e-12)
  assert s["se"] == pytest.approx(se, rel=1e-12)
  assert s["lo"] == pytest.approx(64 / 3 - 1.96 * se, rel=1e-12)
  assert s["hi"] == pytest.approx(64 / 3 + 1.96 * se, rel=1e-12)
  # one sampled unit has no variance estimate; a fully enumerated stratum has none to estimate
  one = F.stratified_unit_total([10, 5], [[2], [1, 0, 3, 0, 1]])
  assert one["estimate"] == pytest.approx(10 * 2 + 5 * 1) and one["se"] == 0.0


def test_stratified_total_se_and_wilson_by_hand():
  """Proportion strata (spec section 4): N = (100, 50), n = (10, 5), k = (3, 1): count = 100 * 0.3 + 50 * 0.2 = 40,
  var = 100^2 0.3 * 0.7 / 10 * 0.9 + 50^2 0.2 * 0.8 / 5 * 0.9 = 189 + 72 = 261. Wilson 95 % for 3 / 10 is
  (0.1078, 0.6032) (the textbook value)."""
  s = F.stratified_total([100, 50], [10, 5], [3, 1])
  assert s["estimate"] == pytest.approx(40.0, rel=1e-12)
  assert s["se"] == pytest.approx(math.sqrt(261.0), rel=1e-12)
  assert s["lo"] == pytest.approx(40 - 1.96 * math.sqrt(261.0), rel=1e-12)
  lo, hi = F.wilson_interval(3, 10)
  assert lo == pytest.approx(0.1078, abs=1e-4) and hi == pytest.approx(0.6032, abs=1e-4)


def test_sampled_sweep_totals_are_cochran_over_parameter_clusters(net):
  """sampled_sweep's totals, recomputed in numpy from its own per-flip RADs: strata are leaves, each sampled
  parameter is one unit carrying its count over its swept bits, total = sum_h N_h mean_h and
  var = sum_h N_h^2 (1 - n_h / N_h) s_h^2 / n_h with the (n - 1) sample variance; erratic counts parameters with
  any bit RAD > 0.1. Also: histogram weights N_h / n_h per (leaf, bit) stratum sum to the population of flips."""
  p, x, y, _ = net
  s = F.sampled_sweep(_apply, p, x[:90], y[:90], num_params=20, seed=3, bits=[22, 23, 29, 30, 31], min_per_leaf=4,
                      structure="mlp", with_loss=False, chunk=CHUNK)
  res, fl = s.result, s.result.flips
  sizes = [int(np.size(leaf)) for leaf in jax.tree.leaves(p)]
  assert sorted(s.strata) == list(range(len(sizes)))
  assert any(st["n"] < st["N"] for st in s.strata.values())  # some leaf really is sampled

  def cochran(unit_value):
    est = var = 0.0
    for j, st in s.strata.items():
      m = fl.leaf == j
      vals = np.array([unit_value(res.rad[m & (fl.index == i)]) for i in np.unique(fl.index[m])], np.float64)
      N, n = sizes[j], len(vals)
      assert (N, n) == (st["N"], st["n"])
      est += N * vals.mean()
      if n > 1:
        var += N**2 * (1 - n / N) * np.sum((vals - vals.mean()) ** 2) / (n - 1) / n
    return est, math.sqrt(var)

  for got, fn in ((s.catastrophic, lambda r: np.sum(r >= 0.9)), (s.vulnerable_10, lambda r: np.sum(r > 0.1)),
                  (s.erratic, lambda r: float(np.any(r > 0.1)))):
    est, se = cochran(fn)
    assert got["estimate"] == pytest.approx(est, rel=1e-9, abs=1e-9)
    assert got["se"] == pytest.approx(se, rel=1e-9, abs=1e-9)
  assert max(s.catastrophic["se"], s.vulnerable_10["se"], s.erratic["se"]) > 0
  assert s.total_flips == 5 * sum(sizes)
  assert sum(s.histogram.values()) == pytest.approx(s.total_flips, rel=1e-12)
