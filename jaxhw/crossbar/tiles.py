"""Tiling of a weight matrix onto fixed-size crossbar arrays (row tiles, column tiles).

The fan-in N is split into n_r = ceil(N / R) row tiles, zero-padded; each row tile is read
with its own noise and the partial sums are added digitally. `differential` mapping uses two
physical columns per output (n_c = ceil(2M / C)); `offset` uses one column per output plus
one reference column per column tile (n_c = ceil(M / (C - 1))).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax.numpy as jnp
from jaxtyping import Array, Float

#: Signed-weight mappings onto columns: two columns per output (``differential``) or one column per output plus a
#: reference column per tile (``offset``).
MAPPINGS = ("differential", "offset")


class TileGrid(NamedTuple):
  """How one layer's N x M weight matrix lands on R x C arrays.

  Attributes:
    fan_in: N.
    fan_out: M.
    n_r: row tiles.
    n_c: column tiles.
    outputs_per_col_tile: logical outputs per column tile.
    physical_columns: physical columns read per row tile (incl. reference columns).
  """

  fan_in: int
  fan_out: int
  n_r: int
  n_c: int
  outputs_per_col_tile: int
  physical_columns: int


def check_tile_size(tile_rows: int, tile_cols: int, mapping: str) -> None:
  """Raises ValueError for a tile size that cannot hold the mapping."""
  if mapping not in MAPPINGS:
    raise ValueError(f"mapping must be one of {MAPPINGS}, got {mapping!r}")
  if not isinstance(tile_rows, int) or tile_rows < 1:
    raise ValueError(f"tile_rows must be an integer >= 1, got {tile_rows!r}")
  if not isinstance(tile_cols, int) or tile_cols < 2:
    raise ValueError(f"tile_cols must be an integer >= 2 (one output needs two columns), got {tile_cols!r}")
  if mapping == "differential" and tile_cols % 2:
    raise ValueError(f"tile_cols must be even for the differential mapping (two columns per output), "
                     f"got {tile_cols}")


def tile_grid(fan_in: int, fan_out: int, tile_rows: int = 128, tile_cols: int = 128,
              mapping: str = "differential") -> TileGrid:
  """Computes the tile grid of one layer.

  Args:
    fan_in: N (k*k*C_in for a conv), >= 1.
    fan_out: M, >= 1.
    tile_rows: R.
    tile_cols: C.
    mapping: "differential" or "offset".

  Returns:
    A TileGrid.

  References:
    Kim et al., "Gradient-based Bit Encoding Optimization for Noise-Robust Binary Memristive Crossbar",
    DATE 2022, arXiv:2201.01479.
  """
  check_tile_size(tile_rows, tile_cols, mapping)
  if fan_in < 1 or fan_out < 1:
    raise ValueError(f"fan_in and fan_out must be >= 1, got {fan_in}, {fan_out}")
  n_r = math.ceil(fan_in / tile_rows)
  if mapping == "differential":
    per = tile_cols // 2
    n_c = math.ceil(fan_out / per)
    phys = 2 * fan_out
  else:
    per = tile_cols - 1
    n_c = math.ceil(fan_out / per)
    phys = fan_out + n_c
  return TileGrid(fan_in, fan_out, n_r, n_c, per, phys)


def split_rows(w: Float[Array, "n m"], tile_rows: int) -> Float[Array, "n_r r m"]:
  """Zero-pads the fan-in to n_r * R and splits it into row tiles."""
  n, m = w.shape
  n_r = math.ceil(n / tile_rows)
  w = jnp.pad(w, ((0, n_r * tile_rows - n), (0, 0)))
  return w.reshape(n_r, tile_rows, m)


def split_inputs(x: Float[Array, "... n"], tile_rows: int) -> Float[Array, "... n_r r"]:
  """Zero-pads the last axis to n_r * R and splits it into row tiles."""
  n = x.shape[-1]
  n_r = math.ceil(n / tile_rows)
  pad = [(0, 0)] * (x.ndim - 1) + [(0, n_r * tile_rows - n)]
  x = jnp.pad(x, pad)
  return x.reshape(*x.shape[:-1], n_r, tile_rows)
