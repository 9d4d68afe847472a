"""Vectorized single-bit-flip sweeps: exhaustive or stratified-sampled, with structure-aware fast paths.

Three evaluators compute the accuracy and loss after each flip, `vmap`ped over fixed-size chunks of flips (the
tail padded with no-op flips, so each leaf compiles once):

* `"full"`: any `apply_fn`; the flip is applied inside the mapped function (memory: chunk x |leaf|).
* `"layers"`: a model given as a list of layers; a flip in layer l leaves the activations before l unchanged, so
  they are computed once (prefix caching) and only layers l.. are re-run.
* `"mlp"`: dense MLPs `{"dense0": {"w", "b"}, ...}`; a flip of W_l[i, j] changes one pre-activation column by
  `delta * a_l[:, i]` (rank one), so the next layer's pre-activation is updated in O(N x C) instead of a forward.

References:
  HAT spec (shared/specs/hat_bitflip.md), section 2 "Modes" 3-4, section 4 "Quick" (rank-one suffix update,
  chunking, screening) and "Sampling and CIs".
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from jaxhw.faults import _tree
from jaxhw.faults.bits import ALL_BITS, layout_of, resolve_bits
from jaxhw.faults.flips import flip_array
from jaxhw.faults.metrics import (
  CATASTROPHIC,
  ERRATIC,
  counts_per_bit,
  rad_histogram,
  relative_accuracy_drop,
  stratified_total,
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
    HAT spec, section 4 "Sampling and CIs".
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


# ----------------------------------------------------------------------------------------------------------------
# Evaluators: for a static leaf id, a jitted function (index[K], bit[K]) -> (correct[K], loss[K], nonfinite[K]).


def _metrics(logits: Float[Array, "n c"], y: Int[Array, " n"], with_loss: bool = True):
  finite = jnp.all(jnp.isfinite(logits), axis=-1)
  pred = jnp.argmax(logits, axis=-1)  # rows with a NaN / Inf are masked out below
  correct = jnp.sum((pred == y) & finite, dtype=jnp.int32)
  if not with_loss:
    return correct, jnp.zeros((), jnp.float32)
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  loss = -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=-1))
  return correct, loss


@functools.partial(jax.jit, static_argnames=("apply_fn", "leaf_id", "with_loss"))
def _full_chunk(params, x, y, idx, bit, *, apply_fn, leaf_id, with_loss):
  leaves, treedef = jax.tree.flatten(params)

  def one(idx, bit):
    new = flip_array(leaves[leaf_id], idx, bit)
    nonfinite = ~jnp.isfinite(new.reshape(-1)[idx].astype(jnp.float32))
    ps = list(leaves)
    ps[leaf_id] = new
    c, l = _metrics(apply_fn(jax.tree.unflatten(treedef, ps), x), y, with_loss)
    return c, l, nonfinite

  return jax.vmap(one)(idx, bit)


def _full_leaf_fn(apply_fn, params, x, y, leaf_id, with_loss=True):
  return functools.partial(_full_chunk, params, x, y, apply_fn=apply_fn, leaf_id=leaf_id, with_loss=with_loss)


@functools.partial(jax.jit, static_argnames=("layers", "l", "k", "with_loss"))
def _layers_chunk(params, h_in, y, idx, bit, *, layers, l, k, with_loss):
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

  return jax.vmap(one)(idx, bit)


def _layers_leaf_fn(layers: Sequence[Layer], params, x, y, leaf_id, with_loss=True):
  layers = tuple((n, f) for n, f in layers)
  paths = [p for p, _ in _tree.leaf_paths(params)]
  top = paths[leaf_id][0]
  names = [n for n, _ in layers]
  if top not in names:
    raise ValueError(f"leaf {_tree.path_str(paths[leaf_id])} belongs to no layer; allowed layer names: {names}")
  l = names.index(top)
  h = x
  for name, fn in layers[:l]:  # prefix, computed once (cached)
    h = fn(params[name] if name is not None else None, h)
  k = [q for q in paths if q[0] == top].index(paths[leaf_id])
  return functools.partial(_layers_chunk, params, h, y, layers=layers, l=l, k=k, with_loss=with_loss)


def mlp_layers(num_layers: int, activation: Callable = jax.nn.relu) -> list[Layer]:
  """An MLP `{"dense0", ..., "dense{L-1}"}` (as `jaxhw.models.mlp_apply`) written as a layer list."""

  def dense(last):
    def f(p, h):
      h = h.reshape(h.shape[0], -1) @ p["w"] + p["b"]
      return h if last else activation(h)
    return f

  return [(f"dense{i}", dense(i == num_layers - 1)) for i in range(num_layers)]


def _mlp_cache(params, x, activation):
  L = len(params)
  a, z = [x.reshape(x.shape[0], -1)], []
  for m in range(L):
    z.append(a[m] @ params[f"dense{m}"]["w"] + params[f"dense{m}"]["b"])
    if m < L - 1:
      a.append(activation(z[m]))
  return a, z


@functools.partial(jax.jit, static_argnames=("top", "kind", "activation", "with_loss"))
def _mlp_chunk(params, a, z, y, idx, bit, *, top, kind, activation, with_loss):
  """Rank-one suffix update for a chunk of flips in leaf params[top][kind] (compiled once per leaf shape)."""
  L = len(params)
  names = [f"dense{i}" for i in range(L)]
  l = names.index(top)
  leaf = params[top][kind]
  out_dim = params[top]["w"].shape[1]

  def one(idx, bit):
    old = leaf.reshape(-1)[idx]
    new = flip_array(old[None], 0, bit)[0]
    nonfinite = ~jnp.isfinite(new)
    # a and z are cached transposed ([features, N]) so that a column is a contiguous row gather.
    if kind == "w":
      i, j = idx // out_dim, idx % out_dim
      zj = z[l][j] + (new - old) * a[l][i]
    else:
      j = idx
      zj = z[l][j] + (new - old)
    if l == L - 1:
      logits = z[l].at[j].set(zj).T
    else:
      d = activation(zj) - a[l + 1][j]
      h = z[l + 1].T + d[:, None] * params[names[l + 1]]["w"][j, :][None, :]
      for m in range(l + 2, L):
        h = activation(h) @ params[names[m]]["w"] + params[names[m]]["b"]
      logits = h
    c, loss = _metrics(logits, y, with_loss)
    return c, loss, nonfinite

  return jax.vmap(one)(idx, bit)


def _mlp_leaf_fn(params, x, y, leaf_id, activation, with_loss=True):
  paths = [p for p, _ in _tree.leaf_paths(params)]
  L = len(params)
  names = [f"dense{i}" for i in range(L)]
  if set(params) != set(names) or any(set(params[n]) != {"w", "b"} for n in names):
    raise ValueError(f"structure='mlp' needs params {{'dense0': {{'w', 'b'}}, ...}}; got keys {sorted(params)}")
  top, kind = paths[leaf_id]
  a, z = _mlp_cache(params, x, activation)
  a, z = [t.T for t in a], [t.T for t in z]
  return functools.partial(_mlp_chunk, params, a, z, y, top=top, kind=kind, activation=activation,
                           with_loss=with_loss)


def _auto_chunk(n_examples: int, n_classes: int, structure: str) -> int:
  budget = 2 ** 24 if structure == "mlp" else 2 ** 21
  k = max(8, min(2048, budget // max(1, n_examples * n_classes)))
  return int(2 ** int(np.log2(k)))


class _Sweeper:
  """Builds and caches one jitted chunk function per leaf."""

  def __init__(self, apply_fn, params, x, y, structure, layers, activation, with_loss=True):
    self.with_loss = with_loss
    if structure not in ("full", "layers", "mlp"):
      raise ValueError(f"structure={structure!r}; allowed: 'full', 'layers', 'mlp'")
    if structure == "layers" and not layers:
      raise ValueError("structure='layers' needs layers=[(name, fn), ...]")
    self.args = (apply_fn, params, jnp.asarray(x), jnp.asarray(y, jnp.int32), structure, layers, activation)
    self.cache = {}

  def fn(self, leaf_id):
    if leaf_id not in self.cache:
      apply_fn, params, x, y, structure, layers, activation = self.args
      if structure == "full":
        self.cache[leaf_id] = _full_leaf_fn(apply_fn, params, x, y, leaf_id, self.with_loss)
      elif structure == "layers":
        self.cache[leaf_id] = _layers_leaf_fn(layers, params, x, y, leaf_id, self.with_loss)
      else:
        self.cache[leaf_id] = _mlp_leaf_fn(params, x, y, leaf_id, activation, self.with_loss)
    return self.cache[leaf_id]


def _run(sweeper: _Sweeper, flips: Flips, chunk: int, progress=None):
  F = len(flips.leaf)
  correct = np.zeros(F, np.int64)
  loss = np.zeros(F, np.float64)
  nonfin = np.zeros(F, bool)
  for leaf_id in np.unique(flips.leaf):
    sel = np.nonzero(flips.leaf == leaf_id)[0]
    fn = sweeper.fn(int(leaf_id))
    for s in range(0, len(sel), chunk):
      part = sel[s:s + chunk]
      idx = np.zeros(chunk, np.int32)
      bit = np.zeros(chunk, np.int32)
      idx[:len(part)] = flips.index[part]
      bit[:len(part)] = flips.bit[part]
      c, l, nf = jax.device_get(fn(jnp.asarray(idx), jnp.asarray(bit)))
      correct[part], loss[part], nonfin[part] = c[:len(part)], l[:len(part)], nf[:len(part)]
      if progress is not None:
        progress.update(len(part))
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
    structure: "full", "layers" (prefix caching, needs `layers`) or "mlp" (rank-one suffix update).
    layers: [(params key or None, fn(layer_params, h) -> h)], applied in order, the last giving logits.
    activation: hidden activation for structure="mlp".
    chunk: flips per vmapped call (static; default from the example count).
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
    HAT spec, section 2 "Modes" 3 and "Metrics", section 4 "Quick".
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
    apply_fn = functools.partial(_mlp_forward, activation=activation)
  n_cls = int(jax.eval_shape(apply_fn, params, x[:1]).shape[-1])

  def clean_acc(xx, yy):
    c, _ = _clean_metrics(params, xx, yy, apply_fn=apply_fn)
    return float(c) / xx.shape[0]

  progress = None
  if not quiet:
    from tqdm.auto import tqdm
    progress = tqdm(total=len(flips.leaf), desc="sweep", unit="flip")

  def score(xx, yy, fl):
    ch = chunk or _auto_chunk(int(xx.shape[0]), n_cls, structure)
    sw = _Sweeper(apply_fn, params, xx, yy, structure, layers, activation, with_loss)
    c, l, nf = _run(sw, fl, ch, progress)
    acc = c / xx.shape[0]
    if nonfinite == "catastrophic":
      acc = np.where(nf, 0.0, acc)
      c = np.where(nf, 0, c)
    return c, acc, l, nf

  if screen_examples is not None and screen_examples < n:
    a0 = clean_acc(x[:screen_examples], y[:screen_examples])
    c_s, acc_s, l_s, nf = score(x[:screen_examples], y[:screen_examples], flips)
    rad_s = relative_accuracy_drop(a0, acc_s, drop=drop)
    redo = np.nonzero(rad_s >= screen_threshold)[0]
    acc_clean = clean_acc(x, y)
    # Unscreened flips: scale the screened correct count to the full set.
    correct = np.round(c_s * (n / screen_examples)).astype(np.int64)
    acc, loss = acc_s.copy(), l_s.copy()
    if len(redo):
      sub = Flips(flips.leaf[redo], flips.index[redo], flips.bit[redo])
      c2, a2, l2, _ = score(x, y, sub)
      correct[redo], acc[redo], loss[redo] = c2, a2, l2
    rad = relative_accuracy_drop(acc_clean, acc, drop=drop)
    rad[np.setdiff1d(np.arange(len(rad)), redo)] = rad_s[np.setdiff1d(np.arange(len(rad)), redo)]
  else:
    acc_clean = clean_acc(x, y)
    correct, acc, loss, nf = score(x, y, flips)
    rad = relative_accuracy_drop(acc_clean, acc, drop=drop)
  if progress is not None:
    progress.close()
  return SweepResult(flips, correct, acc, loss, nf, rad, acc_clean, n, [_tree.path_str(p) for p, _ in lp])


@functools.partial(jax.jit, static_argnames=("apply_fn",))
def _clean_metrics(params, x, y, *, apply_fn):
  return _metrics(apply_fn(params, x), y, False)


def _mlp_forward(params, x, activation):
  h = x.reshape(x.shape[0], -1)
  L = len(params)
  for i in range(L):
    h = h @ params[f"dense{i}"]["w"] + params[f"dense{i}"]["b"]
    if i < L - 1:
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

  Strata are (leaf, bit) for flip counts and leaves for erratic parameters; see `metrics.stratified_total`.

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
    HAT spec, section 4 "Sampling and CIs".
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
  cat = stratified_total(N_h, n_h, k_cat)
  v10 = stratified_total(N_h, n_h, k_10)
  nfin = stratified_total(N_h, n_h, k_nf)
  # Leaf strata for erratic parameters.
  Ne, ne, ke = [], [], []
  for j, s in strata.items():
    m = flips.leaf == j
    idx = flips.index[m]
    bad = res.rad[m] > ERRATIC
    uniq, inv = np.unique(idx, return_inverse=True)
    per_param = np.zeros(len(uniq), bool)
    np.logical_or.at(per_param, inv, bad)
    Ne.append(s["N"])
    ne.append(len(uniq))
    ke.append(int(per_param.sum()))
  err = stratified_total(Ne, ne, ke)
  hist = rad_histogram(res.rad, weights=w)
  per_bit = counts_per_bit(res.rad, flips.bit, width=width, weights=w)
  total = int(sum(s["N"] * len(resolve_bits(bits, layout_of(lp[j][1]).name)) for j, s in strata.items()))
  return SampledSweep(res, strata, cat, v10, err, hist, per_bit, nfin, total)
