"""GBO: gradient-based optimisation of per-layer input pulse counts under an average budget.

Per crossbar layer l a pulse count T_l is chosen from a static tuple of candidates. The
default relaxation is straight-through Gumbel-softmax over the candidates: the forward pass
always uses one feasible configuration (layer noise std = sum_k h_lk std(T_k) on one shared
noise draw), the backward pass the softmax. The budget E(T) = sum_l T_l R_l <= B_E =
T_bar E(1) is an equality the search meets itself: dual ascent on a multiplier of either sign
(Gumbel), or a parametrisation on the budget simplex (continuous T). A greedy repair then only
fixes what discretisation leaves (an excess, or unspent whole steps). Baselines: uniform T and
the closed-form allocation T_l* = B_E sqrt(S_l / R_l) / sum_m sqrt(S_m R_m) from an empirical-Fisher sensitivity S_l.

The search runs in `jaxhw.train.train`: its parameters are the allocation logits and the
multiplier lambda, updated by one `optax.multi_transform` (Adam descent on the logits, signed
gradient ascent on lambda); the Stein sensitivity it accumulates is carried as model state.
The model enters only through `loss_fn(stds, batch, key) -> scalar`, the task loss when crossbar
layer l adds noise of std `stds[l]` to its output; `noise_objectives` builds it for any Flax
model from its apply function and the crossbar layers' paths.

References:
  Kim et al., "Gradient-based Bit Encoding Optimization for Noise-Robust Binary Memristive Crossbar",
  DATE 2022, arXiv:2201.01479.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, PRNGKeyArray

from jaxhw.crossbar.read_noise import PathKey, output_noise, output_shapes, zeros_like_outputs
from jaxhw.effects import attach
from jaxhw.train import TrainConfig, train

RELAXATIONS = ("gumbel", "continuous")
BUDGET_MODES = ("equality", "hard", "soft")
#: Pulse counts GBO chooses among per crossbar layer by default ([R]: reconstructed, the paper gives no list).
DEFAULT_CANDIDATES = (1, 2, 3, 4, 6, 8, 12, 16)


@dataclass(frozen=True)
class GBOConfig:
  """Search settings.

  Attributes:
    candidates: the static tuple of pulse counts (default (1, 2, 3, 4, 6, 8, 12, 16) [R]).
    relaxation: "gumbel" (A, default: straight-through Gumbel-softmax) or "continuous"
      (B on the budget simplex: T_l = T_min + (B_E - T_min sum R) softmax(theta)_l / R_l, so
      sum_l R_l T_l = B_E for every theta; the forward pass uses std(round_ste(T))).
    epochs: passes over the search data.
    batch_size: search batch size.
    lr: Adam learning rate on alpha / theta (0.05).
    tau_start, tau_end: Gumbel temperature, annealed geometrically (1.0 -> 0.1).
    budget_mode: "equality" (default: E_p = B_E, dual ascent on a multiplier of either sign,
      lambda <- lambda + dual_lr (E_p / B_E - 1)), "hard" (the spec's inequality: lambda projected
      on >= 0) or "soft" (fixed lambda). The continuous relaxation lives on the budget simplex and
      needs no multiplier.
    dual_lr: the multiplier's step.
    lam_init: initial lambda.
    soft_lambda: lambda in soft mode.
    seed: data order and Gumbel / noise keys derive from the key passed to `gbo`; seed only
      shuffles the batches.

  References:
    Kim et al., "Gradient-based Bit Encoding Optimization for Noise-Robust Binary Memristive Crossbar",
    DATE 2022, arXiv:2201.01479.
  """

  candidates: tuple[int, ...] = DEFAULT_CANDIDATES
  relaxation: str = "gumbel"
  epochs: int = 3
  batch_size: int = 100
  lr: float = 0.05
  tau_start: float = 1.0
  tau_end: float = 0.1
  budget_mode: str = "equality"
  dual_lr: float = 0.1
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
    Kim et al., "Gradient-based Bit Encoding Optimization for Noise-Robust Binary Memristive Crossbar",
    DATE 2022, arXiv:2201.01479.
  """
  if not isinstance(mean_pulses, (int, np.integer)) or mean_pulses < 1:
    raise ValueError(f"mean_pulses must be an integer >= 1, got {mean_pulses!r}")
  return (int(mean_pulses),) * num_layers


