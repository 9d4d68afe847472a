"""Monte Carlo evaluation over simulated chips: accuracy of any Flax model with crossbar effects attached.

Chip c draws its static noise (programming) from one key and its read noise from another, with fresh read keys for
every batch of the data. The keys depend only on `key`, `c` and the batch index, so two evaluations with the same
`key` (two pulse allocations, two noise levels) share chips and read draws: common random numbers.

References:
  Kim et al., "Gradient-based Bit Encoding Optimization for Noise-Robust Binary Memristive Crossbar", DATE 2022,
  arXiv:2201.01479.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, PRNGKeyArray

from jaxhw.crossbar._random import normal
from jaxhw.crossbar.read_noise import output_shapes
from jaxhw.effects import ForwardEffect, LayerCall, ParamTransform, attach

__all__ = ["chip_keys", "evaluate_chips", "fixed_noise_evaluator"]


def chip_keys(key: PRNGKeyArray, chips: int) -> tuple[Array, Array]:
  """(chip_keys, read_keys), each of shape (chips,): chip c's static-noise key and its read-noise key."""
  ks = jax.vmap(lambda c: jax.random.split(jax.random.fold_in(key, c)))(jnp.arange(chips))
  return ks[:, 0], ks[:, 1]


@functools.partial(jax.jit, static_argnames=("apply_fn", "effect_factory", "param_transform"))
def _correct(variables, x, y, ck, rk, effect_args, *, apply_fn, effect_factory, param_transform):
  noisy = attach(apply_fn, effect_factory(*effect_args))

  def one(chip_key, read_key):
    v = variables
    if param_transform is not None:
      params, _ = param_transform.apply(v["params"], param_transform.init(v["params"]), chip_key)
      v = {**v, "params": params}
    logits = noisy(v, x, rngs={"noise": read_key})
    return jnp.sum(jnp.argmax(logits, -1) == y)

  return jax.vmap(one)(ck, rk)


def evaluate_chips(apply_fn: Callable[..., Any], variables, x, y, *,
                   effect_factory: Callable[..., ForwardEffect], chips: int, key: PRNGKeyArray,
                   effect_args: tuple = (), param_transform: ParamTransform | None = None,
                   batch_size: int | None = None) -> np.ndarray:
  """Classification accuracy of `chips` simulated chips: one per chip, on the whole of (x, y).

  Args:
    apply_fn: a Linen ``model.apply`` (inference mode by default, e.g. running batch-norm statistics).
    variables: the model's variables (``{"params": ..., "batch_stats": ...}``).
    x: inputs; y: integer labels.
    effect_factory: ``effect_factory(*effect_args) -> ForwardEffect``, e.g.
      ``lambda sigma, t: crossbar.read_noise(sigma, dict(zip(paths, t)))``. It is called inside ``jit`` with
      `effect_args` traced, so other noise levels or allocations reuse the compilation: keep passing the same
      function object.
    chips: number of chips (vmapped together).
    key: root key; chip c uses `chip_keys(key, chips)` and ``fold_in(read_key_c, batch)`` per batch.
    effect_args: arrays passed to `effect_factory` (traced).
    param_transform: static per-chip effect on the params (e.g. `program_weights` with device variation), applied
      with the chip key; None for no static noise.
    batch_size: examples per forward pass (None: all at once).

  Returns:
    Accuracies, float64 numpy array of shape (chips,).
  """
  if chips < 1:
    raise ValueError(f"chips must be >= 1, got {chips}")
  n = len(x)
  if n == 0 or len(y) != n:
    raise ValueError(f"x and y must be non-empty with the same length, got {n} and {len(y)}")
  bs = n if batch_size is None else int(batch_size)
  ck, rk = chip_keys(key, chips)
  effect_args = tuple(jnp.asarray(a) if not isinstance(a, dict) else a for a in effect_args)
  total = np.zeros(chips, np.int64)
  for b, i in enumerate(range(0, n, bs)):
    rk_b = jax.vmap(lambda k, b=b: jax.random.fold_in(k, b))(rk)
    total += np.asarray(_correct(variables, jnp.asarray(x[i:i + bs]), jnp.asarray(y[i:i + bs]), ck, rk_b,
                                 effect_args, apply_fn=apply_fn, effect_factory=effect_factory,
                                 param_transform=param_transform))
  return total / n


