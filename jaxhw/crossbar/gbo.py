"""GBO: gradient-based optimisation of per-layer input pulse counts under an average budget.

Per crossbar layer l a pulse count T_l is chosen from a static tuple of candidates. The
default relaxation is straight-through Gumbel-softmax over the candidates: the forward pass
always uses one feasible configuration (layer noise std = sum_k h_lk std(T_k) on one shared
noise draw), the backward pass the softmax. The budget E(T) = sum_l T_l R_l <= B_E =
T_bar E(1) is enforced by dual ascent on lambda during search, then exactly by a greedy
discretise-and-repair step. Baselines: uniform T and the closed-form allocation
T_l* = B_E sqrt(S_l / R_l) / sum_m sqrt(S_m R_m) from an empirical-Fisher sensitivity S_l.

The model enters only through `loss_fn(stds, batch, key) -> scalar`, the task loss when binary
layer l adds noise of std `stds[l]` to its output (see `jaxhw.models.binary_net`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, PRNGKeyArray

RELAXATIONS = ("gumbel", "continuous")
BUDGET_MODES = ("hard", "soft")
DEFAULT_CANDIDATES = (1, 2, 3, 4, 6, 8, 12, 16)


@dataclass(frozen=True)
class GBOConfig:
  """Search settings.

  Attributes:
    candidates: the static tuple of pulse counts (default (1, 2, 3, 4, 6, 8, 12, 16) [R]).
    relaxation: "gumbel" (A, default: straight-through Gumbel-softmax) or "continuous"
      (B: T = T_min + softplus(theta), std(round_ste(T))).
    epochs: passes over the search data.
    batch_size: search batch size.
    lr: Adam learning rate on alpha / theta (0.05).
    tau_start, tau_end: Gumbel temperature, annealed geometrically (1.0 -> 0.1).
    budget_mode: "hard" (dual ascent on lambda, default) or "soft" (fixed lambda).
    dual_lr: lambda <- max(0, lambda + dual_lr (E_p / B_E - 1)) (0.01).
    lam_init: initial lambda.
    soft_lambda: lambda in soft mode.
    seed: data order and Gumbel / noise keys derive from the key passed to `gbo`; seed only
      shuffles the batches.

  References:
    GBO spec, section 3.
  """

  candidates: tuple[int, ...] = DEFAULT_CANDIDATES
  relaxation: str = "gumbel"
  epochs: int = 3
  batch_size: int = 100
  lr: float = 0.05
  tau_start: float = 1.0
  tau_end: float = 0.1
  budget_mode: str = "hard"
  dual_lr: float = 0.01
  lam_init: float = 0.0
  soft_lambda: float = 1.0
  seed: int = 0

  def __post_init__(self):
    c = self.candidates
    if not c or any((not isinstance(t, (int, np.integer))) or t < 1 for t in c) or list(c) != sorted(set(c)):
      raise ValueError(f"candidates must be strictly increasing integers >= 1, got {c!r}")
    if self.relaxation not in RELAXATIONS:
      raise ValueError(f"relaxation must be one of {RELAXATIONS}, got {self.relaxation!r}")
    if self.budget_mode not in BUDGET_MODES:
      raise ValueError(f"budget_mode must be one of {BUDGET_MODES}, got {self.budget_mode!r}")
    if not (self.tau_start > 0 and self.tau_end > 0):
      raise ValueError(f"tau_start and tau_end must be > 0, got {self.tau_start}, {self.tau_end}")
    if self.epochs < 1 or self.batch_size < 1:
      raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs}, {self.batch_size}")


class GBOResult(NamedTuple):
  """Outcome of a search.

  Attributes:
    pulses: the final per-layer pulse counts (E <= B_E): the repaired search result, or, when a
      `validate_fn` is given, whichever of the repaired search result and the uniform
      allocation scores lower on it.
    raw_pulses: the discretised pulse counts before repair.
    logits: final alpha (L, K) for gumbel, or theta (L,) for continuous.
    sensitivity: S_l used by the repair (given, or the Stein estimate collected in search).
    energy: E(pulses).
    budget: B_E.
    history: per-step dicts (loss, task, lambda, tau, expected cost ratio).
    search_pulses: the repaired search result (before any validation fallback).
    validation: {"search": score, "uniform": score} from `validate_fn` (empty without one).
  """

  pulses: tuple[int, ...]
  raw_pulses: tuple[int, ...]
  logits: np.ndarray
  sensitivity: np.ndarray
  energy: float
  budget: float
  history: list
  search_pulses: tuple[int, ...] = ()
  validation: dict = {}


def _check_common(reads, n_rows, mean_pulses, sigma):
  reads = np.asarray(reads, np.float64)
  n_rows = np.asarray(n_rows, np.float64)
  if reads.ndim != 1 or reads.shape != n_rows.shape or reads.size == 0:
    raise ValueError(f"reads and n_rows must be 1-D with one entry per layer, got {reads.shape}, {n_rows.shape}")
  if np.any(reads <= 0) or np.any(n_rows < 1):
    raise ValueError(f"reads must be > 0 and n_rows >= 1, got {reads.tolist()}, {n_rows.tolist()}")
  if not mean_pulses >= 1:
    raise ValueError(f"mean_pulses must be >= 1, got {mean_pulses!r}")
  if not sigma >= 0:
    raise ValueError(f"sigma must be >= 0 (a noise std), got {sigma!r}")
  return reads, n_rows


def uniform_allocation(mean_pulses: int, num_layers: int) -> tuple[int, ...]:
  """T_l = T_bar for every layer (meets B_E exactly).

  References:
    GBO spec, section 3 ("Baselines", 1).
  """
  if not isinstance(mean_pulses, (int, np.integer)) or mean_pulses < 1:
    raise ValueError(f"mean_pulses must be an integer >= 1, got {mean_pulses!r}")
  return (int(mean_pulses),) * num_layers


def gumbel_straight_through(alpha: Float[Array, "L K"], key: PRNGKeyArray, tau) -> tuple[Array, Array]:
  """h = onehot(argmax p) + p - stop_gradient(p), p = softmax((alpha + g) / tau).

  Returns:
    (h, p), both (L, K); h is exactly one-hot in the forward pass.

  References:
    GBO spec, section 3 ("Relaxation A").
  """
  g = jax.random.gumbel(key, alpha.shape, jnp.float32)
  p = jax.nn.softmax((alpha + g) / tau, axis=-1)
  hard = jax.nn.one_hot(jnp.argmax(p, -1), alpha.shape[-1], dtype=p.dtype)
  return hard + p - jax.lax.stop_gradient(p), p


def round_ste(x: Array) -> Array:
  """round(x) forward, identity gradient."""
  return x + jax.lax.stop_gradient(jnp.round(x) - x)


def _c_table(candidates, c_table, num_layers):
  if c_table is None:
    return np.tile(1.0 / np.asarray(candidates, np.float64), (num_layers, 1))
  c = np.asarray(c_table, np.float64)
  if c.shape != (num_layers, len(candidates)):
    raise ValueError(f"c_table must have shape (layers, candidates) = {(num_layers, len(candidates))}, got {c.shape}")
  return c


def repair(pulses: Sequence[int], sensitivity: Sequence[float], reads: Sequence[float], budget_e: float,
           candidates: Sequence[int] = DEFAULT_CANDIDATES, c_table=None) -> tuple[int, ...]:
  """Greedy repair: lower layers until E <= B_E, then raise layers while the budget allows.

  Lowering picks the layer with the smallest S_l dc / dE (proxy loss increase per unit of
  cost saved), except that when single steps exist that alone restore the budget, the one
  with the smallest proxy loss increase S_l dc among them is taken (so a small excess is not
  fixed by a large cut); raising picks the largest S_l |dc| / dE that still fits.

  Args:
    pulses: per-layer T, each in `candidates`.
    sensitivity: S_l >= 0.
    reads: R_l.
    budget_e: B_E.
    candidates: allowed T (increasing).
    c_table: (L, K) noise factor per layer and candidate; default 1/T.

  Returns:
    The repaired pulses, with E <= B_E (ValueError if even all-minimum exceeds it).

  References:
    GBO spec, section 3 ("Discretise and repair").
  """
  cand = list(candidates)
  n = len(pulses)
  c = _c_table(cand, c_table, n)
  s = np.maximum(np.asarray(sensitivity, np.float64), 0.0)
  r = np.asarray(reads, np.float64)
  idx = [cand.index(int(t)) for t in pulses]
  energy = lambda: float(sum(cand[i] * ri for i, ri in zip(idx, r)))
  if sum(cand[0] * ri for ri in r) > budget_e * (1 + 1e-9):
    raise ValueError(f"budget_e={budget_e} is below the minimum energy {sum(cand[0] * ri for ri in r)}")
  while energy() > budget_e * (1 + 1e-9):
    excess = energy() - budget_e * (1 + 1e-9)
    best, best_score, best_fix, best_fix_loss = None, np.inf, None, np.inf
    for l in range(n):
      if idx[l] == 0:
        continue
      k0, k1 = idx[l], idx[l] - 1
      d_loss = s[l] * (c[l, k1] - c[l, k0])
      d_e = r[l] * (cand[k0] - cand[k1])
      if d_loss / d_e < best_score:
        best, best_score = l, d_loss / d_e
      if d_e >= excess and d_loss < best_fix_loss:  # one step that alone restores the budget
        best_fix, best_fix_loss = l, d_loss
    idx[best_fix if best_fix is not None else best] -= 1
  while True:
    best, best_score = None, -np.inf
    e = energy()
    for l in range(n):
      if idx[l] == len(cand) - 1:
        continue
      k0, k1 = idx[l], idx[l] + 1
      de = r[l] * (cand[k1] - cand[k0])
      if e + de > budget_e * (1 + 1e-9):
        continue
      score = s[l] * (c[l, k0] - c[l, k1]) / de
      if score > best_score:
        best, best_score = l, score
    if best is None:
      break
    idx[best] += 1
  return tuple(cand[i] for i in idx)


def _nearest_log2(t, candidates):
  lc = np.log2(np.asarray(candidates, np.float64))
  return tuple(int(candidates[int(np.argmin(np.abs(lc - np.log2(max(x, 1e-9)))))]) for x in np.atleast_1d(t))


def closed_form_allocation(sensitivity: Sequence[float], reads: Sequence[float], budget_e: float,
                           candidates: Sequence[int] = DEFAULT_CANDIDATES, c_table=None) -> tuple[int, ...]:
  """T_l* = B_E sqrt(S_l / R_l) / sum_m sqrt(S_m R_m), rounded in log2, then repaired.

  Minimises sum_l S_l sigma^2 / T_l subject to sum_l R_l T_l = B_E (Lagrange). With equal
  S_l / R_l across layers it returns the uniform allocation.

  Args:
    sensitivity: S_l > 0 (e.g. from `fisher_sensitivity`).
    reads: R_l.
    budget_e: B_E.
    candidates: allowed T.
    c_table: optional (L, K) noise factors for the repair.

  Returns:
    Per-layer pulse counts with E <= B_E.

  References:
    GBO spec, section 3 ("Baselines", 2).
  """
  s = np.maximum(np.asarray(sensitivity, np.float64), 1e-30)
  r = np.asarray(reads, np.float64)
  if s.shape != r.shape:
    raise ValueError(f"sensitivity and reads must have the same shape, got {s.shape}, {r.shape}")
  t = budget_e * np.sqrt(s / r) / np.sum(np.sqrt(s * r))
  return repair(_nearest_log2(t, candidates), s, r, budget_e, candidates, c_table)


def fisher_sensitivity(grad_fn: Callable, batches: Sequence, key: PRNGKeyArray,
                       n_rows: Sequence[int]) -> np.ndarray:
  """S_l = n_r,l E ||dL/dy_hat_l||^2 per sample (empirical-Fisher proxy of the Hessian trace).

  Args:
    grad_fn: `grad_fn(batch, key) -> tuple of per-layer arrays dl_i/dy_hat_l` (per-sample
      losses summed, so each row is one sample's gradient), at the target sigma and uniform T.
    batches: e.g. 8 batches of 128.
    key: noise key (folded per batch).
    n_rows: n_r,l.

  Returns:
    S, shape (L,).

  References:
    GBO spec, section 3 ("Baselines", 2).
  """
  acc, n = None, 0
  for i, batch in enumerate(batches):
    gs = grad_fn(batch, jax.random.fold_in(key, i))
    sq = np.array([float(jnp.sum(jnp.square(g))) for g in gs])
    acc = sq if acc is None else acc + sq
    n += int(gs[0].shape[0])
  return np.asarray(n_rows, np.float64) * acc / max(n, 1)


def _batches(data, batch_size, epochs, seed):
  n = len(data[0])
  rng = np.random.default_rng(seed)
  for _ in range(epochs):
    perm = rng.permutation(n)
    for i in range(0, n - batch_size + 1, batch_size):
      sel = perm[i:i + batch_size]
      yield tuple(np.asarray(a)[sel] for a in data)


@functools.lru_cache(maxsize=32)
def _make_step(loss_fn: Callable, relaxation: str, budget_mode: str, lr: float, c_cont: Callable):
  """One jitted search step per (loss_fn, static settings); every array and scalar is an argument, so
  repeated searches (other sigma, budget or data) reuse the compilation."""
  tx = optax.adam(lr)

  def relax(theta, k_g, tau, std_table, sigma, n_rows, reads, cand, t_min):
    if relaxation == "gumbel":
      h, _ = gumbel_straight_through(theta, k_g, tau)
      stds = jnp.sum(h * std_table, -1)
      e_p = jnp.sum(jax.nn.softmax(theta, -1) @ cand * reads)       # expected cost of the sample
    else:
      t = t_min + jax.nn.softplus(theta)
      stds = sigma * jnp.sqrt(n_rows * c_cont(round_ste(t)))
      e_p = jnp.sum(t * reads)
    return stds, e_p

  @jax.jit
  def step(theta, opt_state, lam, batch, k, tau, std_table, sigma, n_rows, reads, cand, t_min, budget_e, dual_lr,
           model):
    k_g, k_n = jax.random.split(k)
    (stds, e_p), vjp_fn = jax.vjp(lambda th: relax(th, k_g, tau, std_table, sigma, n_rows, reads, cand, t_min),
                                  theta)
    args = () if model is None else (model,)
    task, g_std = jax.value_and_grad(loss_fn)(stds, batch, k_n, *args)
    ratio = e_p / budget_e - 1.0
    g_theta_task, = vjp_fn((g_std, jnp.zeros_like(e_p)))
    g_theta_cost, = vjp_fn((jnp.zeros_like(stds), jnp.ones_like(e_p)))
    grad = g_theta_task + lam / budget_e * g_theta_cost
    updates, opt_state = tx.update(grad, opt_state, theta)
    theta = optax.apply_updates(theta, updates)
    if budget_mode == "hard":
      lam = jnp.maximum(0.0, lam + dual_lr * ratio)
    stein = g_std / jnp.maximum(stds, 1e-12)
    return theta, opt_state, lam, task, ratio, stein

  return tx, step


def _inverse(t):
  return 1.0 / t


def gbo(loss_fn: Callable, data: tuple, *, reads: Sequence[float], n_rows: Sequence[int], mean_pulses: float,
        sigma: float, key: PRNGKeyArray, config: GBOConfig = GBOConfig(), c_table=None,
        c_continuous: Callable | None = None, sensitivity: Sequence[float] | None = None,
        validate_fn: Callable[[tuple[int, ...]], float] | None = None, model=None) -> GBOResult:
  """Searches per-layer pulse counts by gradient descent under the average pulse budget.

  Args:
    loss_fn: `loss_fn(stds, batch, key) -> scalar` task loss (mean cross-entropy) when binary
      layer l adds Gaussian noise of std stds[l] (a traced (L,) vector) to its output; the
      weights and BN are frozen inside it (inference mode). Keep the same function object
      across calls: the compiled search step is cached on it. With `model` given it is called
      as `loss_fn(stds, batch, key, model)`.
    data: tuple of arrays (e.g. (x, y)) the search batches are drawn from.
    reads: R_l = n_r n_c P_l array reads per pulse (cost).
    n_rows: n_r,l row tiles (noise).
    mean_pulses: T_bar; B_E = T_bar sum_l R_l.
    sigma: the target read-noise std (spec: sigma_ref).
    key: key for Gumbel noise and read noise (separate streams).
    config: GBOConfig.
    c_table: (L, K) noise factor c(T_k) per layer; default 1/T (binary layers).
    c_continuous: c(T) for relaxation B; default 1/T.
    sensitivity: S_l for the repair; default the Stein estimate n_r E[dL/dstd / std]
      accumulated during the search.
    validate_fn: optional held-out score, lower is better (e.g. the error rate on a validation
      split read with noise at `sigma`, fixed draws). The repaired search result is kept unless
      the uniform allocation T_bar (when it is an integer candidate) scores strictly lower.
    model: optional pytree (e.g. the frozen network) passed to `loss_fn` as a jit argument
      rather than baked into the compiled step as constants.

  Returns:
    GBOResult (pulses satisfy E <= B_E).

  References:
    GBO spec, section 3.
  """
  reads_np, n_rows_np = _check_common(reads, n_rows, mean_pulses, sigma)
  cand = np.asarray(config.candidates, np.float64)
  num_layers = len(reads_np)
  c_np = _c_table(config.candidates, c_table, num_layers)
  budget_e = float(mean_pulses * reads_np.sum())
  sigma = float(sigma)
  std_table = jnp.asarray(sigma * np.sqrt(n_rows_np[:, None] * c_np), jnp.float32)     # (L, K)
  t_min = float(cand[0])
  n_steps = config.epochs * (len(data[0]) // config.batch_size)
  if n_steps < 1:
    raise ValueError(f"data has {len(data[0])} examples, fewer than batch_size={config.batch_size}")

  if config.relaxation == "gumbel":
    logits = jnp.zeros((num_layers, len(cand)), jnp.float32)
  else:
    x0 = max(float(mean_pulses) - t_min, 1e-3)
    logits = jnp.full((num_layers,), float(np.log(np.expm1(x0))), jnp.float32)

  tx, step = _make_step(loss_fn, config.relaxation, config.budget_mode, float(config.lr),
                        c_continuous or _inverse)
  consts = (std_table, jnp.float32(sigma), jnp.asarray(n_rows_np, jnp.float32), jnp.asarray(reads_np, jnp.float32),
            jnp.asarray(cand, jnp.float32), jnp.float32(t_min), jnp.float32(budget_e), jnp.float32(config.dual_lr),
            model)
  opt_state = tx.init(logits)
  lam = jnp.asarray(config.lam_init if config.budget_mode == "hard" else config.soft_lambda, jnp.float32)
  history, stein_acc = [], np.zeros(num_layers)
  for i, batch in enumerate(_batches(data, config.batch_size, config.epochs, config.seed)):
    tau = config.tau_start * (config.tau_end / config.tau_start) ** (i / max(n_steps - 1, 1))
    k = jax.random.fold_in(key, i)
    logits, opt_state, lam, task, ratio, stein = step(logits, opt_state, lam, batch, k, jnp.float32(tau), *consts)
    stein_acc += np.asarray(stein)
    history.append({"step": i, "task_loss": float(task), "lambda": float(lam), "tau": tau,
                    "cost_ratio": float(ratio) + 1.0})
  s_est = n_rows_np * stein_acc / max(len(history), 1)
  s = np.asarray(sensitivity, np.float64) if sensitivity is not None else np.maximum(s_est, 1e-12)
  logits_np = np.asarray(logits)
  if config.relaxation == "gumbel":
    raw = tuple(int(config.candidates[j]) for j in np.argmax(logits_np, -1))
  else:
    raw = _nearest_log2(t_min + np.logaddexp(0.0, logits_np), config.candidates)
  searched = repair(raw, s, reads_np, budget_e, config.candidates, c_np)
  pulses, scores = searched, {}
  uniform = (int(mean_pulses),) * num_layers
  if validate_fn is not None and float(mean_pulses) == int(mean_pulses) and int(mean_pulses) in config.candidates:
    scores = {"search": float(validate_fn(searched)), "uniform": float(validate_fn(uniform))}
    if scores["uniform"] < scores["search"]:
      pulses = uniform
  energy = float(np.sum(np.asarray(pulses) * reads_np))
  return GBOResult(pulses, raw, logits_np, s, energy, budget_e, history, searched, scores)