def gumbel_straight_through(alpha: Float[Array, "L K"], key: PRNGKeyArray, tau) -> tuple[Array, Array]:
  """h = onehot(argmax p) + p - stop_gradient(p), p = softmax((alpha + g) / tau).

  Returns:
    (h, p), both (L, K); h is exactly one-hot in the forward pass.

  References:
    Kim et al., "Gradient-based Bit Encoding Optimization for Noise-Robust Binary Memristive Crossbar",
    DATE 2022, arXiv:2201.01479.
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
    Kim et al., "Gradient-based Bit Encoding Optimization for Noise-Robust Binary Memristive Crossbar",
    DATE 2022, arXiv:2201.01479.
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
                           candidates: Sequence[int] = DEFAULT_CANDIDATES, c_table=None, *,
                           discrete: bool = True) -> tuple[int, ...] | np.ndarray:
  """T_l* = B_E sqrt(S_l / R_l) / sum_m sqrt(S_m R_m), rounded in log2, then repaired.

  Minimises sum_l S_l sigma^2 / T_l subject to sum_l R_l T_l = B_E (Lagrange). With equal
  S_l / R_l across layers it returns the uniform allocation.

  Args:
    sensitivity: S_l > 0 (e.g. from `fisher_sensitivity`).
    reads: R_l.
    budget_e: B_E.
    candidates: allowed T.
    c_table: optional (L, K) noise factors for the repair.
    discrete: False returns the real-valued Lagrange solution T_l* itself (before the log2 rounding and the
      repair; sum_l R_l T_l* = B_E), e.g. to check it.

  Returns:
    Per-layer pulse counts with E <= B_E (a float64 array of T_l* when `discrete` is False).

  References:
    Kim et al., "Gradient-based Bit Encoding Optimization for Noise-Robust Binary Memristive Crossbar",
    DATE 2022, arXiv:2201.01479.
  """
  s = np.maximum(np.asarray(sensitivity, np.float64), 1e-30)
  r = np.asarray(reads, np.float64)
  if s.shape != r.shape:
    raise ValueError(f"sensitivity and reads must have the same shape, got {s.shape}, {r.shape}")
  t = budget_e * np.sqrt(s / r) / np.sum(np.sqrt(s * r))
  if not discrete:
    return t
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
    Kim et al., "Gradient-based Bit Encoding Optimization for Noise-Robust Binary Memristive Crossbar",
    DATE 2022, arXiv:2201.01479.
  """
  acc, n = None, 0
  for i, batch in enumerate(batches):
    gs = grad_fn(batch, jax.random.fold_in(key, i))
    sq = np.array([float(jnp.sum(jnp.square(g))) for g in gs])
    acc = sq if acc is None else acc + sq
    n += int(gs[0].shape[0])
  return np.asarray(n_rows, np.float64) * acc / max(n, 1)


def _inverse(t):
  return 1.0 / t


@functools.lru_cache(maxsize=32)
def _search_tx(config: GBOConfig) -> optax.GradientTransformation:
  """Adam descent on the allocation logits; gradient ascent on the multiplier: signed for the equality budget
  (lambda <- lambda + dual_lr (E_p / B_E - 1)), projected on lambda >= 0 for the inequality budget, fixed for the
  soft budget and for the simplex parametrisation (which meets the budget by construction). Cached per config, so
  every search with one config hands `jaxhw.train` the same optimizer object (one compilation)."""
  if config.relaxation == "continuous" or config.budget_mode == "soft":
    dual = optax.set_to_zero()
  elif config.budget_mode == "hard":
    dual = optax.chain(optax.scale(config.dual_lr), optax.keep_params_nonnegative())
  else:
    dual = optax.scale(config.dual_lr)
  return optax.multi_transform({"alpha": optax.adam(config.lr), "lam": dual}, {"alpha": "alpha", "lam": "lam"})