def fixed_noise_evaluator(apply_fn: Callable[..., Any], variables, x, y, *, layers, chips: int, key: PRNGKeyArray,
                          batch_size: int | None = None,
                          reuse_first_layer: bool = True) -> Callable[[Array], np.ndarray]:
  """Accuracy of `chips` chips under fast-mode read noise of any per-layer std, with each chip's draws taken once.

  Fast-mode read noise adds std_l * xi to layer l's output, xi ~ N(0, I). This evaluator draws xi once per chip,
  layer and image and reuses it for every std vector it is asked about (common random numbers, as `evaluate_chips`
  gives through its keys), so a sweep over noise levels and pulse allocations pays for the draws once. With
  `reuse_first_layer`, the first listed layer in call order (whose input carries no noise) is computed once per
  image and reused.

  Args:
    apply_fn: a Linen ``model.apply`` in inference mode.
    variables: the model's variables.
    x, y: inputs and integer labels.
    layers: params-tree paths of the noisy layers; ``stds[l]`` belongs to ``layers[l]``.
    chips: number of chips.
    key: root key; chip c draws from `chip_keys(key, chips)`'s read key, folded per batch and layer.
    batch_size: images per forward pass (None: all).
    reuse_first_layer: cache the first noisy layer's noise-free output.

  Returns:
    ``evaluate(stds) -> accuracies`` (numpy, shape (chips,)) for a (L,) vector of stds (a traced argument: one
    compilation for every std vector). For crossbar read noise, stds[l] = `aggregate_noise_std` of layer l.
  """
  if chips < 1:
    raise ValueError(f"chips must be >= 1, got {chips}")
  n = len(x)
  if n == 0 or len(y) != n:
    raise ValueError(f"x and y must be non-empty with the same length, got {n} and {len(y)}")
  paths = tuple(tuple(p.split("/")) if isinstance(p, str) else tuple(p) for p in layers)
  bs = n if batch_size is None else int(batch_size)
  _, rk = chip_keys(key, chips)
  order = list(output_shapes(apply_fn, variables, jnp.asarray(x[:1]), paths))
  first = order[0] if (reuse_first_layer and order) else None

  @jax.jit
  def clean_first(v, xb):
    found = {}

    def record(call: LayerCall):
      out = call.next()
      if call.path == first:
        found["y"] = out
      return out

    attach(apply_fn, record)(v, xb)
    return found["y"]

  batches = []
  for b, i in enumerate(range(0, n, bs)):
    xb, yb = jnp.asarray(x[i:i + bs]), jnp.asarray(y[i:i + bs])
    shapes = output_shapes(apply_fn, variables, xb, paths)
    rk_b = jax.vmap(lambda k, b=b: jax.random.fold_in(k, b))(rk)
    xi = {p: jax.vmap(lambda k, s=shapes[p].shape, l=l: normal(jax.random.fold_in(k, l), s))(rk_b)
          for l, p in enumerate(paths)}
    batches.append((xb, yb, xi, clean_first(variables, xb) if first is not None else None))

  @jax.jit
  def correct(v, xb, yb, xi, cached, stds):
    def one(xi_c):
      def effect(call: LayerCall):
        if call.path not in xi_c:
          return call.next()
        out = cached if (cached is not None and call.path == first) else call.next()
        return out + stds[paths.index(call.path)] * xi_c[call.path]

      return jnp.sum(jnp.argmax(attach(apply_fn, effect)(v, xb), -1) == yb)

    return jax.vmap(one)(xi)

  def evaluate(stds) -> np.ndarray:
    stds = jnp.asarray(stds, jnp.float32)
    if stds.shape != (len(paths),):
      raise ValueError(f"stds must have shape ({len(paths)},), one per layer, got {stds.shape}")
    total = np.zeros(chips, np.int64)
    for xb, yb, xi, cached in batches:
      total += np.asarray(correct(variables, xb, yb, xi, cached, stds))
    return total / n

  return evaluate
