"""MemN2N: position encoding against the formula, attention, linear start, tying, the question-only baseline."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhw.mann.encoding import random_time_indices
from jaxhw.models.memn2n import MemN2N, position_encoding

V, D = 12, 6


def _inputs(key, batch=3, memory=5, words=4):
  k1, k2 = jax.random.split(key)
  stories = jax.random.randint(k1, (batch, memory, words), 1, V)
  stories = stories.at[:, 3:].set(0).at[:, :, 3].set(0)  # two empty slots, one padded word per sentence
  query = jax.random.randint(k2, (batch, words), 1, V).at[:, 2:].set(0)
  return stories, query


def _pe_formula(length, dim):
  return np.array([[(1 - j / length) - (k / dim) * (1 - 2 * j / length) for k in range(1, dim + 1)]
                   for j in range(1, length + 1)])


@pytest.mark.parametrize("length", [1, 4])
def test_position_encoding_matches_formula(length):
  tokens = jnp.concatenate([jnp.arange(1, length + 1), jnp.zeros(2, int)])[None]
  got = np.asarray(position_encoding(tokens, D))[0]
  np.testing.assert_allclose(got[:length], _pe_formula(length, D), rtol=1e-6, atol=1e-6)
  assert not got[length:].any()


def test_question_embedding_uses_pe_and_zero_nil(key):
  seen = {}

  def hook(x, name, hop):
    seen.setdefault((name, hop), x)
    return x

  model = MemN2N(V, dim=D, hops=1, memory_size=5, activation=hook)
  stories, query = _inputs(key)
  params = model.init(key, stories, query)["params"]
  model.apply({"params": params}, stories, query)
  table = np.asarray(params["embed_0"]["embedding"])
  for b in range(query.shape[0]):
    ids = [int(t) for t in query[b] if t != 0]
    expected = (_pe_formula(len(ids), D) * table[ids]).sum(0)
    np.testing.assert_allclose(np.asarray(seen[("u", 0)][b]), expected, rtol=1e-5, atol=1e-6)


def test_attention_sums_to_one_and_ignores_empty_slots(key):
  model = MemN2N(V, dim=D, hops=3, memory_size=5)
  stories, query = _inputs(key)
  variables = model.init(key, stories, query)
  logits, state = model.apply(variables, stories, query, mutable=["intermediates"])
  attention = np.stack(state["intermediates"]["attention"])  # [K, B, M]
  assert logits.shape == (3, V) and np.isfinite(logits).all()
  np.testing.assert_allclose(attention.sum(-1), 1.0, rtol=1e-5)
  assert not attention[..., 3:].any()
  _, state = model.apply(variables, stories, query, linear=True, mutable=["intermediates"])
  raw = np.stack(state["intermediates"]["attention"])
  assert not np.allclose(raw.sum(-1), 1.0)  # linear start: raw scores, no softmax
  assert not raw[..., 3:].any()


def test_empty_story_gives_finite_logits(key):
  model = MemN2N(V, dim=D, hops=2, memory_size=5)
  stories, query = _inputs(key)
  stories = jnp.zeros_like(stories)
  logits = model.apply(model.init(key, stories, query), stories, query)
  assert np.isfinite(logits).all()


def test_adjacent_tying_has_k_plus_1_tables(key):
  stories, query = _inputs(key)
  params = MemN2N(V, dim=D, hops=3, memory_size=5).init(key, stories, query)["params"]
  assert sorted(params) == [f"embed_{k}" for k in range(4)] + [f"temporal_{k}" for k in range(4)]


def test_hops0_is_question_only(key):
  model = MemN2N(V, dim=D, hops=0, memory_size=5)
  stories, query = _inputs(key)
  variables = model.init(key, stories, query)
  assert sorted(variables["params"]) == ["embed_0", "output"]
  base = model.apply(variables, stories, query)
  permuted = model.apply(variables, stories[:, ::-1], query)
  replaced = model.apply(variables, jnp.ones_like(stories), query)
  np.testing.assert_allclose(base, permuted)
  np.testing.assert_allclose(base, replaced)


def test_random_time_indices_are_sorted_distinct_and_capped(key):
  story_len = jnp.array([0, 1, 7, 30, 50])
  t = np.asarray(random_time_indices(key, story_len, 50))
  for row, n in zip(t, np.asarray(story_len)):
    valid = row[:n]
    assert np.all(np.diff(valid) >= 0) and valid.max(initial=0) <= 49
    if n < 45:
      assert len(set(valid)) == n and valid.max(initial=0) <= n + int(np.ceil(0.1 * n))
    assert np.array_equal(row[n:], np.arange(n, 50))
