"""Content-addressing similarities for quantized MemN2N: the naive quantized dot product and Q-MANN's bounded
(weighted) Hamming similarity, bit-exact in integers for inference and with a differentiable surrogate for training.

Each factory returns ``similarity(query [B, d], memories [B, M, d]) -> scores [B, M]`` for the ``similarity``
attribute of `jaxhw.models.MemN2N`.

Bounded weighted-Hamming similarity (``whs``) on sign-magnitude codes a = u_j, b = m_ij of word length WL:

* pre-step: with equal signs subtract min(M_a, M_b) from both magnitudes; with opposite signs the larger becomes
  min(M_a + M_b, 2^(WL-1) - 1) and the smaller 0 (``prestep=False`` is ``whs_raw``);
* per dimension ``s_j = sigma_a sigma_b sum_{k=1}^{WL-1} 2^-k XNOR(bit_k(M_a'), bit_k(M_b'))`` (k = 1 the MSB);
* score ``S_i = Q(sum_j Q(2^-3 s_j))``: bounded by d/8, it cannot overflow the way a dot product does.

The closed form ``s_j = sigma_a sigma_b (2^(WL-1) - 1 - D) / 2^(WL-1)``, with D = |M_a - M_b| for equal signs and
min(M_a + M_b, 2^(WL-1) - 1) otherwise (both are min(|sigma_a M_a - sigma_b M_b|, 2^(WL-1) - 1)), is what the
training path computes; `hamming_words` computes the same integers on 8-bit sign-magnitude words packed four to a
uint32 (SWAR, the inference path at 8 bits), and `hamming_popcount` with per-bit-plane XNOR and
``lax.population_count`` over packed bit planes, as the hardware does.

References:
  Park et al., "Quantized Memory-Augmented Neural Networks", AAAI 2018, arXiv:1711.03712.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from jaxhw.mann.quantize import FixedPoint, quantize, quantize_value, to_codes

MODES = ("whs", "whs_raw", "sign")
SCORE_SHIFT = 3  # the 2^-3 scaling of each term


def dot_similarity(query: Float[Array, "batch dim"], memories: Float[Array, "batch memory dim"]
                   ) -> Float[Array, "batch memory"]:
  """The float inner product of MemN2N."""
  return jnp.einsum("bd,bmd->bm", query, memories)


def naive_similarity(product_fmt: FixedPoint, score_fmt: FixedPoint | None = None,
                     operand_fmt: FixedPoint | None = None):
  """Naive fixed-point addressing: ``S_i = Q_s(sum_j Q_p(u_j m_ij))``, the sum saturating at the score format.

  Args:
    product_fmt: format of each product (for binary operands the products are exact +-1; pass `score_fmt`).
    score_fmt: format of the score (default `product_fmt`).
    operand_fmt: quantize u and m to this format first (binary: signs); None uses them as given.
  """
  score_fmt = product_fmt if score_fmt is None else score_fmt

  def similarity(query, memories):
    if operand_fmt is not None:
      query, memories = quantize(query, operand_fmt), quantize(memories, operand_fmt)
    products = query[:, None, :] * memories
    if not product_fmt.binary:
      products = quantize(products, product_fmt)
    return quantize(products.sum(-1), score_fmt)

  return similarity


def hamming_terms(a_sign: Int[Array, "..."], a_mag: Int[Array, "..."], b_sign: Int[Array, "..."],
                  b_mag: Int[Array, "..."], word_length: int, *, mode: str = "whs") -> Int[Array, "..."]:
  """Integer per-dimension similarity ``sigma_a sigma_b X`` with X = XNOR of the (pre-stepped) magnitudes.

  ``s_j = term / 2^(WL-1)``. For ``mode="sign"`` the term is ``sigma_a sigma_b 2^(WL-1)`` (s_j = +-1).
  """
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
  sigma = a_sign * b_sign
  full = 2 ** (word_length - 1)
  if mode == "sign":
    return sigma * full
  ones = full - 1
  if mode == "whs":
    # After the pre-step one magnitude is 0 and the other is D, so XNOR = ones - D with D = |M_a - M_b| (equal
    # signs) or min(M_a + M_b, ones) (opposite signs): both are min(|sigma_a M_a - sigma_b M_b|, ones).
    dist = jnp.minimum(jnp.abs(a_sign * a_mag - b_sign * b_mag), ones)
    return sigma * (ones - dist)
  return sigma * (ones - jnp.bitwise_xor(a_mag, b_mag))


def hamming_scores_int(query_codes: tuple[Array, Array], memory_codes: tuple[Array, Array], word_length: int,
                       term_frac_bits: int | None, score_max_code: int | None, *, mode: str = "whs"
                       ) -> Int[Array, "batch memory"]:
  """Integer scores ``sum_j Q(2^-3 s_j)`` in units of ``2^-term_frac_bits``, saturated at `score_max_code`.

  Args:
    query_codes: ``(sign, magnitude)`` of u, ``[B, d]``.
    memory_codes: ``(sign, magnitude)`` of m, ``[B, M, d]``.
    word_length: WL of the codes.
    term_frac_bits: fraction bits each term ``2^-3 s_j`` is truncated to (None: exact terms, in units of
      ``2^-(WL-1+3)``).
    score_max_code: saturation of the summed code (None: none).
    mode: ``whs``, ``whs_raw`` or ``sign``.
  """
  qs, qm = query_codes
  ms, mm = memory_codes
  terms = hamming_terms(qs[:, None, :], qm[:, None, :], ms, mm, word_length, mode=mode)
  shift = word_length - 1 + SCORE_SHIFT - (term_frac_bits if term_frac_bits is not None else word_length + 2)
  if shift > 0:  # truncate toward zero: shift the magnitude
    terms = jnp.sign(terms) * jnp.right_shift(jnp.abs(terms), shift)
  elif shift < 0:
    terms = terms * (2 ** -shift)
  total = terms.sum(-1)
  if score_max_code is not None:
    total = jnp.clip(total, -score_max_code, score_max_code)
  return total


def hamming_popcount(query_codes: tuple[Array, Array], memory_codes: tuple[Array, Array], word_length: int, *,
                     mode: str = "whs") -> Int[Array, "batch memory"]:
  """``sum_j sigma_a sigma_b X_j`` (exact terms, no truncation) by per-bit-plane XNOR and population counts.

  The dimensions are packed 32 to a ``uint32`` word for each magnitude bit plane and for the sign agreement; each
  plane k contributes ``2^(WL-1-k) (popcount(xnor_k & same) - popcount(xnor_k & ~same))``. With ``mode="sign"``
  (or binary codes) it is ``2^(WL-1) (d - 2 popcount(sign_a XOR sign_b))``.
  """
  qs, qm = query_codes
  ms, mm = memory_codes
  qs, qm = jnp.broadcast_to(qs[:, None, :], ms.shape), jnp.broadcast_to(qm[:, None, :], mm.shape)
  d = ms.shape[-1]
  words = -(-d // 32)
  valid = pack_bits(jnp.ones(ms.shape, bool), words)
  diff = pack_bits(qs != ms, words)  # sign XOR
  full = 2 ** (word_length - 1)
  if mode == "sign" or word_length == 1:
    return full * (d - 2 * jax.lax.population_count(diff).astype(jnp.int32).sum(-1))
  if mode == "whs":
    ones = full - 1
    same = qs == ms
    low = jnp.minimum(qm, mm)
    big = jnp.minimum(qm + mm, ones)
    qm, mm = (jnp.where(same, qm - low, jnp.where(qm >= mm, big, 0)),
              jnp.where(same, mm - low, jnp.where(qm >= mm, 0, big)))
  same_w = valid & ~diff
  total = jnp.zeros(ms.shape[:-1], jnp.int32)
  for k in range(1, word_length):
    bit = word_length - 1 - k  # k = 1 is the magnitude MSB
    plane_a = pack_bits(jnp.right_shift(qm, bit) & 1 == 1, words)
    plane_b = pack_bits(jnp.right_shift(mm, bit) & 1 == 1, words)
    xnor = ~(plane_a ^ plane_b) & valid
    pos = jax.lax.population_count(xnor & same_w).astype(jnp.int32).sum(-1)
    neg = jax.lax.population_count(xnor & diff).astype(jnp.int32).sum(-1)
    total = total + (2 ** bit) * (pos - neg)
  return total


_LANES = 4                    # 8-bit sign-magnitude words per uint32
_ONES = 0x01010101            # 1 in every byte lane
_PAD = {"query": 0x00, "memory": 0x7F}  # +0 against +127: D = 127, a zero term in whs and whs_raw


def pack_words(sign: Int[Array, "... dim"], magnitude: Int[Array, "... dim"], role: str = "memory"
               ) -> Int[Array, "... words"]:
  """Packs 8-bit sign-magnitude codes (sign bit 7, magnitude bits 0..6), four to a ``uint32``.

  The last axis is padded to a multiple of 4 with words that contribute nothing to a ``whs``/``whs_raw`` score
  (``+0`` for the query, ``+127`` for the memories); `hamming_words` corrects ``sign`` mode for them.

  Args:
    sign: ``+-1``, as from `to_codes`.
    magnitude: ``[0, 127]``.
    role: ``"query"`` or ``"memory"`` (which padding word).
  """
  if role not in _PAD:
    raise ValueError(f"role must be 'query' or 'memory', got {role!r}.")
  w = (jnp.where(sign < 0, 0x80, 0) + magnitude).astype(jnp.uint8)
  d = w.shape[-1]
  n = -(-d // _LANES)
  w = jnp.pad(w, [(0, 0)] * (w.ndim - 1) + [(0, n * _LANES - d)], constant_values=_PAD[role])
  return jax.lax.bitcast_convert_type(w.reshape(w.shape[:-1] + (n, _LANES)), jnp.uint32)


def _lane_total(x: Array) -> Array:
  """The sum of the four byte lanes of each uint32, as int32."""
  pairs = (x & jnp.uint32(0x00FF00FF)) + ((x >> 8) & jnp.uint32(0x00FF00FF))
  return ((pairs & jnp.uint32(0xFFFF)) + (pairs >> 16)).astype(jnp.int32)


def hamming_words(query_words: Int[Array, "batch words"], memory_words: Int[Array, "batch memory words"],
                  dim: int, term_frac_bits: int | None, score_max_code: int | None, *, mode: str = "whs"
                  ) -> Int[Array, "batch memory"]:
  """`hamming_scores_int` for 8-bit codes on packed words: four sign-magnitude bytes per uint32, SWAR arithmetic.

  Each byte lane computes ``X = 127 - D`` without carries into its neighbours (``D = |M_a - M_b|`` for equal signs,
  ``min(M_a + M_b, 127)`` otherwise: the pre-stepped XNOR; ``whs_raw`` XNORs the raw magnitudes), truncates it to
  the term format by a shift, and adds it to or subtracts it from a biased lane accumulator by sign agreement; the
  lanes are folded into one sum per score at the end. ``sign`` mode is ``d - 2 popcount(sign XOR)``. Bit-exact
  with `hamming_scores_int` for word length 8.

  Args:
    query_words: `pack_words` of u (role ``"query"``).
    memory_words: `pack_words` of m (role ``"memory"``).
    dim: d, the unpadded length (for ``sign`` mode's padding correction).
    term_frac_bits, score_max_code, mode: as `hamming_scores_int`.
  """
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
  u32 = jnp.uint32
  hi, low7 = u32(0x80 * _ONES), u32(0x7F * _ONES)
  a, b = query_words[:, None, :], memory_words
  shift = 7 + SCORE_SHIFT - (term_frac_bits if term_frac_bits is not None else 10)
  diff = (a ^ b) & hi                                  # bit 7 of a lane: the signs differ
  if mode == "sign":
    n_words = memory_words.shape[-1]
    agree = _LANES * n_words - 2 * jax.lax.population_count(diff).astype(jnp.int32).sum(-1) \
        - (_LANES * n_words - dim)                       # the padding lanes agree (+0 vs +127)
    term = 128 >> shift if shift > 0 else 128 << -shift
    total = agree * term
  else:
    dmask = diff - (diff >> 7)                      # 0x7F in the lanes whose signs differ
    ma, mb = a & low7, b & low7
    if mode == "whs":
      r0, r1 = (ma | hi) - mb, (mb | hi) - ma          # 128 + M_a - M_b and 128 + M_b - M_a, no borrow out
      ge = r0 & hi
      gmask = ge - (ge >> 7)                           # 0x7F where M_a >= M_b
      dist_same = (r0 & gmask) | (r1 & ~gmask)         # |M_a - M_b| in bits 0..6
      s = ma + mb
      over = s & hi
      dist_opp = s | (over - (over >> 7))              # min(M_a + M_b, 127) in bits 0..6
      x = ~((dist_same & ~dmask) | (dist_opp & dmask)) & low7   # 127 - D
    else:
      x = ~(ma ^ mb) & low7
    tmax = 0x7F >> max(shift, 0)                     # the largest truncated term
    t = (x >> max(shift, 0)) & u32(tmax * _ONES)
    v = (u32(tmax * _ONES) + (t & ~dmask)) - (t & dmask)   # tmax + sigma t per lane, in [0, 2 tmax]
    n_words = v.shape[-1]
    group = max(1, 255 // max(1, 2 * tmax))            # words a lane can accumulate below 256
    total = jnp.zeros(v.shape[:-1], jnp.int32)
    for start in range(0, n_words, group):
      total = total + _lane_total(v[..., start:start + group].sum(-1, dtype=jnp.uint32))
    total = total - tmax * _LANES * n_words
    if shift < 0:
      total = total * (2 ** -shift)
  if score_max_code is not None:
    total = jnp.clip(total, -score_max_code, score_max_code)
  return total


def pack_bits(bits: Array, words: int) -> Array:
  """Packs the last axis of booleans into ``words`` uint32 words (bit i of word w = element 32 w + i)."""
  pad = words * 32 - bits.shape[-1]
  bits = jnp.pad(bits, [(0, 0)] * (bits.ndim - 1) + [(0, pad)]).astype(jnp.uint32)
  bits = bits.reshape(bits.shape[:-1] + (words, 32))
  return jnp.sum(bits << jnp.arange(32, dtype=jnp.uint32), axis=-1, dtype=jnp.uint32)


def bounded_hamming_similarity(fmt: FixedPoint, *, mode: str = "whs", term_fmt: FixedPoint | None = None,
                               score_fmt: FixedPoint | None = None, surrogate: str = "l1"):
  """Q-MANN's bounded Hamming addressing for training and inference (the forward pass is integer-exact).

  Args:
    fmt: Q_att, the format of the codes of u and m (Q(1.2.5) by default in the study; binary for qmann-bin).
    mode: ``whs`` (with the pre-step), ``whs_raw`` (without) or ``sign`` (``s_j = sigma_a sigma_b``).
    term_fmt: format each ``2^-3 s_j`` is truncated to (default `fmt`; pass ``None``-fraction-free formats with
      more fraction bits to keep terms exact at short word lengths). For ``sign`` and binary the terms are exact.
    score_fmt: saturation format of the summed score (default `fmt`; binary/sign scores are not saturated).
    surrogate: the training gradient: ``l1`` is ``sg(sigma_a sigma_b) max(0, 1 - 2^-(WL-1) - |a - b| / 2^I)``,
      a sign-gated negative L1 distance; ``tanh`` uses ``tanh(a) tanh(b)``. For ``sign`` mode and binary codes
      the gradient is the hard-tanh straight-through estimator of the signs.

  Returns:
    ``similarity(query, memories) -> scores`` in real units.
  """
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
  if surrogate not in ("l1", "tanh"):
    raise ValueError(f"surrogate must be 'l1' or 'tanh', got {surrogate!r}.")
  sign_only = mode == "sign" or fmt.binary
  wl = fmt.word_length
  term_fmt = fmt if term_fmt is None else term_fmt
  score_fmt = fmt if score_fmt is None else score_fmt

  def similarity(query, memories):
    if sign_only:
      sq, sm = quantize(query, FixedPoint(0, 0)), quantize(memories, FixedPoint(0, 0))
      return jnp.einsum("bd,bmd->bm", sq, sm) * 2.0 ** -SCORE_SHIFT
    qc, mc = to_codes(query, fmt), to_codes(memories, fmt)
    ints = hamming_scores_int(qc, mc, wl, term_fmt.frac_bits, None, mode=mode)
    exact = quantize_value(ints.astype(jnp.float32) * 2.0 ** -term_fmt.frac_bits, score_fmt)
    a = jnp.clip(query, -fmt.max_value, fmt.max_value)[:, None, :]
    b = jnp.clip(memories, -fmt.max_value, fmt.max_value)
    if surrogate == "l1":
      sigma = jax.lax.stop_gradient(jnp.where(jnp.signbit(a), -1.0, 1.0) * jnp.where(jnp.signbit(b), -1.0, 1.0))
      smooth = sigma * jnp.maximum(0.0, 1.0 - 2.0 ** -(wl - 1) - jnp.abs(a - b) / 2.0 ** fmt.int_bits)
    else:
      smooth = jnp.tanh(a) * jnp.tanh(b)
    smooth = smooth.sum(-1) * 2.0 ** -SCORE_SHIFT
    return exact + (smooth - jax.lax.stop_gradient(smooth))  # forward: exactly the integer score

  return similarity


def hamming_inference_scores(query: Float[Array, "batch dim"], memories: Float[Array, "batch memory dim"],
                             fmt: FixedPoint, *, mode: str = "whs", term_fmt: FixedPoint | None = None,
                             score_fmt: FixedPoint | None = None) -> Float[Array, "batch memory"]:
  """The integer inference path of `bounded_hamming_similarity` (codes, integer sums, saturation), in real units."""
  term_fmt = fmt if term_fmt is None else term_fmt
  score_fmt = fmt if score_fmt is None else score_fmt
  qc, mc = to_codes(query, fmt), to_codes(memories, fmt)
  if mode == "sign" or fmt.binary:
    return hamming_popcount(qc, mc, 1, mode="sign").astype(jnp.float32) * 2.0 ** -SCORE_SHIFT
  cap = score_fmt.max_code * 2 ** (term_fmt.frac_bits - score_fmt.frac_bits)
  if fmt.word_length == 8:  # the hardware's words: packed 8-bit sign-magnitude codes
    ints = hamming_words(pack_words(*qc, role="query"), pack_words(*mc, role="memory"), query.shape[-1],
                         term_fmt.frac_bits, cap, mode=mode)
  else:
    ints = hamming_scores_int(qc, mc, fmt.word_length, term_fmt.frac_bits, cap, mode=mode)
  return ints.astype(jnp.float32) * 2.0 ** -term_fmt.frac_bits
