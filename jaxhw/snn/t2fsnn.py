"""T2FSNN: time-to-first-spike coding with kernels: closed form, decoding, and the gradient-based optimisation
(GO) of each layer's kernel parameters ``(tau, t_d)``.

The kernel optimisation runs in the project's one trainer, `jaxhw.train.train`, with the per-layer kernel
parameters ``{"tau": [D], "t_d": [D]}`` as the optimised pytree.

References:
  Park et al., "T2FSNN: Deep Spiking Neural Networks with Time-to-first-spike Coding", DAC 2020,
  arXiv:2003.11741.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float

from jaxhw.snn.codings import Coding
from jaxhw.snn.network import SNNet, at_path, pool, snn_ann_apply, synapse
from jaxhw.train import TrainConfig, train

__all__ = ["spike_time", "decode", "quantize", "closed_form", "pipeline_length", "GOState",
           "go_step_analytic", "go_step_grad", "go_loss", "go_transform", "optimize_kernels", "GO_IMPLS"]

#: Implementations of the T2FSNN gradient-based kernel optimization step: the closed-form gradient or `jax.grad`.
GO_IMPLS = ("analytic", "jax_grad")


def spike_time(x, tau, t_d, t_w, theta0: float = 1.0):
  """First-spike time of a TTFS neuron holding potential ``x`` at the start of its window:
  ``max(0, ceil(t_d - tau ln(x/theta0)))``; ``t_w`` (silent) if that is ``>= t_w`` or ``x <= 0``."""
  x = jnp.asarray(x, jnp.float32)
  safe = jnp.where(x > 0, x, 1.0)
  t = jnp.maximum(0.0, jnp.ceil(t_d - tau * jnp.log(safe / theta0)))
  return jnp.where((x > 0) & (t < t_w), t, float(t_w)).astype(jnp.int32)


def decode(t_hat, tau, t_d, t_w):
  """``exp(-(t_hat - t_d)/tau)``, 0 for a silent neuron (``t_hat >= t_w``)."""
  t = jnp.asarray(t_hat, jnp.float32)
  return jnp.where(t < t_w, jnp.exp(-(t - t_d) / tau), 0.0)


def quantize(x, tau, t_d, t_w):
  """The value a TTFS neuron with potential ``x`` transmits (``decode(spike_time(x))``)."""
  return decode(spike_time(x, tau, t_d, t_w), tau, t_d, t_w)


def pipeline_length(net: SNNet, coding: Coding) -> int:
  """Latency ``D * T_s + T_w`` of a TTFS network, D = number of hidden spiking layers."""
  depth = sum(op.kind == "spike" for op in net.ops)
  return depth * coding.window_spacing + coding.t_w


def closed_form(net: SNNet, x: Float[Array, "batch ..."], coding: Coding, *, return_values: bool = False):
  """TTFS network without early firing in closed form: ``V_l = W x_hat_{l-1} + b``, then quantize(V_l).

  Args:
    net: converted network.
    x: input batch.
    coding: a TTFS coding (its per-layer ``tau``, ``t_d``, ``t_w``).
    return_values: also return the transmitted values of every spiking layer (input first).

  Returns:
    Final output potential ``V_L`` (``[B, C]``) and, optionally, the list of per-layer values.
  """
  tau, t_d = coding.ttfs_params(0)
  h = quantize(x, tau, t_d, coding.t_w)
  values = [h]
  for op in net.ops:
    if op.kind in ("conv", "dense"):
      h = synapse(op, at_path(net.params, op.path), h)
    elif op.kind == "spike":
      tau, t_d = coding.ttfs_params(op.index + 1)
      h = quantize(h, tau, t_d, coding.t_w)
      values.append(h)
    elif op.kind in ("maxpool", "avgpool"):
      h = pool(op, h)
    elif op.kind == "flatten":
      h = h.reshape(h.shape[0], -1)
  return (h, values) if return_values else h


def _count(mask):
  return jnp.maximum(jnp.sum(mask), 1).astype(jnp.float32)


class GOState(NamedTuple):
  """Per-layer kernel parameters (input first)."""

  tau: Array
  t_d: Array


def _low_percentile(x, valid, q: float):
  """Per-row ``q``-th percentile (numpy's linear interpolation) of the ``valid`` entries of ``x`` ``[B, M]``;
  NaN for a row with none. For small ``q`` only the smallest ``floor(q (M-1)/100) + 2`` entries matter, so a
  ``lax.top_k`` replaces the full sort of ``jnp.nanpercentile`` (about 15x faster on CPU, same values)."""
  m = x.shape[1]
  if q > 50:
    return jnp.nanpercentile(jnp.where(valid, x, jnp.nan), q, axis=1)
  n = jnp.sum(valid, axis=1)
  kmax = min(m, int(np.floor(q / 100 * (m - 1))) + 2)
  neg, _ = jax.lax.top_k(jnp.where(valid, -x, -jnp.inf), kmax)
  low = -neg  # the kmax smallest valid entries, ascending (+inf padding)
  k = (n - 1).astype(jnp.float32) * (q / 100)
  lo = jnp.floor(k).astype(jnp.int32)
  hi = jnp.minimum(lo + 1, jnp.maximum(n - 1, 0))
  v_lo = jnp.take_along_axis(low, lo[:, None], axis=1)[:, 0]
  v_hi = jnp.take_along_axis(low, hi[:, None], axis=1)[:, 0]
  return jnp.where(n > 0, v_lo + (k - lo) * (v_hi - v_lo), jnp.nan)


def _layer_terms(x, tau, t_d, t_w, min_over: str, min_percentile: float):
  """Shared quantities of the GO updates for one layer's activations ``x`` ``[B, ...]``."""
  b = x.shape[0]
  xf = x.reshape(b, -1)
  t_hat = jax.lax.stop_gradient(spike_time(xf, tau, t_d, t_w)).astype(jnp.float32)
  fired = t_hat < t_w
  mask = (xf > 0) & fired
  if min_over == "positive":
    x_min = jnp.nanmean(_low_percentile(xf, xf > 0, min_percentile))
  else:
    xc = jnp.maximum(xf, 0.0)
    x_min = jnp.nanmean(_low_percentile(xc, jnp.ones_like(xc, bool), min_percentile))
  x_min = jnp.where(jnp.isnan(x_min), 0.0, x_min)
  t_min = jnp.min(jnp.where(fired, t_hat, jnp.inf), axis=1)
  has = jnp.isfinite(t_min)
  return xf, t_hat, mask, x_min, jnp.where(has, t_min, 0.0), has


def go_step_analytic(x, tau, t_d, *, t_w: int, rho1=10.0, rho2=100.0, rho_td=1.0, min_over="positive",
                     min_percentile=2.0):
  """One GO update of one layer with the paper's closed-form deltas.

  ``tau += rho1*d1 + rho2*d2``, ``d1 = mean+[(x - x_hat) x_hat (t_hat - t_d)]/tau^2`` (mean over the positive,
  firing entries), ``d2 = (x_min - x_hat_min) x_hat_min (T_w - t_d)/tau^2``,
  ``x_hat_min = exp(-(T_w - t_d)/tau)``; ``t_d += rho_td * mean((x_max - x_hat_max) x_hat_max)/tau`` with
  ``x_max = exp(-(t_hat_min - t_d)/tau)`` (the earliest spike per image) and ``x_hat_max = exp(t_d/tau)``.

  Returns:
    ``(tau, t_d)`` updated.
  """
  xf, t_hat, mask, x_min, t_min, has = _layer_terms(x, tau, t_d, t_w, min_over, min_percentile)
  x_hat = jnp.where(t_hat < t_w, jnp.exp(-(t_hat - t_d) / tau), 0.0)
  term = (xf - x_hat) * x_hat * (t_hat - t_d)
  d1 = jnp.sum(jnp.where(mask, term, 0.0)) / jnp.maximum(jnp.sum(mask), 1).astype(jnp.float32) / tau**2
  xh_min = jnp.exp(-(t_w - t_d) / tau)
  d2 = (x_min - xh_min) * xh_min * (t_w - t_d) / tau**2
  x_max = jnp.exp(-(t_min - t_d) / tau)
  xh_max = jnp.exp(t_d / tau)
  dtd = jnp.sum(jnp.where(has, (x_max - xh_max) * xh_max, 0.0)) / _count(has) / tau
  return tau + rho1 * d1 + rho2 * d2, t_d + rho_td * dtd


def go_step_grad(x, tau, t_d, *, t_w: int, rho1=10.0, rho2=100.0, rho_td=1.0, min_over="positive",
                 min_percentile=2.0):
  """The same update as :func:`go_step_analytic`, from the losses under ``jax.grad`` (t_hat held fixed):
  ``L_prec = 1/2 mean+((x - x_hat)^2)``, ``L_min = 1/2 (x_min - x_hat_min)^2``, ``L_max = 1/2 mean((x_max -
  x_hat_max)^2)`` with ``x_max`` a fixed target."""
  xf, t_hat, mask, x_min, t_min, has = _layer_terms(x, tau, t_d, t_w, min_over, min_percentile)

  def l_prec(tau_):
    x_hat = jnp.where(t_hat < t_w, jnp.exp(-(t_hat - t_d) / tau_), 0.0)
    return 0.5 * jnp.sum(jnp.where(mask, (xf - x_hat) ** 2, 0.0)) / _count(mask)

  def l_min(tau_):
    return 0.5 * (x_min - jnp.exp(-(t_w - t_d) / tau_)) ** 2

  x_max = jax.lax.stop_gradient(jnp.exp(-(t_min - t_d) / tau))

  def l_max(td_):
    xh = jnp.exp(td_ / tau)
    return 0.5 * jnp.sum(jnp.where(has, (x_max - xh) ** 2, 0.0)) / _count(has)

  new_tau = tau - rho1 * jax.grad(l_prec)(tau) - rho2 * jax.grad(l_min)(tau)
  return new_tau, t_d - rho_td * jax.grad(l_max)(t_d)


def go_loss(kernels: dict, acts, *, t_w: int, rho1=10.0, rho2=100.0, rho_td=1.0, impl: str = "analytic",
            min_over="positive", min_percentile=2.0):
  """A loss over all layers whose gradient step with learning rate 1 is the GO update of every layer.

  ``impl="jax_grad"``: ``rho1 L_prec(tau) + rho2 L_min(tau) + rho_td L_max(t_d)`` (each term differentiated only
  in its own parameter, t_hat and the targets held fixed), the losses of :func:`go_step_grad`.
  ``impl="analytic"``: the linear surrogate ``-(sg(d_tau) tau + sg(d_td) t_d)`` whose gradient is minus the
  closed-form deltas of :func:`go_step_analytic`.

  Args:
    kernels: ``{"tau": [D], "t_d": [D]}``, input layer first.
    acts: the D target activations (``[B, ...]`` each): the input pixels, then every spiking layer's.
    t_w, rho1, rho2, rho_td, min_over, min_percentile: as in :func:`go_step_analytic`.
    impl: one of `GO_IMPLS`.

  Returns:
    ``(loss, aux)`` with ``aux`` the mean precision loss over layers.
  """
  sg = jax.lax.stop_gradient
  total = jnp.zeros((), jnp.float32)
  prec = []
  for d, a in enumerate(acts):
    tau, t_d = kernels["tau"][d], kernels["t_d"][d]
    kw = dict(t_w=t_w, rho1=rho1, rho2=rho2, rho_td=rho_td, min_over=min_over, min_percentile=min_percentile)
    if impl == "analytic":
      new_tau, new_td = go_step_analytic(a, sg(tau), sg(t_d), **kw)
      total = total - sg(new_tau - tau) * tau - sg(new_td - t_d) * t_d
    else:
      xf, t_hat, mask, x_min, t_min, has = _layer_terms(a, sg(tau), sg(t_d), t_w, min_over, min_percentile)
      td_c, tau_c = sg(t_d), sg(tau)
      x_hat = jnp.where(t_hat < t_w, jnp.exp(-(t_hat - td_c) / tau), 0.0)
      l_prec = 0.5 * jnp.sum(jnp.where(mask, (xf - x_hat) ** 2, 0.0)) / _count(mask)
      l_min = 0.5 * (x_min - jnp.exp(-(t_w - td_c) / tau)) ** 2
      x_max = sg(jnp.exp(-(t_min - t_d) / tau))
      l_max = 0.5 * jnp.sum(jnp.where(has, (x_max - jnp.exp(t_d / tau_c)) ** 2, 0.0)) / _count(has)
      total = total + rho1 * l_prec + rho2 * l_min + rho_td * l_max
    t_hat = sg(spike_time(a.reshape(a.shape[0], -1), tau, t_d, t_w)).astype(jnp.float32)
    x_hat = jnp.where(t_hat < t_w, jnp.exp(-(t_hat - t_d) / tau), 0.0)
    prec.append(0.5 * jnp.mean((a.reshape(a.shape[0], -1) - x_hat) ** 2))
  return total, {"go_precision_loss": sg(jnp.mean(jnp.stack(prec)))}


def go_transform(min_tau: float = 0.5) -> optax.GradientTransformation:
  """Plain gradient steps (learning rate 1) on ``{"tau", "t_d"}`` with ``tau`` kept at or above `min_tau`."""

  def init(params):
    return optax.EmptyState()

  def update(grads, state, params=None):
    if params is None:
      raise ValueError("go_transform needs params")
    new_tau = jnp.maximum(params["tau"] - grads["tau"], min_tau)
    return {"tau": new_tau - params["tau"], "t_d": -grads["t_d"]}, state

  return optax.GradientTransformation(init, update)


def optimize_kernels(net: SNNet, x_train: np.ndarray, coding: Coding, *, passes: int = 2,
                     batch_size: int = 100, rho1: float = 10.0, rho2: float = 100.0, rho_td: float = 1.0,
                     impl: str = "analytic", min_over: str = "positive", min_percentile: float = 2.0,
                     seed: int = 0, workdir: str | Path | None = None) -> Coding:
  """Gradient-based optimisation (GO) of every spiking layer's ``(tau, t_d)`` on training images, run by
  `jaxhw.train.train`.

  Targets are the normalised ANN activations of the same images (input: the pixels); all layers are updated
  after each batch.

  Args:
    net: converted network.
    x_train: training images.
    coding: the TTFS coding to start from.
    passes: passes over ``x_train`` (official: 6 x 10,000 images).
    batch_size: images per update.
    rho1, rho2, rho_td: step sizes (paper: 10, 100, 1).
    impl: ``"analytic"`` or ``"jax_grad"`` (same updates).
    min_over: ``"positive"`` (percentile over positive activations) or ``"clamped"`` (official).
    min_percentile: percentile giving ``x_min`` (2).
    seed: seed of the batch order.
    workdir: where the trainer writes ``metrics.jsonl`` and checkpoints (None: in memory).

  Returns:
    ``coding`` with per-layer tuples ``tau`` and ``t_d``.

  References:
    Park et al., "T2FSNN: Deep Spiking Neural Networks with Time-to-first-spike Coding", DAC 2020,
    arXiv:2003.11741, section "Gradient-based optimization".
  """
  if not coding.is_ttfs:
    raise ValueError(f"coding.input={coding.input!r}: kernel optimisation needs a TTFS coding")
  if impl not in GO_IMPLS:
    raise ValueError(f"impl={impl!r}; valid: {GO_IMPLS}")
  if min_over not in ("positive", "clamped"):
    raise ValueError(f"min_over={min_over!r}; valid: ('positive', 'clamped')")
  x_train = np.asarray(x_train)
  if not 1 <= batch_size <= len(x_train):
    raise ValueError(f"batch_size={batch_size} must be in [1, {len(x_train)}] (the training images)")
  n_layers = 1 + sum(op.kind == "spike" for op in net.ops)
  start = [coding.ttfs_params(d) for d in range(n_layers)]
  kernels = {"tau": jnp.asarray([p[0] for p in start], jnp.float32),
             "t_d": jnp.asarray([p[1] for p in start], jnp.float32)}

  def loss_fn(kernels, batch, key, step):
    xb = batch[0]
    _, acts = snn_ann_apply(net, xb, return_activations=True)
    return go_loss(kernels, [xb] + list(acts), t_w=coding.t_w, rho1=rho1, rho2=rho2, rho_td=rho_td, impl=impl,
                   min_over=min_over, min_percentile=min_percentile)

  config = TrainConfig(optimizer="sgd", lr=1.0, batch_size=batch_size, epochs=passes, seed=seed,
                       log_every=max(1, len(x_train) // batch_size))
  fingerprint = {"t2fsnn_go": {"passes": passes, "batch_size": batch_size, "rho": [rho1, rho2, rho_td],
                               "impl": impl, "min_over": min_over, "min_percentile": min_percentile,
                               "t_w": coding.t_w, "start": [list(p) for p in start], "seed": seed,
                               "n_images": len(x_train)}}
  result = train(loss_fn, kernels, (x_train,), config, workdir, tx=go_transform(), fingerprint=fingerprint,
                 desc="T2FSNN GO")
  tau, t_d = np.asarray(result.params["tau"]), np.asarray(result.params["t_d"])
  return dataclasses.replace(coding, tau=tuple(float(v) for v in tau), t_d=tuple(float(v) for v in t_d))
