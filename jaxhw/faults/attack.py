"""Bit-flip attack (progressive bit search, BFA) on int8-quantized weights, and its random-flip baseline.

References:
  Rakin, He, Fan, "Bit-Flip Attack: Crushing Neural Network with Progressive Bit Search", ICCV 2019
  (Rakin, He, Fan, "Bit-Flip Attack: Crushing Neural Network with Progressive Bit Search", ICCV 2019, arXiv:1903.12269).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxhw import pytree as _tree
from jaxhw.faults.bits import dequantize_int8, quantize_int8

__all__ = ["AttackResult", "quantize_params", "dequantize_params", "bit_flip_attack", "random_int8_flips",
           "flips_to_accuracy"]


class AttackResult(NamedTuple):
  """Outcome of `bit_flip_attack`.

  Attributes:
    accuracy: eval accuracy before any flip, then after each committed iteration ([iterations + 1]).
    loss: attack-batch loss, same indexing.
    flips: committed flips per iteration, each a list of (leaf path, flat index, bit).
    hamming: Hamming distance of the int8 weights to the clean int8 weights, same indexing.
    num_flips: cumulative committed bit flips, same indexing.
    q_params: the final int8 weights {leaf id: int8 array}.
  """

  accuracy: np.ndarray
  loss: np.ndarray
  flips: list
  hamming: np.ndarray
  num_flips: np.ndarray
  q_params: dict


def _default_weight_leaves(params) -> list[int]:
  return [j for j, (p, x) in enumerate(_tree.leaf_paths(params)) if jnp.ndim(x) >= 2]


def quantize_params(params, *, leaves: Sequence[str] | None = None, per_channel: bool = False):
  """int8-quantizes the weight leaves (ndim >= 2, or those under `leaves` prefixes); biases stay float.

  Returns:
    (q, scales): dicts leaf id -> int8 array / float scale.
  """
  if leaves is None:
    ids = _default_weight_leaves(params)
  else:
    ids = [j for j, u in enumerate(_tree.select_leaves(params, leaves)) if u]
  flat = jax.tree.leaves(params)
  for j in ids:  # validate outside jit (ValueError for non-float leaves)
    if not jnp.issubdtype(jnp.asarray(flat[j]).dtype, jnp.floating):
      quantize_int8(flat[j])
  qts = _quantize_all([flat[j] for j in ids], per_channel=per_channel)
  return {j: qt.q for j, qt in zip(ids, qts)}, {j: qt.scale for j, qt in zip(ids, qts)}


@functools.partial(jax.jit, static_argnames=("per_channel",))
def _quantize_all(ws, *, per_channel):
  return [quantize_int8(w, per_channel=per_channel) for w in ws]


@jax.jit
def _dequantize_all(params, qs: dict, scales: dict):
  flat, treedef = jax.tree.flatten(params)
  flat = list(flat)
  for j in qs:
    flat[int(j)] = dequantize_int8(qs[j], scales[j]).astype(flat[int(j)].dtype)
  return jax.tree.unflatten(treedef, flat)


def dequantize_params(params, q: dict, scales: dict):
  """`params` with each quantized leaf replaced by `q * scale` (one jitted call)."""
  return _dequantize_all(params, {str(j): v for j, v in q.items()}, {str(j): v for j, v in scales.items()})


_BIT_WEIGHT = jnp.asarray([1, 2, 4, 8, 16, 32, 64, -128], jnp.float32)


def _ce(logits, y):
  logp = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=-1))


_ATTACK_CACHE: dict = {}


def _attack_fns(apply_fn, treedef, ids, cand_k, n_cand):
  """Jitted (search, loss) for one model structure; cached so repeated attacks compile once."""
  key = (apply_fn, treedef, ids, cand_k, n_cand)
  if key in _ATTACK_CACHE:
    return _ATTACK_CACHE[key]

  def with_weights(params, ws):
    flat = list(jax.tree.leaves(params))
    for j, w in zip(ids, ws):
      flat[j] = w.astype(flat[j].dtype)
    return jax.tree.unflatten(treedef, flat)

  def loss_of(params, sc, xa, ya, qs):
    ws = [dequantize_int8(q, s) for q, s in zip(qs, sc)]
    return _ce(apply_fn(with_weights(params, ws), xa), ya)

  def search(params, sc, xa, ya, qs, n):
    ws = [dequantize_int8(q, s) for q, s in zip(qs, sc)]
    base, gw = jax.value_and_grad(lambda w: _ce(apply_fn(with_weights(params, w), xa), ya))(ws)
    losses, new_qs, picks = [], [], []
    for t in range(len(ids)):
      g = (gw[t] * sc[t]).reshape(-1)  # dL/dq
      _, top = jax.lax.top_k(jnp.abs(g), cand_k[t])
      qu = jax.lax.bitcast_convert_type(qs[t].reshape(-1)[top], jnp.uint8)
      bitval = ((qu[:, None] >> jnp.arange(8, dtype=jnp.uint8)[None, :]) & 1).astype(jnp.float32)
      gain = g[top][:, None] * _BIT_WEIGHT[None, :] * (1 - 2 * bitval)  # first-order loss change [k, 8]
      gv, gi = jax.lax.top_k(gain.reshape(-1), n_cand[t])
      keep = (gv > 0) & (jnp.arange(n_cand[t]) < n)
      ent, bit = gi // 8, gi % 8
      masks = jnp.zeros(cand_k[t], jnp.uint8).at[ent].add(
          jnp.where(keep, jnp.left_shift(jnp.uint8(1), bit.astype(jnp.uint8)), jnp.uint8(0)))
      flat_q = jax.lax.bitcast_convert_type(qs[t].reshape(-1), jnp.uint8)
      flat_q = flat_q.at[top].set(flat_q[top] ^ masks)
      nq = jax.lax.bitcast_convert_type(flat_q, jnp.int8).reshape(qs[t].shape)
      trial = list(qs)
      trial[t] = nq
      losses.append(loss_of(params, sc, xa, ya, trial))
      new_qs.append(nq)
      picks.append((top[ent], bit, keep))
    return base, jnp.stack(losses), new_qs, picks

  _ATTACK_CACHE[key] = (jax.jit(search), jax.jit(loss_of))
  return _ATTACK_CACHE[key]


def bit_flip_attack(apply_fn: Callable, params, x_attack, y_attack, *, eval_fn: Callable,
                    leaves: Sequence[str] | None = None, iterations: int = 100, k_top: int = 10, max_n: int = 8,
                    per_channel: bool = False, stop_accuracy: float | None = None) -> AttackResult:
  """Progressive bit search on int8 weights: each iteration commits the layer's flips that raise the loss most.

  Per iteration: g = dL/dq on the attack batch; in every layer, the k_top entries by |g| give candidate bit flips
  with first-order gain g * c_b * (1 - 2 bit) (c_b = 2^b, -128 for bit 7); the n best positive ones are flipped
  and the loss is recorded with only that layer changed (all layers scored in one jitted call); the best layer is
  committed if it raises the loss, else n += 1 (up to max_n, then the attack stops).

  Args:
    apply_fn: `apply_fn(params, x) -> logits`.
    params: float parameters (weights are quantized to int8 here).
    x_attack: attack batch inputs (e.g. 128 labelled images).
    y_attack: attack batch labels.
    eval_fn: `eval_fn(params) -> accuracy` (float), called after each iteration on the dequantized params.
    leaves: leaf-path prefixes to quantize and attack (default: every leaf with ndim >= 2).
    iterations: maximum iterations.
    k_top: candidates per layer (largest |g|).
    max_n: largest number of flips tried in one layer per iteration.
    per_channel: per-output-channel int8 scales.
    stop_accuracy: stop once eval accuracy <= this.

  Returns:
    AttackResult.

  References:
    Rakin, He, Fan, "Bit-Flip Attack: Crushing Neural Network with Progressive Bit Search", ICCV 2019, arXiv:1903.12269.
  """
  if iterations < 0:
    raise ValueError(f"iterations={iterations}; allowed: >= 0")
  if k_top < 1 or max_n < 1:
    raise ValueError(f"k_top={k_top}, max_n={max_n}; allowed: both >= 1")
  q0, scales = quantize_params(params, leaves=leaves, per_channel=per_channel)
  if not q0:
    raise ValueError("leaves selects no weight to attack; allowed: prefixes of leaves with ndim >= 2")
  ids = sorted(q0)
  paths = [_tree.path_str(p) for p, _ in _tree.leaf_paths(params)]
  xa, ya = jnp.asarray(x_attack), jnp.asarray(y_attack, jnp.int32)
  cand_k = [min(k_top, int(np.size(q0[j]))) for j in ids]
  n_cand = [min(max_n, 8 * k) for k in cand_k]

  search, loss_of = _attack_fns(apply_fn, jax.tree.structure(params), tuple(ids), tuple(cand_k), tuple(n_cand))
  sc = [scales[j] for j in ids]

  q0_u8 = [np.asarray(q0[j]).view(np.uint8) for j in ids]

  def hamming_fn(qs):
    return int(sum(np.unpackbits(np.asarray(q).view(np.uint8) ^ c).sum() for q, c in zip(qs, q0_u8)))

  qs = [q0[j] for j in ids]
  cur_loss = float(loss_of(params, sc, xa, ya, qs))
  accs = [float(eval_fn(dequantize_params(params, dict(zip(ids, qs)), scales)))]
  losses, ham, nflips, flips = [cur_loss], [0], [0], []
  for _ in range(iterations):
    if stop_accuracy is not None and accs[-1] <= stop_accuracy:
      break
    committed = False
    n = 1
    while n <= max_n:
      _, layer_losses, new_qs, picks = search(params, sc, xa, ya, qs, jnp.asarray(n, jnp.int32))
      layer_losses = np.asarray(layer_losses, np.float64)
      layer_losses = np.where(np.isfinite(layer_losses), layer_losses, np.inf)
      best = int(np.argmax(layer_losses))
      if layer_losses[best] > cur_loss:
        ent, bit, keep = (np.asarray(a) for a in picks[best])
        flips.append([(paths[ids[best]], int(e), int(b)) for e, b, k in zip(ent, bit, keep) if k])
        qs = list(qs)
        qs[best] = new_qs[best]
        cur_loss = float(layer_losses[best])
        committed = True
        break
      n += 1
    if not committed:
      break
    accs.append(float(eval_fn(dequantize_params(params, dict(zip(ids, qs)), scales))))
    losses.append(cur_loss)
    ham.append(hamming_fn(qs))
    nflips.append(nflips[-1] + len(flips[-1]))
  return AttackResult(np.asarray(accs), np.asarray(losses), flips, np.asarray(ham), np.asarray(nflips),
                      dict(zip(ids, qs)))


def random_int8_flips(params, num_flips: int, *, eval_fn: Callable, draws: int = 20, seed: int = 0,
                      leaves: Sequence[str] | None = None, per_channel: bool = False) -> np.ndarray:
  """Accuracy after `num_flips` distinct random bit flips of the int8 weights, for `draws` independent draws.

  Returns:
    float array [draws] of eval accuracies.

  References:
    Rakin, He, Fan, "Bit-Flip Attack: Crushing Neural Network with Progressive Bit Search", ICCV 2019,
      arXiv:1903.12269 (random-flip baseline).
  """
  if num_flips < 0 or draws < 1:
    raise ValueError(f"num_flips={num_flips}, draws={draws}; allowed: num_flips >= 0, draws >= 1")
  q0, scales = quantize_params(params, leaves=leaves, per_channel=per_channel)
  ids = sorted(q0)
  sizes = np.asarray([np.size(q0[j]) for j in ids])
  offsets = np.concatenate([[0], np.cumsum(sizes)])
  total_bits = int(offsets[-1]) * 8
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(draws):
    pos = rng.choice(total_bits, size=num_flips, replace=False)
    qd = {j: np.asarray(q0[j]).reshape(-1).view(np.uint8).copy() for j in ids}
    for p_ in pos:
      e, b = divmod(int(p_), 8)
      t = int(np.searchsorted(offsets, e, side="right") - 1)
      qd[ids[t]][e - offsets[t]] ^= np.uint8(1 << b)
    qn = {j: jnp.asarray(qd[j].view(np.int8).reshape(np.shape(q0[j]))) for j in ids}
    out.append(float(eval_fn(dequantize_params(params, qn, scales))))
  return np.asarray(out)


def flips_to_accuracy(result: AttackResult, threshold: float) -> int | None:
  """Cumulative committed flips when eval accuracy first reaches <= threshold (None if never)."""
  hit = np.nonzero(result.accuracy <= threshold)[0]
  return int(result.num_flips[hit[0]]) if len(hit) else None
