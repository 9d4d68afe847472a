"""Inference thresholding of the output layer: scan the candidate answers first and stop at the first logit over
its learned threshold, falling back to the exact argmax when none triggers.

Calibration (per task, training questions only): the candidates are the classes seen as training answers, ordered
by how often the model predicts them on the training set, then every other class (threshold +inf). A candidate
c's threshold is ``tau_c = max{z_c : argmax z != c} + delta`` over the training logits (+inf when c is always the
prediction), so on the training set a trigger never contradicts the argmax. At inference the output layer
computes ``z_pi(r) = w_pi(r) . u`` for r = 1, 2, ... and stops at the first ``z > tau``: the cost is r inner
products instead of V.

References:
  Park et al., "Energy-Efficient Inference Accelerator for Memory-Augmented Neural Networks on an FPGA",
  DATE 2019, arXiv:1805.07978 (inference thresholding).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

RULES = ("max", "quantile")


class Thresholds(NamedTuple):
  """One task's scan: ``order`` [V] (candidates first) and ``tau`` [V] per class (+inf: never triggers)."""

  order: np.ndarray
  tau: np.ndarray


def calibrate(train_logits: np.ndarray, candidates: Sequence[int], *, delta: float = 0.0, rule: str = "max",
              quantile: float = 0.01, tolerance: float = 0.0) -> Thresholds:
  """Learns one task's scan order and thresholds from its training logits.

  Args:
    train_logits: ``[n, V]`` logits of the final (inference-precision) model on the task's training questions.
    candidates: the classes seen as training answers.
    delta: margin added to each threshold.
    rule: ``"max"``: the largest logit of c where the prediction is not c (exact on the training set);
      ``"quantile"``: the `quantile` of c's logits where the prediction is c.
    quantile: the quantile for ``rule="quantile"``.
    tolerance: ``rule="max"`` only: the share of the n calibration questions on which c's threshold may be
      exceeded although the prediction is another class. ``tau_c`` is then the ``(floor(tolerance n) + 1)``-th
      largest such logit instead of the largest (0: the spec's exact rule) [R].

  Returns:
    `Thresholds`.
  """
  if rule not in RULES:
    raise ValueError(f"rule must be one of {RULES}, got {rule!r}.")
  if not 0.0 <= tolerance < 1.0:
    raise ValueError(f"tolerance must be in [0, 1), got {tolerance}.")
  z = np.asarray(train_logits, np.float64)
  n, v = z.shape
  cands = [int(c) for c in candidates]
  if any(not 0 <= c < v for c in cands):
    raise ValueError(f"candidates must be classes in [0, {v}), got {cands}.")
  pred = z.argmax(-1) if n else np.zeros(0, int)
  counts = np.bincount(pred, minlength=v)
  cands = sorted(set(cands), key=lambda c: (-counts[c], c))
  rest = [c for c in range(v) if c not in set(cands)]
  tau = np.full(v, np.inf)
  for c in cands:
    if rule == "max":
      others = np.sort(z[pred != c, c])[::-1]
      allowed = int(np.floor(tolerance * n))
      tau[c] = others[min(allowed, others.size - 1)] + delta if others.size else np.inf
    else:
      own = z[pred == c, c]
      tau[c] = np.quantile(own, quantile) + delta if own.size else np.inf
  return Thresholds(np.asarray(cands + rest, np.int32), tau.astype(np.float32))


