"""HAT: Hessian-aware training, a truncated Hutchinson trace of the loss Hessian added to the loss.

    s_i = v_iᵀ H_B(θ) v_i (i = 1..m, fresh Rademacher probes), R_p = mean of the k = max(1, ceil(p·m)) largest s_i,
    L_HAT = CE + λ_t · g_t · R_p,   λ_t = λ · min(1, t / T_warm),   g_t = 1 or 1[R_p > τ_t] (EMA threshold).

References:
  Pranto, Kim, Chen, Hong, "Hessian-aware Training for Enhancing DNNs Resilience to Parameter Corruptions",
  arXiv:2504.01933 (2025). Options the paper leaves open are reconstructions, each a config option with a stated
  default.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxhw import pytree as _tree
from jaxhw.hessian.hvp import quad_form, rademacher_like

__all__ = ["HATPenalty", "hat_penalty", "ggn_quad_form", "HATRegularizer", "hat_regularizer", "hat_loss"]

TRUNCS = ("probe_top_p", "none", "ggn")
THRESHOLDS = ("off", "ema")


class HATPenalty(NamedTuple):
  """value: R_p (differentiable); samples: the m probe values s_i (stop-gradient)."""

  value: jax.Array
  samples: jax.Array


def ggn_quad_form(logits_fn: Callable, params, v) -> jax.Array:
  """vᵀ G v for the Gauss-Newton matrix of the mean softmax cross-entropy: mean_b (Jv)ᵀ(diag p − ppᵀ)(Jv) >= 0."""
  logits, u = jax.jvp(logits_fn, (params,), (v,))
  p = jax.nn.softmax(logits, axis=-1)
  per = jnp.sum(p * u * u, axis=-1) - jnp.sum(p * u, axis=-1) ** 2
  return jnp.mean(per)


def _check(probes, top_p, trunc, layers_ok=True):
  if not isinstance(probes, int) or probes < 1:
    raise ValueError(f"probes={probes!r}; allowed: an int >= 1")
  if not 0.0 < float(top_p) <= 1.0:
    raise ValueError(f"top_p={top_p!r}; allowed: a float in (0, 1]")
  if trunc not in TRUNCS:
    raise ValueError(f"trunc={trunc!r}; allowed: {list(TRUNCS)}")


def hat_penalty(key: jax.Array, loss_fn: Callable | None, params, *, probes: int = 2, top_p: float = 0.5,
                trunc: str = "probe_top_p", layers: Sequence[str] | None = None,
                logits_fn: Callable | None = None) -> HATPenalty:
  """The HAT regularizer R_p on one minibatch.

  Args:
    key: PRNG key for the probes (keep it separate from data keys).
    loss_fn: scalar minibatch loss of the parameter pytree (used by trunc "probe_top_p" and "none").
    params: parameters.
    probes: m, Rademacher probes per call (static).
    top_p: share p of the largest probe values kept (trunc="probe_top_p").
    trunc: "probe_top_p" (default: mean of the ceil(p·m) largest vᵀHv), "none" (plain Hutchinson mean), or
      "ggn" (PSD Gauss-Newton trace, needs `logits_fn`).
    layers: leaf-path prefixes whose block is penalized (None: all); other leaves get v_ℓ = 0 and are not
      differentiated through the tangent (cheaper for "last layers only").
    logits_fn: `logits_fn(params) -> [batch, classes]` for trunc="ggn".

  Returns:
    HATPenalty(value, samples). Gradients flow through the kept s_i; the selection is not differentiated.

  References:
    Prato, Kim, Chen, Hong, "Hessian-aware Training for Enhancing DNNs Resilience to Parameter Corruptions",
      arXiv:2504.01933, 2025.
  """
  _check(probes, top_p, trunc)
  if trunc == "ggn" and logits_fn is None:
    raise ValueError("trunc='ggn' needs logits_fn(params) -> logits")
  if trunc != "ggn" and loss_fn is None:
    raise ValueError(f"trunc={trunc!r} needs loss_fn(params) -> scalar")
  sel = _tree.select_leaves(params, layers)
  flat, treedef = jax.tree.flatten(params)
  sub = [x for x, u in zip(flat, sel) if u]

  def merge(s):
    it = iter(s)
    return jax.tree.unflatten(treedef, [next(it) if u else x for x, u in zip(flat, sel)])

  def one(k):
    v = rademacher_like(k, sub)
    if trunc == "ggn":
      return ggn_quad_form(lambda s: logits_fn(merge(s)), sub, v)
    return quad_form(lambda s: loss_fn(merge(s)), sub, v)

  s = jax.vmap(one)(jax.random.split(key, probes))  # one traced copy of the third-order graph for all probes
  if trunc == "probe_top_p":
    kk = max(1, math.ceil(top_p * probes))
    _, idx = jax.lax.top_k(jax.lax.stop_gradient(s), kk)
    value = jnp.mean(s[idx])
  else:
    value = jnp.mean(s)
  return HATPenalty(value, jax.lax.stop_gradient(s))


class HATRegularizer(NamedTuple):
  """`init() -> state`; `apply(params, key, step, state, loss_fn, logits_fn=None) -> (term, state, aux)` where
  `term` = λ_t · g_t · R_p is added to the loss and `state` carries the EMA threshold τ."""

  init: Callable
  apply: Callable


def hat_regularizer(*, lam: float = 1e-3, probes: int = 2, top_p: float = 0.5, trunc: str = "probe_top_p",
                    threshold: str = "off", ema_beta: float = 0.99, warmup_steps: int = 0,
                    layers: Sequence[str] | None = None, every_k: int = 1) -> HATRegularizer:
  """HAT as a pure `(init, apply)` pair with the full option set, including the stateful EMA threshold.

  Args:
    lam: λ >= 0.
    probes, top_p, trunc, layers: as `hat_penalty`.
    threshold: "off" (g_t = 1) or "ema" (g_t = 1[R_p > τ_t], τ_t = β τ_{t−1} + (1 − β) R_p, τ_0 = 0).
    ema_beta: β for threshold="ema".
    warmup_steps: λ_t = λ · min(1, t / T_warm) (0: no warm-up).
    every_k: add the term only on steps with t % k == 0 (otherwise the probes are not computed).

  Returns:
    HATRegularizer.

  References:
    Prato, Kim, Chen, Hong, "Hessian-aware Training for Enhancing DNNs Resilience to Parameter Corruptions",
      arXiv:2504.01933, 2025.
  """
  _check(probes, top_p, trunc)
  if not lam >= 0:
    raise ValueError(f"lam={lam!r}; allowed: a float >= 0")
  if threshold not in THRESHOLDS:
    raise ValueError(f"threshold={threshold!r}; allowed: {list(THRESHOLDS)}")
  if not 0.0 <= ema_beta < 1.0:
    raise ValueError(f"ema_beta={ema_beta!r}; allowed: a float in [0, 1)")
  if not isinstance(warmup_steps, int) or warmup_steps < 0:
    raise ValueError(f"warmup_steps={warmup_steps!r}; allowed: an int >= 0")
  if not isinstance(every_k, int) or every_k < 1:
    raise ValueError(f"every_k={every_k!r}; allowed: an int >= 1")

  def init():
    return {"tau": jnp.zeros((), jnp.float32)}

  def apply(params, key, step, state, loss_fn, logits_fn=None):
    step = jnp.asarray(step)
    lam_t = lam * (jnp.minimum(1.0, step.astype(jnp.float32) / warmup_steps) if warmup_steps else 1.0)

    def on(_):
      pen = hat_penalty(key, loss_fn, params, probes=probes, top_p=top_p, trunc=trunc, layers=layers,
                        logits_fn=logits_fn)
      return pen.value, jnp.mean(pen.samples)

    if every_k == 1:
      r, r_mean = on(None)
      active = jnp.asarray(True)
    else:
      active = step % every_k == 0
      r, r_mean = jax.lax.cond(active, on, lambda _: (jnp.zeros(()), jnp.zeros(())), None)
    r_sg = jax.lax.stop_gradient(r)
    if threshold == "ema":
      gate = (r_sg > state["tau"]).astype(r.dtype)
      tau = jnp.where(active, ema_beta * state["tau"] + (1 - ema_beta) * r_sg, state["tau"])
    else:
      gate, tau = jnp.ones((), r.dtype), state["tau"]
    term = lam_t * gate * r * active
    return term, {"tau": tau}, {"hat_penalty": r_sg, "hat_trace_probe_mean": r_mean, "hat_gate": gate}

  return HATRegularizer(init, apply)


def hat_loss(model_loss: Callable, *, lam: float = 1e-3, probes: int = 2, top_p: float = 0.5,
             trunc: str = "probe_top_p", threshold: str = "off", warmup_steps: int = 0,
             layers: Sequence[str] | None = None, every_k: int = 1,
             logits_fn: Callable | None = None) -> Callable:
  """A trainer loss `loss_fn(params, batch, rng, step) -> (CE + λ_t R_p, aux)` for `jaxhw.train.train`.

  Args:
    model_loss: `model_loss(params, batch) -> scalar` (the task loss, e.g. mean cross-entropy).
    lam, probes, top_p, trunc, warmup_steps, layers, every_k: as `hat_regularizer`.
    threshold: only "off" here: the trainer's loss is stateless, so the EMA gate needs `hat_regularizer` in a
      loop that carries its state.
    logits_fn: `logits_fn(params, batch) -> logits` for trunc="ggn".

  Returns:
    The loss function. Probe keys are folded from the trainer's per-step key with a fixed tag, separate from
    anything the task loss draws.

  References:
    Prato, Kim, Chen, Hong, "Hessian-aware Training for Enhancing DNNs Resilience to Parameter Corruptions",
      arXiv:2504.01933, 2025.
  """
  if threshold != "off":
    raise ValueError(f"threshold={threshold!r} is stateful; allowed here: 'off' (use hat_regularizer for 'ema')")
  reg = hat_regularizer(lam=lam, probes=probes, top_p=top_p, trunc=trunc, threshold="off",
                        warmup_steps=warmup_steps, layers=layers, every_k=every_k)

  def loss_fn(params, batch, rng, step):
    ce = model_loss(params, batch)
    if lam == 0:
      return ce, {"ce": ce, "hat_penalty": jnp.zeros(())}
    key = jax.random.fold_in(rng, 0x4A7)
    lf = logits_fn and (lambda p: logits_fn(p, batch))
    term, _, aux = reg.apply(params, key, step, reg.init(), lambda p: model_loss(p, batch), lf)
    return ce + term, {"ce": ce, "hat_penalty": aux["hat_penalty"]}

  return loss_fn