@functools.lru_cache(maxsize=32)
def _search_lagrangian(loss_fn: Callable, config: GBOConfig, with_model: bool, c_cont: Callable) -> Callable:
  """The search's loss for `jaxhw.train`, one function object per (loss_fn, config): the per-search constants
  (noise table, costs, budget, key, number of steps, the frozen model) travel in the model state, so repeated
  searches reuse one compiled step."""
  t_min = float(config.candidates[0])

  def relax(theta, const, k_g, tau):
    if config.relaxation == "gumbel":
      h, _ = gumbel_straight_through(theta, k_g, tau)
      stds = jnp.sum(h * const["std_table"], -1)
      # expected cost under the sharpened distribution softmax(alpha / tau): as tau anneals it tends to the cost
      # of the mode argmax(alpha), the allocation the search returns
      e_p = jnp.sum(jax.nn.softmax(theta / tau, -1) @ const["cand"] * const["reads"])
      return stds, e_p
    # simplex: T_l = T_min + (B_E - T_min sum R) w_l / R_l, w = softmax(theta), so sum_l R_l T_l = B_E exactly
    w = jax.nn.softmax(theta)
    t = t_min + (const["budget"] - t_min * jnp.sum(const["reads"])) * w / const["reads"]
    stds = jnp.sqrt(const["var_rows"] * c_cont(round_ste(t)))
    return stds, jnp.sum(t * const["reads"])

  def lagrangian(params, state, batch, step_key, step):
    """L = CE(noise at stds(alpha)) + lambda (E_p / B_E - 1): descended in alpha, ascended in lambda (its
    gradient is the budget violation). The task term enters through a surrogate with the value of the task
    loss and the gradient g_std . dstds/dalpha, so the network is differentiated once, with respect to the
    stds, whose gradient also feeds the Stein sensitivity carried in `state`."""
    del step_key  # the search draws from its own key stream
    const = state["const"]
    key = jax.random.wrap_key_data(const["key"])
    k_g, k_n = jax.random.split(jax.random.fold_in(key, step))
    frac = step.astype(jnp.float32) / jnp.maximum(const["n_steps"] - 1.0, 1.0)
    tau = config.tau_start * (config.tau_end / config.tau_start) ** frac
    stds, e_p = relax(params["alpha"], const, k_g, tau)
    args = (state["model"],) if with_model else ()
    task, g_std = jax.value_and_grad(loss_fn)(jax.lax.stop_gradient(stds), batch, k_n, *args)
    ratio = e_p / const["budget"] - 1.0
    lam = params["lam"]
    surrogate = task + jnp.sum(g_std * (stds - jax.lax.stop_gradient(stds)))
    loss = surrogate + lam * ratio
    if config.relaxation == "continuous" or config.budget_mode == "soft":
      lam_next = lam
    elif config.budget_mode == "hard":
      lam_next = jnp.maximum(0.0, lam + config.dual_lr * ratio)
    else:
      lam_next = lam + config.dual_lr * ratio
    stein = state["stein"] + g_std / jnp.maximum(jax.lax.stop_gradient(stds), 1e-12)
    aux = {"task_loss": task, "lambda": jax.lax.stop_gradient(lam_next), "tau": tau,
           "cost_ratio": jax.lax.stop_gradient(ratio) + 1.0}
    return loss, (aux, {**state, "stein": jax.lax.stop_gradient(stein)})

  return lagrangian


