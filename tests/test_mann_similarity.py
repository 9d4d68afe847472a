"""Q-MANN's bounded Hamming similarity: the integer kernels against a numpy per-bit loop and the closed form."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhw.mann.quantize import BINARY, FixedPoint, to_codes
from jaxhw.mann.similarity import (
  bounded_hamming_similarity,
  hamming_inference_scores,
  hamming_popcount,
  hamming_scores_int,
  hamming_terms,
  hamming_words,
  naive_similarity,
  pack_words,
)


def _numpy_reference(qs, qm, ms, mm, wl, prestep=True, shift=0):
  """Per-dimension, per-bit loop: sum_j sigma_a sigma_b sum_k 2^(WL-1-k) XNOR(bit_k(M_a'), bit_k(M_b')), each
  term's magnitude shifted right by `shift` (truncation toward zero) before the sum."""
  b, m, d = ms.shape
  out = np.zeros((b, m), np.int64)
  ones = 2 ** (wl - 1) - 1
  for i in range(b):
    for s in range(m):
      total = 0
      for j in range(d):
        sa, sb, a, c = int(qs[i, j]), int(ms[i, s, j]), int(qm[i, j]), int(mm[i, s, j])
        if prestep:
          if sa == sb:
            low = min(a, c)
            a, c = a - low, c - low
          elif a >= c:
            a, c = min(a + c, ones), 0
          else:
            a, c = 0, min(a + c, ones)
        x = 0
        for k in range(1, wl):
          bit = wl - 1 - k
          x += (2 ** bit) * (1 - (((a >> bit) & 1) ^ ((c >> bit) & 1)))
        total += sa * sb * (x >> shift)
      out[i, s] = total
  return out


def _random_codes(key, wl, b=2, m=3, d=37):
  """Random sign-magnitude codes; a third of the magnitudes are the extremes 0 and 2^(WL-1) - 1."""
  ks = jax.random.split(key, 4)
  top = 2 ** (wl - 1)
  qs = jnp.where(jax.random.bernoulli(ks[0], 0.5, (b, d)), -1, 1)
  ms = jnp.where(jax.random.bernoulli(ks[1], 0.5, (b, m, d)), -1, 1)
  qm = jax.random.randint(ks[2], (b, d), 0, top)
  mm = jax.random.randint(ks[3], (b, m, d), 0, top)
  qm = jnp.where(qm % 3 == 0, jnp.where(qm % 2 == 0, 0, top - 1), qm)
  mm = jnp.where(mm % 3 == 0, jnp.where(mm % 2 == 0, 0, top - 1), mm)
  return (qs, qm), (ms, mm)


class HammingTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_integer_kernels_match_numpy_popcount_reference(self):
    for wl in (2, 6, 8):
      for prestep, mode in ((True, "whs"), (False, "whs_raw")):
        (qs, qm), (ms, mm) = _random_codes(jax.random.key(wl), wl)
        ref = _numpy_reference(*(np.asarray(a) for a in (qs, qm, ms, mm)), wl, prestep)
        pop = self.variant(lambda *a, w=wl, md=mode: hamming_popcount(a[:2], a[2:], w, mode=md))(qs, qm, ms, mm)
        np.testing.assert_array_equal(np.asarray(pop), ref)
        exact = self.variant(lambda *a, w=wl, md=mode: hamming_scores_int(
            a[:2], a[2:], w, w + 2, None, mode=md))(qs, qm, ms, mm)
        np.testing.assert_array_equal(np.asarray(exact), ref)  # exact terms are in units of 2^-(WL-1+3)

  @chex.variants(with_jit=True, without_jit=True)
  def test_packed_word_kernel_matches_numpy_reference(self):
    """8-bit words packed four to a uint32: every term width (shift), the three modes, d not a multiple of 4 (50:
    13 words, the last one padded)."""
    for d in (50,):
      (qs, qm), (ms, mm) = _random_codes(jax.random.key(d), 8, d=d)
      ms = ms.at[0, 0].set(qs[0])
      mm = mm.at[0, 0].set(qm[0])  # a memory equal to the query: every term at its maximum
      qw, mw = pack_words(qs, qm, role="query"), pack_words(ms, mm, role="memory")
      arrays = [np.asarray(a) for a in (qs, qm, ms, mm)]
      for shift in (0, 5):  # exact terms (lanes fold word by word); Q(1.2.5) terms (13 words a lane)
        frac = 10 - shift  # term fraction bits: units of 2^-(WL-1+3) shifted right
        for mode, prestep in (("whs", True), ("whs_raw", False)):
          ref = _numpy_reference(*arrays, 8, prestep, shift)
          got = self.variant(lambda a, b, f=frac, md=mode, n=d: hamming_words(a, b, n, f, None, mode=md))(qw, mw)
          np.testing.assert_array_equal(np.asarray(got), ref)
        sign = (arrays[0][:, None] * arrays[2]).sum(-1) * (128 >> shift)
        got = self.variant(lambda a, b, f=frac, n=d: hamming_words(a, b, n, f, None, mode="sign"))(qw, mw)
        np.testing.assert_array_equal(np.asarray(got), sign)
      ref = np.clip(_numpy_reference(*arrays, 8, True, 5), -127, 127)
      got = self.variant(lambda a, b, n=d: hamming_words(a, b, n, 5, 127))(qw, mw)
      np.testing.assert_array_equal(np.asarray(got), ref)

  def test_closed_form(self):
    wl = 6
    (qs, qm), (ms, mm) = _random_codes(jax.random.key(3), wl)
    terms = np.asarray(hamming_terms(qs[:, None], qm[:, None], ms, mm, wl))
    same = np.asarray(qs[:, None] == ms)
    a, b = np.asarray(qm[:, None]), np.asarray(mm)
    dist = np.where(same, np.abs(a - b), np.minimum(a + b, 2 ** (wl - 1) - 1))
    np.testing.assert_array_equal(terms, np.asarray(qs[:, None] * ms) * (2 ** (wl - 1) - 1 - dist))

  def test_binary_sign_mode_is_xor_popcount(self):
    key = jax.random.key(5)
    u, m = jax.random.normal(key, (2, 50)), jax.random.normal(jax.random.key(6), (2, 4, 50))
    sim = bounded_hamming_similarity(BINARY, mode="sign")
    xor = np.asarray((u[:, None] < 0) != (m < 0)).sum(-1)
    np.testing.assert_allclose(np.asarray(sim(u, m)), (50 - 2 * xor) / 8)
    np.testing.assert_allclose(np.asarray(hamming_inference_scores(u, m, BINARY, mode="sign")), (50 - 2 * xor) / 8)

  @chex.variants(with_jit=True, without_jit=True)
  def test_bounded_symmetric_self_maximal_and_training_equals_inference(self):
    fmt = FixedPoint(2, 5)
    d = 40
    u = jax.random.normal(jax.random.key(7), (3, d))
    m = jax.random.normal(jax.random.key(8), (3, 6, d)) * 2
    sim = self.variant(bounded_hamming_similarity(fmt))
    s = np.asarray(sim(u, m))
    assert np.abs(s).max() <= d / 8
    np.testing.assert_array_equal(s, np.asarray(hamming_inference_scores(u, m, fmt)))
    s_ab = np.asarray(sim(u, m[:, :1]))[:, 0]
    s_ba = np.asarray(sim(m[:, 0], u[:, None]))[:, 0]
    np.testing.assert_array_equal(s_ab, s_ba)
    self_s = np.asarray(sim(u, u[:, None]))[:, 0]
    assert np.all(self_s >= s.max(-1))

  def test_surrogate_gradients_are_finite_and_nonzero(self):
    fmt = FixedPoint(2, 5)
    u = jax.random.normal(jax.random.key(9), (2, 16))
    m = jax.random.normal(jax.random.key(10), (2, 5, 16))
    for sim in (bounded_hamming_similarity(fmt), bounded_hamming_similarity(fmt, surrogate="tanh"),
                bounded_hamming_similarity(BINARY, mode="sign")):
      gu, gm = jax.grad(lambda a, b, f=sim: (f(a, b) * jnp.arange(5.0)).sum(), argnums=(0, 1))(u, m)
      assert np.isfinite(gu).all() and np.isfinite(gm).all() and np.abs(gu).sum() > 0


def test_naive_dot_saturates_and_truncates():
  fmt = FixedPoint(5, 2)
  sim = naive_similarity(fmt)
  u = jnp.full((1, 50), 3.0)
  m = jnp.stack([jnp.full((50,), 3.0), jnp.full((50,), 0.3)])[None]
  s = np.asarray(sim(u, m))[0]
  assert s[0] == fmt.max_value  # 50 * 9 overflows and saturates
  assert s[1] == pytest.approx(50 * 0.75)  if 50 * 0.75 <= fmt.max_value else s[1] == fmt.max_value


def test_codes_roundtrip_to_format():
  sign, mag = to_codes(jnp.array([1.0, -1.0]), FixedPoint(2, 5))
  np.testing.assert_array_equal(np.asarray(sign * mag), [32, -32])
