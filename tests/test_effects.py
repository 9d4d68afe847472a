"""The effect mechanism: parameter transforms compose; forward effects attached from outside equal the same effect
written into the forward pass by hand, under jit, grad and vmap."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhw import effects


class _Net(nn.Module):
  @nn.compact
  def __call__(self, x):
    h = nn.relu(nn.Conv(3, (3, 3))(x)).reshape(x.shape[0], -1)
    return nn.Dense(4)(nn.relu(nn.Dense(6)(h)))


def _setup():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(5, 6, 6, 1)), jnp.float32)
  model = _Net()
  return model, model.init(jax.random.key(0), x), x


def _scaled_noise(scale):
  """Scales the kernel of every Dense layer and adds keyed noise to its output."""
  def effect(call):
    if call.kind != "dense":
      return call.next()
    y = call.forward(call.inputs, {**call.params, "kernel": scale * call.params["kernel"]})
    return y + 0.1 * jax.random.normal(call.make_rng("noise"), y.shape)
  return effect


class EffectsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_forward_effect_equals_hand_written(self):
    model, variables, x = _setup()
    p = variables["params"]

    def hand_noise(call):  # records the noise each layer drew, to rebuild the forward by hand
      if call.kind != "dense":
        return call.next()
      y = call.forward(call.inputs, {**call.params, "kernel": 2.0 * call.params["kernel"]})
      n = 0.1 * jax.random.normal(call.make_rng("noise"), y.shape)
      call.sow("noise", "draw", n)
      return y + n

    out, drawn = self.variant(lambda v, xx, k: effects.attach(model.apply, hand_noise)(
        v, xx, rngs={"noise": k}, mutable=["noise"]))(variables, x, jax.random.key(7))
    conv = jax.lax.conv_general_dilated(x, p["Conv_0"]["kernel"], (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC")) + p["Conv_0"]["bias"]
    h = jax.nn.relu(conv).reshape(5, -1)
    # Dense_1 is created first in _Net's expression, so it is the inner (6-wide) layer
    h = jax.nn.relu(h @ (2.0 * p["Dense_1"]["kernel"]) + p["Dense_1"]["bias"] + drawn["noise"]["Dense_1"]["draw"][0])
    ref = h @ (2.0 * p["Dense_0"]["kernel"]) + p["Dense_0"]["bias"] + drawn["noise"]["Dense_0"]["draw"][0]
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    # the draws are real, distinct per layer, and reproducible from the key
    assert float(jnp.std(drawn["noise"]["Dense_0"]["draw"][0])) > 0.05
    out2 = self.variant(lambda v, xx, k: effects.attach(model.apply, _scaled_noise(2.0))(v, xx, rngs={"noise": k}))(
        variables, x, jax.random.key(7))
    np.testing.assert_allclose(out2, out, rtol=1e-6)

  def test_no_effect_is_identity_and_effects_nest(self):
    model, variables, x = _setup()
    clean = model.apply(variables, x)
    np.testing.assert_array_equal(effects.attach(model.apply)(variables, x), clean)
    passthrough = effects.attach(model.apply, lambda call: call.next())
    np.testing.assert_allclose(passthrough(variables, x), clean, rtol=1e-6)
    double = lambda call: 2.0 * call.next()  # noqa: E731
    plus = lambda call: call.next() + 1.0 if call.path == ("Dense_0",) else call.next()  # noqa: E731
    # outer double, inner plus on the last layer: 2 * (y + 1) there
    both = effects.attach(model.apply, double, plus)(variables, x)
    composed = effects.attach(model.apply, lambda call: 2.0 * plus(call))(variables, x)
    np.testing.assert_allclose(both, composed, rtol=1e-6)
    assert not np.allclose(both, clean)
    only_last = effects.attach(model.apply, lambda call: call.next() + 1.0 if call.path == ("Dense_0",)
                               else call.next())(variables, x)
    np.testing.assert_allclose(only_last, clean + 1.0, rtol=1e-5)

  def test_grad_and_vmap_through_an_attached_effect(self):
    model, variables, x = _setup()
    noisy = effects.attach(model.apply, _scaled_noise(1.0))
    g = jax.grad(lambda v: jnp.sum(noisy(v, x, rngs={"noise": jax.random.key(1)}) ** 2))(variables)
    assert all(np.isfinite(np.asarray(a)).all() for a in jax.tree.leaves(g))
    assert float(jnp.abs(g["params"]["Conv_0"]["kernel"]).sum()) > 0
    keys = jax.random.split(jax.random.key(2), 3)
    outs = jax.vmap(lambda k: noisy(variables, x, rngs={"noise": k}))(keys)
    assert outs.shape == (3, 5, 4) and not np.allclose(outs[0], outs[1])

  def test_record_activations_and_layer_selection(self):
    model, variables, x = _setup()
    out, rec = effects.attach(model.apply, effects.record_activations(layers=["Conv_0"], inputs=True))(
        variables, x, mutable=["activations"])
    assert set(rec["activations"]) == {"Conv_0"}
    np.testing.assert_array_equal(rec["activations"]["Conv_0"]["inputs"][0], x)
    assert rec["activations"]["Conv_0"]["outputs"][0].shape == (5, 6, 6, 3)
    assert effects.path_matches(("a", "b"), ["a"]) and not effects.path_matches(("a",), [("a", "b")])
    assert effects.path_matches(("x",), None)


@pytest.mark.parametrize("n", [0, 1, 3])
def test_chain_applies_in_order_with_split_keys(n):
  def add(c):
    return effects.ParamTransform(lambda p: jnp.zeros(()),
                                  lambda p, s, k: (jax.tree.map(lambda a: a * 2 + c, p), s + 1))
  t = effects.chain(*[add(float(i)) for i in range(n)])
  params = {"w": jnp.ones(2)}
  out, state = t.apply(params, t.init(params), jax.random.key(0))
  expect = np.ones(2)
  for i in range(n):
    expect = expect * 2 + i
  np.testing.assert_allclose(out["w"], expect)
  assert len(state) == n and all(int(s) == 1 for s in state)
  same, _ = effects.identity().apply(params, (), jax.random.key(0))
  assert same is params
