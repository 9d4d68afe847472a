"""HAT on LeNet-5 (the paper's MNIST model) and its synergy with system-level bit-flip defenses.

Run: ``jaxhw run hat_lenet --preset quick``. LeNet-5 (61,706 float32 parameters) is trained on the vendored 5k
MNIST subset (4,500 train / 500 val) by five methods with the same seed, optimizer and budget: plain
cross-entropy, weight decay (L2 5e-4), gradient-norm penalty, SAM and HAT (Prato et al., arXiv:2504.01933, 2025;
truncated Hutchinson trace penalty, lambda chosen on the validation split), three seeds. Each model gets an
EXHAUSTIVE single-bit sweep (all 32 bits of all parameters, 1,974,592 flips): every flip is screened on the first
`screen_images` test images (dense layers by the rank-one / correct-class-interval fast path of
`jaxhw.faults.single_bit_sweep` on the cached conv features; conv layers by a one-channel delta update of the
cached activations), and every candidate (RAD >= `candidate_rad` on the screen) is re-scored on all 10,000 test
images: catastrophic bits (RAD >= 0.9) and collapses (accuracy <= chance + 1 point) on 10k images.

Defenses (`jaxhw.faults.defenses`): ECC (SEC Hamming) or parity on chosen bit positions, range restriction, and a
RADAR-style group checksum (Li et al., DATE 2021, arXiv:2101.08254), each with its overhead in bits per weight;
for plain and HAT: catastrophic bits that remain under each defense (the defended outcome of every catastrophic
flip re-evaluated), and the int8 bit-flip attack's flips to collapse (Rakin et al., ICCV 2019, arXiv:1903.12269)
with the defense applied to the attacked weights after every committed flip (an attacker unaware of the defense).

Partial protection (the synergy question): the same defenses on only the first fraction f of the units (runs of
`unit_size` weights, or checksum groups) in an order chosen from the trained weights alone (largest |w|, seeded
random, or small layers first); from the per-flip defended outcomes (saved as `per_flip_seed<S>_<method>.npz`)
the residual catastrophic bits of every f, and the least f (and overhead) each method needs for a residual at or
under a fraction of plain's unprotected count on the same seed. Seeds run as separate invocations
(``--set seeds=1``, each with its own ``--workdir``) are merged by `combine(workdirs, out)`.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxhw import faults as F
from jaxhw import pytree as _tree
from jaxhw.config import check_preset
from jaxhw.data import load_mnist_splits
from jaxhw.experiments import hat as H_study
from jaxhw.faults import defenses as D
from jaxhw.metrics import write_json
from jaxhw.models import LeNet5
from jaxhw.report import Table, figure, write_study_report
from jaxhw.train import TrainConfig

METHODS = H_study.METHODS
PAPER_LENET_PLAIN = H_study.PAPER_CATASTROPHIC_PLAIN
PAPER_LENET_HAT = H_study.PAPER_CATASTROPHIC_HAT
GOAL_REDUCTION = 0.20
GOAL_ACCURACY_POINTS = 1.0
CHANCE = 0.10
COLLAPSE = CHANCE + 0.01
DENSE = ("Dense_0", "Dense_1", "Dense_2")
CONV = ("Conv_0", "Conv_1")


@dataclasses.dataclass(frozen=True)
class DataConfig(H_study.DataConfig):
  screen_images: int = 16        # every flip is scored on these first test images ...
  candidate_rad: float = 0.4     # ... re-scored on the first mid_images when its screened RAD reaches this ...
  mid_images: int = 1000
  mid_rad: float = 0.75          # ... and on all test images when its RAD there reaches this
  bfa_images: int = 1000         # test images for the attack's accuracy (after the attack batch's 128)
  sweep_params: int = 0          # 0: exhaustive (all parameters x 32 bits); else a stratified sample (smoke)


@dataclasses.dataclass(frozen=True)
class DefenseConfig:
  methods: tuple[str, ...] = ("plain", "hat")
  ecc_sets: tuple[tuple[int, ...], ...] = ((30,), (30, 31), (23, 24, 25, 26, 27, 28, 29, 30))
  parity_sets: tuple[tuple[int, ...], ...] = ((30,), (23, 24, 25, 26, 27, 28, 29, 30, 31))
  group_sizes: tuple[int, ...] = (4096, 1024, 256, 64, 16)
  sig_bits: int = 2
  bfa_seeds: tuple[int, ...] = (0,)          # training seeds whose models are attacked
  bfa_iters: int = 40
  # Partial protection (a continuous budget): the first fraction of the units in an order chosen from the weights
  # alone (no sweep); ECC / parity over the exponent MSB on units of `unit_size` consecutive weights, checksums on
  # a fraction of their groups.
  fraction_orders: tuple[str, ...] = ("magnitude", "random", "small_layers")
  fraction_seed: int = 0
  unit_size: int = 16
  fraction_groups: tuple[int, ...] = (64, 16)
  fraction_points: int = 51
  fraction_targets: tuple[float, ...] = (0.0, 0.1, 0.25, 0.5)  # residual <= this x plain's unprotected count
  bfa_fractions: tuple[float, ...] = (0.25, 0.5)     # partial defenses (magnitude order) also put under the BFA


@dataclasses.dataclass(frozen=True)
class HATLenetConfig:
  data: DataConfig = DataConfig()
  methods: H_study.MethodConfig = H_study.MethodConfig(hat_lams=(1e-3, 1e-2), hat_layers=DENSE)
  train: TrainConfig = TrainConfig(optimizer="adam", lr=2e-3, schedule="cosine", batch_size=128, epochs=6, seed=0)
  defenses: DefenseConfig = DefenseConfig()
  seeds: tuple[int, ...] = (0, 1, 2)


def get_config(preset: str = "quick") -> HATLenetConfig:
  """Presets: `smoke` (seconds, for tests), `quick` (minutes on 2 CPU cores), `full` (the paper's LeNet-5 / MNIST
  setting: the full 60k MNIST through tfds, HAT on every layer, 20 epochs, three seeds; needs ``tfds build
  mnist``)."""
  check_preset(preset)
  base = HATLenetConfig()
  if preset == "quick":
    return base
  if preset == "smoke":
    return dataclasses.replace(
        base, data=DataConfig(val_size=500, test_size=2000, screen_images=16, mid_images=500, bfa_images=200,
                              sweep_params=300),
        methods=dataclasses.replace(base.methods, methods=("plain", "hat"), hat_lams=(1e-2,)),
        train=dataclasses.replace(base.train, steps=12),
        defenses=DefenseConfig(group_sizes=(1024, 64), bfa_iters=3), seeds=(0,))
  return dataclasses.replace(base, methods=dataclasses.replace(base.methods, hat_layers=(),
                                                               hat_lams=(1e-4, 1e-3, 1e-2)),
                             train=dataclasses.replace(base.train, epochs=20),
                             data=dataclasses.replace(base.data, screen_images=100, source="tfds", val_size=5000))


# ---- the model as a list of layers (prefix caching) ------------------------------------------------------------

def _conv(x, p, padding):
  return jax.lax.conv_general_dilated(x, p["kernel"], (1, 1), padding,
                                      dimension_numbers=("NHWC", "HWIO", "NHWC")) + p["bias"]


def _pool(h):
  return nn.max_pool(h, (2, 2), (2, 2))


def lenet_layers() -> list:
  """LeNet-5 (`jaxhw.models.LeNet5`) as [(params key, fn(layer params, h) -> h)] for structure="layers"."""
  def dense(last):
    def f(p, h):
      h = h.reshape(h.shape[0], -1) @ p["kernel"] + p["bias"]
      return h if last else jax.nn.relu(h)
    return f
  return [("Conv_0", lambda p, h: _pool(jax.nn.relu(_conv(h, p, "SAME")))),
          ("Conv_1", lambda p, h: _pool(jax.nn.relu(_conv(h, p, "VALID")))),
          ("Dense_0", dense(False)), ("Dense_1", dense(False)), ("Dense_2", dense(True))]


_LAYERS = lenet_layers()
_NAMES = [n for n, _ in _LAYERS]


def lenet_apply(params, x):
  h = x
  for name, f in _LAYERS:
    h = f(params[name], h)
  return h


def _suffix(params, h, start: int):
  for name, f in _LAYERS[start:]:
    h = f(params[name], h)
  return h


# ---- fast exhaustive sweep -------------------------------------------------------------------------------------

def _count(logits, y):
  finite = jnp.all(jnp.isfinite(logits), -1)
  return jnp.sum((jnp.argmax(logits, -1) == y) & finite, dtype=jnp.int32)


@jax.jit
def _conv_cache(params, x):
  c0 = _conv(x, params["Conv_0"], "SAME")
  p0 = _pool(jax.nn.relu(c0))
  c1 = _conv(p0, params["Conv_1"], "VALID")
  feat = _pool(jax.nn.relu(c1)).reshape(x.shape[0], -1)
  z0 = feat @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"]
  return {"c0": c0, "p0": p0, "c1": c1, "feat": feat, "z0": z0}


@jax.jit
def _clean_correct(params, x, y):
  return _count(lenet_apply(params, x), y)


def _dense_tail(params, z0):
  h = jax.nn.relu(z0) @ params["Dense_1"]["kernel"] + params["Dense_1"]["bias"]
  return jax.nn.relu(h) @ params["Dense_2"]["kernel"] + params["Dense_2"]["bias"]


def _delta(leaf, idx, bit):
  old = leaf.reshape(-1)[idx]
  new = F.flip_array(old[None], 0, bit)[0]
  return new - old, ~jnp.isfinite(new)


@functools.partial(jax.jit, static_argnames=("which", "is_bias", "k"))
def _conv_flip_counts(params, x, y, cache, idx, bit, *, which, is_bias, k):
  """Correct counts after each flip of a conv leaf, from the cached activations: a flip of kernel[kh, kw, ci, co]
  (or bias[co]) changes output channel co by delta * (input patch of channel ci) (or delta), so only that channel
  and what follows it are recomputed."""
  n = x.shape[0]
  leaf = params[which]["bias" if is_bias else "kernel"]
  kshape = params[which]["kernel"].shape  # (5, 5, cin, cout)
  cin, cout = kshape[2], kshape[3]
  w0 = params["Dense_0"]["kernel"]

  def one(i, b):
    d, nonfinite = _delta(leaf, i, b)
    co = i if is_bias else i % cout
    ci = 0 if is_bias else (i // cout) % cin
    kw = 0 if is_bias else (i // (cout * cin)) % kshape[1]
    kh = 0 if is_bias else i // (cout * cin * kshape[1])
    if which == "Conv_1":
      c1 = cache["c1"]
      ho, wo = c1.shape[1], c1.shape[2]
      patch = 1.0 if is_bias else jax.lax.dynamic_slice(cache["p0"], (0, kh, kw, ci), (n, ho, wo, 1))[..., 0]
      ch = jax.lax.dynamic_index_in_dim(c1, co, axis=3, keepdims=False) + d * patch
      f_new = _pool(jax.nn.relu(ch)[..., None])[..., 0].reshape(n, -1)               # [n, 25]
      f_old = cache["feat"].reshape(n, -1, cout)[:, :, co]
      rows = w0.reshape(-1, cout, w0.shape[1])[:, co, :]                              # [25, 120]
      z0 = cache["z0"] + (f_new - f_old) @ rows
    else:
      c0 = cache["c0"]
      xp = jnp.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))
      patch = 1.0 if is_bias else jax.lax.dynamic_slice(xp, (0, kh, kw, ci), (n, c0.shape[1], c0.shape[2], 1))[..., 0]
      ch = jax.lax.dynamic_index_in_dim(c0, co, axis=3, keepdims=False) + d * patch
      p_new = _pool(jax.nn.relu(ch)[..., None])
      p_old = jax.lax.dynamic_index_in_dim(cache["p0"], co, axis=3, keepdims=True)
      k1 = jax.lax.dynamic_index_in_dim(params["Conv_1"]["kernel"], co, axis=2, keepdims=True)   # [5, 5, 1, 16]
      c1 = cache["c1"] + jax.lax.conv_general_dilated(p_new - p_old, k1, (1, 1), "VALID",
                                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))
      feat = _pool(jax.nn.relu(c1)).reshape(n, -1)
      z0 = feat @ w0 + params["Dense_0"]["bias"]
    return _count(_dense_tail(params, z0), y), nonfinite

  return jax.lax.map(lambda a: one(*a), (idx, bit), batch_size=k)


def _bucket(m: int, k: int) -> int:
  """The padded length for m items in chunks of k: a power of two >= max(m, k) (shapes repeat across calls)."""
  return max(k, 1 << max(0, int(m - 1).bit_length()))


def _chunk_for(n: int, which: str) -> int:
  per = n * (2000 if which == "Conv_0" else 400)
  return int(max(1, min(256, 2 ** int(np.log2(max(1, 2 ** 22 // per))))))


def _conv_sweep(params, x, y, flips: F.Flips, paths: list[str]):
  """Correct counts and non-finite flags of conv-leaf flips (all flips must be of Conv_0 / Conv_1 leaves)."""
  x, y = jnp.asarray(x), jnp.asarray(y, jnp.int32)
  cache = _conv_cache(params, x)
  correct = np.zeros(len(flips.leaf), np.int64)
  nonfin = np.zeros(len(flips.leaf), bool)
  for leaf_id in np.unique(flips.leaf):
    which, kind = paths[leaf_id].split("/")
    sel = np.nonzero(flips.leaf == leaf_id)[0]
    k = _chunk_for(int(x.shape[0]), which)
    m = len(sel)
    pad = _bucket(m, k) - m
    idx = np.concatenate([flips.index[sel], np.zeros(pad, np.int64)]).astype(np.int32)
    bit = np.concatenate([flips.bit[sel], np.zeros(pad, np.int32)]).astype(np.int32)
    c, nf = _conv_flip_counts(params, x, y, cache, jnp.asarray(idx), jnp.asarray(bit), which=which,
                              is_bias=kind == "bias", k=k)
    correct[sel], nonfin[sel] = np.asarray(c)[:m], np.asarray(nf)[:m]
  return correct, nonfin


def _dense_sub(params):
  return {k: params[k] for k in DENSE}


def _score(params, x, y, flips: F.Flips, paths: list[str]):
  """(correct, nonfinite) of each flip on (x, y): dense flips by the "mlp" sweep on cached conv features, conv
  flips by `_conv_sweep`. Flip leaf ids refer to `params`' leaf order."""
  correct = np.zeros(len(flips.leaf), np.int64)
  nonfin = np.zeros(len(flips.leaf), bool)
  is_conv = np.asarray([paths[j].split("/")[0] in CONV for j in flips.leaf], bool)
  if is_conv.any():
    s = np.nonzero(is_conv)[0]
    correct[s], nonfin[s] = _conv_sweep(params, x, y, F.Flips(flips.leaf[s], flips.index[s], flips.bit[s]), paths)
  if (~is_conv).any():
    s = np.nonzero(~is_conv)[0]
    sub = _dense_sub(params)
    sub_paths = [_tree.path_str(p) for p, _ in _tree.leaf_paths(sub)]
    remap = np.asarray([sub_paths.index(p) if p in sub_paths else -1 for p in paths])
    feat = _conv_cache(params, jnp.asarray(x))["feat"]
    r = F.single_bit_sweep(None, sub, feat, y, flips=F.Flips(remap[flips.leaf[s]], flips.index[s], flips.bit[s]),
                           structure="mlp", with_loss=False)
    correct[s], nonfin[s] = r.correct, r.nonfinite
  correct = np.where(nonfin, 0, correct)  # nonfinite="catastrophic"
  return correct, nonfin


