"""Tests for single-bit sweeps and the bit-flip attack (HAT spec section 7, oracles 6, 7, 14, 15).

One 3-layer MLP (16-8-6-4) serves every sweep test, so the first two layers exercise both fast paths of
structure="mlp" (exact rank-one suffix update for Dense_0, correct-class intervals for Dense_1 and Dense_2) and the
jitted chunk drivers compiled by one test are reused by the next (same shapes, same chunk size).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhw import faults as F

SIZES = (16, 8, 6, 4)
CHUNK = 256


def _mlp_np(seed, sizes):
  rng = np.random.default_rng(seed)
  return {f"Dense_{i}": {"kernel": (rng.normal(size=(a, b)) / np.sqrt(a)).astype(np.float32),
                         "bias": (0.1 * rng.normal(size=b)).astype(np.float32)}
          for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))}


def _apply(p, x):
  h = x.reshape(x.shape[0], -1)
  n = len(p)
  for i in range(n):
    h = h @ p[f"Dense_{i}"]["kernel"] + p[f"Dense_{i}"]["bias"]
    if i < n - 1:
      h = jax.nn.relu(h)
  return h


def _np_forward(p, x):
  h = np.asarray(x, np.float32)
  n = len(p)
  with np.errstate(all="ignore"):
    for i in range(n):
      h = h @ p[f"Dense_{i}"]["kernel"] + p[f"Dense_{i}"]["bias"]
      if i < n - 1:
        h = np.maximum(h, 0)
  return h


def _np_correct_loss(p, x, y):
  """Independent numpy reference: full forward; non-finite logits count wrong; mean cross-entropy."""
  h = _np_forward(p, x)
  with np.errstate(all="ignore"):
    finite = np.all(np.isfinite(h), axis=1)
    pred = np.argmax(np.where(np.isfinite(h), h, -np.inf), axis=1)
    m = h.max(axis=1, keepdims=True)
    logp = h - m - np.log(np.exp(h - m).sum(axis=1, keepdims=True))
    loss = -np.mean(logp[np.arange(len(y)), y])
  return int(np.sum((pred == y) & finite)), float(loss)


@pytest.fixture(scope="module")
def setup():
  pn = _mlp_np(0, SIZES)
  pn["Dense_0"]["kernel"][0, 0], pn["Dense_0"]["kernel"][1, 1] = 1.25, -1.5  # their bit-30 flips give +inf / NaN
  rng = np.random.default_rng(1)
  x = rng.normal(size=(1000, SIZES[0])).astype(np.float32)
  pred = np.argmax(_np_forward(pn, x), -1)
  y = np.where(np.arange(1000) % 4 == 0, (pred + 1) % SIZES[-1], pred).astype(np.int32)
  p = jax.tree.map(jnp.asarray, pn)
  fl_all = F.all_flips(p)
  pick = rng.choice(len(fl_all.leaf), 2000, replace=False)
  paths = ["/".join(k.key for k in pa) for pa, _ in jax.tree_util.tree_flatten_with_path(p)[0]]
  b30 = F.all_flips(p, leaves=["Dense_0/kernel"], bits=[30])
  assert np.all(b30.leaf == paths.index("Dense_0/kernel"))
  flips = F.Flips(np.concatenate([fl_all.leaf[pick], b30.leaf]), np.concatenate([fl_all.index[pick], b30.index]),
                  np.concatenate([fl_all.bit[pick], b30.bit]))
  ref, ref_loss, ref_nf = [], [], []
  for lf, idx, b in zip(flips.leaf, flips.index, flips.bit):
    top, kind = paths[lf].split("/")
    q = {k: dict(v) for k, v in pn.items()}
    q[top][kind] = F.bits._np_flip(pn[top][kind], int(idx), int(b))
    c, loss = _np_correct_loss(q, x, y)
    ref.append(c)
    ref_loss.append(loss)
    ref_nf.append(not np.isfinite(q[top][kind].reshape(-1)[idx]))
  return p, jnp.asarray(x), jnp.asarray(y), flips, np.asarray(ref), np.asarray(ref_loss), np.asarray(ref_nf)


def _sweep(setup, **kw):
  p, x, y, flips = setup[:4]
  return F.single_bit_sweep(_apply, p, x, y, flips=flips, layers=F.mlp_layers(["Dense_0", "Dense_1", "Dense_2"]),
                            chunk=CHUNK, **kw)


@pytest.mark.parametrize("structure,with_loss", [("mlp", False), ("mlp", True), ("layers", False),
                                                 ("full", False)])
def test_sweep_matches_numpy_reference(setup, structure, with_loss):
  p, x, y, flips, ref, ref_loss, ref_nf = setup
  if structure in ("full", "layers"):
    # The generic drivers compile once per leaf: check them on the first and the last layer's weights (the
    # bit-30 flips of Dense_0/kernel included), which covers an empty and a full prefix for structure="layers".
    paths = ["/".join(k.key for k in pa) for pa, _ in jax.tree_util.tree_flatten_with_path(p)[0]]
    keep = np.isin(flips.leaf, [paths.index("Dense_0/kernel"), paths.index("Dense_2/kernel")])
    flips, ref, ref_loss, ref_nf = F.Flips(*(a[keep] for a in flips)), ref[keep], ref_loss[keep], ref_nf[keep]
    setup = (p, x, y, flips)
  r = _sweep(setup, structure=structure, nonfinite="evaluate", with_loss=with_loss)
  same = np.mean(r.correct == ref)
  assert same >= 0.999, same
  assert np.max(np.abs(r.correct - ref)) / 1000 <= 0.001
  np.testing.assert_array_equal(r.nonfinite, ref_nf)
  if with_loss:
    ok = np.isfinite(ref_loss)
    assert ok.mean() > 0.9
    np.testing.assert_allclose(r.loss[ok], ref_loss[ok], rtol=1e-3, atol=1e-5)
  if structure != "mlp" or with_loss:
    return
  # nonfinite="catastrophic": non-finite parameters score 0 / RAD 1, everything else unchanged.
  rc = _sweep(setup, structure=structure, with_loss=False)
  assert ref_nf.sum() > 0
  assert np.all(rc.accuracy[ref_nf] == 0) and np.all(rc.rad[ref_nf] == 1)
  np.testing.assert_array_equal(rc.correct[~ref_nf], r.correct[~ref_nf])
  assert sum(F.rad_histogram(rc.rad).values()) == len(setup[3].leaf)


def test_screening_agrees_on_large_drops(setup):
  full = _sweep(setup, structure="mlp", with_loss=False)
  scr = _sweep(setup, structure="mlp", with_loss=False, screen_examples=250)
  m = full.rad > 0.10
  assert m.sum() > 20
  np.testing.assert_array_equal(scr.correct[m], full.correct[m])
  np.testing.assert_array_equal(scr.rad[m], full.rad[m])


def test_nan_parameter_no_exception(setup):
  p, x, y = setup[:3]
  p = jax.tree.map(lambda a: a, p)
  p["Dense_2"] = dict(p["Dense_2"], bias=p["Dense_2"]["bias"].at[0].set(1.5))
  leaf = [i for i, (pa, _) in enumerate(jax.tree_util.tree_flatten_with_path(p)[0])
          if "/".join(k.key for k in pa) == "Dense_2/bias"][0]
  fl = F.Flips(np.array([leaf, leaf]), np.array([0, 1]), np.array([30, 3]))  # bit 30 of 1.5 is NaN
  for structure in ("mlp", "full"):
    r = F.single_bit_sweep(_apply, p, x, y, flips=fl, structure=structure, chunk=CHUNK, with_loss=False)
    assert r.nonfinite[0] and r.accuracy[0] == 0 and r.rad[0] == 1
    assert not r.nonfinite[1]
    re = F.single_bit_sweep(_apply, p, x, y, flips=fl, structure=structure, nonfinite="evaluate", chunk=CHUNK,
                            with_loss=False)
    assert re.accuracy[0] == 0  # NaN logits are wrong
    assert re.accuracy[1] == r.accuracy[1]
  with pytest.raises(ValueError, match="bit"):
    F.single_bit_sweep(_apply, p, x, y, flips=F.Flips(np.array([0]), np.array([0]), np.array([32])))
  with pytest.raises(ValueError, match="index"):
    F.single_bit_sweep(_apply, p, x, y, flips=F.Flips(np.array([0]), np.array([99]), np.array([3])))
  with pytest.raises(ValueError, match="structure"):
    F.single_bit_sweep(_apply, p, x, y, structure="magic")


def test_chunks_compile_once(setup):
  p = setup[0]
  x, y = setup[1][:64], setup[2][:64]
  traces = []

  def counted(pp, xx):
    traces.append(1)
    return _apply(pp, xx)

  fl = F.all_flips(p, leaves=["Dense_0/kernel"], bits=[30, 31, 22])  # 384 flips, 6 chunks of 64 (one leaf)
  F.single_bit_sweep(counted, p, x, y, flips=fl, structure="full", chunk=64)
  assert len(traces) == 3  # eval_shape, the clean eval, and ONE trace of the chunk function for 6 chunks
  F.single_bit_sweep(counted, p, x, y, flips=F.Flips(*(a[:320] for a in fl)), structure="full", chunk=64)
  assert len(traces) == 3  # 5 chunks: the same compiled driver, nothing is traced again


def test_sampled_sweep_ci_covers_exhaustive(setup):
  p = setup[0]
  x, y = setup[1][:250], setup[2][:250]  # the screening set: shares its compiled drivers
  ex = F.single_bit_sweep(_apply, p, x, y, structure="mlp", with_loss=False, chunk=CHUNK)
  truth = F.catastrophic_bits(ex.rad)
  truth10 = int(np.sum(ex.rad > 0.1))
  err_truth = F.erratic_params(ex.rad.reshape(-1, 32))
  # Enumerating every parameter gives the exhaustive counts with a zero-width interval.
  s = F.sampled_sweep(_apply, p, x, y, num_params=10_000, seed=0, structure="mlp", with_loss=False, chunk=CHUNK)
  assert s.catastrophic["estimate"] == s.catastrophic["hi"] == truth
  assert s.vulnerable_10["estimate"] == truth10 and s.erratic["estimate"] == err_truth
  # Sampled: the 95 % intervals cover the truth for most sampling seeds.
  cover = 0
  for seed in range(8):
    s = F.sampled_sweep(_apply, p, x, y, num_params=100, seed=seed, structure="mlp", min_per_leaf=8,
                        with_loss=False, chunk=CHUNK)
    assert s.total_flips == len(ex.rad)
    np.testing.assert_allclose(sum(s.histogram.values()), s.total_flips, rtol=1e-9)
    cover += (s.vulnerable_10["lo"] <= truth10 <= s.vulnerable_10["hi"]) + (
        s.erratic["lo"] <= err_truth <= s.erratic["hi"])
  assert cover >= 13, cover  # of 16 nominal-95 % intervals


def _train_tiny(seed):
  import optax
  n, d, c = 600, 16, 4
  rng = np.random.default_rng(seed)
  centers = 2.0 * rng.normal(size=(c, d))
  y = np.arange(n) % c
  x = jnp.asarray(centers[y] + rng.normal(size=(n, d)), jnp.float32)
  y = jnp.asarray(y, jnp.int32)
  p = jax.tree.map(jnp.asarray, _mlp_np(seed, (d, 16, c)))
  tx = optax.adam(1e-2)

  @jax.jit
  def fit(p):
    def step(carry, _):
      p, st = carry
      g = jax.grad(lambda q: -jnp.mean(jax.nn.log_softmax(_apply(q, x))[jnp.arange(n), y]))(p)
      u, st = tx.update(g, st)
      return (optax.apply_updates(p, u), st), None
    return jax.lax.scan(step, (p, tx.init(p)), None, length=150)[0][0]

  return fit(p), x, y


@pytest.mark.slow
def test_attack_beats_random_flips():
  p, x, y = _train_tiny(8)
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
