"""On-device data augmentation as pure functions of an explicit key."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray


def random_shift(key: PRNGKeyArray, images: Float[Array, "batch h w c"], max_shift: int = 2
                 ) -> Float[Array, "batch h w c"]:
  """Translates each image by an independent random offset in [-max_shift, max_shift]^2, filling with zeros.

  Args:
    key: PRNG key.
    images: NHWC batch.
    max_shift: largest shift in pixels (0 returns the input).

  Returns:
    The shifted batch, same shape and dtype.
  """
  if max_shift < 0:
    raise ValueError(f"max_shift must be >= 0, got {max_shift}.")
  if max_shift == 0:
    return images
  n, h, w, c = images.shape
  padded = jnp.pad(images, ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)))
  offsets = jax.random.randint(key, (n, 2), 0, 2 * max_shift + 1)

  def crop(img, off):
    return jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, c))

  return jax.vmap(crop)(padded, offsets)