def lenet_sweep(params, x, y, *, flips: F.Flips | None = None, screen_images: int | None = None,
                candidate_rad: float = 0.6, mid_images: int | None = None, mid_rad: float = 0.75) -> dict:
  """Single-bit sweep of LeNet-5 params on (x, y), optionally screened.

  Without screening every flip is scored on all of (x, y). With `screen_images` = s, every flip is scored on the
  first s examples; those with screened RAD >= `candidate_rad` are re-scored on the first `mid_images` (if given),
  and those still at RAD >= `mid_rad` on all examples; the others keep their screened figures (`rescored`
  False). Only flips re-scored on all examples can count as catastrophic (RAD >= 0.9 there), so the thresholds
  must sit well under 0.9: a flip that breaks >= 90 % of all correct examples and < 60 % of 32 screened ones is
  a binomial tail event of probability ~1e-6.

  Returns:
    {"flips", "correct", "accuracy", "rad", "nonfinite", "rescored", "clean_accuracy", "n"} (per-flip numpy
    arrays; accuracy and RAD on all of (x, y) where rescored, else on the screen).
  """
  paths = [_tree.path_str(p) for p, _ in _tree.leaf_paths(params)]
  flips = F.all_flips(params) if flips is None else flips
  x, y = np.asarray(x), np.asarray(y, np.int32)
  n = len(y)
  acc0 = float(_clean_correct(params, jnp.asarray(x), jnp.asarray(y))) / n
  if screen_images is None or screen_images >= n:
    c, nf = _score(params, x, y, flips, paths)
    acc = c / n
    return {"flips": flips, "correct": c, "accuracy": acc, "rad": F.relative_accuracy_drop(acc0, acc),
            "nonfinite": nf, "rescored": np.ones(len(c), bool), "clean_accuracy": acc0, "n": n}
  xs, ys = x[:screen_images], y[:screen_images]
  acc0_s = float(_clean_correct(params, jnp.asarray(xs), jnp.asarray(ys))) / screen_images
  c_s, nf = _score(params, xs, ys, flips, paths)
  acc = c_s / screen_images
  rad = F.relative_accuracy_drop(acc0_s, acc)
  correct = np.round(c_s * n / screen_images).astype(np.int64)
  redo = np.nonzero(rad >= candidate_rad)[0]
  if mid_images and mid_images < n and len(redo):  # a second screen before the full set
    xm, ym = x[:mid_images], y[:mid_images]
    acc0_m = float(_clean_correct(params, jnp.asarray(xm), jnp.asarray(ym))) / mid_images
    c_m, _ = _score(params, xm, ym, F.Flips(flips.leaf[redo], flips.index[redo], flips.bit[redo]), paths)
    acc[redo] = c_m / mid_images
    rad[redo] = F.relative_accuracy_drop(acc0_m, acc[redo])
    correct[redo] = np.round(c_m * n / mid_images).astype(np.int64)
    redo = redo[rad[redo] >= mid_rad]
  if len(redo):
    c2, _ = _score(params, x, y, F.Flips(flips.leaf[redo], flips.index[redo], flips.bit[redo]), paths)
    correct[redo] = c2
    acc = acc.copy()
    acc[redo] = c2 / n
    rad[redo] = F.relative_accuracy_drop(acc0, acc[redo])
  rescored = np.zeros(len(rad), bool)
  rescored[redo] = True
  return {"flips": flips, "correct": correct, "accuracy": acc, "rad": rad, "nonfinite": nf, "rescored": rescored,
          "clean_accuracy": acc0, "n": n}


