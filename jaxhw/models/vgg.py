"""VGG networks with batch norm for 32x32 images, as Flax Linen modules."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
from jaxtyping import Array, Float

#: Layer plans: an int is a 3x3 conv with that many channels (+ BN + ReLU), "M" a 2x2 max-pool.
VGG_PLANS: dict[str, tuple[int | str, ...]] = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
}


class VGG(nn.Module):
  """VGG with batch norm: the conv plan, then Dense ``hidden`` x2 with dropout, then the classifier.

  Call with ``train=True, mutable=["batch_stats"], rngs={"dropout": key}`` in training.

  Attributes:
    plan: a `VGG_PLANS` entry (or any sequence of channel counts and ``"M"``).
    num_classes: output classes.
    hidden: width of the two hidden Dense layers (0: classifier directly after the convolutions).
    dropout: dropout rate before each hidden Dense layer.

  References:
    Simonyan and Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition", ICLR 2015,
    arXiv:1409.1556; the CIFAR VGG-16 of the SNN-coding papers (Park et al., DAC 2019, arXiv:1809.03142).
  """

  plan: Sequence[int | str] = VGG_PLANS["vgg16"]
  num_classes: int = 10
  hidden: int = 512
  dropout: float = 0.5

  @nn.compact
  def __call__(self, x: Float[Array, "batch h w c"], train: bool = False) -> Float[Array, "batch classes"]:
    h = x
    for item in self.plan:
      if item == "M":
        h = nn.max_pool(h, (2, 2), (2, 2))
      else:
        h = nn.Conv(int(item), (3, 3), padding=1)(h)
        h = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)(h))
    h = h.reshape(h.shape[0], -1)
    if self.hidden:
      for _ in range(2):
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
        h = nn.relu(nn.Dense(self.hidden)(h))
    return nn.Dense(self.num_classes)(h)


def vgg16(num_classes: int = 10) -> VGG:
  """VGG-16 with batch norm for CIFAR-10/100."""
  return VGG(VGG_PLANS["vgg16"], num_classes)


__all__ = ["VGG", "VGG_PLANS", "vgg16"]
