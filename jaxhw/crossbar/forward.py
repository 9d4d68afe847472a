"""Crossbar matmul and conv with per-read noise, in `per_pulse` (reference) and `fast` modes.

`per_pulse` decomposes the input into T pulses and runs a `lax.scan` of noisy per-tile reads
(optionally through a per-read ADC), then the shift-and-add y = sum_t s_t y_t / L. `fast`
computes y = W_eff a once and adds the aggregate noise in closed form,
Var = (sigma^2 + Delta^2/12) n_r c(s) + sigma_p^2 sum_i e(u_i); it is exact in distribution
for Gaussian read noise without a per-read nonlinearity and accepts a traced T for binary
(and thermometer) inputs.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from jaxhw.crossbar._random import normal
from jaxhw.crossbar.encoding import decompose, level_energy, make_encoding, noise_factor
from jaxhw.crossbar.noise import CrossbarConfig, adc_quantize
from jaxhw.crossbar.tiles import split_inputs, split_rows, tile_grid

_normal = normal  # flat draw; both threefry words used (see jaxhw.crossbar._random)


def _check_pulses(pulses) -> None:
  if isinstance(pulses, (int, float)) and not pulses >= 1:
    raise ValueError(f"pulses must be >= 1, got {pulses!r}")


def _check_bits(input_bits) -> None:
  if not isinstance(input_bits, int) or input_bits < 1:
    raise ValueError(f"input_bits must be an integer >= 1, got {input_bits!r}")


def _check_sigma(name, v) -> None:
  if isinstance(v, (int, float)) and not v >= 0:
    raise ValueError(f"{name} must be >= 0 (a noise std), got {v!r}")


def noise_factor_of(pulses, input_bits: int, config: CrossbarConfig):
  """c(s) for T pulses: 1/T for binary inputs and thermometer codes (T may be traced).

  References:
    Kim et al., "Gradient-based Bit Encoding Optimization for Noise-Robust Binary Memristive Crossbar",
    DATE 2022, arXiv:2201.01479.
  """
  if input_bits == 1 or config.encoding == "thermometer":
    return 1.0 / jnp.asarray(pulses, jnp.float32)
  if not isinstance(pulses, int):
    raise ValueError(f"pulses must be a Python int for encoding={config.encoding!r} with "
                     f"input_bits={input_bits}, got {type(pulses).__name__}")
  return noise_factor(make_encoding(config.encoding, input_bits, pulses))


def aggregate_noise_std(fan_in: int, pulses, config: CrossbarConfig, *, input_bits: int = 1,
                        sigma=None):
  """std of the additive aggregate read noise of one output: sqrt((sigma^2 + Delta^2/12) n_r c(s)).

  Args:
    fan_in: N of the layer.
    pulses: T (traced float allowed for binary inputs).
    config: the crossbar config (static).
    input_bits: 1 for binary +-1 inputs, B for unsigned multi-bit inputs.
    sigma: overrides config.sigma (may be traced).

  Returns:
    The std, a scalar.

  References:
    Kim et al., "Gradient-based Bit Encoding Optimization for Noise-Robust Binary Memristive Crossbar",
    DATE 2022, arXiv:2201.01479.
  """
  sigma = config.sigma if sigma is None else sigma
  n_r = math.ceil(fan_in / config.tile_rows)
  c = noise_factor_of(pulses, input_bits, config)
  return jnp.sqrt((jnp.square(sigma) + config.adc_read_variance) * n_r * c)


def _levels(x, input_bits):
  """Signed +-1 inputs -> (decoded value, active rows); unsigned [0, 1] -> integer levels u."""
  if input_bits == 1:
    return None
  big_l = 2**input_bits - 1
  return jnp.clip(jnp.round(x * big_l), 0, big_l)


def _proportional_energy(x, pulses, input_bits, config):
  """sum_i e(u_i) over the fan-in, per sample: shape x.shape[:-1] + (1,)."""
  if input_bits == 1:
    active = (x > 0).astype(jnp.float32)
    return jnp.sum(active, -1, keepdims=True) / jnp.asarray(pulses, jnp.float32)
  u = _levels(x, input_bits)
  big_l = 2**input_bits - 1
  if config.encoding == "thermometer":
    return jnp.sum(u, -1, keepdims=True) / (big_l * jnp.asarray(pulses, jnp.float32))
  table = jnp.asarray(level_energy(make_encoding(config.encoding, input_bits, pulses)), jnp.float32)
  return jnp.sum(table[u.astype(jnp.int32)], -1, keepdims=True)


def _col_tile_index(fan_out, config):
  grid = tile_grid(1, fan_out, config.tile_rows, config.tile_cols, config.mapping)
  return jnp.arange(fan_out) // grid.outputs_per_col_tile, grid.n_c


def _fast(x, w_eff, pulses, read_key, config, sigma, sigma_p, input_bits):
  y = x @ w_eff if input_bits == 1 else (_levels(x, input_bits) @ w_eff) / (2**input_bits - 1)
  n_r = math.ceil(w_eff.shape[0] / config.tile_rows)
  c = noise_factor_of(pulses, input_bits, config)
  var_add = (jnp.square(sigma) + config.adc_read_variance) * n_r * c
  if isinstance(sigma_p, (int, float)) and sigma_p == 0:
    var_prop = 0.0
  else:
    var_prop = jnp.square(sigma_p) * _proportional_energy(x, pulses, input_bits, config)
  k_col, k_ref = jax.random.split(read_key)
  xi = _normal(k_col, y.shape)
  if config.mapping == "offset":
    idx, n_c = _col_tile_index(y.shape[-1], config)
    xi_ref = _normal(k_ref, y.shape[:-1] + (n_c,))[..., idx]
    return y + jnp.sqrt(0.5 * var_add + var_prop) * xi + jnp.sqrt(0.5 * var_add) * xi_ref
  return y + jnp.sqrt(var_add + var_prop) * xi


def _per_pulse(x, w_eff, pulses, read_key, config, sigma, sigma_p, input_bits):
  if not isinstance(pulses, int):
    raise ValueError(f"pulses must be a Python int in per_pulse mode, got {type(pulses).__name__}")
  big_l = 2**input_bits - 1
  kind = "thermometer" if input_bits == 1 else config.encoding
  enc = make_encoding(kind, input_bits, pulses)
  s = jnp.asarray(enc.base * enc.repeats, jnp.float32)  # integer weights; / (L k) at the end
  if input_bits == 1:
    xs = jnp.broadcast_to(x, (pulses,) + x.shape)
    active = (xs > 0).astype(jnp.float32)
  else:
    xs = decompose(_levels(x, input_bits), enc)
    active = xs
  r = config.tile_rows
  w_t = split_rows(w_eff, r)                                     # (n_r, R, M)
  xs_t = split_inputs(xs, r)                                     # (T, ..., n_r, R)
  act = jnp.sum(split_inputs(active, r), -1, keepdims=True)      # (T, ..., n_r, 1)
  m = w_t.shape[-1]
  noise_shape = xs_t.shape[:-1] + (m,)                            # (T, ..., n_r, M)
  k_col, k_ref, k_prop, k_adc = jax.random.split(read_key, 4)
  eps_col = _normal(k_col, noise_shape)
  if config.mapping == "offset":
    idx, n_c = _col_tile_index(m, config)
    eps_ref = _normal(k_ref, noise_shape[:-1] + (n_c,))[..., idx]
    eps = sigma * jnp.sqrt(0.5) * (eps_col + eps_ref)
  else:
    eps = sigma * eps_col
  if not (isinstance(sigma_p, (int, float)) and sigma_p == 0):
    eps = eps + sigma_p * jnp.sqrt(act) * _normal(k_prop, noise_shape)
  if config.adc_read_variance:
    eps = eps + math.sqrt(config.adc_read_variance) * _normal(k_adc, noise_shape)
  per_read_adc = config.adc_bits is not None and config.adc_mode == "per_read"

  def step(acc, inp):
    x_t, e_t, s_t = inp
    part = jnp.einsum("...ri,rim->...rm", x_t, w_t) + e_t     # one noisy read of every tile
    if per_read_adc:
      part = adc_quantize(part, config)
    return acc + s_t * jnp.sum(part, -2), None

  acc0 = jnp.zeros(x.shape[:-1] + (m,), jnp.float32)
  acc, _ = jax.lax.scan(step, acc0, (xs_t, eps, s))
  return acc / (big_l * enc.repeats)


def crossbar_matmul(x: Float[Array, "*batch n"], w_eff: Float[Array, "n m"], *, pulses,
                    read_key: PRNGKeyArray, config: CrossbarConfig, sigma=None, sigma_p=None,
                    input_bits: int = 1, mode: str | None = None) -> Float[Array, "*batch m"]:
  """y_hat = W_eff x read on tiled crossbars with T input pulses and per-read noise.

  Args:
    x: inputs; +-1 for binary layers (input_bits = 1), values in [0, 1] (quantised to u / L)
      for multi-bit inputs.
    w_eff: programmed weights (`program(w, chip_key, config)`), shape (N, M).
    pulses: T >= 1; a Python int in `per_pulse` mode, may be a traced float in `fast` mode for
      binary or thermometer inputs.
    read_key: key of the dynamic noise (derive one per layer with `jax.random.fold_in`).
    config: the CrossbarConfig (static).
    sigma: additive per-read std, overrides config.sigma (may be traced).
    sigma_p: proportional per-read std, overrides config.sigma_p (may be traced).
    input_bits: 1 for +-1 inputs, B for unsigned B-bit inputs.
    mode: "fast" or "per_pulse"; default config.mode. A per-read ADC forces per_pulse.

  Returns:
    y_hat, shape (*batch, M). With no noise it equals W_eff x exactly.

  References:
    Kim et al., "Gradient-based Bit Encoding Optimization for Noise-Robust Binary Memristive Crossbar",
    DATE 2022, arXiv:2201.01479.
  """
  _check_pulses(pulses)
  _check_bits(input_bits)
  sigma = config.sigma if sigma is None else sigma
  sigma_p = config.sigma_p if sigma_p is None else sigma_p
  _check_sigma("sigma", sigma)
  _check_sigma("sigma_p", sigma_p)
  mode = config.mode if mode is None else mode
  if mode not in ("fast", "per_pulse"):
    raise ValueError(f"mode must be 'fast' or 'per_pulse', got {mode!r}")
  if x.shape[-1] != w_eff.shape[0]:
    raise ValueError(f"x.shape[-1]={x.shape[-1]} must equal w_eff.shape[0]={w_eff.shape[0]}")
  if config.adc_bits is not None and config.adc_mode == "per_read":
    mode = "per_pulse"
  fn = _fast if mode == "fast" else _per_pulse
  return fn(x, w_eff, pulses, read_key, config, sigma, sigma_p, input_bits)


def conv_patches(x: Float[Array, "b h w c"], kernel_size: tuple[int, int], stride: int = 1,
                 padding: str = "SAME") -> Float[Array, "b ho wo k"]:
  """im2col: patches with features ordered (C_in, kh, kw), matching `conv_weight_matrix`."""
  return jax.lax.conv_general_dilated_patches(
      x, kernel_size, (stride, stride), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))


def conv_weight_matrix(w: Float[Array, "kh kw cin cout"]) -> Float[Array, "k cout"]:
  """HWIO kernel -> (C_in * kh * kw, C_out) matrix in the patch feature order."""
  kh, kw, cin, cout = w.shape
  return jnp.transpose(w, (2, 0, 1, 3)).reshape(cin * kh * kw, cout)


def crossbar_conv(x: Float[Array, "b h w cin"], w_eff: Float[Array, "kh kw cin cout"], *, pulses,
                  read_key: PRNGKeyArray, config: CrossbarConfig, stride: int = 1,
                  padding: str = "SAME", sigma=None, sigma_p=None, input_bits: int = 1,
                  mode: str | None = None) -> Float[Array, "b ho wo cout"]:
  """2-D convolution on crossbars: fan-in k*k*C_in tiled over rows, one read per output position.

  `fast` runs `lax.conv` and adds the closed-form noise; `per_pulse` goes through im2col and
  `crossbar_matmul`. Arguments as in `crossbar_matmul`; x NHWC, w_eff HWIO.

  Returns:
    y_hat, NHWC.

  References:
    Kim et al., "Gradient-based Bit Encoding Optimization for Noise-Robust Binary Memristive Crossbar",
    DATE 2022, arXiv:2201.01479.
  """
  mode = config.mode if mode is None else mode
  if config.adc_bits is not None and config.adc_mode == "per_read":
    mode = "per_pulse"
  kh, kw = w_eff.shape[:2]
  if mode == "fast" and config.mapping == "differential" and (input_bits == 1 or
                                                              config.encoding == "thermometer"):
    _check_pulses(pulses)
    sigma = config.sigma if sigma is None else sigma
    sigma_p = config.sigma_p if sigma_p is None else sigma_p
    _check_sigma("sigma", sigma)
    _check_sigma("sigma_p", sigma_p)
    xin = x if input_bits == 1 else _levels(x, input_bits)
    y = jax.lax.conv_general_dilated(xin, w_eff, (stride, stride), padding,
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    if input_bits > 1:
      y = y / (2**input_bits - 1)
    fan_in = kh * kw * w_eff.shape[2]
    n_r = math.ceil(fan_in / config.tile_rows)
    var = (jnp.square(sigma) + config.adc_read_variance) * n_r / jnp.asarray(pulses, jnp.float32)
    if (isinstance(sigma_p, (int, float)) and sigma_p == 0):
      std = jnp.sqrt(var)
    else:
      e = _proportional_energy(conv_patches(x, (kh, kw), stride, padding), pulses, input_bits, config)
      std = jnp.sqrt(var + jnp.square(sigma_p) * e)
    return y + std * _normal(read_key, y.shape)
  p = conv_patches(x, (kh, kw), stride, padding)
  return crossbar_matmul(p, conv_weight_matrix(w_eff), pulses=pulses, read_key=read_key,
                         config=config, sigma=sigma, sigma_p=sigma_p, input_bits=input_bits, mode=mode)
