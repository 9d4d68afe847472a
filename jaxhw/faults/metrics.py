"""Bit-flip vulnerability metrics: RAD, catastrophic bits, erratic parameters, histograms, stratified CIs.

References:
  Prato, Kim, Chen, Hong, "Hessian-aware Training for Enhancing DNNs Resilience to Parameter Corruptions",
    arXiv:2504.01933, 2025.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "relative_accuracy_drop",
    "catastrophic_bits",
    "erratic_params",
    "rad_histogram",
    "HIST_LABELS",
    "counts_per_bit",
    "wilson_interval",
    "stratified_total",
    "stratified_unit_total",
]

CATASTROPHIC = 0.90
ERRATIC = 0.10
#: Bin labels of `rad_histogram`: negative RAD, then 5 % bins up to [95,100].
HIST_LABELS = ["<0"] + [f"[{5 * i},{5 * i + 5})" for i in range(19)] + ["[95,100]"]


def relative_accuracy_drop(acc_clean: float, acc_flip, *, drop: str = "relative") -> np.ndarray:
  """RAD = (acc_clean - acc_flip) / acc_clean (or the absolute drop); negative values kept; NaN acc -> 1.

  Args:
    acc_clean: accuracy of the unflipped model, in (0, 1].
    acc_flip: accuracies after each flip.
    drop: "relative" (default) or "absolute".

  Returns:
    float64 array of drops, one per flip.
  """
  if drop not in ("relative", "absolute"):
    raise ValueError(f"drop={drop!r}; allowed: 'relative', 'absolute'")
  a = np.asarray(acc_flip, np.float64)
  a = np.where(np.isfinite(a), a, 0.0)
  if drop == "absolute":
    return acc_clean - a
  if not acc_clean > 0:
    raise ValueError(f"acc_clean={acc_clean!r}; allowed: > 0 for the relative drop")
  return (acc_clean - a) / acc_clean


def catastrophic_bits(rad, *, threshold: float = CATASTROPHIC) -> int:
  """Number of single-bit flips with RAD >= threshold (the paper's 90-100 % RAD bin)."""
  return int(np.sum(np.asarray(rad) >= threshold))


def erratic_params(rad_by_param, *, threshold: float = ERRATIC) -> int:
  """Number of parameters (rows of a [params, bits] RAD matrix) with any bit's RAD > threshold."""
  r = np.asarray(rad_by_param)
  if r.ndim != 2:
    raise ValueError(f"rad_by_param has shape {r.shape}; allowed: [params, bits]")
  return int(np.sum(np.any(r > threshold, axis=1)))


def rad_histogram(rad, weights=None) -> dict[str, float]:
  """Counts per 5 % RAD bin: '<0', '[0,5)', ..., '[90,95)', '[95,100]' (RAD >= 1 falls in the last bin).

  Args:
    rad: RAD values.
    weights: optional per-flip weights (e.g. N_h / n_h for a stratified sample); counts then estimate the
      population.

  Returns:
    Ordered dict label -> count; counts sum to len(rad) (or sum(weights)).
  """
  r = np.asarray(rad, np.float64).reshape(-1)
  w = np.ones_like(r) if weights is None else np.asarray(weights, np.float64).reshape(-1)
  idx = np.where(r < 0, 0, 1 + np.minimum(np.floor(np.maximum(r, 0) * 20 + 1e-9).astype(np.int64), 19))
  counts = np.bincount(idx, weights=w, minlength=21)
  return {lab: float(c) for lab, c in zip(HIST_LABELS, counts)}


def counts_per_bit(rad, bit, *, threshold: float = CATASTROPHIC, width: int = 32, weights=None) -> list[float]:
  """Vulnerable flips (RAD >= threshold) per bit position 0..width-1."""
  r = np.asarray(rad).reshape(-1)
  b = np.asarray(bit).reshape(-1)
  w = np.ones_like(r, np.float64) if weights is None else np.asarray(weights, np.float64).reshape(-1)
  return np.bincount(b, weights=w * (r >= threshold), minlength=width)[:width].tolist()


def wilson_interval(k: float, n: float, *, z: float = 1.96) -> tuple[float, float]:
  """Wilson score interval for a binomial proportion k/n (valid at k = 0 and k = n)."""
  if n <= 0:
    return (0.0, 1.0)
  p = k / n
  den = 1 + z * z / n
  c = (p + z * z / (2 * n)) / den
  h = z * math.sqrt(max(p * (1 - p) / n + z * z / (4 * n * n), 0.0)) / den
  return (max(0.0, c - h), min(1.0, c + h))


def stratified_total(N_h, n_h, k_h, *, z: float = 1.96) -> dict[str, float]:
  """Stratified estimate of a population count with a normal 95 % CI.

  count = sum_h N_h p_h, var = sum_h N_h^2 p_h (1 - p_h) / n_h * (1 - n_h / N_h) (Cochran's formula). Strata with
  p_h in {0, 1} add no variance here; their own uncertainty is given per stratum by `wilson_interval`.

  Args:
    N_h: stratum sizes.
    n_h: sampled units per stratum (without replacement), 0 < n_h <= N_h.
    k_h: positives among the sampled units.

  Returns:
    {"estimate", "lo", "hi", "se"}.

  References:
    Prato, Kim, Chen, Hong, "Hessian-aware Training for Enhancing DNNs Resilience to Parameter Corruptions",
      arXiv:2504.01933, 2025.
  """
  N = np.asarray(N_h, np.float64)
  n = np.asarray(n_h, np.float64)
  k = np.asarray(k_h, np.float64)
  if np.any(n <= 0) or np.any(n > N):
    raise ValueError("n_h must satisfy 0 < n_h <= N_h for every stratum")
  p = k / n
  fpc = 1 - n / N
  est = float(np.sum(N * p))
  var = float(np.sum(N * N * p * (1 - p) / n * fpc))
  se = math.sqrt(var)
  return {"estimate": est, "lo": max(0.0, est - z * se), "hi": est + z * se, "se": se}


def stratified_unit_total(N_h, values_h, *, z: float = 1.96) -> dict[str, float]:
  """Stratified estimate of a population total from per-unit values, with a normal 95 % CI.

  Units (e.g. parameters) are sampled without replacement within each stratum (e.g. leaf) and each carries a value
  (e.g. its number of catastrophic bits): total = sum_h N_h mean_h, var = sum_h N_h^2 (1 - n_h / N_h) s_h^2 / n_h
  with s_h^2 the sample variance. Counting flips per sampled parameter (a cluster of bits) keeps the correlation
  between the bits of one parameter in the variance, which (leaf, bit) strata sampled through the same
  parameters would ignore (their CIs under-cover).

  Args:
    N_h: stratum sizes (units).
    values_h: per stratum, the values of its n_h sampled units (0 < n_h <= N_h).

  Returns:
    {"estimate", "lo", "hi", "se"}.

  References:
    Cochran, Sampling Techniques (1977), stratified simple random sampling of clusters.
  """
  est, var = 0.0, 0.0
  for N, vals in zip(N_h, values_h):
    v = np.asarray(vals, np.float64).reshape(-1)
    n = len(v)
    if n <= 0 or n > N:
      raise ValueError(f"a stratum has n={n} sampled units of N={N}; allowed: 0 < n <= N")
    est += N * float(v.mean())
    if n > 1:
      var += N * N * (1 - n / N) * float(v.var(ddof=1)) / n
  se = math.sqrt(var)
  return {"estimate": est, "lo": max(0.0, est - z * se), "hi": est + z * se, "se": se}