# ---- defenses ----------------------------------------------------------------------------------------------------

def _flip_value(v: np.ndarray, bit: np.ndarray) -> np.ndarray:
  return (v.astype(np.float32).view(np.uint32) ^ (np.uint32(1) << bit.astype(np.uint32))).view(np.float32)


@functools.partial(jax.jit, static_argnames=("start", "leaf", "kind", "k"))
def _edit_counts(params, h, y, idx, val, *, start, leaf, kind, k):
  """Correct counts after setting params[leaf][kind].flat[idx[e, :]] = val[e, :] for each edit e (padded edits
  repeat an index with the same value), running the model from layer `start` on its cached input h."""
  base = params[leaf][kind]

  def one(i, v):
    new = base.reshape(-1).at[i].set(v).reshape(base.shape)
    p = {**params, leaf: {**params[leaf], kind: new}}
    return _count(_suffix(p, h, start), y)
  return jax.lax.map(lambda a: one(*a), (idx, val), batch_size=k)


@functools.partial(jax.jit, static_argnames=("start",))
def _prefix(params, x, start):
  h = jnp.asarray(x)
  for name, f in _LAYERS[:start]:
    h = f(params[name], h)
  return h


def _edit_accuracy(params, x, y, leaf_path: str, idx: np.ndarray, val: np.ndarray) -> np.ndarray:
  """Accuracy on (x, y) after each edit (rows of idx / val) of one leaf."""
  leaf, kind = leaf_path.split("/")
  start = _NAMES.index(leaf)
  h = _prefix(params, x, start)
  n = len(y)
  k = int(max(1, min(64, 2 ** int(np.log2(max(1, 2 ** 22 // (n * (400 if start >= 2 else 4000))))))))
  m = idx.shape[0]
  pad = _bucket(m, k) - m  # power-of-two sizes: few compilations
  idx = np.concatenate([idx, np.repeat(idx[:1], pad, 0)]) if pad else idx
  val = np.concatenate([val, np.repeat(val[:1], pad, 0)]) if pad else val
  c = _edit_counts(params, h, jnp.asarray(y, jnp.int32), jnp.asarray(idx, jnp.int32), jnp.asarray(val, jnp.float32),
                   start=start, leaf=leaf, kind=kind, k=k)
  return np.asarray(c)[:m] / n


def _still_catastrophic(params, xt, yt, acc0, leaf_path, idx, val, screen):
  """Whether each edit still costs >= 90 % of the clean accuracy (screened on `screen` images, confirmed on all)."""
  out = np.zeros(idx.shape[0], bool)
  if idx.shape[0] == 0:
    return out
  acc_s0 = float(_clean_correct(params, jnp.asarray(xt[:screen]), jnp.asarray(yt[:screen]))) / screen
  acc_s = _edit_accuracy(params, xt[:screen], yt[:screen], leaf_path, idx, val)
  cand = np.nonzero(F.relative_accuracy_drop(acc_s0, acc_s) >= 0.5)[0]
  if len(cand):
    acc = _edit_accuracy(params, xt, yt, leaf_path, idx[cand], val[cand])
    out[cand] = F.relative_accuracy_drop(acc0, acc) >= 0.9
  return out


def defense_residuals(params, sweep: dict, xt, yt, dc: DefenseConfig, screen: int,
                      per_flip: dict | None = None) -> list[dict]:
  """Catastrophic flips (RAD >= 0.9 on all test images) that remain under each defense.

  ECC on bit set B: a flip in B is corrected, so the flips outside B remain. Parity on B: a flip in B zeroes
  the weight, so those whose zeroed weight is still catastrophic remain too. Range restriction: the flipped
  weight is clipped to the leaf's trained range. Group checksum: the flip is detected and its group zeroed. The
  defended outcome of every catastrophic flip is evaluated (screened, then confirmed on all test images); the
  correspondence of these rules with `jaxhw.faults.defenses` is checked in the tests. When `per_flip` is a dict it
  receives the per-flip outcomes (catastrophic flips' leaf / index / bit, `zero_bad`, `clip_bad`, and
  `group_bad_<g>` per group size), from which `protection_curves` derives partial protection without new sweeps.
  """
  paths = [_tree.path_str(p) for p, _ in _tree.leaf_paths(params)]
  leaves = [np.asarray(v) for v in jax.tree.leaves(params)]
  cat = np.nonzero(sweep["rescored"] & (sweep["rad"] >= 0.9))[0]
  fl = sweep["flips"]
  leaf, index, bit = fl.leaf[cat], fl.index[cat], fl.bit[cat]
  acc0 = sweep["clean_accuracy"]
  rows = [{"defense": "none", "setting": "-", "overhead_bits_per_weight": 0.0, "residual_catastrophic": len(cat)}]
  for bset in dc.ecc_sets:
    d = D.ecc_protect(bset)
    rows.append({"defense": "ecc", "setting": _bits_name(bset), "overhead_bits_per_weight":
                 d.overhead(params)["bits_per_weight"], "residual_catastrophic": int(np.sum(~np.isin(bit, bset)))})
  # Zeroed single weights (parity) and clipped weights (range restriction), per leaf.
  zero_bad = np.zeros(len(cat), bool)
  clip_bad = np.zeros(len(cat), bool)
  ranges = D.range_restriction().init(params)
  for j in np.unique(leaf):
    s = np.nonzero(leaf == j)[0]
    uniq, inv = np.unique(index[s], return_inverse=True)
    bad = _still_catastrophic(params, xt, yt, acc0, paths[j], uniq[:, None], np.zeros((len(uniq), 1)), screen)
    zero_bad[s] = bad[inv]
    lo, hi = (float(v) for v in ranges[j])
    new = _flip_value(leaves[j].reshape(-1)[index[s]], bit[s])
    with np.errstate(invalid="ignore"):
      clipped = np.where(np.isnan(new), 0.0, np.clip(new, lo, hi)).astype(np.float32)
      inside = (new >= lo) & (new <= hi)
    clip_bad[s] = inside  # unchanged by the clip: still catastrophic
    ev = np.nonzero(~inside)[0]
    if len(ev):
      clip_bad[s[ev]] = _still_catastrophic(params, xt, yt, acc0, paths[j], index[s][ev][:, None],
                                            clipped[ev][:, None], screen)
  for bset in dc.parity_sets:
    d = D.parity_protect(bset)
    inside = np.isin(bit, bset)
    rows.append({"defense": "parity", "setting": _bits_name(bset), "overhead_bits_per_weight":
                 d.overhead(params)["bits_per_weight"],
                 "residual_catastrophic": int(np.sum(~inside) + np.sum(inside & zero_bad))})
  d = D.range_restriction()
  rows.append({"defense": "range", "setting": "weights", "overhead_bits_per_weight":
               d.overhead(params)["bits_per_weight"], "residual_catastrophic": int(np.sum(clip_bad))})
  for g in dc.group_sizes:
    d = D.group_checksum(g, sig_bits=dc.sig_bits)
    bad = np.zeros(len(cat), bool)
    for j in np.unique(leaf):
      s = np.nonzero(leaf == j)[0]
      groups, inv = np.unique(index[s] // g, return_inverse=True)
      size = leaves[j].size
      idx = np.minimum(groups[:, None] * g + np.arange(g)[None, :], size - 1)  # tail: repeats the last index
      val = np.zeros(idx.shape, np.float32)  # the repeated tail index is in the same (zeroed) group
      gb = _still_catastrophic(params, xt, yt, acc0, paths[j], idx, val, screen)
      bad[s] = gb[inv]
    rows.append({"defense": "checksum", "setting": f"groups of {g}", "overhead_bits_per_weight":
                 d.overhead(params)["bits_per_weight"], "residual_catastrophic": int(np.sum(bad))})
    if per_flip is not None:
      per_flip[f"group_bad_{g}"] = bad
  if per_flip is not None:
    per_flip.update(leaf=leaf, index=index, bit=bit, zero_bad=zero_bad, clip_bad=clip_bad)
  return rows


def _bits_name(bset) -> str:
  b = sorted(bset)
  if len(b) > 2 and b == list(range(b[0], b[-1] + 1)):
    return f"bits {b[0]}-{b[-1]}"
  return "bit " + ",".join(map(str, b))


def _int8_defenses(dc: DefenseConfig, params=None) -> dict:
  """Defenses of the int8 weights the attack flips (float bit 30, the exponent MSB, maps to int8 bit 7); with
  `params` (the float weights of the attacked leaves, {path: array} like the int8 tree), also the partial ones (a
  fraction `bfa_fractions` of the units, ranked by the float weights' magnitude)."""
  out = {"none": D.no_defense()}
  if params is not None:
    for f in dc.bfa_fractions:
      for label, fam, unit in _partial_families(dc):
        if fam == "parity" or (fam == "checksum" and unit != min(dc.fraction_groups)):
          continue
        ranks = D.unit_ranks(params, unit, order="magnitude")
        out[f"{label}, {100 * f:g} % of units (magnitude)"] = _partial_defense(fam, D.fraction_mask(ranks, f), unit,
                                                                               dc, int8=True, order="magnitude")
  for bset in dc.ecc_sets:
    out[f"ecc {_bits_name(bset)}"] = D.ecc_protect(_int8_bits(bset))
  for bset in dc.parity_sets:
    out[f"parity {_bits_name(bset)}"] = D.parity_protect(_int8_bits(bset))
  out["range weights"] = D.range_restriction()
  for g in dc.group_sizes:
    out[f"checksum groups of {g}"] = D.group_checksum(g, sig_bits=dc.sig_bits)
  return out


def _int8_bits(bset) -> tuple[int, ...]:
  """Float32 bit positions to int8 ones: the int8 MSB (bit 7, weight -128) takes the exponent MSB's (30) role, bit 6
  the sign's (31); a set of 8 or more float bits covers all 8 int8 bits."""
  if len(bset) >= 8:
    return tuple(range(8))
  return tuple(sorted(({7} if 30 in bset else set()) | ({6} if 31 in bset else set())))


def bfa_under_defenses(params, xt, yt, dc: DefenseConfig, n_eval: int, seed: int) -> dict:
  """Flips to collapse (accuracy <= chance + 1 pt) of a defense-unaware progressive bit search, per defense.

  One attack (no early stop, `bfa_iters` iterations) gives the trajectory of committed int8 flips; after each
  iteration every defense is applied to the attacked int8 weights (state from the clean int8 weights) and the
  dequantized model is evaluated. Returns {defense label: flips to collapse or None}, plus the trajectory length.
  """
  rng = np.random.default_rng(10_000 * seed)
  pick = rng.choice(np.arange(n_eval, len(yt)), 128, replace=False)
  xe, ye = jnp.asarray(xt[:n_eval]), jnp.asarray(yt[:n_eval])
  ev_jit = jax.jit(lambda p: jnp.mean(jnp.argmax(lenet_apply(p, xe), -1) == ye))
  r = F.bit_flip_attack(lenet_apply, params, xt[pick], yt[pick], eval_fn=ev_jit, iterations=dc.bfa_iters)
  q0, scales = F.quantize_params(params)
  ids = sorted(q0)
  paths = [_tree.path_str(p) for p, _ in _tree.leaf_paths(params)]
  q0_tree = {paths[j]: np.asarray(q0[j]) for j in ids}
  cur = {k: v.reshape(-1).view(np.uint8).copy() for k, v in q0_tree.items()}
  traj = [dict(q0_tree)]
  for it in r.flips:
    for path, e, b in it:
      cur[path][e] ^= np.uint8(1 << b)
    traj.append({k: cur[k].copy().view(np.int8).reshape(q0_tree[k].shape) for k in cur})
  out = {}
  flat = [np.asarray(v) for v in jax.tree.leaves(params)]
  for name, d in _int8_defenses(dc, {paths[j]: flat[j] for j in ids}).items():
    st = d.init({k: jnp.asarray(v) for k, v in q0_tree.items()})
    app = jax.jit(lambda q, st=st, d=d: d.apply(q, st)[0])
    hit = None
    for t, q in enumerate(traj):
      qd = app({k: jnp.asarray(v) for k, v in q.items()})
      p = F.dequantize_params(params, {j: qd[paths[j]] for j in ids}, scales)
      if float(ev_jit(p)) <= COLLAPSE:
        hit = int(r.num_flips[t])
        break
    out[name] = hit
  out["_attack_flips"] = int(r.num_flips[-1])
  out["_attack_accuracy"] = float(r.accuracy[-1])
  return out


# ---- partial protection ----------------------------------------------------------------------------------------

_PARTIAL_BIT = 30  # every catastrophic flip measured so far is an exponent-MSB flip


def _partial_defense(fam: str, units: list, unit: int, dc: DefenseConfig, *, int8: bool = False,
                     order: str = "magnitude") -> D.Defense:
  """A partial defense; its unit flags are stored (1 bit per unit) only for the magnitude order: a seeded random
  subset is regenerated from the seed, and a small-layers prefix is a few layer boundaries."""
  bits = (7,) if int8 else (_PARTIAL_BIT,)
  flags = order == "magnitude"
  if fam == "ecc":
    return D.ecc_protect(bits, units=units, unit_size=unit, unit_flags=flags)
  if fam == "parity":
    return D.parity_protect(bits, units=units, unit_size=unit, unit_flags=flags)
  return D.group_checksum(unit, sig_bits=dc.sig_bits, groups=units, unit_flags=flags)


def _partial_families(dc: DefenseConfig) -> list[tuple[str, str, int]]:
  """[(label, family, unit size)] of the partial defenses."""
  return ([(f"ecc bit {_PARTIAL_BIT}", "ecc", dc.unit_size), (f"parity bit {_PARTIAL_BIT}", "parity", dc.unit_size)]
          + [(f"checksum groups of {g}", "checksum", g) for g in dc.fraction_groups])


def protection_curves(per_flip: dict, params, dc: DefenseConfig) -> list[dict]:
  """Residual catastrophic flips and overhead vs the protected fraction, for each partial defense and order.

  Units are ranked by `jaxhw.faults.defenses.unit_ranks` from the trained weights alone (largest mean |w| first,
  or a seeded random permutation), never from the sweep; the first fraction f of them is protected. A catastrophic
  flip is removed when its unit is protected and the defended outcome is benign: ECC over the exponent MSB removes
  every bit-30 flip, parity over it the bit-30 flips whose zeroed weight is benign (`zero_bad` False), a group
  checksum the flips whose zeroed group is benign (`group_bad_<g>` False). These per-flip outcomes come from
  `defense_residuals`, so no model is evaluated here.

  Returns:
    One dict per (defense, order): "fractions", "residual", "overhead" (bits per weight; 0 at f = 0), plus the
    per-flip "unit_rank" / "fixable" arrays and "n_units" (for `D.smallest_fraction`; not JSON).
  """
  fr = np.linspace(0.0, 1.0, dc.fraction_points)
  leaf, index, bit = (np.asarray(per_flip[k]) for k in ("leaf", "index", "bit"))
  out = []
  for order in dc.fraction_orders:
    for label, fam, unit in _partial_families(dc):
      if fam == "ecc":
        fixable = bit == _PARTIAL_BIT
      elif fam == "parity":
        fixable = (bit == _PARTIAL_BIT) & ~np.asarray(per_flip["zero_bad"], bool)
      else:
        key = f"group_bad_{unit}"
        if key not in per_flip:
          continue
        fixable = ~np.asarray(per_flip[key], bool)
      ranks = D.unit_ranks(params, unit, order=order, seed=dc.fraction_seed)
      n_units = sum(len(r) for r in ranks)
      ur = np.asarray([ranks[j][i // unit] for j, i in zip(leaf, index)], np.int64)
      over = [0.0 if f == 0 else
              _partial_defense(fam, D.fraction_mask(ranks, f), unit, dc, order=order).overhead(params)[
                  "bits_per_weight"]
              for f in fr]
      out.append({"defense": label, "family": fam, "unit": unit, "order": order, "fractions": fr.tolist(),
                  "residual": D.residual_vs_fraction(ur, fixable, n_units, fr).tolist(), "overhead": over,
                  "unit_rank": ur, "fixable": fixable, "n_units": n_units, "ranks": ranks})
  return out


def protection_needed(curves: list[dict], params, target: int, dc: DefenseConfig) -> list[dict]:
  """Per curve of `protection_curves`, the least protected fraction (whole units, exact) with residual catastrophic
  flips <= `target`, and the least overhead (bits per weight) reaching it: that fraction's, or full protection's
  when the unit flags make the partial one dearer (None when unreachable)."""
  rows = []
  for c in curves:
    f = D.smallest_fraction(c["unit_rank"], c["fixable"], c["n_units"], target)
    over = None if f is None else (0.0 if f == 0 else min(
        _partial_defense(c["family"], D.fraction_mask(c["ranks"], g), c["unit"], dc, order=c["order"]).overhead(
            params)["bits_per_weight"] for g in (f, 1.0)))
    rows.append({"defense": c["defense"], "order": c["order"], "target": int(target), "fraction": f,
                 "overhead_bits_per_weight": over})
  return rows


def _params_from_npz(d) -> dict:
  out = {}
  for k in d.files:
    if k.startswith("param/"):
      layer, kind = k[len("param/"):].split("/")
      out.setdefault(layer, {})[kind] = np.asarray(d[k])
  return out


def partial_protection_study(entries: list[tuple[int, str, dict, dict]], dc: DefenseConfig) -> dict:
  """Curves and needed fractions over (seed, method, per-flip outcomes, params) entries.

  Targets are per seed: residual <= t x plain's unprotected catastrophic count on the same seed, for t in
  `fraction_targets` (0: none left). Returns {"curves": mean curve per (method, defense, order) with per-seed
  residuals, "needed": per (seed, method, defense, order, target) rows, "synergy": per (defense, order, target)
  the fraction and overhead each method needs, per seed, and HAT's over plain's}.
  """
  base = {s: len(pf["leaf"]) for s, m, pf, _ in entries if m == "plain"}
  curves, needed = {}, []
  for seed, method, pf, params in entries:
    cs = protection_curves(pf, params, dc)
    for c in cs:
      k = (method, c["defense"], c["order"])
      cur = curves.setdefault(k, {"method": method, "defense": c["defense"], "order": c["order"],
                                  "fractions": c["fractions"], "overhead": [], "residual_per_seed": {}})
      cur["overhead"].append(c["overhead"])
      cur["residual_per_seed"][seed] = c["residual"]
    if seed in base:
      for t in dc.fraction_targets:
        for r in protection_needed(cs, params, int(np.floor(t * base[seed] + 1e-9)), dc):
          needed.append({"seed": seed, "method": method, "target_rel": t, **r})
  for c in curves.values():
    c["overhead"] = np.mean(c["overhead"], axis=0).tolist()
    c["residual"] = np.mean(list(c["residual_per_seed"].values()), axis=0).tolist()
    c["residual_per_seed"] = {str(s): v for s, v in c["residual_per_seed"].items()}
  synergy = []
  for key in dict.fromkeys((r["defense"], r["order"], r["target_rel"]) for r in needed):
    rs = [r for r in needed if (r["defense"], r["order"], r["target_rel"]) == key]
    per = {}
    for r in rs:
      per.setdefault(r["method"], {})[r["seed"]] = (r["fraction"], r["overhead_bits_per_weight"])
    row = {"defense": key[0], "order": key[1], "target_rel": key[2],
           "targets": {str(s): int(np.floor(key[2] * base[s] + 1e-9)) for s in sorted(base)}, "methods": {}}
    for m, d in per.items():
      fs = [v[0] for v in d.values()]
      os_ = [v[1] for v in d.values()]
      ok = [f for f in fs if f is not None]
      row["methods"][m] = {"fraction_per_seed": {str(s): v[0] for s, v in d.items()},
                           "overhead_per_seed": {str(s): v[1] for s, v in d.items()},
                           "fraction_mean": float(np.mean(ok)) if len(ok) == len(fs) else None,
                           "overhead_mean": float(np.mean(os_)) if len(ok) == len(fs) else None}
    if "plain" in per:
      for m in per:
        ratios = [per[m][s][0] / per["plain"][s][0] for s in per[m]
                  if s in per["plain"] and per[m][s][0] is not None and per["plain"][s][0]]
        row["methods"][m]["fraction_vs_plain_per_seed"] = ratios
    synergy.append(row)
  return {"curves": list(curves.values()), "needed": needed, "synergy": synergy}


def load_entries(workdir: Path, methods=None) -> list[tuple[int, str, dict, dict]]:
  """(seed, method, per-flip outcomes, params) from the `per_flip_seed<s>_<method>.npz` files of a workdir."""
  out = []
  for f in sorted(Path(workdir).glob("per_flip_seed*_*.npz")):
    stem = f.stem[len("per_flip_seed"):]
    seed, method = stem.split("_", 1)
    if methods is not None and method not in methods:
      continue
    d = np.load(f)
    pf = {k: np.asarray(d[k]) for k in d.files if not k.startswith("param/")}
    out.append((int(seed), method, pf, _params_from_npz(d)))
  return out


# ---- study -------------------------------------------------------------------------------------------------------

# Each method's loss and optimizer are the MLP study's, on this study's LeNet-5 forward.
_train_method = functools.partial(H_study._train_method, apply_fn=lenet_apply)


def run(config: HATLenetConfig, workdir: Path, *, quiet: bool = True) -> dict:
  """Trains, sweeps and defends LeNet-5 per method and seed; writes summary.json, plots and report.md."""
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  t_all = time.perf_counter()
  for m in config.methods.methods:
    if m not in METHODS:
      raise ValueError(f"methods contains {m!r}; allowed: {list(METHODS)}")
  first = load_mnist_splits(config.data, seed=config.seeds[0])
  xt, yt = first.x_test, first.y_test
  apply_jit = jax.jit(lenet_apply)
  model = LeNet5()
  dc = config.defenses
  per_seed, lam_log, chosen, defense_rows, bfa_rows, entries = [], [], None, [], [], []
  for k, seed in enumerate(config.seeds):
    split = load_mnist_splits(config.data, seed=seed)
    x, y, xv, yv = split.x_train, split.y_train, split.x_val, split.y_val
    params0 = model.init(jax.random.key(seed), jnp.zeros((1, 28, 28, 1)))["params"]
    rows = {}
    trained, chosen = H_study.train_methods(config, k, seed, params0, (x, y), (xv, yv), apply_jit, chosen, lam_log,
                                            _train_method)
    for method, (lam, r, val) in trained.items():
      t0 = time.perf_counter()
      flips = None if config.data.sweep_params == 0 else F.sample_flips(r.params, config.data.sweep_params,
                                                                         seed=seed)[0]
      sw = lenet_sweep(r.params, xt, yt, flips=flips, screen_images=config.data.screen_images,
                       candidate_rad=config.data.candidate_rad, mid_images=config.data.mid_images,
                       mid_rad=config.data.mid_rad)
      sweep_s = time.perf_counter() - t0
      full = sw["rescored"]
      cat = int(np.sum(full & (sw["rad"] >= 0.9)))
      row = {"method": method, "lam": lam, "val_accuracy": val, "step_ms": 1e3 * r.step_time_s,
             "clean_accuracy": sw["clean_accuracy"], "catastrophic_10k": cat,
             "collapse_count": int(np.sum(full & (sw["accuracy"] <= COLLAPSE))),
             "candidates_rescored": int(full.sum()), "sweep_s": sweep_s, "n_flips": len(sw["rad"]),
             "per_bit": F.counts_per_bit(np.where(full, sw["rad"], 0.0), sw["flips"].bit),
             "per_leaf": {p: int(np.sum(full & (sw["rad"] >= 0.9) & (sw["flips"].leaf == j)))
                          for j, p in enumerate(_tree.path_str(q) for q, _ in
                                                _tree.leaf_paths(r.params))}}
      if method in dc.methods:
        t0 = time.perf_counter()
        pf = {}
        for d in defense_residuals(r.params, sw, xt, yt, dc, config.data.screen_images, per_flip=pf):
          defense_rows.append({"seed": seed, "method": method, **d})
        np.savez_compressed(workdir / f"per_flip_seed{seed}_{method}.npz", **pf,
                            **{f"param/{p}": np.asarray(v) for p, v in
                               ((_tree.path_str(q), v) for q, v in _tree.leaf_paths(r.params))})
        entries.append((seed, method, pf, jax.tree.map(np.asarray, r.params)))
        if seed in dc.bfa_seeds:
          b = bfa_under_defenses(r.params, xt, yt, dc, config.data.bfa_images, seed)
          bfa_rows.append({"seed": seed, "method": method, **b})
        row["defense_s"] = time.perf_counter() - t0
      rows[method] = row
      if not quiet:
        print(f"[hat_lenet] seed {seed} {method}: acc {row['clean_accuracy']:.4f} cat10k {cat} "
              f"collapse {row['collapse_count']} sweep {sweep_s:.0f}s", flush=True)
    plain_ms = rows["plain"]["step_ms"] if "plain" in rows else float("nan")
    for row in rows.values():
      row["train_time_ratio"] = row["step_ms"] / plain_ms
    per_seed.append(rows)
  partial = partial_protection_study(entries, dc) if entries else None
  summary = _summarize(config, per_seed, defense_rows, bfa_rows, lam_log, partial)
  plots = _plots(workdir, summary, config)
  summary["wall_s"] = time.perf_counter() - t_all
  write_json(workdir / "summary.json", summary)
  _report(workdir, config, summary, plots)
  return summary


def bfa_from_saved(workdir, seed: int, method: str, config: HATLenetConfig | None = None) -> dict:
  """`bfa_under_defenses` (with the partial defenses) on the params saved in a workdir's per-flip file; a BFA row
  for `combine(..., bfa_rows=...)`."""
  config = config or get_config("quick")
  params = [e for e in load_entries(workdir, (method,)) if e[0] == seed][0][3]
  split = load_mnist_splits(config.data, seed=seed)
  t0 = time.perf_counter()
  b = bfa_under_defenses(jax.tree.map(jnp.asarray, params), split.x_test, split.y_test, config.defenses,
                         config.data.bfa_images, seed)
  return {"seed": seed, "method": method, **b, "_bfa_s": time.perf_counter() - t0}


def combine(workdirs, out, *, config: HATLenetConfig | None = None, bfa_extra: bool = False,
            bfa_rows: list | None = None, quiet: bool = True) -> dict:
  """Merges per-seed (or per-method) runs into one summary, partial-protection study, plots and report.

  Seeds run as separate `jaxhw run hat_lenet --set seeds=S` invocations (each into its own workdir) are merged
  here: the per-seed method rows, defense rows and BFA rows of every workdir's summary.json, and the per-flip
  outcomes (`per_flip_seed<S>_<method>.npz`) for the partial protection. A (seed, method) found in two workdirs
  keeps the first. With `bfa_extra`, the BFA is rerun (from the saved params) on every saved (seed, method) whose
  summary has no BFA row with the partial defenses; `bfa_rows` (from `bfa_from_saved`) replace the rows of their
  (seed, method).

  Run: ``python -c "from jaxhw.experiments import hat_lenet as h; h.combine(['runs/hat_lenet-s0', 'runs/hat_lenet-s1'],
  'runs/hat_lenet-quick')"``.
  """
  import json

  out = Path(out)
  out.mkdir(parents=True, exist_ok=True)
  config = config or get_config("quick")
  seeds, rows, drows, brows, lams, entries, seen = [], {}, [], [], [], [], set()
  for w in map(Path, workdirs):
    sm = json.loads((w / "summary.json").read_text())
    for sd, srows in zip(sm["seeds"], sm["per_seed"]):
      for m, r in srows.items():
        if (sd, m) in seen:
          continue
        seen.add((sd, m))
        rows.setdefault(sd, {})[m] = r
        drows += [d for d in sm["defense_rows_per_seed"] if d["seed"] == sd and d["method"] == m]
        brows += [b for b in sm["bfa_per_seed"] if b["seed"] == sd and b["method"] == m]
        entries += [e for e in load_entries(w, (m,)) if e[0] == sd]
    lams += sm["lam_selection"]
  seeds = sorted(rows)
  methods = tuple(m for m in METHODS if any(m in rows[s] for s in seeds))
  config = dataclasses.replace(config, seeds=tuple(seeds),
                               methods=dataclasses.replace(config.methods, methods=methods),
                               defenses=dataclasses.replace(config.defenses, methods=tuple(
                                   m for m in methods if any(e[1] == m for e in entries))))
  if bfa_extra:
    split = load_mnist_splits(config.data, seed=seeds[0])
    for sd, m, _, params in entries:
      have = [b for b in brows if b["seed"] == sd and b["method"] == m]
      if have and any("of units" in k for k in have[0]):
        continue
      t0 = time.perf_counter()
      b = bfa_under_defenses(jax.tree.map(jnp.asarray, params), split.x_test, split.y_test, config.defenses,
                             config.data.bfa_images, sd)
      brows = [x for x in brows if not (x["seed"] == sd and x["method"] == m)]
      brows.append({"seed": sd, "method": m, **b, "_bfa_s": time.perf_counter() - t0})
      if not quiet:
        print(f"[hat_lenet] BFA seed {sd} {m}: {time.perf_counter() - t0:.0f}s", flush=True)
  for b in bfa_rows or []:
    brows = [x for x in brows if not (x["seed"] == b["seed"] and x["method"] == b["method"])] + [b]
  t0 = time.perf_counter()
  partial = partial_protection_study(entries, config.defenses) if entries else None
  summary = _summarize(config, [rows[s] for s in seeds], drows, brows, lams, partial)
  summary["partial_s"] = time.perf_counter() - t0
  summary["combined_from"] = [str(w) for w in workdirs]
  plots = _plots(out, summary, config)
  summary["wall_s"] = float(sum(json.loads((Path(w) / "summary.json").read_text())["wall_s"] for w in workdirs))
  write_json(out / "summary.json", summary)
  _report(out, config, summary, plots)
  return summary


def _ms(vals):
  v = np.asarray(vals, np.float64)
  return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
          "per_seed": [float(a) for a in v]}


def _summarize(config, per_seed, defense_rows, bfa_rows, lam_log, partial=None) -> dict:
  """Per-method means over the seeds that ran it (`per_seed[k]` belongs to `config.seeds[k]`; a method may be
  missing on some seeds), paired per-seed changes vs plain, the defense table, BFA and partial protection."""
  methods = [m for m in config.methods.methods if any(m in s for s in per_seed)]
  seeds = list(config.seeds)
  lenet = {}
  for m in methods:
    ss = [(sd, s[m]) for sd, s in zip(seeds, per_seed) if m in s]
    rs = [r for _, r in ss]
    cat = _ms([r["catastrophic_10k"] for r in rs])
    cat["seeds"] = [sd for sd, _ in ss]
    paired = [1 - s[m]["catastrophic_10k"] / s["plain"]["catastrophic_10k"] for s in per_seed
              if m in s and "plain" in s and s["plain"]["catastrophic_10k"] > 0]
    ratio = [s[m]["step_ms"] / s["plain"]["step_ms"] for s in per_seed if m in s and "plain" in s]
    lenet[m] = {"clean_accuracy": float(np.mean([r["clean_accuracy"] for r in rs])),
                "clean_accuracy_std": _ms([r["clean_accuracy"] for r in rs])["std"],
                "clean_accuracy_per_seed": [float(r["clean_accuracy"]) for r in rs],
                "catastrophic_10k": cat, "collapse_count": _ms([r["collapse_count"] for r in rs]),
                "reduction_vs_plain": None, "reduction_vs_plain_per_seed": paired,
                "train_time_ratio": float(np.mean(ratio)) if ratio else float("nan"),
                "sweep_s": float(np.mean([r["sweep_s"] for r in rs])),
                "sweep_s_per_seed": [float(r["sweep_s"]) for r in rs],
                "lam": float(np.mean([r["lam"] for r in rs])),
                "catastrophic_per_bit": np.mean([r["per_bit"] for r in rs], axis=0).tolist(),
                "catastrophic_per_leaf": {p: float(np.mean([r["per_leaf"][p] for r in rs]))
                                          for p in rs[0]["per_leaf"]}}
  if "plain" in lenet:
    for m in methods:
      pr = lenet[m]["reduction_vs_plain_per_seed"]
      lenet[m]["reduction_vs_plain"] = float(np.mean(pr)) if pr else None  # paired: mean of per-seed changes
  # Defense table: mean over seeds per (defense, setting, method); BFA over the attacked seeds.
  drows = []
  keys = list(dict.fromkeys((r["defense"], r["setting"]) for r in defense_rows))
  for (dn, st) in keys:
    for m in config.defenses.methods:
      rs = [r for r in defense_rows if r["defense"] == dn and r["setting"] == st and r["method"] == m]
      if not rs:
        continue
      label = "none" if dn == "none" else f"{dn} {st}"
      bf = [b.get(label) for b in bfa_rows if b["method"] == m]
      ok = [v for v in bf if v is not None]
      drows.append({"defense": dn, "setting": st, "method": m,
                    "overhead_bits_per_weight": float(np.mean([r["overhead_bits_per_weight"] for r in rs])),
                    "residual_catastrophic": float(np.mean([r["residual_catastrophic"] for r in rs])),
                    "residual_catastrophic_std": _ms([r["residual_catastrophic"] for r in rs])["std"],
                    "bfa_flips_to_collapse": float(np.mean(ok)) if ok else None,
                    "bfa_collapsed": f"{len(ok)}/{len(bf)}"})
  synergy = _synergy(drows)
  goal_checks = None
  if "hat" in lenet and lenet["hat"]["reduction_vs_plain"] is not None:
    goal_checks = {"reduction": bool(lenet["hat"]["reduction_vs_plain"] >= GOAL_REDUCTION),
                   "accuracy": bool(lenet["hat"]["clean_accuracy"] >= lenet["plain"]["clean_accuracy"]
                                    - GOAL_ACCURACY_POINTS / 100),
                   "defense_half_overhead": bool(any(s["met"] for s in synergy))}
    if partial is not None:  # the partial-protection axis decides it when present
      goal_checks["defense_half_overhead"] = bool(any(_hat_halves(r) for r in partial["synergy"]))
  bfa_table = []
  for label in dict.fromkeys(k for b in bfa_rows for k in b if k not in ("seed", "method") and k[0] != "_"):
    for m in dict.fromkeys(b["method"] for b in bfa_rows):
      bf = [(b["seed"], b.get(label)) for b in bfa_rows if b["method"] == m and label in b]
      if bf:
        bfa_table.append({"defense": label, "method": m, "flips_per_seed": {str(sd): v for sd, v in bf}})
  return {"lenet": lenet, "defenses": drows, "synergy": synergy, "goal_checks": goal_checks,
          "partial": partial, "bfa": bfa_table,
          "goal_met": None if goal_checks is None else all(goal_checks.values()),
          "per_seed": per_seed, "defense_rows_per_seed": defense_rows, "bfa_per_seed": bfa_rows,
          "lam_selection": lam_log, "seeds": list(config.seeds),
          "paper": {"catastrophic_plain_lenet": PAPER_LENET_PLAIN, "catastrophic_hat_lenet": PAPER_LENET_HAT,
                    "reduction": 1 - PAPER_LENET_HAT / PAPER_LENET_PLAIN},
          "n_params": 61706, "wall_s": None}


def _hat_halves(row) -> bool:
  """HAT reaches the target at <= half of plain's mean overhead (both reach it on every seed; plain's > 0)."""
  h, p = row["methods"].get("hat"), row["methods"].get("plain")
  if not h or not p or h["overhead_mean"] is None or not p["overhead_mean"]:
    return False
  return h["overhead_mean"] <= 0.5 * p["overhead_mean"]


def _synergy(drows) -> list[dict]:
  """Per defense family: for each protection level of plain, the least overhead at which HAT's residual
  catastrophic bits are at or under plain's there; `met` when that is at most half of plain's overhead."""
  out = []
  for fam in ("ecc", "parity", "checksum"):
    pl = sorted([r for r in drows if r["defense"] == fam and r["method"] == "plain"],
                key=lambda r: r["overhead_bits_per_weight"])
    ht = sorted([r for r in drows if r["defense"] in (fam, "none") and r["method"] == "hat"],
                key=lambda r: r["overhead_bits_per_weight"])
    for p in pl:
      if p["overhead_bits_per_weight"] <= 0:
        continue
      ok = [h["overhead_bits_per_weight"] for h in ht if h["residual_catastrophic"] <= p["residual_catastrophic"]]
      need = min(ok) if ok else None
      out.append({"defense": fam, "plain_setting": p["setting"], "plain_overhead": p["overhead_bits_per_weight"],
                  "plain_residual": p["residual_catastrophic"], "hat_overhead_needed": need,
                  "met": bool(need is not None and need <= 0.5 * p["overhead_bits_per_weight"])})
  return out


def _plots(workdir, summary, config) -> list[str]:
  names = []
  drows = summary["defenses"]
  fams = [f for f in ("ecc", "parity", "range", "checksum") if any(r["defense"] == f for r in drows)]
  if fams:
    fig = figure(figsize=(4 * len(fams), 3.6))
    axes = np.atleast_1d(fig.subplots(1, len(fams)))
    for ax, fam in zip(axes, fams):
      for i, m in enumerate(config.defenses.methods):
        rs = sorted([r for r in drows if r["method"] == m and r["defense"] in (fam, "none")],
                    key=lambda r: r["overhead_bits_per_weight"])
        ax.plot([max(r["overhead_bits_per_weight"], 1e-4) for r in rs], [r["residual_catastrophic"] for r in rs],
                marker="o", color=f"C{i}", label=m)
      ax.set_xscale("log")
      ax.set(xlabel="overhead (bits per weight; 'none' at 1e-4)", ylabel="residual catastrophic bits (10k)",
             title=fam)
      ax.legend(fontsize=8)
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.16, top=0.9, wspace=0.3)
    fig.savefig(workdir / "defenses.png", dpi=100)
    names.append("defenses.png")
  part = summary.get("partial")
  if part and part["curves"]:
    labels = list(dict.fromkeys(c["defense"] for c in part["curves"]))
    orders = list(dict.fromkeys(c["order"] for c in part["curves"]))
    meths = [m for m in METHODS if any(c["method"] == m for c in part["curves"])]
    fig = figure(figsize=(3.8 * len(labels), 3.1 * len(orders) + 0.6))
    axes = np.asarray(fig.subplots(len(orders), len(labels), squeeze=False))
    plain_none = [c["residual"][0] for c in part["curves"] if c["method"] == "plain"]
    for r, order in enumerate(orders):
      for k, lab in enumerate(labels):
        ax = axes[r, k]
        for c in part["curves"]:
          if c["defense"] == lab and c["order"] == order:  # the best residual at each overhead (the envelope)
            o = np.argsort(c["overhead"], kind="stable")
            ax.step(np.asarray(c["overhead"])[o], np.minimum.accumulate(np.asarray(c["residual"])[o]), where="post",
                    color=f"C{meths.index(c['method'])}", label=c["method"])
        if plain_none:
          ax.axhline(0.1 * plain_none[0], color="0.5", lw=0.8, ls=":", label="10 % of plain unprotected")
        ax.set_yscale("symlog", linthresh=10)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.set_title(f"{lab} — {order} order", fontsize=9)
        if r == len(orders) - 1:
          ax.set_xlabel("overhead (bits per weight)")
        if k == 0:
          ax.set_ylabel("residual catastrophic bits")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("LeNet-5: residual catastrophic bits (10k images, mean over seeds) vs overhead when the first "
                 "fraction of units (order per row) is protected", fontsize=10)
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.07, top=0.92, wspace=0.25, hspace=0.35)
    fig.savefig(workdir / "protection.png", dpi=100)
    names.append("protection.png")
  fig = figure(figsize=(10, 4))
  ax = fig.subplots()
  lenet = summary["lenet"]
  w = 0.8 / max(1, len(lenet))
  for k, (m, r) in enumerate(lenet.items()):
    ax.bar(np.arange(32) + k * w, r["catastrophic_per_bit"], width=w, label=m)
  ax.set(xlabel="bit position (0 = LSB, 30 = exponent MSB, 31 = sign)", ylabel="catastrophic flips (10k images)",
         title="LeNet-5: catastrophic flips per bit position (mean over seeds)", yscale="symlog")
  ax.legend(fontsize=8)
  fig.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.92)
  fig.savefig(workdir / "per_bit.png", dpi=100)
  names.append("per_bit.png")
  return names


def _cat_mean(lenet, m) -> str:
  return f"{lenet[m]['catastrophic_10k']['mean']:,.1f}" if m in lenet else "-"


def _report(workdir, config, summary, plots):
  lenet = summary["lenet"]
  tab = []
  for m, r in lenet.items():
    red = r["reduction_vs_plain"]
    cat = r["catastrophic_10k"]
    tab.append([m, " / ".join(f"{100 * a:.2f}" for a in r.get("clean_accuracy_per_seed", [])) + " %",
                " / ".join(f"{v:,.0f}" for v in cat["per_seed"]) + f" (seeds {cat.get('seeds', '?')})",
                H_study._pm(cat["mean"], cat["std"], ",.1f"),
                "-" if red is None or m == "plain" else
                " / ".join(f"{-100 * v:+.1f}" for v in r["reduction_vs_plain_per_seed"]) + " %",
                H_study._pm(r["collapse_count"]["mean"], r["collapse_count"]["std"], ",.1f"),
                r["lam"] if m == "hat" else "-", r["train_time_ratio"], r["sweep_s"]])
  dtab = [[r["defense"], r["setting"], r["method"], f"{r['overhead_bits_per_weight']:.4g}",
           H_study._pm(r["residual_catastrophic"], r["residual_catastrophic_std"], ",.1f"),
           "-" if r["bfa_flips_to_collapse"] is None else f"{r['bfa_flips_to_collapse']:.0f}", r["bfa_collapsed"]]
          for r in summary["defenses"]]
  ptab, part = [], summary.get("partial")
  pmeths = [m for m in METHODS if any(m in r["methods"] for r in (part or {}).get("synergy", []))]
  for row in (part or {}).get("synergy", []):
    cells = []
    for m in pmeths:
      v = row["methods"].get(m)
      if v is None:
        cells.append("-")
        continue
      fs = " / ".join("n/a" if f is None else f"{100 * f:.1f}" for f in v["fraction_per_seed"].values())
      cells.append(f"{fs} % ({'-' if v['overhead_mean'] is None else format(v['overhead_mean'], '.4f')})")
    ptab.append([row["defense"], row["order"], f"<= {100 * row['target_rel']:g} % of plain "
                 f"({'/'.join(str(t) for t in row['targets'].values())})", *cells])
  btab = [[b["defense"], b["method"], " / ".join("-" if v is None else str(v) for v in b["flips_per_seed"].values())
           + f" (seeds {', '.join(b['flips_per_seed'])})"] for b in summary.get("bfa", [])]
  notes = []
  gc = summary["goal_checks"]
  if gc is not None:
    h, p = lenet["hat"], lenet["plain"]
    notes.append(f"Goals: HAT >= {100 * GOAL_REDUCTION:.0f} % fewer catastrophic bits than plain at <= "
                 f"{GOAL_ACCURACY_POINTS:g} pt accuracy: reduction {100 * h['reduction_vs_plain']:.1f} % "
                 f"[{'ok' if gc['reduction'] else 'short'}], accuracy {100 * h['clean_accuracy']:.2f} % vs "
                 f"{100 * p['clean_accuracy']:.2f} % [{'ok' if gc['accuracy'] else 'short'}]; with some defense, "
                 "HAT reaching plain's residual at <= half the overhead "
                 f"[{'ok' if gc['defense_half_overhead'] else 'short'}]."
                 f" Paper (LeNet/MNIST): {PAPER_LENET_PLAIN:,.0f} -> {PAPER_LENET_HAT:,.0f} (-39 %).")
  for s in summary["synergy"]:
    notes.append(f"Synergy, {s['defense']} ({s['plain_setting']}: plain {s['plain_residual']:.1f} residual at "
                 f"{s['plain_overhead']:.4g} bits/weight): HAT needs "
                 + ("no setting in the grid" if s["hat_overhead_needed"] is None else
                    f"{s['hat_overhead_needed']:.4g} bits/weight") + f" -> {'met' if s['met'] else 'not met'}.")
  if part:
    dc = config.defenses
    notes.append(f"Partial protection: units of {dc.unit_size} consecutive weights (ECC / parity on bit "
                 f"{_PARTIAL_BIT}) or checksum groups of {', '.join(map(str, dc.fraction_groups))}, ranked from the "
                 "trained weights alone (magnitude: largest mean |w| first; random: a permutation with seed "
                 f"{dc.fraction_seed}; small_layers: smaller leaves first, by |w| within a leaf), never from the "
                 "sweep; the first fraction f is protected. Overhead = check "
                 "bits of the protected units, plus for the magnitude order a 1-bit flag per unit (none at f = 0 or "
                 "1; a seeded random subset is regenerated from its seed, a small-layers prefix is a few layer "
                 "boundaries). Curves show the least residual at each overhead. The residual of every f is "
                 "exact from the per-flip defended outcomes above (no new evaluation); the fraction needed is the "
                 "least whole number of units reaching the target.")
    for row in part["synergy"]:  # the headline target (10 % of plain); the table has them all
      h, p = row["methods"].get("hat"), row["methods"].get("plain")
      if abs(row["target_rel"] - 0.1) > 1e-9:
        continue
      if h and p and h["fraction_mean"] is not None and p["fraction_mean"] is not None:
        notes.append(f"Synergy, {row['defense']} ({row['order']}), residual <= {100 * row['target_rel']:g} % of "
                     f"plain's unprotected count: plain needs {100 * p['fraction_mean']:.1f} % of the units "
                     f"({p['overhead_mean']:.4f} bits/weight), HAT {100 * h['fraction_mean']:.1f} % "
                     f"({h['overhead_mean']:.4f} bits/weight); mean over seeds.")
  budget = f"{config.train.steps} steps" if config.train.steps else f"{config.train.epochs} epochs"
  notes.append(("Scale: the paper's setting, the full MNIST through tfds (55,000 train / 5,000 val)"
                if config.data.source == "tfds" else "Scale: 4,500 vendored MNIST train images (paper: the full "
                "60k MNIST, `--preset full`)") + f", {budget}, seeds {list(config.seeds)}. "
               "Catastrophic = RAD >= 0.9 on all 10,000 test images; collapse = accuracy <= 11 %. Every flip "
               f"is screened on the first {config.data.screen_images} test images and re-scored on 10k when its "
               f"screened RAD >= {config.data.candidate_rad}. HAT penalizes the "
               + ("dense layers only (as the paper does for its ImageNet models)" if config.methods.hat_layers else
                  "whole network") + f"; lambda selection: {summary['lam_selection']}.")
  notes.append("Defenses: ECC = SEC Hamming code over the bit set (a single flip there is corrected); parity = one "
               "bit, a detected weight is zeroed; range = weights clipped to their leaf's trained range; checksum = "
               f"{config.defenses.sig_bits}-bit XOR-fold signature per group, a detected group is zeroed. Residual = "
               "catastrophic flips whose defended outcome is still catastrophic (mean over seeds). BFA: int8 "
               "progressive bit search unaware of the defense, the defense applied after each committed flip "
               "(int8 bit 7 in place of the exponent MSB); flips to accuracy <= 11 %, '-' when not reached within "
               f"{config.defenses.bfa_iters} iterations.")
  write_study_report(
      workdir, study="hat_lenet", title="HAT on LeNet-5 and system-level bit-flip defenses",
      setup={"data": ("MNIST (tfds, full)" if config.data.source == "tfds" else "MNIST, vendored 5k subset")
                     + f", {config.data.val_size:,} val images held out, 10,000 test images",
             "model": "LeNet-5 (61,706 float32 params)", "sweep": "exhaustive: 32 bits x all params "
             "(1,974,592 flips per model), screened, candidates re-scored on 10k", "seeds": str(list(config.seeds)),
             "wall_s": f"{summary['wall_s']:.0f}"},
      tables=[Table("LeNet-5 per method (mean ± std over seeds)",
                    ["method", "clean acc (per seed)", "catastrophic bits, 10k (per seed)", "mean ± sd",
                     "vs plain (paired, per seed)", "collapses (<= 11 %)", "lambda", "step time x plain",
                     "sweep s"], tab),
              Table("Partial protection: least protected fraction of units per seed (mean overhead, bits/weight) "
                    "for residual catastrophic bits <= a share of plain's unprotected count on the same seed",
                    ["defense", "order", "target (per seed)", *pmeths], ptab),
              Table("Bit-flip attack (int8, defense-unaware): flips to accuracy <= 11 % per defense",
                    ["defense", "method", "flips to collapse (per seed; '-' = not within the iterations)"], btab),
              Table("Defenses (residual catastrophic bits vs overhead)",
                    ["defense", "setting", "method", "overhead bits/weight", "residual catastrophic",
                     "BFA flips to collapse", "attacks collapsed"], dtab),
              Table("Paper vs ours (LeNet/MNIST catastrophic bits)", ["", "paper", "jaxhw"],
                    [["plain", f"{PAPER_LENET_PLAIN:,.0f}", _cat_mean(lenet, "plain")],
                     ["HAT", f"{PAPER_LENET_HAT:,.0f}", _cat_mean(lenet, "hat")]])],
      plots=plots, notes=notes)
