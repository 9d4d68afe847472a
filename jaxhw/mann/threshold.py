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

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

RULES = ("max", "quantile")


class Thresholds(NamedTuple):
  """One task's scan: ``order`` [V] (candidates first) and ``tau`` [V] per class (+inf: never triggers)."""

  order: np.ndarray
  tau: np.ndarray


def calibrate(train_logits: np.ndarray, candidates: Sequence[int], *, delta: float = 0.0, rule: str = "max",
              quantile: float = 0.01) -> Thresholds:
  """Learns one task's scan order and thresholds from its training logits.

  Args:
    train_logits: ``[n, V]`` logits of the final (inference-precision) model on the task's training questions.
    candidates: the classes seen as training answers.
    delta: margin added to each threshold.
    rule: ``"max"``: the largest logit of c where the prediction is not c (exact on the training set);
      ``"quantile"``: the `quantile` of c's logits where the prediction is c.
    quantile: the quantile for ``rule="quantile"``.

  Returns:
    `Thresholds`.
  """
  if rule not in RULES:
    raise ValueError(f"rule must be one of {RULES}, got {rule!r}.")
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
      others = z[pred != c, c]
      tau[c] = others.max() + delta if others.size else np.inf
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


def thresholded_predict_loop(logits: np.ndarray, order: np.ndarray, tau: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """The sequential reference of `thresholded_predict` (one question at a time, stopping at the first trigger)."""
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
      preds.append(int(np.argmax(z)))
      costs.append(len(z))
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


def evaluate(logits: np.ndarray, labels: np.ndarray, thresholds: Thresholds, num_candidates: int,
             vocab: int | None = None) -> ThresholdReport:
  """Thresholded vs exact inference on held-out logits of one task.

  Args:
    logits: ``[n, V]`` logits.
    labels: true classes.
    thresholds: the task's calibrated `Thresholds`.
    num_candidates: |A_t| (reported).
    vocab: count costs against this many output rows (e.g. a padded hardware V = 256; default V).
  """
  pred, cost = (np.asarray(a) for a in thresholded_predict(logits, thresholds.order, thresholds.tau))
  v = logits.shape[-1]
  full_v = v if vocab is None else int(vocab)
  trig = cost < v
  cost = np.where(trig, cost, full_v)
  exact = np.asarray(logits).argmax(-1)
  k = float(cost.mean()) if len(cost) else 0.0
  return ThresholdReport(full_v, int(num_candidates), k, 1.0 - k / full_v, float(trig.mean()),
                         float((pred == exact).mean()), float((exact != labels).mean()),
                         float((pred != labels).mean()))
