"""End-To-End Memory Network (MemN2N) for bAbI question answering, as a Flax Linen module.

Hardware effects attach from outside: weight quantization is a parameter transform on the embedding tables, and
the addressing similarity (``similarity(query, memories) -> scores``) and an activation hook
(``activation(x, name, hop) -> x``) are module attributes, by default the float dot product and the identity.
This file imports no hardware package.

References:
  Sukhbaatar et al., "End-To-End Memory Networks", NeurIPS 2015, arXiv:1503.08895.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

Similarity = Callable[[Array, Array], Array]
Activation = Callable[[Array, str, int], Array]

ENCODINGS = ("pe", "bow")


def dot_similarity(query: Float[Array, "batch dim"], memories: Float[Array, "batch memory dim"]
                   ) -> Float[Array, "batch memory"]:
  """The float inner product ``u . m_i`` of MemN2N's content addressing."""
  return jnp.einsum("bd,bmd->bm", query, memories)


def identity_activation(x: Array, name: str, hop: int) -> Array:
  """The default activation hook: no change (a quantizer can replace it)."""
  del name, hop
  return x


def position_encoding(tokens: Int[Array, "... words"], dim: int, *,
                      global_length: bool = False) -> Float[Array, "... words dim"]:
  """PE weights ``l_kj = (1 - j/J) - (k/d)(1 - 2j/J)`` (1-based j, k) for padded sentences; 0 on padding.

  Args:
    tokens: word ids, padded with 0 (``nil``) at the end.
    dim: embedding size d.
    global_length: use the padded length for J (as the reference ports do) instead of the sentence's own length.
  """
  words = tokens.shape[-1]
  present = tokens != 0
  if global_length:
    length = jnp.full(tokens.shape[:-1] + (1, 1), float(words), jnp.float32)
  else:
    length = jnp.maximum(present.sum(-1), 1).astype(jnp.float32)[..., None, None]
  j = jnp.arange(1, words + 1, dtype=jnp.float32)[:, None]
  k = jnp.arange(1, dim + 1, dtype=jnp.float32)[None, :]
  weights = (1 - j / length) - (k / dim) * (1 - 2 * j / length)
  return jnp.where(present[..., None], weights, 0.0)