def gbo(loss_fn: Callable, data: tuple, *, reads: Sequence[float], n_rows: Sequence[int], mean_pulses: float,
        sigma: float, key: PRNGKeyArray, config: GBOConfig = GBOConfig(), c_table=None,
        c_continuous: Callable | None = None, sensitivity: Sequence[float] | None = None,
        validate_fn: Callable[[tuple[int, ...]], float] | None = None, model=None,
        workdir: str | Path | None = None) -> GBOResult:
  """Searches per-layer pulse counts by gradient descent under the energy budget.

  The default search (straight-through Gumbel-softmax, ``budget_mode="equality"``) treats the budget as an
  equality, E_p = B_E, with a multiplier of either sign: an allocation that leaves budget unspent is pushed to
  spend it, one that overspends to save. The expected cost is taken under softmax(alpha / tau), which tends to
  the cost of the returned mode argmax(alpha) as tau anneals. The continuous relaxation parametrises T on the
  budget simplex (sum_l R_l T_l = B_E for every theta). The raw allocation is argmax(alpha) (or T rounded in
  log2); the repair only acts when it exceeds the budget or leaves a whole candidate step unspent.

  Repeated calls with the same `loss_fn` object and `config` compile the search step once.

  Args:
    loss_fn: `loss_fn(stds, batch, key) -> scalar` task loss (mean cross-entropy) when binary
      layer l adds Gaussian noise of std stds[l] (a traced (L,) vector) to its output; the
      weights and BN are frozen inside it (inference mode), e.g. from `noise_objectives`. With
      `model` given it is called as `loss_fn(stds, batch, key, model)`.
    data: tuple of arrays (e.g. (x, y)) the search batches are drawn from.
    reads: R_l = n_r n_c P_l array reads per pulse (cost).
    n_rows: n_r,l row tiles (noise).
    mean_pulses: T_bar; B_E = T_bar sum_l R_l.
    sigma: the target read-noise std (e.g. sigma_ref).
    key: key for Gumbel noise and read noise (separate streams).
    config: GBOConfig.
    c_table: (L, K) noise factor c(T_k) per layer; default 1/T (binary layers).
    c_continuous: c(T) for relaxation B; default 1/T.
    sensitivity: S_l for the repair; default the Stein estimate n_r E[dL/dstd / std]
      accumulated during the search.
    validate_fn: optional held-out score, lower is better (e.g. the error rate on a validation
      split read with noise at `sigma`, fixed draws). The repaired search result is kept unless
      the uniform allocation T_bar (when it is an integer candidate) scores strictly lower.
    model: optional pytree (e.g. the frozen network's variables) passed to `loss_fn`.
    workdir: where the search's ``metrics.jsonl`` and checkpoints go (None: in memory); a rerun
      resumes there.

  Returns:
    GBOResult (pulses satisfy E <= B_E).

  References:
    Kim et al., "Gradient-based Bit Encoding Optimization for Noise-Robust Binary Memristive Crossbar",
    DATE 2022, arXiv:2201.01479.
  """
  reads_np, n_rows_np = _check_common(reads, n_rows, mean_pulses, sigma)
  cand = np.asarray(config.candidates, np.float64)
  num_layers = len(reads_np)
  c_np = _c_table(config.candidates, c_table, num_layers)
  budget_e = float(mean_pulses * reads_np.sum())
  sigma = float(sigma)
  n_steps = config.epochs * (len(data[0]) // config.batch_size)
  if n_steps < 1:
    raise ValueError(f"data has {len(data[0])} examples, fewer than batch_size={config.batch_size}")

  if config.relaxation == "gumbel":
    logits = jnp.zeros((num_layers, len(cand)), jnp.float32)
  else:  # the point of the simplex where every T_l = T_bar
    logits = jnp.asarray(np.log(reads_np / reads_np.sum()), jnp.float32)
  const = {"std_table": jnp.asarray(sigma * np.sqrt(n_rows_np[:, None] * c_np), jnp.float32),     # (L, K)
           "var_rows": jnp.asarray(sigma**2 * n_rows_np, jnp.float32),
           "cand": jnp.asarray(cand, jnp.float32), "reads": jnp.asarray(reads_np, jnp.float32),
           "budget": jnp.float32(budget_e), "n_steps": jnp.float32(n_steps), "key": jax.random.key_data(key)}
  state = {"stein": jnp.zeros((num_layers,), jnp.float32), "const": const}
  if model is not None:
    state["model"] = model
  lagrangian = _search_lagrangian(loss_fn, config, model is not None, c_continuous or _inverse)
  lam0 = config.soft_lambda if config.budget_mode == "soft" else config.lam_init
  tcfg = TrainConfig(lr=config.lr, batch_size=config.batch_size, epochs=config.epochs, log_every=1,
                     seed=config.seed)
  res = train(lagrangian, {"alpha": logits, "lam": jnp.asarray(lam0, jnp.float32)}, tuple(data), tcfg, workdir,
              model_state=state, tx=_search_tx(config),
              desc="gbo search", fingerprint={"gbo": repr(config), "budget_e": budget_e, "sigma": sigma})
  logits = res.params["alpha"]
  history = [{"step": r["step"], "task_loss": r["task_loss"], "lambda": r["lambda"], "tau": r["tau"],
              "cost_ratio": r["cost_ratio"]} for r in res.history]
  stein_acc = np.asarray(res.model_state["stein"], np.float64)
  s_est = n_rows_np * stein_acc / n_steps
  s = np.asarray(sensitivity, np.float64) if sensitivity is not None else np.maximum(s_est, 1e-12)
  logits_np = np.asarray(logits)
  raw = search_allocation(logits_np, reads_np, budget_e, config)
  searched = repair(raw, s, reads_np, budget_e, config.candidates, c_np)
  pulses, scores = searched, {}
  uniform = (int(mean_pulses),) * num_layers
  if validate_fn is not None and float(mean_pulses) == int(mean_pulses) and int(mean_pulses) in config.candidates:
    scores = {"search": float(validate_fn(searched)), "uniform": float(validate_fn(uniform))}
    if scores["uniform"] < scores["search"]:
      pulses = uniform
  energy = float(np.sum(np.asarray(pulses) * reads_np))
  return GBOResult(pulses, raw, logits_np, s, energy, budget_e, history, searched, scores)


def search_allocation(logits, reads: Sequence[float], budget_e: float, config: GBOConfig) -> tuple[int, ...]:
  """The raw allocation a search ends with, before any repair: argmax(alpha) per layer (Gumbel), or the simplex
  point T_l rounded to the nearest candidate in log2 (continuous)."""
  logits = np.asarray(logits)
  if config.relaxation == "gumbel":
    return tuple(int(config.candidates[j]) for j in np.argmax(logits, -1))
  r = np.asarray(reads, np.float64)
  t_min = float(config.candidates[0])
  w = np.exp(logits - logits.max())
  w = w / w.sum()
  return round_to_candidates(t_min + (budget_e - t_min * r.sum()) * w / r, r, budget_e, config.candidates)


def round_to_candidates(pulses, reads: Sequence[float], budget_e: float,
                        candidates: Sequence[int] = DEFAULT_CANDIDATES) -> tuple[int, ...]:
  """Rounds a real allocation on the budget plane (sum_l R_l T_l = B_E) to candidates, keeping the equality as
  closely as the candidates allow.

  Each layer may take the two candidates that bracket its T_l or the next one out on either side. Of these
  allocations, those within the budget that cannot raise any layer by one candidate step without exceeding it
  (budget-maximal) are kept, and the one nearest to `pulses` in log2 is returned (the costlier on ties); when none
  of them is budget-maximal, the nearest within the budget. No sensitivity enters: this is the discretisation of
  a search's point, not a repair.
  """
  cand = np.asarray(candidates, np.float64)
  t = np.clip(np.asarray(pulses, np.float64), cand[0], cand[-1])
  r = np.asarray(reads, np.float64)
  if len(t) > 10:
    raise ValueError(f"round_to_candidates enumerates up to 4^L roundings; L = {len(t)} > 10 layers")
  k = len(cand)
  options = []
  for x in t:
    lo = int(np.nonzero(cand <= x + 1e-9)[0].max())
    hi = int(np.nonzero(cand >= x - 1e-9)[0].min())
    options.append(sorted({max(lo - 1, 0), lo, hi, min(hi + 1, k - 1)}))
  tol = budget_e * (1 + 1e-9)
  best = {True: (None, None), False: (None, None)}   # budget-maximal or not -> (key, allocation)
  for idx in itertools.product(*options):
    a = cand[list(idx)]
    e = float(np.dot(a, r))
    if e > tol:
      continue
    maximal = not any(i + 1 < k and e + r[l] * (cand[i + 1] - cand[i]) <= tol for l, i in enumerate(idx))
    key = (float(np.sum((np.log2(a) - np.log2(t)) ** 2)), -e)
    if best[maximal][0] is None or key < best[maximal][0]:
      best[maximal] = (key, tuple(int(v) for v in a))
  found = best[True][1] or best[False][1]
  return found if found is not None else tuple(int(cand[0]) for _ in t)


def stein_sensitivity(loss_fn: Callable, stds, batch, keys, *args) -> np.ndarray:
  """E[dL/dstd_l] / std_l per layer, averaged over the read-noise keys: by Stein's lemma the expected trace of
  the Hessian of the loss with respect to layer l's noisy output, the quantity GBO's search accumulates (times
  n_r,l it is its sensitivity S_l).

  Args:
    loss_fn: ``loss_fn(stds, batch, key, *args) -> scalar`` (e.g. from `noise_objectives`).
    stds: per-layer noise std, shape (L,), all > 0.
    batch: one batch.
    keys: read-noise keys, shape (draws,).
    *args: extra arguments of `loss_fn` (the model's variables).

  Returns:
    Shape (L,) float64.

  References:
    Kim et al., "Gradient-based Bit Encoding Optimization for Noise-Robust Binary Memristive Crossbar",
    DATE 2022, arXiv:2201.01479.
  """
  stds = jnp.asarray(stds, jnp.float32)
  g = jax.vmap(lambda k: jax.grad(loss_fn)(stds, batch, k, *args))(keys)
  return np.asarray(jnp.mean(g, 0) / stds, np.float64)


def noise_objectives(apply_fn: Callable, variables, layers: Sequence[PathKey], **apply_kwargs):
  """The model side of GBO for any frozen Flax model: task loss and output gradients under per-layer noise.

  Args:
    apply_fn: the model's ``apply`` in inference mode (e.g. running batch-norm statistics).
    variables: its variables (used by `grad_fn`, and by `loss_fn` unless another set is passed).
    layers: params-tree paths of the crossbar layers; ``stds[l]`` is the noise std of ``layers[l]``.
    **apply_kwargs: extra arguments for `apply_fn`.

  Returns:
    ``(loss_fn, grad_fn)``: ``loss_fn(stds, (x, y), key, variables=variables)`` is the mean cross-entropy
    with N(0, stds[l]^2) added to layer l's output (read noise in fast mode; pass the variables to `gbo` as
    ``model=``); ``grad_fn(stds, (x, y), key)`` returns the per-sample gradients dl_i/dy_hat_l of every layer
    (summed loss), for `fisher_sensitivity`.
  """
  paths = tuple(tuple(p.split("/")) if isinstance(p, str) else tuple(p) for p in layers)

  def loss_fn(stds, batch, key, net=None):
    x, y = batch
    noisy = attach(apply_fn, output_noise(dict(zip(paths, stds))))
    logits = noisy(variables if net is None else net, x, rngs={"noise": key}, **apply_kwargs)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))

  @jax.jit
  def grad_fn_(net, stds, batch, key):
    x, y = batch
    offsets = zeros_like_outputs(output_shapes(apply_fn, net, x, paths, **apply_kwargs))

    def total(offs):
      noisy = attach(apply_fn, output_noise(dict(zip(paths, stds)), offs))
      logits = noisy(net, x, rngs={"noise": key}, **apply_kwargs)
      return jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits, y))

    g = jax.grad(total)(offsets)
    return tuple(g[p] for p in paths)

  def grad_fn(stds, batch, key):
    return grad_fn_(variables, stds, batch, key)

  return loss_fn, grad_fn
