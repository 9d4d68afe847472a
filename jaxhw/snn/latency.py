"""One latency definition for every coding, with bootstrap intervals over the test images.

The latency of a coding is read from its accuracy curve (the readout after every step, TTFS included): the
first step from which the accuracy stays at or above a target (99% of the ANN's accuracy on the same images),
as :func:`jaxhw.snn.latency_steps`. Intervals come from resampling the images with replacement; the same
resamples (:func:`bootstrap_weights`) are used for every coding and for the ANN, so ratios between codings
are paired. Spikes and synaptic operations are read at the latency step of each resample.

All functions here are host-side (numpy) metrics on the per-image outputs of :func:`jaxhw.snn.simulate`.

References:
  Park et al., "T2FSNN: Deep Spiking Neural Networks with Time-to-first-spike Coding", DAC 2020,
  arXiv:2003.11741 (latency and spikes of T2FSNN against burst coding at equal accuracy).
  Efron and Tibshirani, "An Introduction to the Bootstrap", 1993 (percentile intervals).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["bootstrap_weights", "curve_latencies", "cumulative_at", "interval", "LatencyStats", "latency_stats"]


def bootstrap_weights(n: int, n_boot: int, seed: int = 0) -> np.ndarray:
  """``[n_boot, n]`` resampling counts: row ``b`` says how often each of the ``n`` images is drawn in resample
  ``b`` (each row sums to ``n``). Pass the same weights to every coding to pair them."""
  if n < 1 or n_boot < 1:
    raise ValueError(f"n={n}, n_boot={n_boot} must be >= 1")
  rng = np.random.default_rng(seed)
  idx = rng.integers(0, n, size=(n_boot, n))
  w = np.zeros((n_boot, n), np.float32)
  np.add.at(w, (np.arange(n_boot)[:, None], idx), 1.0)
  return w


def curve_latencies(curves: np.ndarray, targets: np.ndarray) -> np.ndarray:
  """Latency (1-based steps) of each curve: the smallest ``t`` with ``curve[t'-1] >= target`` for every
  ``t' >= t``; ``inf`` if the last step misses the target.

  Args:
    curves: ``[R, T]`` accuracy after every step.
    targets: ``[R]`` target per curve.
  """
  curves = np.asarray(curves, np.float64)
  ok = curves >= np.asarray(targets, np.float64)[:, None] - 1e-12
  t = curves.shape[1]
  # index of the last step that misses the target (-1 if none)
  last_bad = np.where(~ok, np.arange(t)[None], -1).max(axis=1)
  lat = (last_bad + 2).astype(np.float64)
  lat[~ok[:, -1]] = np.inf
  return lat


def cumulative_at(cum: np.ndarray, steps: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
  """Mean over images of a per-image cumulative count at a step per resample.

  Args:
    cum: ``[T, n]`` cumulative count per image after every step.
    steps: ``[R]`` 1-based steps (``inf`` reads as NaN).
    weights: ``[R, n]`` resampling counts (None: one plain mean per step).
  """
  cum = np.asarray(cum, np.float64)
  steps = np.asarray(steps, np.float64)
  finite = np.isfinite(steps)
  rows = cum[np.where(finite, steps, 1).astype(np.int64) - 1]  # [R, n]
  if weights is None:
    val = rows.mean(axis=1)
  else:
    val = np.sum(rows * weights, axis=1) / np.sum(weights, axis=1)
  return np.where(finite, val, np.nan)


def interval(samples: np.ndarray, level: float = 0.95) -> tuple[float | None, float | None]:
  """Percentile interval of bootstrap samples; an ``inf`` / NaN end (the target missed in some resamples) is
  returned as None."""
  s = np.asarray(samples, np.float64)
  s = np.where(np.isnan(s), np.inf, s)
  lo = np.quantile(s, (1 - level) / 2, method="lower")
  hi = np.quantile(s, (1 + level) / 2, method="higher")
  return (float(lo) if np.isfinite(lo) else None, float(hi) if np.isfinite(hi) else None)


class LatencyStats(NamedTuple):
  """Latency of one coding on ``n`` images and its bootstrap resamples.

  Attributes:
    latency: point estimate (steps; ``inf`` if the target is missed at the last step).
    accuracy_at_latency: accuracy at that step (NaN if missed).
    spikes: mean hidden-layer events per image up to the latency step.
    synops: mean synaptic operations per image up to the latency step.
    boot_latency: ``[R]`` latency per resample.
    boot_spikes: ``[R]`` spikes per image at each resample's latency (NaN where missed).
    boot_synops: ``[R]`` synaptic operations likewise.
    curve: ``[T]`` accuracy curve on all images.
    target: the target on all images.
  """

  latency: float
  accuracy_at_latency: float
  spikes: float
  synops: float
  boot_latency: np.ndarray
  boot_spikes: np.ndarray
  boot_synops: np.ndarray
  curve: np.ndarray
  target: float


def latency_stats(correct: np.ndarray, ann_correct: np.ndarray, cum_spikes: np.ndarray, cum_synops: np.ndarray,
                  weights: np.ndarray, *, fraction: float = 0.99) -> LatencyStats:
  """Latency, spikes and synaptic operations at the latency, with bootstrap resamples.

  Args:
    correct: ``[T, n]`` whether the readout after each step classifies each image correctly.
    ann_correct: ``[n]`` whether the ANN classifies each image correctly (the target is ``fraction`` times the
      ANN's accuracy on the same (resampled) images).
    cum_spikes: ``[T, n]`` cumulative hidden-layer events per image.
    cum_synops: ``[T, n]`` cumulative synaptic operations per image.
    weights: ``[R, n]`` from :func:`bootstrap_weights`.
    fraction: the target as a fraction of the ANN's accuracy.
  """
  correct = np.asarray(correct, np.float32)
  ann = np.asarray(ann_correct, np.float32)
  n = correct.shape[1]
  curve = correct.mean(axis=1)
  target = fraction * float(ann.mean())
  lat = float(curve_latencies(curve[None], np.asarray([target]))[0])
  w = np.asarray(weights, np.float32)
  boot_curves = (w @ correct.T) / n  # [R, T]
  boot_targets = fraction * (w @ ann) / n
  boot_lat = curve_latencies(boot_curves, boot_targets)
  acc_at = float(curve[int(lat) - 1]) if np.isfinite(lat) else float("nan")
  return LatencyStats(
      latency=lat, accuracy_at_latency=acc_at,
      spikes=float(cumulative_at(cum_spikes, np.asarray([lat]))[0]),
      synops=float(cumulative_at(cum_synops, np.asarray([lat]))[0]),
      boot_latency=boot_lat, boot_spikes=cumulative_at(cum_spikes, boot_lat, w),
      boot_synops=cumulative_at(cum_synops, boot_lat, w), curve=curve, target=target)
