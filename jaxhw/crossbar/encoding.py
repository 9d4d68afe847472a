"""Input pulse encodings for crossbar reads: bit-serial, thermometer, mixed and repeat codes.

An encoding sends an unsigned level u in {0, ..., L} as T binary pulses b_t with
significances s_t >= 0, sum_t s_t = L, such that sum_t s_t b_t(u) = u. After the
shift-and-add, per-read noise of variance sigma^2 is scaled by the noise factor
c(s) = sum_t s_t^2 / L^2 (Kim et al., arXiv:2201.01479).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

#: Input pulse encoding families: thermometer (equal significances), bit-serial (powers of two) and mixed (the
#: T-pulse code with the smallest noise factor, found by enumeration).
ENCODINGS = ("thermometer", "bitserial", "mixed")
_MAX_MIXED_BITS = 5  # the enumeration of partitions of L grows fast beyond L = 31


class Encoding(NamedTuple):
  """A pulse code: a base code of integer significances, each pulse sent `repeats` times.

  Attributes:
    name: "thermometer", "bitserial" or "mixed".
    base: integer significances of the base code (ascending), summing to `levels`.
    levels: L, the largest level (2**bits - 1).
    repeats: k, how many times every base pulse is sent (each with weight s / k).
  """

  name: str
  base: tuple[int, ...]
  levels: int
  repeats: int = 1

  @property
  def pulses(self) -> int:
    """T, the number of reads per input."""
    return len(self.base) * self.repeats

  @property
  def significances(self) -> tuple[float, ...]:
    """s_t for every pulse, base code tiled `repeats` times, each divided by `repeats`."""
    return tuple(s / self.repeats for s in self.base) * self.repeats


def _check_bits(bits: int) -> None:
  if not isinstance(bits, (int, np.integer)) or bits < 1:
    raise ValueError(f"bits must be an integer >= 1, got {bits!r}")


def bitserial(bits: int) -> Encoding:
  """Binary-weighted code: T = B pulses with s_t = 2**t.

  Args:
    bits: B, input precision in bits (>= 1).

  Returns:
    The Encoding.

  References:
    Kim et al., "Gradient-based Bit Encoding Optimization for Noise-Robust Binary Memristive Crossbar",
    DATE 2022, arXiv:2201.01479.
  """
  _check_bits(bits)
  return Encoding("bitserial", tuple(2**t for t in range(bits)), 2**bits - 1)


def thermometer(levels: int) -> Encoding:
  """Unary code: T = L pulses with s_t = 1, b_t = [t < u].

  Args:
    levels: L (>= 1); L = 1 for binary layers.

  Returns:
    The Encoding.

  References:
    Kim et al., "Gradient-based Bit Encoding Optimization for Noise-Robust Binary Memristive Crossbar",
    DATE 2022, arXiv:2201.01479.
  """
  if not isinstance(levels, (int, np.integer)) or levels < 1:
    raise ValueError(f"levels must be an integer >= 1, got {levels!r}")
  return Encoding("thermometer", (1,) * int(levels), int(levels))


def _greedy_exact(parts: tuple[int, ...], levels: int) -> bool:
  desc = sorted(parts, reverse=True)
  for u in range(levels + 1):
    r = u
    for s in desc:
      if r >= s:
        r -= s
    if r != 0:
      return False
  return True


def _partitions(n: int, k: int, max_part: int):
  """Partitions of n into exactly k positive parts, each <= max_part, non-increasing."""
  if k == 0:
    if n == 0:
      yield ()
    return
  lo = -(-n // k)  # the largest part is at least ceil(n / k)
  for first in range(min(n - (k - 1), max_part), lo - 1, -1):
    for rest in _partitions(n - first, k - 1, first):
      yield (first,) + rest


@functools.cache
def _mixed_table(bits: int) -> dict[int, tuple[int, ...]]:
  levels = 2**bits - 1
  table = {}
  for t in range(bits, levels + 1):
    best = None
    for parts in _partitions(levels, t, levels):
      if not _greedy_exact(parts, levels):
        continue
      key = (sum(s * s for s in parts), parts)
      if best is None or key < best:
        best = key
    table[t] = tuple(sorted(best[1]))
  return table


def mixed(bits: int, pulses: int) -> Encoding:
  """The code with T pulses that minimises sum s_t^2, found by enumeration, greedy-exact.

  Args:
    bits: B in [1, 5].
    pulses: T in [B, 2**B - 1].

  Returns:
    The Encoding (for B = 4: sum s^2 = 85, 53, 41, 35, 29, 25, 21, 15 at T = 4, 5, 6, 7, 8, 10, 12, 15).

  References:
    Kim et al., "Gradient-based Bit Encoding Optimization for Noise-Robust Binary Memristive Crossbar",
    DATE 2022, arXiv:2201.01479.
  """
  _check_bits(bits)
  if bits > _MAX_MIXED_BITS:
    raise ValueError(f"bits must be <= {_MAX_MIXED_BITS} for the mixed code, got {bits}")
  levels = 2**bits - 1
  if not isinstance(pulses, (int, np.integer)) or not bits <= pulses <= levels:
    raise ValueError(f"pulses must be an integer in [{bits}, {levels}] for mixed with bits={bits}, "
                     f"got {pulses!r}")
  return Encoding("mixed", _mixed_table(bits)[int(pulses)], levels)


def repeat(encoding: Encoding, k: int) -> Encoding:
  """Sends every pulse k times with weight s / k; divides sum s^2 by k.

  Args:
    encoding: the base code (must not already be repeated).
    k: repeats, >= 1.

  Returns:
    The repeated Encoding (T = k * T_base).

  References:
    Kim et al., "Gradient-based Bit Encoding Optimization for Noise-Robust Binary Memristive Crossbar",
    DATE 2022, arXiv:2201.01479.
  """
  if not isinstance(k, (int, np.integer)) or k < 1:
    raise ValueError(f"k (repeats) must be an integer >= 1, got {k!r}")
  return encoding._replace(repeats=encoding.repeats * int(k))


def make_encoding(kind: str, bits: int, pulses: int) -> Encoding:
  """Builds the code of family `kind` with exactly `pulses` pulses, using repeats where needed.

  `thermometer` accepts any T that is a multiple of L (for binary layers, L = 1: any T >= 1);
  `bitserial` any multiple of B; `mixed` any T in [B, L] or a multiple of L above it.

  Args:
    kind: "thermometer" (default family of the project), "bitserial" or "mixed".
    bits: B, the input precision (1 for binary layers).
    pulses: T >= 1.

  Returns:
    The Encoding.

  References:
    Kim et al., "Gradient-based Bit Encoding Optimization for Noise-Robust Binary Memristive Crossbar",
    DATE 2022, arXiv:2201.01479.
  """
  if kind not in ENCODINGS:
    raise ValueError(f"kind must be one of {ENCODINGS}, got {kind!r}")
  _check_bits(bits)
  if not isinstance(pulses, (int, np.integer)) or pulses < 1:
    raise ValueError(f"pulses must be an integer >= 1, got {pulses!r}")
  levels = 2**bits - 1
  if kind == "thermometer" or (kind == "mixed" and pulses > levels):
    if pulses % levels:
      raise ValueError(f"pulses must be a multiple of L={levels} for {kind} with bits={bits}, got {pulses}")
    return repeat(thermometer(levels), pulses // levels)
  if kind == "bitserial":
    if pulses % bits:
      raise ValueError(f"pulses must be a multiple of B={bits} for bitserial, got {pulses}")
    return repeat(bitserial(bits), pulses // bits)
  return mixed(bits, pulses)


def decompose(u: Array, encoding: Encoding) -> Float[Array, "T ..."]:
  """Greedy decomposition of integer levels into pulses, over s in descending order.

  Args:
    u: integer-valued levels in [0, L], any shape.
    encoding: the code.

  Returns:
    b of shape (T, *u.shape) in {0, 1}, float32, with sum_t s_t b_t = u; pulse order
    follows `encoding.significances`.

  References:
    Kim et al., "Gradient-based Bit Encoding Optimization for Noise-Robust Binary Memristive Crossbar",
    DATE 2022, arXiv:2201.01479.
  """
  r = jnp.asarray(u, jnp.float32)
  base = encoding.base
  bits = [None] * len(base)
  for i in sorted(range(len(base)), key=lambda j: -base[j]):
    b = (r >= base[i]).astype(jnp.float32)
    r = r - base[i] * b
    bits[i] = b
  b = jnp.stack(bits)
  return jnp.tile(b, (encoding.repeats,) + (1,) * (b.ndim - 1))


def noise_factor(encoding: Encoding) -> float:
  """c(s) = sum_t s_t^2 / L^2 (1/T for thermometer + repeat with L = 1).

  References:
    Kim et al., "Gradient-based Bit Encoding Optimization for Noise-Robust Binary Memristive Crossbar",
    DATE 2022, arXiv:2201.01479.
  """
  return float(sum(s * s for s in encoding.significances) / encoding.levels**2)


def level_energy(encoding: Encoding) -> np.ndarray:
  """e(u) = sum_t s_t^2 b_t(u) / L^2 for u = 0..L (proportional-noise lookup).

  References:
    Kim et al., "Gradient-based Bit Encoding Optimization for Noise-Robust Binary Memristive Crossbar",
    DATE 2022, arXiv:2201.01479.
  """
  s2 = np.asarray(encoding.significances) ** 2
  out = np.zeros(encoding.levels + 1)
  for u in range(encoding.levels + 1):  # numpy greedy (usable while tracing)
    r, b = u, np.zeros(len(encoding.base))
    for i in sorted(range(len(encoding.base)), key=lambda j: -encoding.base[j]):
      if r >= encoding.base[i]:
        b[i], r = 1.0, r - encoding.base[i]
    out[u] = float(np.dot(s2, np.tile(b, encoding.repeats)))
  return out / encoding.levels**2


def noise_factor_continuous(pulses: Array, kind: str = "thermometer", bits: int = 1) -> Array:
  """Closed-form c(T) for a real-valued T (relaxation B).

  For repeat codes (thermometer, and any family with B = 1) c(T) = c_base * T_base / T; for
  `mixed` it is linearly interpolated between the enumerated codes in [B, L] and 1/T-scaled
  beyond L.

  Args:
    pulses: T (traced float allowed).
    kind: code family.
    bits: B.

  Returns:
    c(T), same shape as `pulses`.

  References:
    Kim et al., "Gradient-based Bit Encoding Optimization for Noise-Robust Binary Memristive Crossbar",
    DATE 2022, arXiv:2201.01479.
  """
  if kind not in ENCODINGS:
    raise ValueError(f"kind must be one of {ENCODINGS}, got {kind!r}")
  levels = 2**bits - 1
  t = jnp.asarray(pulses, jnp.float32)
  if bits == 1 or kind == "thermometer":
    return 1.0 / t
  if kind == "bitserial":
    c0 = noise_factor(bitserial(bits))
    return c0 * bits / t
  ts = np.arange(bits, levels + 1)
  cs = np.array([noise_factor(mixed(bits, int(x))) for x in ts])
  inside = jnp.interp(t, ts.astype(np.float32), cs.astype(np.float32))
  beyond = 1.0 / t
  return jnp.where(t > levels, beyond, inside)
