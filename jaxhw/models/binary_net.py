"""Binary neural networks as Flax Linen modules: `BinaryMLP` and the VGG-style `BinaryCNN`.

Binary layers are plain ``nn.Dense`` / ``nn.Conv`` layers whose latent real kernel is binarised in the forward
pass by `ste_sign` (injected as the layer's ``dot_general`` / ``conv_general_dilated``, as AQT injects its
quantizer), so every forward effect of `jaxhw.effects` sees them as ordinary Dense/Conv calls. Layer order:
binary layer -> ``nn.BatchNorm`` (statistics in the ``batch_stats`` collection) -> `ste_sign`; the classifier is
full precision. Train with ``apply(variables, x, train=True, mutable=["batch_stats"])``; infer with
``apply(variables, x)`` (running statistics). `binary_layer_paths` names the binary layers by their params-tree
paths. Nothing here knows about hardware: crossbar programming, read noise and GBO attach from outside
(`jaxhw.crossbar`).

References:
  Courbariaux, Hubara, Soudry, El-Yaniv, Bengio, "Binarized Neural Networks: Training Deep Neural Networks with
  Weights and Activations Constrained to +1 or -1", arXiv:1602.02830, 2016 (STE sign, latent weights).
  Geiger, Team Plumerai, "Larq: An Open-Source Library for Training Binarized Neural Networks", JOSS 2020
  (``ste_sign`` semantics: +1 at 0, gradient on |x| <= 1).
  Kim, Kim, Kim, Kim, Panda, "Gradient-based Bit Encoding Optimization for Noise-Robust Binary Memristive
  Crossbar", DATE 2022, arXiv:2201.01479 (the binary MLP / CNN of the study).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array

__all__ = [
    "SIGNS", "BinaryCNN", "BinaryMLP", "approx_sign", "binary_layer_paths", "binarize_kernel", "ste_heaviside",
    "ste_sign", "ste_sign_sg", "swish_sign",
]

Path = tuple[str, ...]


def _sign(x):
  return jnp.where(x >= 0, 1.0, -1.0).astype(jnp.result_type(x, jnp.float32))


@jax.custom_vjp
def ste_sign(x: Array) -> Array:
  """Sign with the straight-through estimator (clipped identity), larq semantics.

  Forward: +1 where x >= 0, else -1 (never ``jnp.sign``, which gives 0 at 0). Backward: g * 1[|x| <= 1].
  """
  return _sign(x)


def _ste_bwd(x, g):
  return (g * (jnp.abs(x) <= 1).astype(g.dtype),)


ste_sign.defvjp(lambda x: (_sign(x), x), _ste_bwd)


def ste_sign_sg(x: Array) -> Array:
  """The stop-gradient form of `ste_sign`: x_c + stop_gradient(sign(x_c) - x_c), x_c = clip(x, -1, 1).

  Same forward and gradient as `ste_sign`; the clip is written with ``where`` so that the gradient at |x| = 1 is
  exactly 1 (min/max split ties as 0.5 under jit).
  """
  xc = jnp.where(jnp.abs(x) <= 1, x, jax.lax.stop_gradient(jnp.clip(x, -1.0, 1.0)))
  return xc + jax.lax.stop_gradient(_sign(x) - xc)


@jax.custom_vjp
def ste_heaviside(x: Array) -> Array:
  """Heaviside with STE: forward 1 if x > 0 else 0; backward g * 1[|x| <= 1]."""
  return (x > 0).astype(jnp.result_type(x, jnp.float32))


ste_heaviside.defvjp(lambda x: ((x > 0).astype(jnp.result_type(x, jnp.float32)), x), _ste_bwd)


@jax.custom_vjp
def approx_sign(x: Array) -> Array:
  """Sign with the ApproxSign gradient g (2 - 2|x|) on |x| <= 1 (Liu et al., "Bi-Real Net", ECCV 2018,
  arXiv:1808.00278)."""
  return _sign(x)


approx_sign.defvjp(lambda x: (_sign(x), x),
                   lambda x, g: (g * jnp.where(jnp.abs(x) <= 1, 2 - 2 * jnp.abs(x), 0.0),))


def swish_sign(x: Array, beta: float = 5.0) -> Array:
  """Sign with the SwishSign gradient d/dx [2 s(bx)(1 + bx (1 - s(bx))) - 1] (Darabi et al., "Regularized
  Binary Network Training", arXiv:1812.11800)."""
  s = jax.nn.sigmoid(beta * x)
  sur = 2 * s * (1 + beta * x * (1 - s)) - 1
  return sur + jax.lax.stop_gradient(_sign(x) - sur)


SIGNS: dict[str, Callable] = {"ste_sign": ste_sign, "ste_sign_sg": ste_sign_sg, "approx_sign": approx_sign,
                              "swish_sign": swish_sign}


def binarize_kernel(kernel: Array) -> Array:
  """The binary weights of a latent kernel, `ste_sign(kernel)` (in {-1, +1})."""
  return ste_sign(kernel)


def _binary_dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
  return jax.lax.dot_general(lhs, ste_sign(rhs), dimension_numbers, precision=precision,
                             preferred_element_type=preferred_element_type)


def _binary_conv(lhs, rhs, *args, **kwargs):
  return jax.lax.conv_general_dilated(lhs, ste_sign(rhs), *args, **kwargs)


def _latent_init(key, shape, dtype=jnp.float32):
  """Latent weights uniform on [-1, 1), drawn flat (rank >= 3 threefry draws compile slowly on XLA:CPU)."""
  return jax.random.uniform(key, (math.prod(shape),), dtype, -1.0, 1.0).reshape(shape)


_head_init = nn.initializers.variance_scaling(1.0, "fan_in", "normal")
_conv0_init = nn.initializers.variance_scaling(1.0, "fan_in", "normal")


def _binarize_input(x, threshold):
  return x if threshold is None else jnp.where(x >= threshold, 1.0, -1.0).astype(jnp.float32)


class BinaryMLP(nn.Module):
  """Binary MLP: every hidden layer binary (``Dense_0`` ... ``Dense_{L-1}``), the classifier ``Dense_L`` full
  precision.

  Attributes:
    features: widths of the binary hidden layers, e.g. (512, 256, 128) for the 784-512-256-128-10 MLP.
    num_classes: classifier outputs.
    binarize_input: pixels >= this threshold become +1, the rest -1 (None keeps the raw input).
    binarize_weights: binarise the hidden kernels with `ste_sign` in the forward pass (False: use the kernels as
      they are, e.g. weights already programmed onto a crossbar with device variation).
    bn_momentum: momentum of the running BN statistics (0 makes one training-mode pass set them to that batch's
      statistics, which is how exact population statistics are computed).
    sign: the binarising activation.
  """

  features: Sequence[int] = (512, 256, 128)
  num_classes: int = 10
  binarize_input: float | None = 0.5
  binarize_weights: bool = True
  bn_momentum: float = 0.9
  sign: Callable[[Array], Array] = ste_sign

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    h = _binarize_input(x.reshape(x.shape[0], -1), self.binarize_input)
    for width in self.features:
      y = nn.Dense(width, use_bias=False, kernel_init=_latent_init,
                   dot_general=_binary_dot_general if self.binarize_weights else None)(h)
      y = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, epsilon=1e-5)(y)
      h = self.sign(y)
    return nn.Dense(self.num_classes, kernel_init=_head_init)(h)