def thresholded_predict(logits: Float[Array, "batch vocab"], order: Int[Array, "batch vocab"] | Int[Array, " vocab"],
                        tau: Float[Array, "batch vocab"] | Float[Array, " vocab"]
                        ) -> tuple[Int[Array, " batch"], Int[Array, " batch"]]:
  """Vectorised thresholded inference: the class and the number of inner products computed, per question.

  Args:
    logits: all logits (the scan is simulated on them).
    order: scan order, per question or shared.
    tau: thresholds indexed by class, per question or shared.

  Returns:
    ``(prediction, cost)``: the first class in scan order whose logit exceeds its threshold (cost = its
    position + 1), else the full argmax (cost V).
  """
  logits = jnp.asarray(logits)
  v = logits.shape[-1]
  order = jnp.broadcast_to(jnp.asarray(order), logits.shape)
  tau = jnp.broadcast_to(jnp.asarray(tau), logits.shape)
  z_scan = jnp.take_along_axis(logits, order, axis=-1)
  tau_scan = jnp.take_along_axis(tau, order, axis=-1)
  trig = z_scan > tau_scan
  first = jnp.argmax(trig, axis=-1)
  any_trig = trig.any(-1)
  pred = jnp.where(any_trig, jnp.take_along_axis(order, first[:, None], axis=-1)[:, 0], jnp.argmax(logits, -1))
  cost = jnp.where(any_trig, first + 1, v)
  return pred, cost


def pruned_argmax(logits: Float[Array, "batch vocab"], computed: Int[Array, " scanned"], rest: Int[Array, " rest"],
                  row_norms: Float[Array, " vocab"], query_norms: Float[Array, " batch"], *, margin: float = 1e-5
                  ) -> tuple[Int[Array, " batch"], Int[Array, " batch"]]:
  """The exact argmax after a scan that computed the rows `computed`, pruned by Cauchy-Schwarz [R].

  The remaining rows `rest` are visited in descending ``||w_r||`` (pass them sorted so); row r can only beat the
  best logit so far if ``||w_r|| ||u|| >= best``, and neither can any later row, so the visit stops at the first row
  whose bound is below the best (a logit quantized by truncation toward zero is also below the bound). Costs one
  inner product for ``||u||`` plus the rows visited. Ties go to the smallest class index, as `jnp.argmax`.

  Args:
    logits: all logits (the visit is simulated on them).
    computed: the rows already computed (the candidates of the scan).
    rest: the other rows, by descending `row_norms`.
    row_norms: ``||w_r||`` per class.
    query_norms: ``||u||`` per question.
    margin: relative slack on the bound for float rounding.

  Returns:
    ``(prediction, cost)``, cost counting ``len(computed) + 1 + rows visited``.
  """
  logits = jnp.asarray(logits)
  computed, rest = jnp.asarray(computed), jnp.asarray(rest)
  best0 = logits[:, computed].max(-1) if computed.size else jnp.full(logits.shape[:1], -jnp.inf)
  z_rest = logits[:, rest]
  bound = jnp.asarray(row_norms)[rest][None, :] * jnp.asarray(query_norms)[:, None] * (1 + margin)
  before = jnp.concatenate([jnp.full(z_rest.shape[:1] + (1,), -jnp.inf, z_rest.dtype),
                            jax.lax.cummax(z_rest, axis=1)[:, :-1]], axis=1) if rest.size else z_rest
  stop = bound < jnp.maximum(best0[:, None], before)
  visited = jnp.where(stop.any(-1), jnp.argmax(stop, axis=-1), rest.size)
  seen = jnp.zeros(logits.shape, bool).at[:, computed].set(True)
  seen = seen.at[:, rest].set(jnp.arange(rest.size)[None, :] < visited[:, None])
  pred = jnp.argmax(jnp.where(seen, logits, -jnp.inf), axis=-1)
  return pred, computed.size + 1 + visited


