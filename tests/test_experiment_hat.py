"""Tests of the HAT study (MLP): smoke run, seed aggregation, presets, the exhaustive sweep and 10k re-scoring."""

import json

import numpy as np
import pytest
import scipy.stats

import jaxhw.experiments.hat as study


@pytest.mark.slow
def test_hat_smoke(tmp_path):
  summary = study.run(study.get_config("smoke"), tmp_path)
  assert summary["wall_s"] > 0
  for name in ("summary.json", "report.md", "rad_histogram.png", "per_bit.png", "attack.png"):
    assert (tmp_path / name).is_file(), name
  on_disk = json.loads((tmp_path / "summary.json").read_text())
  config = study.get_config("smoke")
  assert [r["method"] for r in on_disk["rows"]] == list(config.methods.methods)
  assert {"plain", "hat"} <= set(config.methods.methods) <= set(study.METHODS)
  keys = {"method", "clean_accuracy", "hessian_trace", "catastrophic_bits", "catastrophic_bits_ci",
          "erratic_params", "attack_flips_to_20pct", "train_time_ratio"}
  for r in on_disk["rows"]:
    assert keys <= set(r)
    assert 0.3 < r["clean_accuracy"] <= 1.0  # 15 steps on 4,500 images learn something
    assert np.isfinite(r["hessian_trace"]) and r["hessian_trace"] > 0
    lo, hi = r["catastrophic_bits_ci"]
    assert 0 <= lo <= r["catastrophic_bits"] <= hi
    assert r["train_time_ratio"] > 0
  assert "catastrophic_reduction" in on_disk and on_disk["paired"]["n_seeds"] == 1
  assert set(on_disk["paired"]) >= {"difference_plain_minus_hat", "difference_ci", "resolved"}
  assert on_disk["rows"][0]["train_time_ratio"] == 1.0
  report = (tmp_path / "report.md").read_text()
  assert "HAT" in report and "resolved" in report
  assert summary["rows"][0]["method"] == "plain"


def _fake(cat, err=10, acc=0.9, trace=5.0, lo=None, hi=None):
  c = {"estimate": cat, "lo": cat if lo is None else lo, "hi": cat if hi is None else hi, "se": 0.0}
  e = {"estimate": err, "lo": err, "hi": err, "se": 0.0}
  return {"catastrophic": c, "erratic": e, "vulnerable_10": e, "nonfinite": e, "clean_accuracy": acc,
          "hessian_trace": trace, "lambda_max": 1.0, "erratic_fraction": 0.1, "attack_flips_to_20pct": 3.0,
          "random_flip_accuracy": 0.9, "train_time_ratio": 1.0, "lam": 0.0, "sweep_s": 1.0}


def test_aggregate_paired_over_seeds():
  per_seed = [{"plain": _fake(100), "hat": _fake(70)}, {"plain": _fake(120), "hat": _fake(80)},
              {"plain": _fake(90), "hat": _fake(75)}]
  out = study.aggregate(per_seed, ("plain", "hat"), sampled=False)
  by = {r["method"]: r for r in out["rows"]}
  assert by["plain"]["catastrophic_bits"] == pytest.approx(310 / 3)
  assert by["plain"]["catastrophic_bits_std"] == pytest.approx(np.std([100, 120, 90], ddof=1))
  lo, hi = by["plain"]["catastrophic_bits_ci"]
  half = scipy.stats.t.ppf(0.975, 2) * np.std([100, 120, 90], ddof=1) / np.sqrt(3)
  assert lo == pytest.approx(310 / 3 - half) and hi == pytest.approx(310 / 3 + half)
  assert out["catastrophic_reduction"] == pytest.approx(1 - 225 / 310)
  np.testing.assert_allclose(out["reduction_per_seed"], [0.3, 1 / 3, 1 / 6])
  d = np.array([30, 40, 15])
  assert out["paired"]["difference_plain_minus_hat"] == pytest.approx(d.mean())
  assert out["paired"]["resolved"] == bool(d.mean() - 4.303 * d.std(ddof=1) / np.sqrt(3) > 0)
  # Not resolved when the per-seed differences change sign.
  per_seed[2]["hat"] = _fake(130)
  assert not study.aggregate(per_seed, ("plain", "hat"), sampled=False)["paired"]["resolved"]
  # One seed, sampled: the sampling CIs are kept, and overlapping CIs are not resolved.
  one = [{"plain": _fake(100, lo=80, hi=120), "hat": _fake(70, lo=50, hi=90)}]
  out1 = study.aggregate(one, ("plain", "hat"), sampled=True)
  assert out1["rows"][0]["catastrophic_bits_ci"] == [80, 120]
  assert out1["paired"]["difference_ci"] == [80 - 90, 120 - 50] and not out1["paired"]["resolved"]


