"""Sign-magnitude fixed-point quantizers Q(1.I.F) with saturation, straight-through estimators, and the weight
quantizer as a `jaxhw.effects.ParamTransform`.

A value x in Q(1.I.F) (word length 1 + I + F) has the code ``trunc(x 2^F)`` (toward zero; ``rounding="nearest"``
rounds), saturated to ``|code| <= 2^(I+F) - 1``, and the value ``code 2^-F``. The sign is kept apart from the
magnitude, so a negative zero exists; in float it is IEEE ``-0.0`` (``jnp.signbit`` reads it back). Binary
(I = F = 0) is ``sign(x)`` in {-1, +1} read from the sign bit: sign(0) = +1, sign(-0.0) = -1.

Training uses fake quantization of float master weights with straight-through estimators (STE): the gradient is 1
inside the representable range and 0 outside (hard-tanh for binary).

References:
  Park et al., "Quantized Memory-Augmented Neural Networks", AAAI 2018, arXiv:1711.03712.
  Bengio et al., "Estimating or Propagating Gradients Through Stochastic Neurons", 2013 (the STE).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from jaxhw.effects import ParamTransform

ROUNDINGS = ("trunc", "nearest")


@dataclasses.dataclass(frozen=True)
class FixedPoint:
  """The sign-magnitude format Q(1.I.F).

  Attributes:
    int_bits: I, integer bits of the magnitude.
    frac_bits: F, fraction bits of the magnitude.
    rounding: ``"trunc"`` (toward zero, as the reference code) or ``"nearest"``.
  """

  int_bits: int
  frac_bits: int
  rounding: str = "trunc"

  def __post_init__(self):
    if self.int_bits < 0 or self.frac_bits < 0:
      raise ValueError(f"int_bits and frac_bits must be >= 0, got I={self.int_bits}, F={self.frac_bits}.")
    if self.rounding not in ROUNDINGS:
      raise ValueError(f"rounding must be one of {ROUNDINGS}, got {self.rounding!r}.")

  @property
  def word_length(self) -> int:
    return 1 + self.int_bits + self.frac_bits

  @property
  def binary(self) -> bool:
    return self.int_bits + self.frac_bits == 0

  @property
  def max_code(self) -> int:
    """The largest magnitude code, ``2^(I+F) - 1`` (1 for binary)."""
    return max(1, 2 ** (self.int_bits + self.frac_bits) - 1)

  @property
  def step(self) -> float:
    return 2.0 ** -self.frac_bits

  @property
  def max_value(self) -> float:
    """``(2^(WL-1) - 1) / 2^F`` (1 for binary)."""
    return 1.0 if self.binary else self.max_code * self.step

  def __str__(self) -> str:
    return f"Q(1.{self.int_bits}.{self.frac_bits})"


#: The 1-bit format: the sign only, values +-1.
BINARY = FixedPoint(0, 0)


def fixed_point(word_length: int, int_bits: int, rounding: str = "trunc") -> FixedPoint:
  """Q(1.I.F) with ``F = word_length - 1 - int_bits`` (``word_length=1`` is binary)."""
  if word_length < 1 or not 0 <= int_bits <= word_length - 1:
    raise ValueError(f"need word_length >= 1 and 0 <= int_bits <= word_length - 1, got {word_length}, {int_bits}.")
  return FixedPoint(int_bits, word_length - 1 - int_bits, rounding)


def quantize_value(x: Float[Array, "..."], fmt: FixedPoint) -> Float[Array, "..."]:
  """The quantized value of `x` (no gradient rule; see `quantize`). Keeps the sign of a zero code."""
  if fmt.binary:  # the sign bit: sign(+0) = +1, and a sign-magnitude negative zero (-0.0) stays -1
    return jnp.where(jnp.signbit(x), -1.0, 1.0).astype(x.dtype)
  scaled = x * (2.0 ** fmt.frac_bits)
  code = jnp.trunc(scaled) if fmt.rounding == "trunc" else jnp.round(scaled)
  code = jnp.clip(code, -fmt.max_code, fmt.max_code)
  return jnp.copysign(code * fmt.step, x).astype(x.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def quantize(x: Float[Array, "..."], fmt: FixedPoint) -> Float[Array, "..."]:
  """Fake quantization with a clipped straight-through gradient: 1 where ``|x| <= max_value``, else 0."""
  return quantize_value(x, fmt)


def _quantize_fwd(x, fmt):
  return quantize_value(x, fmt), x


def _quantize_bwd(fmt, x, g):
  return (jnp.where(jnp.abs(x) <= fmt.max_value, g, jnp.zeros_like(g)),)


quantize.defvjp(_quantize_fwd, _quantize_bwd)


def to_codes(x: Float[Array, "..."], fmt: FixedPoint) -> tuple[Int[Array, "..."], Int[Array, "..."]]:
  """Sign-magnitude integer codes ``(sign in {-1, +1}, magnitude in [0, max_code])`` of `x` in `fmt`.

  The sign is read from the sign bit, so a negative zero (``-0.0``, or a small negative value) keeps sign -1.
  Binary codes have magnitude 1.
  """
  sign = jnp.where(jnp.signbit(x), -1, 1).astype(jnp.int32)
  if fmt.binary:
    return sign, jnp.ones_like(sign)
  scaled = jnp.abs(x) * (2.0 ** fmt.frac_bits)
  mag = jnp.trunc(scaled) if fmt.rounding == "trunc" else jnp.round(scaled)
  return sign, jnp.minimum(mag, fmt.max_code).astype(jnp.int32)


def saturated_fraction(x: Float[Array, "..."], fmt: FixedPoint) -> Float[Array, ""]:
  """The fraction of entries of `x` beyond the format's range (a saturation counter)."""
  return jnp.mean(jnp.abs(x) > fmt.max_value)