def thresholded_predict_loop(logits: np.ndarray, order: np.ndarray, tau: np.ndarray, *, num_candidates: int = 0,
                             row_norms: np.ndarray | None = None, query_norms: np.ndarray | None = None,
                             margin: float = 1e-5) -> tuple[np.ndarray, np.ndarray]:
  """The sequential reference of `thresholded_predict` (one question at a time, stopping at the first trigger).

  With `row_norms` and `query_norms` the fallback is the pruned exact argmax of `pruned_argmax`: the first
  `num_candidates` rows of `order`, ``||u||``, then the others by descending norm while their bound can win.
  """
  logits = np.asarray(logits)
  preds, costs = [], []
  for i, z in enumerate(logits):
    o = order[i] if np.ndim(order) == 2 else order
    t = tau[i] if np.ndim(tau) == 2 else tau
    for r, c in enumerate(o, start=1):
      if z[c] > t[c]:
        preds.append(int(c))
        costs.append(r)
        break
    else:
      if row_norms is None:
        preds.append(int(np.argmax(z)))
        costs.append(len(z))
        continue
      seen = [int(c) for c in o[:num_candidates]]
      best = max((z[c] for c in seen), default=-np.inf)
      cost = num_candidates + 1
      for c in sorted(o[num_candidates:], key=lambda c: -row_norms[c]):
        if row_norms[c] * query_norms[i] * (1 + margin) < best:
          break
        seen.append(int(c))
        best = max(best, z[c])
        cost += 1
      preds.append(min(c for c in seen if z[c] == best))
      costs.append(cost)
  return np.asarray(preds), np.asarray(costs)


class ThresholdReport(NamedTuple):
  """Per-task figures of thresholded inference against exact inference.

  Attributes:
    vocab: V, the output rows.
    candidates: |A_t|.
    mean_cost: mean inner products per question, k.
    skipped_fraction: ``1 - k / V``.
    trigger_rate: share of questions decided by a threshold (not the fallback).
    agreement: share of questions whose thresholded class equals the exact argmax.
    error_full, error_thresholded: test error of exact and thresholded inference.
  """

  vocab: int
  candidates: int
  mean_cost: float
  skipped_fraction: float
  trigger_rate: float
  agreement: float
  error_full: float
  error_thresholded: float


FALLBACKS = ("full", "pruned")


def evaluate(logits: np.ndarray, labels: np.ndarray, thresholds: Thresholds, num_candidates: int,
             vocab: int | None = None, *, row_norms: np.ndarray | None = None,
             query_norms: np.ndarray | None = None) -> ThresholdReport:
  """Thresholded vs exact inference on held-out logits of one task.

  Args:
    logits: ``[n, V]`` logits.
    labels: true classes.
    thresholds: the task's calibrated `Thresholds`.
    num_candidates: |A_t| (the first rows of ``thresholds.order``).
    vocab: count costs against this many output rows (e.g. a padded hardware V = 256 of zero rows; default V).
    row_norms, query_norms: ``||w_r||`` per class and ``||u||`` per question: the fallback is then `pruned_argmax`
      (exact, fewer rows) instead of all V rows (the spec's fallback).
  """
  pred, cost = (np.asarray(a) for a in thresholded_predict(logits, thresholds.order, thresholds.tau))
  v = logits.shape[-1]
  full_v = v if vocab is None else int(vocab)
  trig = cost < v
  if row_norms is None:
    cost = np.where(trig, cost, full_v)
  else:
    order = np.asarray(thresholds.order)
    rest = order[num_candidates:]
    rest = rest[np.argsort(-np.asarray(row_norms)[rest], kind="stable")]
    fb_pred, fb_cost = (np.asarray(a) for a in pruned_argmax(logits, order[:num_candidates], rest, row_norms,
                                                             query_norms))
    fb_cost = np.where(fb_cost == v + 1, fb_cost + full_v - v, fb_cost)  # visited all: the zero rows as well
    pred = np.where(trig, pred, fb_pred)
    cost = np.where(trig, cost, fb_cost)
  exact = np.asarray(logits).argmax(-1)
  k = float(cost.mean()) if len(cost) else 0.0
  return ThresholdReport(full_v, int(num_candidates), k, 1.0 - k / full_v, float(trig.mean()),
                         float((pred == exact).mean()), float((exact != labels).mean()),
                         float((pred != labels).mean()))