class MemN2N(nn.Module):
  """MemN2N with K hops and adjacent weight tying (A_{k+1} = C_k, B = A_1, W = C_K^T).

  The module holds K + 1 word tables ``embed_0..embed_K`` and, with temporal encoding, K + 1 temporal tables
  ``temporal_0..temporal_K`` (T_A^{k+1} = T_C^k). With ``hops=0`` it is the question-only baseline
  ``logits = W u^1`` with an untied ``output`` Dense layer.

  Attributes:
    vocab_size: V, including ``nil`` (id 0, a zero embedding) and ``unk``.
    dim: embedding size d.
    hops: K.
    memory_size: memory slots M (the size of the temporal tables).
    encoding: ``"pe"`` (position encoding) or ``"bow"`` (bag of words).
    pe_global: PE with the padded sentence length (reference ports) instead of each sentence's own.
    temporal: add the learned temporal encoding.
    mask_empty: give empty memory slots zero attention (False: they take part with score 0, as in the
      reference codes).
    similarity: the addressing similarity ``(query [B, d], memories [B, M, d]) -> scores [B, M]``, or a sequence
      of K of them (one per hop).
    activation: hook ``(x, name, hop) -> x`` applied to ``m``, ``c``, ``o``, ``u`` and ``logits``.
    init_std: standard deviation of the normal initialisation.
  """

  vocab_size: int
  dim: int = 20
  hops: int = 3
  memory_size: int = 50
  encoding: str = "pe"
  pe_global: bool = False
  temporal: bool = True
  mask_empty: bool = True
  similarity: Similarity | Sequence[Similarity] = dot_similarity
  activation: Activation = identity_activation
  init_std: float = 0.1

  def _similarity(self, hop: int) -> Similarity:
    if callable(self.similarity):
      return self.similarity
    sims = tuple(self.similarity)
    if len(sims) != self.hops:
      raise ValueError(f"similarity must be one callable or {self.hops} (one per hop), got {len(sims)}.")
    return sims[hop]

  def _embed_all(self, tables: Sequence[nn.Embed], tokens: Array) -> list[Array]:
    """Sentence embeddings ``sum_j l_j * E[x_j]`` of `tokens` in every table of `tables` (one gather for all).

    PE splits ``l_kj = a_j + (k/d) b_j`` with ``a_j = 1 - j/J`` and ``b_j = 2j/J - 1``, so each table needs two
    weighted sums over the words; ``nil`` (id 0) has weight 0, so it is a zero embedding.
    """
    present = (tokens != 0).astype(jnp.float32)
    stacked = jnp.concatenate([t.embedding for t in tables], axis=-1)
    vectors = jnp.take(stacked, tokens, axis=0)  # [..., J, n_tables * d]
    if self.encoding == "bow":
      summed = jnp.einsum("...jd,...j->...d", vectors, present)
    else:
      words = tokens.shape[-1]
      length = jnp.full(present.shape[:-1] + (1,), float(words)) if self.pe_global else \
          jnp.maximum(present.sum(-1, keepdims=True), 1.0)
      j = jnp.arange(1, words + 1, dtype=jnp.float32)
      k_over_d = jnp.tile(jnp.arange(1, self.dim + 1, dtype=jnp.float32) / self.dim, len(tables))
      summed = (jnp.einsum("...jd,...j->...d", vectors, (1 - j / length) * present)
                + k_over_d * jnp.einsum("...jd,...j->...d", vectors, (2 * j / length - 1) * present))
    return [summed[..., i * self.dim:(i + 1) * self.dim] for i in range(len(tables))]

  @nn.compact
  def __call__(self, stories: Int[Array, "batch memory words"], query: Int[Array, "batch words"],
               time: Int[Array, "batch memory"] | None = None, *, linear: bool | Array = False
               ) -> Float[Array, "batch vocab"]:
    """Answer logits.

    Args:
      stories: word ids, slot 0 the newest statement; an all-zero slot is empty.
      query: word ids of the question.
      time: temporal indices per slot (default: the slot index); training draws them with random noise.
      linear: linear start: use the raw scores instead of the hop softmax (a bool or a traced scalar).

    Returns:
      ``[batch, vocab_size]`` logits. The hop attentions are sown into ``intermediates/attention``, each hop's
      addressing operands (u and m, formats applied) into ``intermediates/addressing_query`` and
      ``intermediates/addressing_memory`` (read them with ``mutable=["intermediates"]``).
    """
    if self.encoding not in ENCODINGS:
      raise ValueError(f"encoding must be one of {ENCODINGS}, got {self.encoding!r}.")
    if self.hops < 0:
      raise ValueError(f"hops must be >= 0, got {self.hops}.")
    if stories.shape[1] > self.memory_size:
      raise ValueError(f"stories hold {stories.shape[1]} slots, more than memory_size={self.memory_size}.")
    init = nn.initializers.normal(self.init_std)
    tables = [nn.Embed(self.vocab_size, self.dim, embedding_init=init, name=f"embed_{k}")
              for k in range(self.hops + 1)]
    act = self.activation

    u = act(self._embed_all(tables[:1], query)[0], "u", 0)
    if self.hops == 0:
      return act(nn.Dense(self.vocab_size, use_bias=False, kernel_init=init, name="output")(u), "logits", 0)

    full = stories.any(-1)
    if time is None:
      time = jnp.broadcast_to(jnp.arange(stories.shape[1], dtype=jnp.int32), stories.shape[:2])
    temporal = [nn.Embed(self.memory_size, self.dim, embedding_init=init, name=f"temporal_{k}")
                for k in range(self.hops + 1)] if self.temporal else None

    embedded = self._embed_all(tables, stories)

    def memory(k: int) -> Array:
      vectors = embedded[k]
      if temporal is not None:
        vectors = vectors + temporal[k](time)
      return jnp.where(full[..., None], vectors, 0.0)

    memories = [memory(k) for k in range(self.hops + 1)]
    linear = jnp.asarray(linear)
    for k in range(self.hops):
      m = act(memories[k], "m", k)
      c = act(memories[k + 1], "c", k)
      self.sow("intermediates", "addressing_query", u)
      self.sow("intermediates", "addressing_memory", m)
      scores = self._similarity(k)(u, m)
      if self.mask_empty:
        p = jax.nn.softmax(jnp.where(full, scores, -1e30), axis=-1) * full
        raw = scores * full
      else:
        p, raw = jax.nn.softmax(scores, axis=-1), scores
      p = jnp.where(linear, raw, p)
      self.sow("intermediates", "attention", p)
      o = act(jnp.einsum("bm,bmd->bd", p, c), "o", k)
      u = act(u + o, "u", k + 1)
    return act(tables[self.hops].attend(u), "logits", self.hops)
