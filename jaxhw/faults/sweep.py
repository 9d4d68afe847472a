"""Vectorized single-bit-flip sweeps: exhaustive or stratified-sampled, with structure-aware fast paths.

Three evaluators compute the accuracy (and loss) after each flip. Flips are grouped per compiled driver; a driver
call takes a fixed-shape block of chunks (`_CALL_CHUNKS` x K flips), loops over its chunks on the device
(`lax.fori_loop`, `vmap` over the K flips of a chunk) and leaves the results on the device until the whole sweep is
fetched once, so there is no host round trip per chunk and one compilation serves sweeps of any size:

* `"full"`: any `apply_fn`; the flip is applied inside the mapped function (memory: chunk x |leaf|).
* `"layers"`: a model given as a list of layers; a flip in layer l leaves the activations before l unchanged, so
  they are computed once (prefix caching) and only layers l.. are re-run.
* `"mlp"`: dense MLPs, e.g. a `jaxhw.models.MLP`'s params `{"Dense_0": {"kernel", "bias"}, ...}`, layers taken
  in the order given by `layers` (paths) or, by default, the params' own order when the kernel shapes chain
  (the bias is one more row of W fed by a constant 1): a flip of
  W_l[i, j] changes one pre-activation column by `delta * a_l[:, i]` (rank one), so the next layer's
  pre-activation is updated in O(N x C) instead of a forward pass. Without the loss, flips in the last two layers
  move the logits along a fixed direction (W_out[j] or a unit vector), so whether example n stays correct is a
  comparison of one scalar with a precomputed interval: O(N) per flip (`_mlp_interval_chunks`); flips giving
  Inf/NaN or a huge step take the exact path.

References:
  Prato, Kim, Chen, Hong, "Hessian-aware Training for Enhancing DNNs Resilience to Parameter Corruptions",
    arXiv:2504.01933, 2025.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from jaxhw import pytree as _tree
from jaxhw.faults.bits import ALL_BITS, layout_of, resolve_bits
from jaxhw.faults.flips import flip_array
from jaxhw.faults.metrics import (
  CATASTROPHIC,
  ERRATIC,
  counts_per_bit,
  rad_histogram,
  relative_accuracy_drop,
  stratified_unit_total,
  wilson_interval,
)

__all__ = [
    "Flips",
    "SweepResult",
    "SampledSweep",
    "all_flips",
    "sample_flips",
    "single_bit_sweep",
    "sampled_sweep",
    "mlp_layers",
    "dense_chain",
]

Layer = tuple[str | None, Callable]


class Flips(NamedTuple):
  """A list of single-bit flips: `leaf` (flatten-order leaf id), flat `index` into that leaf, `bit`."""

  leaf: np.ndarray
  index: np.ndarray
  bit: np.ndarray


class SweepResult(NamedTuple):
  """Per-flip outcomes of a sweep (numpy arrays aligned with `flips`).

  Attributes:
    flips: the flips evaluated.
    correct: correctly classified examples after each flip.
    accuracy: correct / n_examples (0 for a non-finite parameter under nonfinite="catastrophic").
    loss: mean cross-entropy after the flip (may be inf / nan).
    nonfinite: the flipped parameter is NaN or +-Inf.
    rad: relative (or absolute) accuracy drop.
    clean_accuracy: accuracy without flips on the same examples.
    n_examples: examples evaluated.
    leaf_paths: "a/b" path of each leaf id.
  """

  flips: Flips
  correct: np.ndarray
  accuracy: np.ndarray
  loss: np.ndarray
  nonfinite: np.ndarray
  rad: np.ndarray
  clean_accuracy: float
  n_examples: int
  leaf_paths: list[str]


def all_flips(params, *, leaves: Sequence[str] | None = None, bits=ALL_BITS) -> Flips:
  """Every (parameter, bit) pair of the selected leaves (exhaustive sweep).

  Args:
    params: pytree of float (or int8) arrays.
    leaves: leaf-path prefixes (None: all leaves).
    bits: bit selection ("all", "exponent", ..., or positions).

  Returns:
    Flips ordered by leaf, then element, then bit.
  """
  sel = _tree.select_leaves(params, leaves)
  out = []
  for j, ((path, x), use) in enumerate(zip(_tree.leaf_paths(params), sel)):
    if not use:
      continue
    pos = np.asarray(resolve_bits(bits, layout_of(x, argname=f"params leaf {_tree.path_str(path)}").name))
    n = int(np.size(x))
    idx = np.repeat(np.arange(n), len(pos))
    out.append(Flips(np.full(idx.shape, j, np.int32), idx.astype(np.int64), np.tile(pos, n).astype(np.int32)))
  return _concat(out)


def _concat(fl: list[Flips]) -> Flips:
  if not fl:
    return Flips(np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros(0, np.int32))
  return Flips(*(np.concatenate([getattr(f, k) for f in fl]) for k in Flips._fields))


def sample_flips(params, num_params: int, *, seed: int = 0, leaves: Sequence[str] | None = None, bits=ALL_BITS,
                 min_per_leaf: int = 32) -> tuple[Flips, dict]:
  """Stratified sample of parameters (all selected bits of each), without replacement.

  Each leaf gets `max(min_per_leaf, round(num_params * N_leaf / N_total))` parameters, capped at N_leaf (small
  leaves such as biases are enumerated fully).

  Args:
    params: pytree.
    num_params: target number of sampled parameters in total.
    seed: sampling seed.
    leaves: leaf-path prefixes (None: all).
    bits: bit selection swept for every sampled parameter.
    min_per_leaf: lower bound per leaf.

  Returns:
    (flips, strata) where strata maps leaf id -> {"N": leaf size, "n": sampled params, "path"}.

  References:
    Prato, Kim, Chen, Hong, "Hessian-aware Training for Enhancing DNNs Resilience to Parameter Corruptions",
      arXiv:2504.01933, 2025.
  """
  if num_params < 1:
    raise ValueError(f"num_params={num_params}; allowed: >= 1")
  rng = np.random.default_rng(seed)
  sel = _tree.select_leaves(params, leaves)
  items = [(j, p, x) for j, ((p, x), u) in enumerate(zip(_tree.leaf_paths(params), sel)) if u]
  total = sum(int(np.size(x)) for _, _, x in items)
  out, strata = [], {}
  for j, p, x in items:
    N = int(np.size(x))
    n = min(N, max(min_per_leaf, int(round(num_params * N / total))))
    idx = np.sort(rng.choice(N, size=n, replace=False))
    pos = np.asarray(resolve_bits(bits, layout_of(x, argname=f"params leaf {_tree.path_str(p)}").name))
    out.append(Flips(np.full(n * len(pos), j, np.int32), np.repeat(idx, len(pos)).astype(np.int64),
                     np.tile(pos, n).astype(np.int32)))
    strata[j] = {"N": N, "n": n, "path": _tree.path_str(p)}
  return _concat(out), strata


# --------------------------------------------------------------------------------------------------------------
# Evaluators. Per leaf, a jitted driver (consts..., idx[cap, K], bit[cap, K], n) -> (correct, loss, nonfinite),
# each [cap, K], that evaluates the first n chunks of K flips inside ONE call (lax.fori_loop over chunks, vmap over
# the flips of a chunk): no host round trip per chunk, results stay on the device until the sweep ends. `cap` is a
# power of two, so sweeps of similar size share one compilation.

_OUT_DTYPES = (jnp.int32, jnp.float32, jnp.bool_)


def _loop_chunks(one: Callable, idx, bit, n):
  """Runs `vmap(one)` over the chunks idx[c], bit[c] for c < n (dynamic), writing into [cap, K] buffers."""
  cap, k = idx.shape

  def body(c, out):
    r = jax.vmap(one)(idx[c], bit[c])
    return tuple(o.at[c].set(v.astype(o.dtype)) for o, v in zip(out, r))

  init = tuple(jnp.zeros((cap, k), dt) for dt in _OUT_DTYPES)
  return jax.lax.fori_loop(0, n, body, init)


def _metrics(logits: Float[Array, "n c"], y: Int[Array, " n"], with_loss: bool = True):
  finite = jnp.all(jnp.isfinite(logits), axis=-1)
  pred = jnp.argmax(logits, axis=-1)  # rows with a NaN / Inf are masked out below
  correct = jnp.sum((pred == y) & finite, dtype=jnp.int32)
  if not with_loss:
    return correct, jnp.zeros((), jnp.float32)
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  loss = -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=-1))
  return correct, loss


def _flipped_scalar(leaf, idx, bit):
  old = leaf.reshape(-1)[idx]
  new = flip_array(old[None], 0, bit)[0]
  return old, new, ~jnp.isfinite(new.astype(jnp.float32))


@functools.partial(jax.jit, static_argnames=("apply_fn", "leaf_id", "with_loss"))
def _full_chunks(params, x, y, idx, bit, n, *, apply_fn, leaf_id, with_loss):
  leaves, treedef = jax.tree.flatten(params)

  def one(idx, bit):
    new = flip_array(leaves[leaf_id], idx, bit)
    nonfinite = ~jnp.isfinite(new.reshape(-1)[idx].astype(jnp.float32))
    ps = list(leaves)
    ps[leaf_id] = new
    c, loss = _metrics(apply_fn(jax.tree.unflatten(treedef, ps), x), y, with_loss)
    return c, loss, nonfinite

  return _loop_chunks(one, idx, bit, n)


@functools.partial(jax.jit, static_argnames=("layers", "l", "k", "with_loss"))
def _layers_chunks(params, h_in, y, idx, bit, n, *, layers, l, k, with_loss):
  top = layers[l][0]
  sub_leaves, sub_def = jax.tree.flatten(params[top])

  def one(idx, bit):
    new = flip_array(sub_leaves[k], idx, bit)
    nonfinite = ~jnp.isfinite(new.reshape(-1)[idx].astype(jnp.float32))
    sl = list(sub_leaves)
    sl[k] = new
    hh = layers[l][1](jax.tree.unflatten(sub_def, sl), h_in)
    for name, fn in layers[l + 1:]:
      hh = fn(params[name] if name is not None else None, hh)
    c, loss = _metrics(hh, y, with_loss)
    return c, loss, nonfinite

  return _loop_chunks(one, idx, bit, n)


def mlp_layers(paths: Sequence[str], activation: Callable = jax.nn.relu) -> list[Layer]:
  """Dense layers at params `paths` (in forward order, e.g. ``jaxhw.models.dense_paths(3)``) as a layer list for
  structure="layers": each flattens its input, applies ``kernel``/``bias``, and all but the last `activation`."""

  def dense(last):
    def f(p, h):
      h = h.reshape(h.shape[0], -1) @ p["kernel"] + p["bias"]
      return h if last else activation(h)
    return f

  return [(path, dense(i == len(paths) - 1)) for i, path in enumerate(paths)]


def dense_chain(params, order: Sequence[str] | None = None) -> list[tuple[str, ...]]:
  """The layer paths of a dense MLP's params in forward order.

  Args:
    params: ``{path: {"kernel": [in, out], "bias": [out]}}`` (nested paths allowed when `order` is given).
    order: layer paths (``"a/b"`` strings or tuples) in forward order; default the params' top-level keys in
      their own order, which must chain (each kernel's input width is the previous one's output width).

  Returns:
    Paths as tuples.

  Raises:
    ValueError: a layer without exactly a 2-d ``kernel`` and a ``bias`` of its dtype, or widths that do not chain.
  """
  if order is not None:  # a structure="layers" list [(path, fn)] names its paths too
    order = [o[0] if isinstance(o, tuple) and o and callable(o[-1]) else o for o in order]
  paths = [_tree.norm_path(o, argname="layers") for o in order] if order is not None else [(k,) for k in params]
  shapes = []
  for path in paths:
    node = params
    for k in path:
      if not isinstance(node, dict) or k not in node:
        raise ValueError(f"structure='mlp': layer {_tree.path_str(path)!r} is not in params (top-level keys: "
                         f"{sorted(params)})")
      node = node[k]
    if not isinstance(node, dict) or set(node) != {"kernel", "bias"}:
      raise ValueError(f"structure='mlp' needs {{'kernel', 'bias'}} at each layer; {_tree.path_str(path)!r} holds "
                       f"{sorted(node) if isinstance(node, dict) else type(node).__name__}")
    w, b = node["kernel"], node["bias"]
    if w.ndim != 2 or w.dtype != b.dtype:
      raise ValueError(f"structure='mlp' needs a 2-d kernel and a bias of the same dtype in "
                       f"{_tree.path_str(path)}; got {w.dtype}{list(w.shape)}, {b.dtype}")
    shapes.append(w.shape)
  for (p0, s0), (p1, s1) in zip(zip(paths, shapes), zip(paths[1:], shapes[1:])):
    if s0[1] != s1[0]:
      raise ValueError(f"structure='mlp': layer {_tree.path_str(p1)} (input width {s1[0]}) does not follow "
                       f"{_tree.path_str(p0)} (output width {s0[1]}); pass layers=[paths in forward order]")
  return paths


def _dense_list(params, paths) -> list[dict]:
  out = []
  for path in paths:
    node = params
    for k in path:
      node = node[k]
    out.append({"w": node["kernel"], "b": node["bias"]})
  return out


def _mlp_cache(params, x, activation):
  L = len(params)
  a, z = [x.reshape(x.shape[0], -1)], []
  for m in range(L):
    z.append(a[m] @ params[m]["w"] + params[m]["b"])
    if m < L - 1:
      a.append(activation(z[m]))
  return a, z


# structure="mlp" treats the bias of layer l as one more row of its weight matrix, W_ext = [W; b], fed by an input
# row of ones, a_ext = [a_l; 1]: a flip of W_ext[i, j] moves pre-activation j by delta * a_ext[i]. Flips of both
# leaves of a layer then share one compiled driver.


@functools.partial(jax.jit, static_argnames=("l", "activation", "with_loss"))
def _mlp_chunks(params, a, z, a_ext, w_ext, y, idx, bit, n, *, l, activation, with_loss):
  """Rank-one suffix update for chunks of flips of W_ext of layer l (a and z cached transposed, [features, N])."""
  L = len(params)
  out_dim = w_ext.shape[1]

  def one(idx, bit):
    old, new, nonfinite = _flipped_scalar(w_ext, idx, bit)
    i, j = idx // out_dim, idx % out_dim
    zj = z[l][j] + (new - old) * a_ext[i]
    if l == L - 1:
      logits = z[l].at[j].set(zj).T
    else:
      d = activation(zj) - a[l + 1][j]
      h = z[l + 1].T + d[:, None] * params[l + 1]["w"][j, :][None, :]
      for m in range(l + 2, L):
        h = activation(h) @ params[m]["w"] + params[m]["b"]
      logits = h
    c, loss = _metrics(logits, y, with_loss)
    return c, loss, nonfinite

  return _loop_chunks(one, idx, bit, n)


@functools.partial(jax.jit, static_argnames=("split",))
def _correct_intervals(logits: Float[Array, "n c"], y: Int[Array, " n"], dirs: Float[Array, "d c"], split: int = 0):
  """For logits moved along a direction, l + t * dirs[k], the interval [lo, hi] of t where class y is predicted.

  The argmax of the lines l_c + t w_c is y exactly where (l_y - l_c) + t (w_y - w_c) >= 0 for every c != y: an
  intersection of half-lines, i.e. an interval (empty when a parallel line already wins). Rows with non-finite
  clean logits get an empty interval.

  Returns:
    ((lo, hi) for dirs[:split], (lo, hi) for dirs[split:]), each [d, n].
  """
  rows = jnp.arange(y.shape[0])
  gap = logits[rows, y][:, None] - logits                         # A_c = l_y - l_c    [n, c]
  slope = dirs[:, y][:, :, None] - dirs[:, None, :]               # B_c = w_y - w_c    [d, n, c] (0 at c = y)
  # A parallel line (B_c = 0) that is higher, or equal with a lower index (argmax takes the first), always wins;
  # at c = y, A = B = 0 and neither holds.
  beaten = (gap < 0) | ((gap == 0) & (jnp.arange(logits.shape[1])[None, :] < y[:, None]))
  root = -gap[None] / slope
  lo = jnp.max(jnp.where(slope > 0, root, -jnp.inf), axis=-1)
  hi = jnp.min(jnp.where(slope < 0, root, jnp.inf), axis=-1)
  blocked = jnp.any((slope == 0) & beaten[None], axis=-1) | ~jnp.all(jnp.isfinite(logits), axis=-1)[None, :]
  lo, hi = jnp.where(blocked, jnp.inf, lo), jnp.where(blocked, -jnp.inf, hi)
  return (lo[:split], hi[:split]), (lo[split:], hi[split:])


@functools.partial(jax.jit, static_argnames=("l", "activation"))
def _mlp_interval_chunks(a, z, a_ext, w_ext, lo, hi, ok0, idx, bit, n, *, l, activation):
  """Counts correct predictions after flips in one of the last two dense layers without forming the logits.

  A flip in the last layer moves logit j by t_n = delta * a_ext[i, n]; a flip in the layer before moves hidden
  unit j by t_n = act(z_jn + delta * a_ext[i, n]) - h_jn and the logits by t_n * W_out[j]. Either way the logits
  move along a fixed direction, so example n is correct iff t_n lies in the precomputed interval [lo_jn, hi_jn]
  (`_correct_intervals`), and t_n = 0 keeps the clean outcome ok0_n exactly. O(N) per flip instead of O(N x C).
  """
  last = l == len(z) - 1
  out_dim = w_ext.shape[1]

  def one(idx, bit):
    old, new, nonfinite = _flipped_scalar(w_ext, idx, bit)
    i, j = idx // out_dim, idx % out_dim
    step = (new - old) * a_ext[i]
    t = step if last else activation(z[l][j] + step) - a[l + 1][j]
    ok = jnp.where(t == 0, ok0, (lo[j] <= t) & (t <= hi[j]))
    return jnp.sum(ok, dtype=jnp.int32), jnp.zeros((), jnp.float32), nonfinite

  return _loop_chunks(one, idx, bit, n)


# Flips of an interval-capable layer that still take the exact path: a non-finite new value (the NaN / Inf
# arithmetic must be reproduced) or a step so large that the logits could overflow.
_INTERVAL_MAX_STEP = 1e30


@functools.partial(jax.jit, static_argnames=("activation",))
def _mlp_prepare(params, x, y, *, activation):
  """Everything the "mlp" drivers share, in one compiled call: clean activations (transposed, [features, N]), the
  clean per-example outcome, and a_ext / W_ext per layer with max |a_ext| per row."""
  L = len(params)
  a, z = _mlp_cache(params, x, activation)
  logits = z[-1]
  ok0 = (jnp.argmax(logits, -1) == y) & jnp.all(jnp.isfinite(logits), -1)
  a, z = [t.T for t in a], [t.T for t in z]
  a_ext = [jnp.concatenate([t, jnp.ones((1, t.shape[1]), t.dtype)]) for t in a]
  w_ext = [jnp.concatenate([params[m]["w"], params[m]["b"][None, :]]) for m in range(L)]
  amax = [jnp.max(jnp.abs(t), axis=1) for t in a_ext]
  return {"a": a, "z": z, "ok0": ok0, "a_ext": a_ext, "w_ext": w_ext, "amax": amax}


class _MLPCache:
  """The shared arrays of structure="mlp" (see `_mlp_prepare`), plus host copies for routing flips."""

  def __init__(self, params, x, y, activation):
    """`params` is the list of ``{"w", "b"}`` dicts of the layers in forward order (see `dense_chain`)."""
    L = len(params)
    self.params, self.y, self.activation, self.L = params, y, activation, L
    c = _mlp_prepare(params, x, y, activation=activation)
    self.a, self.z, self.ok0, self.a_ext, self.w_ext = c["a"], c["z"], c["ok0"], c["a_ext"], c["w_ext"]
    self.amax = [np.asarray(t, np.float64) for t in c["amax"]]
    self.w_np = [np.asarray(t) for t in c["w_ext"]]
    self._intervals = {}

  def intervals(self, l: int):
    """Correct-class intervals (device arrays) for flips in layer l = L - 1 (the logits move along a unit vector)
    or l = L - 2 (along W_out[j] of the hidden unit j that changes)."""
    if not self._intervals:  # both layers in one call: [W_out; I] as directions
      w_out = self.w_np[self.L - 1][:-1]  # host copies: no eager device ops to compile
      eye = np.eye(w_out.shape[1], dtype=w_out.dtype)
      dirs = jnp.asarray(np.concatenate([w_out, eye]) if self.L >= 2 else eye)
      hidden, logit = _correct_intervals(self.z[-1].T, self.y, dirs, split=w_out.shape[0] if self.L >= 2 else 0)
      self._intervals[self.L - 1] = logit
      if self.L >= 2:
        self._intervals[self.L - 2] = hidden
    return self._intervals[l]


def _auto_chunk(n_examples: int, width: int) -> int:
  """Flips per vmapped chunk so that one chunk's [K, N, width] intermediates stay around 16 MiB."""
  k = max(8, min(4096, 2 ** 22 // max(1, n_examples * width)))
  return int(2 ** int(np.log2(k)))


class _Sweeper:
  """Maps flips to driver groups and builds (and caches) one jitted driver per group.

  Groups: ("full", leaf) and ("layers", leaf) for the generic structures; ("mlp", layer) (exact rank-one update)
  and ("mlp_interval", layer) (last two layers, no loss) for structure="mlp".
  """

  def __init__(self, apply_fn, params, x, y, structure, layers, activation, with_loss=True, mlp_order=None):
    self.with_loss = with_loss
    if structure not in ("full", "layers", "mlp"):
      raise ValueError(f"structure={structure!r}; allowed: 'full', 'layers', 'mlp'")
    if structure == "layers" and not layers:
      raise ValueError("structure='layers' needs layers=[(name, fn), ...]")
    self.apply_fn, self.params, self.structure, self.activation = apply_fn, params, structure, activation
    self.layers = tuple((nm, f) for nm, f in layers) if layers else None
    self.x, self.y = jnp.asarray(x), jnp.asarray(y, jnp.int32)
    self.paths = [p for p, _ in _tree.leaf_paths(params)]
    self.fns = {}
    self.mlp = None
    if structure == "mlp":
      order = dense_chain(params, mlp_order)
      self.plist = _dense_list(params, order)
      self.mlp = _MLPCache(self.plist, self.x, self.y, activation)
      # leaf id -> (layer, is_bias)
      self.mlp_leaf = {i: (order.index(p[:-1]), p[-1] == "bias") for i, p in enumerate(self.paths)
                       if p[:-1] in order}

  def assign(self, leaf_id: int, index: np.ndarray, bit: np.ndarray) -> list[tuple[np.ndarray, tuple, np.ndarray]]:
    """[(mask over these flips, group key, index within the group's array)]."""
    if self.structure != "mlp":
      return [(np.ones(len(index), bool), (self.structure, leaf_id), index)]
    if leaf_id not in self.mlp_leaf:
      raise ValueError(f"structure='mlp': leaf {_tree.path_str(self.paths[leaf_id])} is in no dense layer")
    l, is_bias = self.mlp_leaf[leaf_id]
    w_np, amax = self.mlp.w_np[l], self.mlp.amax[l]
    n_in, out_dim = w_np.shape[0] - 1, w_np.shape[1]
    ext = index + (n_in * out_dim if is_bias else 0)
    everything = np.ones(len(index), bool)
    if self.with_loss or l < self.mlp.L - 2 or w_np.dtype != np.float32:
      return [(everything, ("mlp", l), ext)]
    old = w_np.reshape(-1)[ext]
    new = (old.view(np.uint32) ^ (np.uint32(1) << bit.astype(np.uint32))).view(np.float32)
    gain = (np.max(np.abs(np.asarray(self.plist[self.mlp.L - 1]["w"], np.float64)), axis=1)
            if l == self.mlp.L - 2 else np.ones(out_dim))
    with np.errstate(all="ignore"):
      delta = new.astype(np.float64) - old.astype(np.float64)
      big = np.abs(delta) * amax[ext // out_dim] * gain[ext % out_dim] >= _INTERVAL_MAX_STEP
    exact = ~np.isfinite(new) | big
    return [(~exact, ("mlp_interval", l), ext), (exact, ("mlp", l), ext)]

  def fn(self, key: tuple) -> Callable:
    if key not in self.fns:
      kind, k = key
      params, x, y = self.params, self.x, self.y
      if kind == "full":
        f = functools.partial(_full_chunks, params, x, y, apply_fn=self.apply_fn, leaf_id=k,
                              with_loss=self.with_loss)
      elif kind == "layers":
        f = self._layers_fn(k)
      else:
        m = self.mlp
        a_ext, w_ext = m.a_ext[k], m.w_ext[k]
        if kind == "mlp":
          f = functools.partial(_mlp_chunks, self.plist, m.a, m.z, a_ext, w_ext, y, l=k, activation=self.activation,
                                with_loss=self.with_loss)
        else:
          lo, hi = m.intervals(k)
          f = functools.partial(_mlp_interval_chunks, m.a, m.z, a_ext, w_ext, lo, hi, m.ok0, l=k,
                                activation=self.activation)
      self.fns[key] = f
    return self.fns[key]

  def _layers_fn(self, leaf_id):
    top = self.paths[leaf_id][0]
    names = [nm for nm, _ in self.layers]
    if top not in names:
      raise ValueError(f"leaf {_tree.path_str(self.paths[leaf_id])} belongs to no layer; allowed layer names: "
                       f"{names}")
    l = names.index(top)
    h = self.x
    for name, f in self.layers[:l]:  # prefix, computed once (cached)
      h = f(self.params[name] if name is not None else None, h)
    k = [q for q in self.paths if q[0] == top].index(self.paths[leaf_id])
    return functools.partial(_layers_chunks, self.params, h, self.y, layers=self.layers, l=l, k=k,
                             with_loss=self.with_loss)


# Chunks per driver call: every call has the static shape [_CALL_CHUNKS, K], so one compilation per (group, K)
# serves sweeps of any size; the device loop stops after the call's real chunks.
_CALL_CHUNKS = 32


def _run(sweeper: _Sweeper, flips: Flips, chunk: int | dict, progress=None):
  """Evaluates every flip: flips are grouped per driver, each group runs in calls of up to _CALL_CHUNKS chunks of
  K flips (one jitted call each, asynchronous), and all results are fetched from the device once at the end.

  Args:
    chunk: flips per vmapped chunk K, an int or {group kind: int}.
  """
  F = len(flips.leaf)
  groups: dict[tuple, list] = {}
  for leaf_id in np.unique(flips.leaf):
    sel = np.nonzero(flips.leaf == leaf_id)[0]
    for mask, key, ext in sweeper.assign(int(leaf_id), flips.index[sel], flips.bit[sel]):
      if mask.any():
        groups.setdefault(key, []).append((sel[mask], ext[mask], flips.bit[sel][mask]))
  pending = []
  for key, parts in groups.items():
    pos = np.concatenate([p[0] for p in parts])
    idx = np.concatenate([p[1] for p in parts]).astype(np.int32)
    bit = np.concatenate([p[2] for p in parts]).astype(np.int32)
    k = chunk[key[0]] if isinstance(chunk, dict) else chunk
    per_call = _CALL_CHUNKS * k
    fn = sweeper.fn(key)
    for s in range(0, len(pos), per_call):
      m = min(per_call, len(pos) - s)
      bi = np.zeros(per_call, np.int32)
      bb = np.zeros(per_call, np.int32)
      bi[:m], bb[:m] = idx[s:s + m], bit[s:s + m]
      out = fn(jnp.asarray(bi.reshape(_CALL_CHUNKS, k)), jnp.asarray(bb.reshape(_CALL_CHUNKS, k)),
               jnp.asarray(-(-m // k), jnp.int32))
      pending.append((pos[s:s + m], out))
      if progress is not None:
        progress.update(m)
  correct = np.zeros(F, np.int64)
  loss = np.zeros(F, np.float64)
  nonfin = np.zeros(F, bool)
  for (part, _), (c, l, nf) in zip(pending, jax.device_get([o for _, o in pending])):
    m = len(part)
    correct[part] = c.reshape(-1)[:m]
    loss[part] = l.reshape(-1)[:m]
    nonfin[part] = nf.reshape(-1)[:m]
  return correct, loss, nonfin


def single_bit_sweep(apply_fn: Callable | None, params, x, y, *, flips: Flips | None = None,
                     leaves: Sequence[str] | None = None, bits=ALL_BITS, structure: str = "full",
                     layers: Sequence[Layer] | None = None, activation: Callable = jax.nn.relu,
                     chunk: int | None = None, nonfinite: str = "catastrophic", drop: str = "relative",
                     screen_examples: int | None = None, screen_threshold: float = 0.03,
                     with_loss: bool = True, quiet: bool = True) -> SweepResult:
  """Accuracy and loss after each single-bit flip, one flip at a time, vectorized in chunks.

  Args:
    apply_fn: `apply_fn(params, x) -> logits` (used for the clean accuracy and by structure="full").
    params: pytree of float arrays (float32 / float16 / bfloat16) or int8.
    x: evaluation inputs.
    y: integer labels.
    flips: explicit flips; default every selected bit of every parameter of the selected leaves.
    leaves: leaf-path prefixes when `flips` is None.
    bits: bit selection when `flips` is None.
    structure: "full", "layers" (prefix caching, needs `layers`) or "mlp" (rank-one suffix update; with
      with_loss=False, correct-class intervals for the last two layers).
    layers: for structure="layers", [(params key or None, fn(layer_params, h) -> h)], applied in order, the last
      giving logits; for structure="mlp", optionally the dense layers' params paths in forward order (default:
      the params' own order, see `dense_chain`).
    activation: hidden activation for structure="mlp".
    chunk: flips per vmapped chunk K (static): an int, or {"mlp", "mlp_interval", "full", "layers": int}; default
      from the example count (about 16 MiB of intermediates per chunk).
    nonfinite: "catastrophic" (a flip giving a NaN/Inf parameter scores accuracy 0, RAD 1) or "evaluate" (run
      the IEEE arithmetic as is). An example whose logits are not all finite is always counted wrong.
    drop: "relative" RAD or "absolute" accuracy drop.
    screen_examples: if set, score all flips on the first `screen_examples` examples, then re-score those with
      RAD >= `screen_threshold` on all examples (the others keep their screened values).
    screen_threshold: RAD threshold for re-scoring.
    with_loss: also compute the mean cross-entropy per flip (else `loss` is 0; faster).
    quiet: hide the progress bar.

  Returns:
    SweepResult. Never raises on NaN / Inf outcomes.

  Raises:
    ValueError: bad `structure`, `nonfinite`, `drop`, flips outside a leaf or its dtype width, leaves without a
      bit layout.

  References:
    Prato, Kim, Chen, Hong, "Hessian-aware Training for Enhancing DNNs Resilience to Parameter Corruptions",
      arXiv:2504.01933, 2025.
  """
  if nonfinite not in ("catastrophic", "evaluate"):
    raise ValueError(f"nonfinite={nonfinite!r}; allowed: 'catastrophic', 'evaluate'")
  if drop not in ("relative", "absolute"):
    raise ValueError(f"drop={drop!r}; allowed: 'relative', 'absolute'")
  if flips is None:
    flips = all_flips(params, leaves=leaves, bits=bits)
  flips = Flips(np.asarray(flips.leaf, np.int32), np.asarray(flips.index, np.int64), np.asarray(flips.bit, np.int32))
  lp = _tree.leaf_paths(params)
  for leaf_id in np.unique(flips.leaf):
    if not 0 <= leaf_id < len(lp):
      raise ValueError(f"flips.leaf contains {leaf_id}; allowed: leaf ids in [0, {len(lp)})")
    path, leaf = lp[leaf_id]
    lay = layout_of(leaf, argname=f"params leaf {_tree.path_str(path)}")
    m = flips.leaf == leaf_id
    if np.any(flips.bit[m] < 0) or np.any(flips.bit[m] >= lay.width):
      raise ValueError(f"flips.bit for leaf {_tree.path_str(path)} is outside the dtype width; allowed: [0, "
                       f"{lay.width})")
    if np.any(flips.index[m] < 0) or np.any(flips.index[m] >= np.size(leaf)):
      raise ValueError(f"flips.index for leaf {_tree.path_str(path)} is outside [0, {np.size(leaf)})")
  x = jnp.asarray(x)
  y = jnp.asarray(y, jnp.int32)
  n = int(x.shape[0])
  if apply_fn is None:
    if structure != "mlp":
      raise ValueError("apply_fn is required unless structure='mlp'")
    apply_fn = functools.partial(_mlp_forward, activation=activation, order=tuple(dense_chain(params, layers)))
  n_cls = int(jax.eval_shape(apply_fn, params, jax.ShapeDtypeStruct((1, *x.shape[1:]), x.dtype)).shape[-1])

  def clean_acc(xx, yy, sweeper=None):
    if sweeper is not None and sweeper.mlp is not None:  # the fast paths' own clean outcome (same forward)
      return float(np.asarray(sweeper.mlp.ok0).sum()) / xx.shape[0]
    c, _ = _clean_metrics(params, xx, yy, apply_fn=apply_fn)
    return float(c) / xx.shape[0]

  progress = None
  if not quiet:
    from tqdm.auto import tqdm
    progress = tqdm(total=len(flips.leaf), desc="sweep", unit="flip")

  def score(xx, yy, fl):
    nx = int(xx.shape[0])
    ch = chunk or {"mlp": _auto_chunk(nx, n_cls), "mlp_interval": _auto_chunk(nx, 4),
                   "full": _auto_chunk(nx, 2 * n_cls), "layers": _auto_chunk(nx, 2 * n_cls)}
    mlp = structure == "mlp"
    sw = _Sweeper(apply_fn, params, xx, yy, structure, None if mlp else layers, activation, with_loss,
                  mlp_order=layers if mlp else None)
    c, l, nf = _run(sw, fl, ch, progress)
    acc = c / xx.shape[0]
    if nonfinite == "catastrophic":
      acc = np.where(nf, 0.0, acc)
      c = np.where(nf, 0, c)
    return c, acc, l, nf, clean_acc(xx, yy, sw)

  if screen_examples is not None and screen_examples < n:
    c_s, acc_s, l_s, nf, a0 = score(x[:screen_examples], y[:screen_examples], flips)
    rad_s = relative_accuracy_drop(a0, acc_s, drop=drop)
    redo = np.nonzero(rad_s >= screen_threshold)[0]
    # Unscreened flips: scale the screened correct count to the full set.
    correct = np.round(c_s * (n / screen_examples)).astype(np.int64)
    acc, loss = acc_s.copy(), l_s.copy()
    if len(redo):
      sub = Flips(flips.leaf[redo], flips.index[redo], flips.bit[redo])
      c2, a2, l2, _, acc_clean = score(x, y, sub)
      correct[redo], acc[redo], loss[redo] = c2, a2, l2
    else:
      acc_clean = clean_acc(x, y)
    rad = relative_accuracy_drop(acc_clean, acc, drop=drop)
    keep = np.setdiff1d(np.arange(len(rad)), redo)
    rad[keep] = rad_s[keep]
  else:
    correct, acc, loss, nf, acc_clean = score(x, y, flips)
    rad = relative_accuracy_drop(acc_clean, acc, drop=drop)
  if progress is not None:
    progress.close()
  return SweepResult(flips, correct, acc, loss, nf, rad, acc_clean, n, [_tree.path_str(p) for p, _ in lp])


@functools.partial(jax.jit, static_argnames=("apply_fn",))
def _clean_metrics(params, x, y, *, apply_fn):
  return _metrics(apply_fn(params, x), y, False)


def _mlp_forward(params, x, activation, order):
  h = x.reshape(x.shape[0], -1)
  layers = _dense_list(params, order)
  for i, p in enumerate(layers):
    h = h @ p["w"] + p["b"]
    if i < len(layers) - 1:
      h = activation(h)
  return h


class SampledSweep(NamedTuple):
  """Population estimates from a stratified sampled sweep (every count with a 95 % CI).

  Attributes:
    result: the per-flip SweepResult of the sampled flips.
    strata: leaf id -> {"N", "n", "path", "bits": {bit: {"n", "catastrophic", "catastrophic_wilson"}}}.
    catastrophic: {"estimate", "lo", "hi", "se"} for flips with RAD >= 0.9.
    vulnerable_10: same for flips with RAD > 0.1.
    erratic: same for parameters with any bit RAD > 0.1 (strata = leaves).
    histogram: estimated population counts per 5 % RAD bin.
    per_bit: estimated catastrophic flips per bit position.
    n_nonfinite: estimated flips giving a non-finite parameter.
    total_flips: population size (all bits of all selected parameters).
  """

  result: SweepResult
  strata: dict
  catastrophic: dict
  vulnerable_10: dict
  erratic: dict
  histogram: dict
  per_bit: list
  n_nonfinite: dict
  total_flips: int


def sampled_sweep(apply_fn, params, x, y, *, num_params: int, seed: int = 0, leaves=None, bits=ALL_BITS,
                  min_per_leaf: int = 32, **sweep_kwargs) -> SampledSweep:
  """Sweeps all selected bits of a stratified sample of parameters and estimates population counts.

  Totals (catastrophic flips, flips with RAD > 0.1, non-finite flips, erratic parameters) are stratified by leaf
  with each sampled parameter as a cluster of its swept bits (`metrics.stratified_unit_total`); the histogram and
  per-bit counts weight each flip by N_h / n_h of its (leaf, bit) stratum, and every (leaf, bit) stratum also gets
  a Wilson interval for its catastrophic share (`strata[leaf]["bits"]`).

  Args:
    apply_fn, params, x, y: as `single_bit_sweep`.
    num_params: parameters to sample in total (leaves smaller than their share are enumerated).
    seed: sampling seed.
    leaves, bits: selection.
    min_per_leaf: lower bound of sampled parameters per leaf.
    **sweep_kwargs: passed to `single_bit_sweep` (structure, layers, chunk, nonfinite, screen_examples, ...).

  Returns:
    SampledSweep.

  References:
    Prato, Kim, Chen, Hong, "Hessian-aware Training for Enhancing DNNs Resilience to Parameter Corruptions",
      arXiv:2504.01933, 2025.
  """
  flips, strata = sample_flips(params, num_params, seed=seed, leaves=leaves, bits=bits, min_per_leaf=min_per_leaf)
  res = single_bit_sweep(apply_fn, params, x, y, flips=flips, **sweep_kwargs)
  lp = _tree.leaf_paths(params)
  width = max(layout_of(lp[j][1]).width for j in strata)
  # (leaf, bit) strata.
  N_h, n_h, k_cat, k_10, k_nf, w = [], [], [], [], [], np.zeros(len(flips.leaf))
  for j, s in strata.items():
    m_leaf = flips.leaf == j
    for b in np.unique(flips.bit[m_leaf]):
      m = m_leaf & (flips.bit == b)
      N_h.append(s["N"])
      n_h.append(int(m.sum()))
      k_cat.append(int(np.sum(res.rad[m] >= CATASTROPHIC)))
      k_10.append(int(np.sum(res.rad[m] > ERRATIC)))
      k_nf.append(int(np.sum(res.nonfinite[m])))
      w[m] = s["N"] / m.sum()
      s.setdefault("bits", {})[int(b)] = {"n": n_h[-1], "catastrophic": k_cat[-1],
                                          "catastrophic_wilson": wilson_interval(k_cat[-1], n_h[-1])}
  # Population totals: leaf strata of sampled parameters, each parameter carrying its count over the swept bits
  # (the bits of one parameter are correlated, so they are one cluster in the variance).
  Ne, per_param = [], {"cat": [], "v10": [], "nf": [], "err": []}
  for j, s in strata.items():
    m = flips.leaf == j
    _, inv = np.unique(flips.index[m], return_inverse=True)
    n_par = int(inv.max()) + 1
    Ne.append(s["N"])
    for name, hit in (("cat", res.rad[m] >= CATASTROPHIC), ("v10", res.rad[m] > ERRATIC),
                      ("nf", res.nonfinite[m])):
      per_param[name].append(np.bincount(inv, weights=hit, minlength=n_par))
    per_param["err"].append(per_param["v10"][-1] > 0)
  cat, v10, nfin, err = (stratified_unit_total(Ne, per_param[k]) for k in ("cat", "v10", "nf", "err"))
  hist = rad_histogram(res.rad, weights=w)
  per_bit = counts_per_bit(res.rad, flips.bit, width=width, weights=w)
  total = int(sum(s["N"] * len(resolve_bits(bits, layout_of(lp[j][1]).name)) for j, s in strata.items()))
  return SampledSweep(res, strata, cat, v10, err, hist, per_bit, nfin, total)
