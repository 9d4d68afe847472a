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
min(M_a + M_b, 2^(WL-1) - 1) otherwise, is what the jitted path computes; `hamming_popcount` computes the same
integers with per-bit-plane XNOR and ``lax.population_count`` over packed words, as the hardware does.

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
    same = a_sign == b_sign
    low = jnp.minimum(a_mag, b_mag)
    a_new = jnp.where(same, a_mag - low, jnp.where(a_mag >= b_mag, jnp.minimum(a_mag + b_mag, ones), 0))
    b_new = jnp.where(same, b_mag - low, jnp.where(a_mag >= b_mag, 0, jnp.minimum(a_mag + b_mag, ones)))
    a_mag, b_mag = a_new, b_new
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
  ints = hamming_scores_int(qc, mc, fmt.word_length, term_fmt.frac_bits,
                            score_fmt.max_code * 2 ** (term_fmt.frac_bits - score_fmt.frac_bits), mode=mode)
  return ints.astype(jnp.float32) * 2.0 ** -term_fmt.frac_bits