FormatRule = FixedPoint | Mapping[str, FixedPoint | None] | Callable[[tuple[str, ...]], FixedPoint | None]


def _rule_fn(rule: FormatRule) -> Callable[[tuple[str, ...]], FixedPoint | None]:
  if isinstance(rule, FixedPoint):
    return lambda path: rule
  if isinstance(rule, Mapping):
    def by_prefix(path):
      joined = "/".join(path)
      best = None
      for prefix, fmt in rule.items():
        if (joined == prefix or joined.startswith(prefix)) and (best is None or len(prefix) > len(best[0])):
          best = (prefix, fmt)
      return best[1] if best else None
    return by_prefix
  return rule


def _path_names(path) -> tuple[str, ...]:
  return tuple(str(getattr(p, "key", getattr(p, "name", p))) for p in path)


def quantize_params(formats: FormatRule, *, scale_binary: bool = False) -> ParamTransform:
  """Weight quantization as a parameter effect (fake-quantized, straight-through gradients).

  Args:
    formats: one `FixedPoint` for every leaf; or a mapping from a path prefix (``"embed_0"``, ``"temporal"``,
      ``"embed_1/embedding"``) to a format (None leaves the leaf in float; the longest matching prefix wins);
      or a function of the leaf's path (a tuple of names) returning a format or None.
    scale_binary: scale binarized tensors by their mean absolute value (``alpha sign(W)``).

  Returns:
    A `jaxhw.effects.ParamTransform`; its state is ``{path: fraction of saturated entries}`` of the last ``apply``.
  """
  rule = _rule_fn(formats)

  def apply_leaf(path, leaf):
    fmt = rule(_path_names(path))
    if fmt is None:
      return leaf
    q = quantize(leaf, fmt)
    if fmt.binary and scale_binary:
      q = q * jax.lax.stop_gradient(jnp.mean(jnp.abs(leaf)))
    return q

  def init(params):
    return {"/".join(_path_names(p)): jnp.zeros((), jnp.float32)
            for p, _ in jax.tree_util.tree_flatten_with_path(params)[0] if rule(_path_names(p)) is not None}

  def apply(params, state, key):
    del key
    new_state = {}
    for p, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
      fmt = rule(_path_names(p))
      if fmt is not None:
        new_state["/".join(_path_names(p))] = saturated_fraction(leaf, fmt)
    return jax.tree_util.tree_map_with_path(apply_leaf, params), new_state

  return ParamTransform(init, apply)


def activation_quantizer(formats: Mapping[str, FixedPoint | Sequence[FixedPoint] | None]
                         ) -> Callable[[Array, str, int], Array]:
  """A MemN2N activation hook quantizing named activations (``m``, ``c``, ``o``, ``u``, ``logits``).

  Args:
    formats: activation name to a format, or to one format per hop (MQ; the last is reused past its end), or None
      (float). Names not listed stay in float.

  Returns:
    ``hook(x, name, hop) -> x`` for `jaxhw.models.MemN2N`'s ``activation`` attribute.
  """
  table = dict(formats)

  def hook(x: Array, name: str, hop: int) -> Array:
    fmt = table.get(name)
    if fmt is None:
      return x
    if not isinstance(fmt, FixedPoint):
      fmt = tuple(fmt)[min(hop, len(fmt) - 1)]
    return quantize(x, fmt)

  return hook


def per_hop_formats(base: FixedPoint, hops: int) -> tuple[FixedPoint, ...]:
  """MQ, Q-MANN's per-hop formats: hop 1 one more integer bit, hop 3 (and later) one more fraction bit."""
  out = []
  for k in range(hops):
    shift = 1 if k == 0 else (0 if k == 1 else -1)
    i = min(max(base.int_bits + shift, 0), base.int_bits + base.frac_bits)
    out.append(FixedPoint(i, base.int_bits + base.frac_bits - i, base.rounding))
  return tuple(out)


def format_table(formats: Mapping[str, Any]) -> dict[str, str]:
  """Printable ``{name: "Q(1.I.F)"}`` of a formats mapping (per-hop tuples joined by ``/``)."""
  def show(f):
    if f is None:
      return "float"
    if isinstance(f, str):
      return f
    if isinstance(f, FixedPoint):
      return "binary" if f.binary else str(f)
    return "/".join(show(x) for x in f)
  return {k: show(v) for k, v in formats.items()}
