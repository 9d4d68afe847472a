"""Tests for single-bit sweeps and the bit-flip attack (HAT spec section 7, oracles 6, 7, 14, 15)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhw import faults as F


def _mlp(key, sizes):
  ks = jax.random.split(key, 2 * len(sizes))
  return {f"dense{i}": {"w": jax.random.normal(ks[2 * i], (a, b)) / np.sqrt(a),
                        "b": 0.1 * jax.random.normal(ks[2 * i + 1], (b,))}
          for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))}


def _apply(p, x):
  h = x.reshape(x.shape[0], -1)
  n = len(p)
  for i in range(n):
    h = h @ p[f"dense{i}"]["w"] + p[f"dense{i}"]["b"]
    if i < n - 1:
      h = jax.nn.relu(h)
  return h


def _np_correct(p, x, y):
  """Independent numpy reference: full forward, non-finite logits count wrong."""
  h = np.asarray(x, np.float32)
  n = len(p)
  with np.errstate(all="ignore"):
    for i in range(n):
      h = h @ p[f"dense{i}"]["w"] + p[f"dense{i}"]["b"]
      if i < n - 1:
        h = np.maximum(h, 0)
    finite = np.all(np.isfinite(h), axis=1)
    pred = np.argmax(np.where(np.isfinite(h), h, -np.inf), axis=1)
  return int(np.sum((pred == y) & finite))


@pytest.fixture(scope="module")
def setup():
  key = jax.random.key(0)
  p = _mlp(key, (16, 8, 4))
  x = jax.random.normal(jax.random.key(1), (1000, 16))
  logits = _apply(p, x)
  y = jnp.where(jnp.arange(1000) % 4 == 0, (jnp.argmax(logits, -1) + 1) % 4, jnp.argmax(logits, -1))
  rng = np.random.default_rng(0)
  fl_all = F.all_flips(p)
  pick = rng.choice(len(fl_all.leaf), 2000, replace=False)
  leaf_w0 = [i for i, (pa, _) in enumerate(jax.tree_util.tree_flatten_with_path(p)[0])
             if "/".join(k.key for k in pa) == "dense0/w"][0]
  b30 = F.all_flips(p, leaves=["dense0/w"], bits=[30])
  flips = F.Flips(np.concatenate([fl_all.leaf[pick], b30.leaf]), np.concatenate([fl_all.index[pick], b30.index]),
                  np.concatenate([fl_all.bit[pick], b30.bit]))
  assert np.all(b30.leaf == leaf_w0)
  pn = jax.tree.map(np.asarray, p)
  paths = ["/".join(k.key for k in pa) for pa, _ in jax.tree_util.tree_flatten_with_path(p)[0]]
  ref, ref_nf = [], []
  for lf, idx, b in zip(flips.leaf, flips.index, flips.bit):
    top, kind = paths[lf].split("/")
    q = jax.tree.map(lambda a: a, pn)
    q[top] = dict(q[top])
    q[top][kind] = F.bits._np_flip(pn[top][kind], int(idx), int(b))
    ref.append(_np_correct(q, np.asarray(x), np.asarray(y)))
    ref_nf.append(not np.isfinite(q[top][kind].reshape(-1)[idx]))
  return p, x, y, flips, np.asarray(ref), np.asarray(ref_nf)


@pytest.mark.parametrize("structure", ["mlp", "layers", "full"])
def test_sweep_matches_numpy_reference(setup, structure):
  p, x, y, flips, ref, ref_nf = setup
  r = F.single_bit_sweep(_apply, p, x, y, flips=flips, structure=structure, layers=F.mlp_layers(2),
                         nonfinite="evaluate", chunk=256)
  same = np.mean(r.correct == ref)
  assert same >= 0.999, same
  assert np.max(np.abs(r.correct - ref)) / 1000 <= 0.001
  np.testing.assert_array_equal(r.nonfinite, ref_nf)
  if structure != "mlp":
    return
  # nonfinite="catastrophic": non-finite parameters score 0 / RAD 1, everything else unchanged.
  rc = F.single_bit_sweep(_apply, p, x, y, flips=flips, structure=structure, layers=F.mlp_layers(2), chunk=256)
  assert np.all(rc.accuracy[ref_nf] == 0) and np.all(rc.rad[ref_nf] == 1)
  np.testing.assert_array_equal(rc.correct[~ref_nf], r.correct[~ref_nf])
  assert sum(F.rad_histogram(rc.rad).values()) == len(flips.leaf)


def test_screening_agrees_on_large_drops(setup):
  p, x, y, flips, ref, _ = setup
  flips = F.Flips(*(a[::2] for a in flips))
  full = F.single_bit_sweep(_apply, p, x, y, flips=flips, structure="mlp", with_loss=False)
  scr = F.single_bit_sweep(_apply, p, x, y, flips=flips, structure="mlp", screen_examples=250, with_loss=False)
  m = full.rad > 0.10
  assert m.sum() > 20
  np.testing.assert_array_equal(scr.correct[m], full.correct[m])


def test_nan_parameter_no_exception():
  p = _mlp(jax.random.key(2), (16, 8, 4))
  x = jax.random.normal(jax.random.key(3), (64, 16))
  y = jnp.argmax(_apply(p, x), -1)
  p["dense1"]["b"] = p["dense1"]["b"].at[0].set(1.5)
  # bit 30 of 1.5 is NaN; of dense0/w elements gives huge values.
  fl = F.Flips(np.array([0, 0]), np.array([0, 1]), np.array([30, 30]))  # leaf 0 = dense0/b
  fl = F.Flips(np.array([2, 2]), np.array([0, 1]), np.array([30, 3]))  # leaf 2 = dense1/b
  for structure in ("mlp", "full"):
    r = F.single_bit_sweep(_apply, p, x, y, flips=fl, structure=structure)
    assert r.nonfinite[0] and r.accuracy[0] == 0 and r.rad[0] == 1
    assert not r.nonfinite[1]
    re = F.single_bit_sweep(_apply, p, x, y, flips=fl, structure=structure, nonfinite="evaluate")
    assert re.accuracy[0] == 0  # NaN logits are wrong
  with pytest.raises(ValueError, match="bit"):
    F.single_bit_sweep(_apply, p, x, y, flips=F.Flips(np.array([0]), np.array([0]), np.array([32])))
  with pytest.raises(ValueError, match="structure"):
    F.single_bit_sweep(_apply, p, x, y, structure="magic")


def test_chunks_compile_once():
  p = _mlp(jax.random.key(4), (16, 8, 4))
  x = jax.random.normal(jax.random.key(5), (64, 16))
  y = jnp.argmax(_apply(p, x), -1)
  traces = []

  def counted(pp, xx):
    traces.append(1)
    return _apply(pp, xx)

  fl = F.all_flips(p, leaves=["dense0/w"], bits=[30, 31, 22])  # 384 flips, 6 chunks of 64 (one leaf)
  F.single_bit_sweep(counted, p, x, y, flips=fl, structure="full", chunk=64)
  assert len(traces) == 3  # eval_shape, the clean eval, and ONE trace of the chunk function for 6 chunks


def test_sampled_sweep_ci_covers_exhaustive():
  p = _mlp(jax.random.key(6), (16, 8, 4))
  x = jax.random.normal(jax.random.key(7), (300, 16))
  y = jnp.argmax(_apply(p, x), -1)
  ex = F.single_bit_sweep(_apply, p, x, y, structure="mlp")
  truth = F.catastrophic_bits(ex.rad)
  truth10 = int(np.sum(ex.rad > 0.1))
  err_truth = F.erratic_params(ex.rad.reshape(-1, 32))
  # Enumerating every parameter gives the exhaustive counts with a zero-width interval.
  s = F.sampled_sweep(_apply, p, x, y, num_params=10_000, seed=0, structure="mlp")
  assert s.catastrophic["estimate"] == s.catastrophic["hi"] == truth
  assert s.vulnerable_10["estimate"] == truth10 and s.erratic["estimate"] == err_truth
  # Sampled: the 95 % intervals cover the truth for most sampling seeds.
  cover = 0
  for seed in range(4):
    s = F.sampled_sweep(_apply, p, x, y, num_params=100, seed=seed, structure="mlp", min_per_leaf=8)
    assert s.total_flips == len(ex.rad)
    np.testing.assert_allclose(sum(s.histogram.values()), s.total_flips, rtol=1e-9)
    cover += (s.vulnerable_10["lo"] <= truth10 <= s.vulnerable_10["hi"]) + (
        s.erratic["lo"] <= err_truth <= s.erratic["hi"])
  assert cover >= 6, cover


def _train_tiny(key):
  import optax
  n, d, c = 600, 16, 4
  kx, kc, kp = jax.random.split(key, 3)
  centers = 2.0 * jax.random.normal(kc, (c, d))
  y = jnp.arange(n) % c
  x = centers[y] + jax.random.normal(kx, (n, d))
  p = _mlp(kp, (d, 16, c))
  tx = optax.adam(1e-2)
  st = tx.init(p)

  @jax.jit
  def step(p, st):
    g = jax.grad(lambda q: -jnp.mean(jax.nn.log_softmax(_apply(q, x))[jnp.arange(n), y]))(p)
    u, st = tx.update(g, st)
    return optax.apply_updates(p, u), st

  for _ in range(150):
    p, st = step(p, st)
  return p, x, y


@pytest.mark.slow
def test_attack_beats_random_flips():
  p, x, y = _train_tiny(jax.random.key(8))
  ev = jax.jit(lambda q: jnp.mean(jnp.argmax(_apply(q, x[300:]), -1) == y[300:]))
  res = F.bit_flip_attack(_apply, p, x[:128], y[:128], eval_fn=ev, iterations=10)
  assert res.accuracy[0] > 0.8
  n = int(res.num_flips[-1])
  assert n >= 10
  rand = F.random_int8_flips(p, n, eval_fn=ev, draws=20, seed=0)
  assert res.accuracy[-1] < np.mean(rand) - 0.1
  np.testing.assert_array_equal(res.hamming, res.num_flips)  # committed flips = Hamming distance
  assert np.all(np.diff(res.loss) > 0)  # each commit raises the attack loss
  assert F.flips_to_accuracy(res, 1.1) == 0
