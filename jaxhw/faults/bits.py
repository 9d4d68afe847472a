"""Bit layouts, bit views of float and int8 arrays, and the symmetric int8 quantizer.

Bits are 0-indexed from the least significant bit (the HAT paper's plots are 1-indexed: their bit 32 is our 31).

References:
  Prato, Kim, Chen, Hong, "Hessian-aware Training for Enhancing DNNs Resilience to Parameter Corruptions",
    arXiv:2504.01933, 2025.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, Float, Int

__all__ = [
    "ALL_BITS",
    "SIGN_BIT",
    "EXPONENT_BITS",
    "EXPONENT_MSB",
    "MANTISSA_BITS",
    "BitLayout",
    "LAYOUTS",
    "layout_of",
    "resolve_bits",
    "to_bits",
    "from_bits",
    "bit_mask",
    "QuantizedTensor",
    "quantize_int8",
    "dequantize_int8",
]

# Named bit selections; `resolve_bits` turns them into explicit positions for a dtype.
#: Named bit selection: every bit of the dtype.
ALL_BITS = "all"
#: Named bit selection: the sign bit.
SIGN_BIT = "sign"
#: Named bit selection: every exponent bit (none for integer dtypes).
EXPONENT_BITS = "exponent"
#: Named bit selection: the most significant exponent bit (bit 30 of a float32).
EXPONENT_MSB = "exponent_msb"
#: Named bit selection: the mantissa bits (the magnitude bits of an integer dtype).
MANTISSA_BITS = "mantissa"
_NAMED = (ALL_BITS, SIGN_BIT, EXPONENT_BITS, EXPONENT_MSB, MANTISSA_BITS)


class BitLayout(NamedTuple):
  """Bit layout of one storage dtype.

  Attributes:
    name: dtype name.
    width: number of bits.
    uint: unsigned integer dtype of the same width (the bitcast target).
    sign: position of the sign bit.
    exponent: exponent bit positions, LSB first (empty for integers).
    mantissa: mantissa / magnitude bit positions, LSB first.
  """

  name: str
  width: int
  uint: np.dtype
  sign: int
  exponent: tuple[int, ...]
  mantissa: tuple[int, ...]


def _float_layout(name: str, width: int, n_mant: int, uint) -> BitLayout:
  return BitLayout(name, width, np.dtype(uint), width - 1, tuple(range(n_mant, width - 1)), tuple(range(n_mant)))


#: The bit layout of each supported storage dtype, by dtype name.
LAYOUTS: dict[str, BitLayout] = {
    "float32": _float_layout("float32", 32, 23, np.uint32),
    "float16": _float_layout("float16", 16, 10, np.uint16),
    "bfloat16": _float_layout("bfloat16", 16, 7, np.uint16),
    "float64": _float_layout("float64", 64, 52, np.uint64),
    "int8": BitLayout("int8", 8, np.dtype(np.uint8), 7, (), tuple(range(7))),
}


def layout_of(dtype, *, argname: str = "dtype") -> BitLayout:
  """Returns the `BitLayout` of `dtype`.

  Args:
    dtype: a float32, float16, bfloat16, float64 or int8 dtype (or array).
    argname: name used in the error message.

  Returns:
    The layout.

  Raises:
    ValueError: for any other dtype (other integer types included).

  References:
    Prato, Kim, Chen, Hong, "Hessian-aware Training for Enhancing DNNs Resilience to Parameter Corruptions",
      arXiv:2504.01933, 2025.
  """
  name = jnp.dtype(getattr(dtype, "dtype", dtype)).name
  if name not in LAYOUTS:
    raise ValueError(f"{argname} has dtype {name}; allowed dtypes: {sorted(LAYOUTS)}")
  return LAYOUTS[name]


def resolve_bits(bits: str | int | Sequence[int], dtype) -> tuple[int, ...]:
  """Turns a bit selection into sorted explicit bit positions for `dtype`.

  Args:
    bits: "all", "sign", "exponent", "exponent_msb", "mantissa", one position, or a sequence of positions.
    dtype: the storage dtype the positions refer to.

  Returns:
    Sorted, de-duplicated bit positions.

  Raises:
    ValueError: for an unknown name, a position outside [0, width), or an exponent selection on int8.
  """
  lay = layout_of(dtype)
  if isinstance(bits, str):
    if bits == ALL_BITS:
      return tuple(range(lay.width))
    if bits == SIGN_BIT:
      return (lay.sign,)
    if bits in (EXPONENT_BITS, EXPONENT_MSB):
      if not lay.exponent:
        raise ValueError(f"bits={bits!r} needs a float dtype, got {lay.name}; allowed for int8: 'all', 'sign', "
                         "'mantissa' or explicit positions in [0, 8)")
      return lay.exponent if bits == EXPONENT_BITS else (lay.exponent[-1],)
    if bits == MANTISSA_BITS:
      return lay.mantissa
    raise ValueError(f"bits={bits!r} is not a bit selection; allowed: {list(_NAMED)} or positions in "
                     f"[0, {lay.width})")
  seq = [bits] if isinstance(bits, (int, np.integer)) else list(bits)
  out = []
  for b in seq:
    if not isinstance(b, (int, np.integer)) or isinstance(b, bool) or not 0 <= int(b) < lay.width:
      raise ValueError(f"bits contains {b!r}, outside the {lay.name} width; allowed: integers in [0, {lay.width})")
    out.append(int(b))
  if not out:
    raise ValueError("bits is empty; allowed: a non-empty selection")
  return tuple(sorted(set(out)))


def to_bits(x: Array) -> Array:
  """Bitcasts `x` to the unsigned integer type of the same width (int8 -> uint8, float32 -> uint32)."""
  lay = layout_of(x, argname="x")
  return lax.bitcast_convert_type(x, lay.uint)


def from_bits(u: Array, dtype) -> Array:
  """Bitcasts unsigned bit patterns `u` back to `dtype`."""
  return lax.bitcast_convert_type(u, jnp.dtype(dtype))


def bit_mask(bit: Int[Array, "..."] | int, dtype) -> Array:
  """The unsigned mask `1 << bit` in the bit-view dtype of `dtype` (built unsigned: no int32 overflow)."""
  lay = layout_of(dtype)
  return jnp.left_shift(jnp.asarray(1, lay.uint), jnp.asarray(bit).astype(lay.uint))


class QuantizedTensor(NamedTuple):
  """An int8 tensor `q` and its float scale (scalar or per output channel, broadcastable)."""

  q: Array
  scale: Array


def quantize_int8(w: Float[Array, "..."], *, per_channel: bool = False, axis: int = -1) -> QuantizedTensor:
  """Symmetric int8 quantization, `s = max|w| / 127`, `q = round(clip(w / s, -127, 127))`.

  Args:
    w: float weights.
    per_channel: one scale per slice along `axis` (output channels) instead of one per tensor.
    axis: the channel axis for `per_channel`.

  Returns:
    QuantizedTensor(q int8 in [-127, 127], scale float32 broadcastable to w); `q * scale` approximates `w` with
    error at most `scale / 2`.

  References:
    Rakin, He, Fan, "Bit-Flip Attack: Crushing Neural Network with Progressive Bit Search", ICCV 2019, arXiv:1903.12269.
  """
  if not jnp.issubdtype(jnp.asarray(w).dtype, jnp.floating):
    raise ValueError(f"w has dtype {jnp.asarray(w).dtype}; allowed: floating dtypes")
  w = jnp.asarray(w, jnp.float32)
  if per_channel:
    ax = axis % w.ndim
    red = tuple(i for i in range(w.ndim) if i != ax)
    m = jnp.max(jnp.abs(w), axis=red, keepdims=True)
  else:
    m = jnp.max(jnp.abs(w))
  s = jnp.where(m > 0, m / 127.0, 1.0)
  q = jnp.round(jnp.clip(w / s, -127.0, 127.0)).astype(jnp.int8)
  return QuantizedTensor(q, s.astype(jnp.float32))


def dequantize_int8(q: Array, scale: Array) -> Array:
  """Float weights `q * scale` of an int8 tensor."""
  return q.astype(jnp.float32) * scale


def _np_flip(x: np.ndarray, index: int, bit: int) -> np.ndarray:
  """Numpy reference flip (used by tests and the naive baseline)."""
  lay = LAYOUTS[np.dtype(x.dtype).name] if np.dtype(x.dtype).name in LAYOUTS else None
  if lay is None:
    raise ValueError(f"x has dtype {x.dtype}; allowed: {sorted(LAYOUTS)}")
  y = np.array(x, copy=True).reshape(-1)
  u = y.view(lay.uint)
  u[index] ^= lay.uint.type(1) << lay.uint.type(bit)
  return y.reshape(np.shape(x))

