"""ResNet-18 for 32x32 images (CIFAR) as a Flax Linen module, batch norm in the ``batch_stats`` collection."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
from jaxtyping import Array, Float


class BasicBlock(nn.Module):
  """Two 3x3 conv + BN layers with an identity (or 1x1 conv + BN projection) shortcut."""

  features: int
  strides: int = 1

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    norm = lambda: nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)  # noqa: E731
    h = nn.Conv(self.features, (3, 3), (self.strides, self.strides), padding=1, use_bias=False)(x)
    h = nn.relu(norm()(h))
    h = nn.Conv(self.features, (3, 3), padding=1, use_bias=False)(h)
    h = norm()(h)
    if self.strides != 1 or x.shape[-1] != self.features:
      x = nn.Conv(self.features, (1, 1), (self.strides, self.strides), use_bias=False)(x)
      x = norm()(x)
    return nn.relu(h + x)


class ResNet(nn.Module):
  """CIFAR-style ResNet: 3x3 stem (no max-pool), four stages of `BasicBlock`, global average pool, Dense.

  Call as ``model.apply(variables, x, train=True, mutable=["batch_stats"])`` in training.

  Attributes:
    stage_sizes: blocks per stage, ``(2, 2, 2, 2)`` for ResNet-18.
    width: channels of the first stage (doubled at each later stage).
    num_classes: output classes.

  References:
    He et al., "Deep Residual Learning for Image Recognition", CVPR 2016, arXiv:1512.03385.
  """

  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  width: int = 64
  num_classes: int = 10

  @nn.compact
  def __call__(self, x: Float[Array, "batch h w c"], train: bool = False) -> Float[Array, "batch classes"]:
    h = nn.Conv(self.width, (3, 3), padding=1, use_bias=False)(x)
    h = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)(h))
    for stage, blocks in enumerate(self.stage_sizes):
      for b in range(blocks):
        h = BasicBlock(self.width * 2 ** stage, strides=2 if stage > 0 and b == 0 else 1)(h, train)
    h = h.mean(axis=(1, 2))
    return nn.Dense(self.num_classes)(h)


def resnet18(num_classes: int = 10, width: int = 64) -> ResNet:
  """ResNet-18 (CIFAR variant), as in the HAT paper's CIFAR-10 experiments."""
  return ResNet((2, 2, 2, 2), width, num_classes)


__all__ = ["BasicBlock", "ResNet", "resnet18"]
