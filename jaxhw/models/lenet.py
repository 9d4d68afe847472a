"""LeNet-5 as a Flax Linen module (NHWC inputs)."""

from __future__ import annotations

import flax.linen as nn
from jaxtyping import Array, Float


class LeNet5(nn.Module):
  """LeNet-5 with ReLU: conv5x5-6 (SAME), max-pool 2, conv5x5-16 (VALID), max-pool 2, Dense 120-84-classes.

  Params: ``Conv_0``, ``Conv_1``, ``Dense_0``, ``Dense_1``, ``Dense_2``, each ``{"kernel", "bias"}``.

  Attributes:
    num_classes: output classes.

  References:
    LeCun et al., "Gradient-based learning applied to document recognition", Proc. IEEE, 1998.
  """

  num_classes: int = 10

  @nn.compact
  def __call__(self, x: Float[Array, "batch h w c"]) -> Float[Array, "batch classes"]:
    h = nn.max_pool(nn.relu(nn.Conv(6, (5, 5), padding="SAME")(x)), (2, 2), (2, 2))
    h = nn.max_pool(nn.relu(nn.Conv(16, (5, 5), padding="VALID")(h)), (2, 2), (2, 2))
    h = h.reshape(h.shape[0], -1)
    h = nn.relu(nn.Dense(120)(h))
    h = nn.relu(nn.Dense(84)(h))
    return nn.Dense(self.num_classes)(h)


__all__ = ["LeNet5"]