def test_config_presets():
  quick = study.get_config("quick")
  assert quick.eval.sweep_params == 0 or quick.eval.sweep_params >= 2000  # exhaustive, or >= 2,000 sampled
  assert quick.data.sweep_images == 1000 and len(quick.seeds) >= 1
  assert study.get_config("smoke").eval.sweep_params > 0  # the smoke test covers the sampled path
  full = study.get_config("full")  # the paper's CIFAR-10 ResNet-18: the spec's sampled sweep of bits 23-30
  assert full.model.arch == "resnet18" and full.eval.sweep_params >= 20000 and full.eval.sweep_bits == "exponent"
  with pytest.raises(ValueError, match="preset"):
    study.get_config("huge")


@pytest.fixture(scope="module")
def mlp_model():
  """The study's MLP 784-32-10 after 150 full-batch gradient steps on 2,000 vendored images, and 300 test images."""
  import jax
  import jax.numpy as jnp

  from jaxhw.data import MnistConfig, load_mnist_splits
  from jaxhw.models import mlp_apply, mlp_init
  s = load_mnist_splits(MnistConfig(val_size=500, test_size=1000), seed=0)
  x, y = jnp.asarray(s.x_train[:2000]), jnp.asarray(s.y_train[:2000])
  p = jax.jit(mlp_init, static_argnums=1)(jax.random.key(0), (784, 32, 10))

  def loss(q):
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(mlp_apply(q, x)), y[:, None], 1))

  fit = jax.jit(lambda q: jax.lax.fori_loop(0, 150, lambda i, q: jax.tree.map(lambda a, g: a - 0.5 * g, q,
                                                                              jax.grad(loss)(q)), q))
  return fit(p), s.x_test, s.y_test


def test_exhaustive_mlp_sweep_matches_naive_loop_and_rescoring(mlp_model):
  """The study's exhaustive sweep (structure="mlp", no loss) against flip-evaluate-restore on a few hundred flips;
  the 10k re-scoring's counts against the same naive loop on the candidates."""
  import jax
  import jax.numpy as jnp

  from jaxhw import faults as F
  from jaxhw.models import mlp_apply
  p, xt, yt = mlp_model
  xs, ys = jnp.asarray(xt[:300]), jnp.asarray(yt[:300])
  res = F.single_bit_sweep(mlp_apply, p, xs, ys, structure="mlp", with_loss=False)
  assert len(res.rad) == 25450 * 32
  rng = np.random.default_rng(0)
  pick = np.concatenate([rng.choice(len(res.rad), 250, replace=False),
                         rng.choice(np.nonzero(res.flips.bit == 30)[0], 100, replace=False)])
  paths = res.leaf_paths

  def naive(x, y, idx):
    ev = jax.jit(lambda q: jnp.sum((jnp.argmax(mlp_apply(q, x), -1) == y) & jnp.all(jnp.isfinite(mlp_apply(q, x)),
                                                                                     -1)))
    out = []
    for k in idx:
      q = F.flip_bit(p, paths[res.flips.leaf[k]], int(res.flips.index[k]), int(res.flips.bit[k]))
      v = np.asarray(jax.tree.leaves(q)[res.flips.leaf[k]]).reshape(-1)[res.flips.index[k]]
      out.append(0 if not np.isfinite(v) else int(ev(q)))
    return np.asarray(out)

  c = naive(xs, ys, pick)
  same = res.correct[pick] == c
  assert same.mean() >= 0.99 and np.abs(res.correct[pick] - c).max() <= 1
  x10, y10 = jnp.asarray(xt), jnp.asarray(yt)
  out = study.rescore_10k(p, res, x10, y10, keep_flips=True)
  cand = np.nonzero(res.rad >= study.CANDIDATE_RAD)[0]
  assert out["candidates"] == len(cand) > 0
  np.testing.assert_array_equal(out["flip_ids"], cand)
  assert out["catastrophic_10k"] == int(np.sum(out["rad"] >= 0.9))
  assert out["collapse_count"] == int(np.sum(out["accuracy"] <= study.COLLAPSE_ACCURACY))
  sub = rng.choice(len(cand), min(40, len(cand)), replace=False)  # per flip, on all test images
  c10 = naive(x10, y10, cand[sub])
  np.testing.assert_allclose(out["accuracy"][sub], c10 / len(y10), atol=1.5 / len(y10))