class BinaryCNN(nn.Module):
  """VGG-style binary CNN: a full-precision digital first conv (``Conv_0``) unless `first_layer_on_crossbar`, two
  3x3 convs per entry of `channels` (a 2x2 max-pool after the second of each pair), binary dense layers and a
  full-precision classifier. With channels (128, 256, 512) and dense (1024,) this is the VGG-9 BNN layout.

  Attributes:
    channels: width of each conv stage.
    dense: widths of the binary dense layers.
    num_classes: classifier outputs.
    first_layer_on_crossbar: make the first conv binary too (its inputs stay multi-bit in [0, 1]).
    binarize_input: as in `BinaryMLP` (None: raw inputs, the default for images in [0, 1]).
    binarize_weights: as in `BinaryMLP`.
    bn_momentum: as in `BinaryMLP`.
    sign: the binarising activation.
  """

  channels: Sequence[int] = (128, 256, 512)
  dense: Sequence[int] = (1024,)
  num_classes: int = 10
  first_layer_on_crossbar: bool = False
  binarize_input: float | None = None
  binarize_weights: bool = True
  bn_momentum: float = 0.9
  sign: Callable[[Array], Array] = ste_sign

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    h = _binarize_input(x, self.binarize_input)
    binary_conv = _binary_conv if self.binarize_weights else None
    for i, ch in enumerate(self.channels):
      for j in range(2):
        digital = i == 0 and j == 0 and not self.first_layer_on_crossbar
        h = nn.Conv(ch, (3, 3), padding="SAME", use_bias=False,
                    kernel_init=_conv0_init if digital else _latent_init,
                    conv_general_dilated=None if digital else binary_conv)(h)
        h = self.sign(nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, epsilon=1e-5)(h))
      h = nn.max_pool(h, (2, 2), (2, 2))
    h = h.reshape(h.shape[0], -1)
    for width in self.dense:
      y = nn.Dense(width, use_bias=False, kernel_init=_latent_init,
                   dot_general=_binary_dot_general if self.binarize_weights else None)(h)
      h = self.sign(nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, epsilon=1e-5)(y))
    return nn.Dense(self.num_classes, kernel_init=_head_init)(h)


def binary_layer_paths(model: BinaryMLP | BinaryCNN) -> tuple[Path, ...]:
  """Params-tree paths of the binary layers of `model`, in forward order (e.g. ``(("Dense_0",), ...)``)."""
  if isinstance(model, BinaryMLP):
    return tuple((f"Dense_{i}",) for i in range(len(model.features)))
  if isinstance(model, BinaryCNN):
    n_conv = 2 * len(model.channels)
    first = 0 if model.first_layer_on_crossbar else 1
    return (tuple((f"Conv_{i}",) for i in range(first, n_conv))
            + tuple((f"Dense_{i}",) for i in range(len(model.dense))))
  raise TypeError(f"model must be a BinaryMLP or BinaryCNN, got {type(model).__name__}.")
