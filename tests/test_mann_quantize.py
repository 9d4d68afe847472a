"""Fixed-point quantizers: saturation, idempotence, the grid, sign-magnitude zero, straight-through gradients."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhw.mann.quantize import (
  BINARY,
  FixedPoint,
  activation_quantizer,
  per_hop_formats,
  quantize,
  quantize_params,
  to_codes,
)

FORMATS = [FixedPoint(5, 2), FixedPoint(0, 7), FixedPoint(2, 5), FixedPoint(8, 7), FixedPoint(1, 0),
           FixedPoint(2, 3, "nearest")]


class QuantizerTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_saturates_idempotent_on_grid(self):
    x = jax.random.normal(jax.random.key(1), (1000,)) * 40
    for fmt in FORMATS:
      q = self.variant(lambda v, f=fmt: quantize(v, f))
      y = np.asarray(q(x))
      np.testing.assert_array_equal(np.asarray(q(jnp.array([1e6, -1e6]))), [fmt.max_value, -fmt.max_value])
      np.testing.assert_array_equal(np.asarray(q(jnp.asarray(y))), y)
      codes = y * 2 ** fmt.frac_bits
      np.testing.assert_array_equal(codes, np.round(codes))
      assert np.abs(y).max() <= fmt.max_value

  @chex.variants(with_jit=True, without_jit=True)
  def test_truncation_and_negative_zero(self):
    q = self.variant(lambda v: quantize(v, FixedPoint(5, 2)))
    np.testing.assert_array_equal(np.asarray(q(jnp.array([-0.3, 0.3, 31.9, -0.1]))), [-0.25, 0.25, 31.75, 0.0])
    assert np.signbit(np.asarray(q(jnp.array([-0.1]))))[0]  # sign-magnitude negative zero
    assert FixedPoint(5, 2).max_value == 31.75

  @chex.variants(with_jit=True, without_jit=True)
  def test_binary_sign(self):
    q = self.variant(lambda v: quantize(v, BINARY))
    np.testing.assert_array_equal(np.asarray(q(jnp.array([-2.0, -0.1, 0.0, 0.3]))), [-1, -1, 1, 1])

  @chex.variants(with_jit=True, without_jit=True)
  def test_straight_through_gradient(self):
    for fmt, inside, outside in ((FixedPoint(5, 2), [-31.0, 0.1, 5.3], [-40.0, 32.0]), (BINARY, [-0.9, 0.5], [1.5])):
      g = self.variant(jax.grad(lambda v, f=fmt: quantize(v, f).sum()))
      np.testing.assert_array_equal(np.asarray(g(jnp.array(inside))), np.ones(len(inside)))
      np.testing.assert_array_equal(np.asarray(g(jnp.array(outside))), np.zeros(len(outside)))


def test_codes_are_sign_magnitude():
  sign, mag = to_codes(jnp.array([-0.3, -0.0, 0.0, 99.0]), FixedPoint(5, 2))
  np.testing.assert_array_equal(np.asarray(sign), [-1, -1, 1, 1])
  np.testing.assert_array_equal(np.asarray(mag), [1, 0, 0, 127])


def test_param_transform_quantizes_selected_leaves_and_counts_saturation(key):
  params = {"embed_0": {"embedding": jnp.array([0.3, -2.0, 0.01])}, "temporal_0": {"embedding": jnp.array([0.3])}}
  pt = quantize_params({"embed": FixedPoint(0, 7)})
  state = pt.init(params)
  out, state = jax.jit(pt.apply)(params, state, key)
  np.testing.assert_allclose(np.asarray(out["embed_0"]["embedding"]), [38 / 128, -127 / 128, 1 / 128])
  np.testing.assert_array_equal(np.asarray(out["temporal_0"]["embedding"]), np.float32([0.3]))
  assert float(state["embed_0/embedding"]) == pytest.approx(1 / 3)
  grads = jax.grad(lambda p: pt.apply(p, state, key)[0]["embed_0"]["embedding"].sum())(params)
  np.testing.assert_array_equal(np.asarray(grads["embed_0"]["embedding"]), [1, 0, 1])


def test_activation_hook_and_mq_formats():
  mq = per_hop_formats(FixedPoint(5, 2), 3)
  assert [str(f) for f in mq] == ["Q(1.6.1)", "Q(1.5.2)", "Q(1.4.3)"]
  hook = activation_quantizer({"m": mq, "logits": FixedPoint(8, 7)})
  x = jnp.array([0.3])
  assert float(hook(x, "m", 0)[0]) == 0.0 and float(hook(x, "m", 2)[0]) == 0.25
  assert float(hook(x, "c", 0)[0]) == pytest.approx(0.3)


def test_invalid_format_is_refused():
  with pytest.raises(ValueError, match="int_bits"):
    FixedPoint(-1, 2)
  with pytest.raises(ValueError, match="rounding"):
    FixedPoint(1, 2, "floor")
