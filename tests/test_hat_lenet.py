"""Tests of the LeNet-5 configuration of the HAT study: the fast sweep against a naive flip-evaluate-restore loop,
screening against the unscreened sweep, the defense rules against `jaxhw.faults.defenses`, and the smoke preset."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxhw.experiments.hat_lenet as study
from jaxhw import faults as F
from jaxhw import pytree as _tree
from jaxhw.data import MnistConfig, load_mnist_splits
from jaxhw.faults import defenses as D
from jaxhw.models import LeNet5


@pytest.fixture(scope="module")
def model():
  """LeNet-5 after 40 plain SGD steps (batches of 64, five passes over 512 vendored images: a model with real
  margins), and 200 test images."""
  s = load_mnist_splits(MnistConfig(val_size=500, test_size=200), seed=0)
  p = LeNet5().init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"]
  x, y = jnp.asarray(s.x_train[:512]).reshape(8, 64, 28, 28, 1), jnp.asarray(s.y_train[:512]).reshape(8, 64)

  def loss(q, xb, yb):
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(study.lenet_apply(q, xb)), yb[:, None], 1))

  def step(i, q):
    g = jax.grad(loss)(q, x[i % 8], y[i % 8])
    return jax.tree.map(lambda a, b: a - 0.3 * b, q, g)

  @jax.jit
  def fit(q):
    return jax.lax.fori_loop(0, 40, step, q)

  return fit(p), s.x_test, s.y_test


def _naive(params, x, y, flips):
  """Flip one bit, evaluate the Flax model on all examples, restore (a non-finite parameter scores 0)."""
  m = LeNet5()
  ev = jax.jit(lambda q: jnp.sum((jnp.argmax(m.apply({"params": q}, x), -1) == y)
                                 & jnp.all(jnp.isfinite(m.apply({"params": q}, x)), -1)))
  paths = [_tree.path_str(p) for p, _ in _tree.leaf_paths(params)]
  out, nf = [], []
  for j, i, b in zip(flips.leaf, flips.index, flips.bit):
    q = F.flip_bit(params, paths[j], int(i), int(b))
    bad = not np.isfinite(np.asarray(jax.tree.leaves(q)[j]).reshape(-1)[i])
    out.append(0 if bad else int(ev(q)))
    nf.append(bad)
  return np.asarray(out), np.asarray(nf)


def _some_flips(params, n, seed, extra_bit30=()):
  fl, _ = F.sample_flips(params, 40, seed=seed, min_per_leaf=2)
  rng = np.random.default_rng(seed)
  sel = rng.choice(len(fl.leaf), n, replace=False)
  leaf, index, bit = [fl.leaf[sel]], [fl.index[sel]], [fl.bit[sel]]
  paths = [_tree.path_str(p) for p, _ in _tree.leaf_paths(params)]
  for path in extra_bit30:  # every bit-30 flip of these leaves
    j = paths.index(path)
    size = jax.tree.leaves(params)[j].size
    leaf.append(np.full(size, j))
    index.append(np.arange(size))
    bit.append(np.full(size, 30))
  return F.Flips(np.concatenate(leaf).astype(np.int32), np.concatenate(index), np.concatenate(bit).astype(np.int32))


def test_lenet_layers_equal_flax_model(model):
  p, x, _ = model
  ours = jax.jit(study.lenet_apply)(p, x[:32])
  np.testing.assert_array_equal(np.asarray(ours), np.asarray(jax.jit(LeNet5().apply)({"params": p}, x[:32])))


def test_lenet_sweep_matches_naive_loop(model):
  p, x, y = model
  x, y = x[:64], y[:64]
  flips = _some_flips(p, 300, seed=3)
  assert set(np.unique(flips.leaf)) == set(range(10))  # every leaf, conv and dense
  res = study.lenet_sweep(p, x, y, flips=flips)
  c, nf = _naive(p, jnp.asarray(x), jnp.asarray(y), flips)
  np.testing.assert_array_equal(res["nonfinite"], nf)
  same = res["correct"] == c
  assert same.mean() >= 0.99 and np.abs(res["correct"] - c).max() <= 1, np.nonzero(~same)


def test_screened_sweep_keeps_every_catastrophic_flip(model):
  p, x, y = model
  flips = _some_flips(p, 300, seed=4, extra_bit30=("Conv_0/kernel", "Dense_2/kernel", "Dense_1/bias"))
  full = study.lenet_sweep(p, x, y, flips=flips)
  scr = study.lenet_sweep(p, x, y, flips=flips, screen_images=16, candidate_rad=0.4, mid_images=64, mid_rad=0.75)
  cat = full["rad"] >= 0.9
  assert cat.sum() > 0
  assert np.all(scr["rescored"][cat])
  np.testing.assert_array_equal(scr["correct"][scr["rescored"]], full["correct"][scr["rescored"]])
  np.testing.assert_array_equal(scr["rescored"] & (scr["rad"] >= 0.9), cat)


def test_defense_rules_match_library(model):
  """The study's per-flip rules (parity: the weight zeroed; range: clipped; checksum: its group of consecutive
  weights zeroed; ECC: restored) are what the library's defenses do to the flipped LeNet params."""
  p, _, _ = model
  paths = [_tree.path_str(q) for q, _ in _tree.leaf_paths(p)]
  j = paths.index("Dense_0/kernel")
  leaf = np.asarray(jax.tree.leaves(p)[j]).reshape(-1)
  defs = {"parity": D.parity_protect((30,)), "range": D.range_restriction(), "checksum": D.group_checksum(64),
          "ecc": D.ecc_protect((30,))}
  states = {k: d.init(p) for k, d in defs.items()}
  applied = {k: jax.jit(lambda q, d=d, st=states[k]: jax.tree.leaves(d.apply(q, st)[0])[j]) for k, d in defs.items()}
  flip = jax.jit(lambda i, b: F.flip_bit(p, "Dense_0/kernel", i, b))
  for i, b in ((7, 30), (1000, 30), (4321, 29)):
    bad = flip(i, b)
    new = study._flip_value(leaf[i:i + 1], np.asarray([b]))[0]
    for name in defs:
      out = np.asarray(applied[name](bad)).reshape(-1)
      ref = leaf.copy()
      if name == "parity":
        ref[i] = 0.0 if b == 30 else new
      elif name == "range":
        ref[i] = np.clip(new, leaf.min(), leaf.max())
      elif name == "checksum":
        ref[(i // 64) * 64:(i // 64 + 1) * 64] = 0.0
      elif b != 30:
        ref[i] = new
      np.testing.assert_array_equal(out.view(np.uint32), ref.view(np.uint32), err_msg=f"{name} {i} {b}")


@pytest.mark.slow
def test_hat_lenet_smoke(tmp_path):
  summary = study.run(study.get_config("smoke"), tmp_path)
  for name in ("summary.json", "report.md", "defenses.png", "per_bit.png"):
    assert (tmp_path / name).is_file(), name
  on_disk = json.loads((tmp_path / "summary.json").read_text())
  assert set(on_disk["lenet"]) == {"plain", "hat"}
  for r in on_disk["lenet"].values():
    assert 0.1 < r["clean_accuracy"] <= 1.0
    assert {"mean", "std"} <= set(r["catastrophic_10k"]) and "reduction_vs_plain" in r
  keys = {"defense", "method", "overhead_bits_per_weight", "residual_catastrophic", "bfa_flips_to_collapse"}
  assert on_disk["defenses"] and all(keys <= set(r) for r in on_disk["defenses"])
  by = {(r["defense"], r["setting"], r["method"]): r for r in on_disk["defenses"]}
  for m in ("plain", "hat"):
    none = by[("none", "-", m)]["residual_catastrophic"]
    assert all(r["residual_catastrophic"] <= none for r in on_disk["defenses"] if r["method"] == m and
               r["defense"] in ("ecc", "parity"))
  assert summary["wall_s"] > 0 and "Defenses" in (tmp_path / "report.md").read_text()


def test_protection_curves_match_library_partial_defenses(model):
  """The study's residual-vs-fraction curves (rank lookup + per-flip outcomes) equal what the library's partial
  defenses do: all flips applied at once (distinct 64-weight groups, so none interact), the defense applied, and a
  flip counted as removed when its weight was restored (ECC) or zeroed (parity, checksum) and its defended outcome
  is marked benign."""
  p, _, _ = model
  p = jax.tree.map(np.asarray, p)
  leaves = jax.tree.leaves(p)
  rng = np.random.default_rng(0)
  leaf, index = [], []
  for j, a in enumerate(leaves):
    groups = rng.choice(-(-a.size // 64), min(6, -(-a.size // 64)), replace=False)
    for g in groups:
      leaf.append(j)
      index.append(min(a.size - 1, int(g) * 64 + int(rng.integers(64))))
  leaf, index = np.asarray(leaf), np.asarray(index)
  bit = np.where(rng.random(len(leaf)) < 0.8, 30, 29)
  pf = {"leaf": leaf, "index": index, "bit": bit, "zero_bad": rng.random(len(leaf)) < 0.3,
        "group_bad_16": rng.random(len(leaf)) < 0.3}
  dc = study.DefenseConfig(fraction_groups=(16,), fraction_points=3, unit_size=16,
                           fraction_orders=("magnitude", "small_layers"))
  curves = study.protection_curves(pf, p, dc)
  assert len(curves) == 2 * 3
  bad = jax.tree.map(np.array, p)
  for j, i, b in zip(leaf, index, bit):
    flat = jax.tree.leaves(bad)[j].reshape(-1)
    flat[i] = study._flip_value(flat[i:i + 1], np.asarray([b]))[0]
  @functools.partial(jax.jit, static_argnames=("fam", "unit"))
  def defended(state, units, fam, unit):  # the mask is an argument: one compilation per family
    return study._partial_defense(fam, units, unit, dc).apply(bad, state)[0]

  for c in curves:
    ranks = D.unit_ranks(p, c["unit"], order=c["order"], seed=dc.fraction_seed)
    state = study._partial_defense(c["family"], D.fraction_mask(ranks, 1.0), c["unit"], dc).init(p)  # mask-free
    want = []
    for f in c["fractions"]:
      out = [np.asarray(a).reshape(-1) for a in
             jax.tree.leaves(defended(state, D.fraction_mask(ranks, f), c["family"], c["unit"]))]
      left = 0
      for k, (j, i) in enumerate(zip(leaf, index)):
        clean = np.asarray(leaves[j]).reshape(-1)[i]
        if c["family"] == "ecc":
          removed = out[j][i] == clean
        elif c["family"] == "parity":
          removed = out[j][i] == 0.0 and not pf["zero_bad"][k]
        else:
          removed = out[j][i] == 0.0 and not pf["group_bad_16"][k]
        left += not removed
      want.append(left)
    assert c["residual"] == want, (c["defense"], c["order"])
    assert c["residual"][0] == len(leaf) and c["overhead"][0] == 0.0
  ecc = [c for c in curves if c["family"] == "ecc"][0]
  units = sum(-(-a.size // 16) for a in leaves)  # 3,860 for LeNet-5
  assert units == 3860 and ecc["overhead"][-1] == pytest.approx(2.0)  # every unit: the full code, no flags
  half = study._partial_defense("ecc", D.fraction_mask(D.unit_ranks(p, 16), 0.5), 16, dc).overhead(p)
  assert half["bits_per_weight"] == pytest.approx(2 * half["protected_share"] + units / 61706)
  need = study.protection_needed(curves, p, 0, dc)
  assert all(r["fraction"] is None for r in need if r["defense"] == "ecc bit 30")  # the bit-29 flips stay
