"""Oracles for the SNN neurons and codings: the burst threshold's reset after a silent step, and hybrid coding's
period and bias gate (Park et al., DAC 2019), each computed by hand."""

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxhw import snn
from jaxhw.snn import codings


def _run(neuron, z):
  """Steps `neuron` over the input currents z[t] (one neuron per column), returning the amplitudes sent."""
  def body(s, zt_t):
    zt, t = zt_t
    return neuron.step(s, zt, t)

  state = neuron.init(z.shape[1:])
  return jax.lax.scan(body, state, (z, jnp.arange(z.shape[0], dtype=jnp.int32)))


class BurstResetTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_fire_silent_fire_sends_theta0_again(self):
    """theta0 = 0.25, beta = 2 (dyadic: exact in float32), three neurons:
    col 0: z = (0.5, 0, 0.5): fires 0.25 (V 0.25, theta 0.5), silent (0.25 < 0.5, theta back to 0.25), then
      V = 0.75 >= 0.25 fires theta0 = 0.25 again (not 0.5 as a threshold kept from the burst would send);
    col 1: z = (1, 0, 0): fires 0.25 then 0.5 (a burst, theta doubles), then V = 0.25 < 1 is silent.
    The threshold form (scale 2, inputs doubled) doubles every amplitude."""
    z = jnp.asarray([[0.5, 1.0], [0.0, 0.0], [0.5, 0.0]], jnp.float32)
    state, o = self.variant(lambda zz: _run(snn.burst_neuron(0.25, beta=2.0), zz))(z)
    np.testing.assert_array_equal(np.asarray(o), [[0.25, 0.25], [0.0, 0.5], [0.25, 0.0]])
    np.testing.assert_array_equal(np.asarray(state.theta), [0.5, 0.25])  # after: fired at t=2 / silent at t=2
    np.testing.assert_array_equal(np.asarray(state.v), [0.5, 0.25])
    np.testing.assert_array_equal(np.asarray(state.n), [2, 2])
    state2, o2 = self.variant(lambda zz: _run(snn.burst_neuron(0.25, beta=2.0, scale=2.0), zz))(2 * z)
    np.testing.assert_array_equal(np.asarray(o2), 2 * np.asarray(o))
    # a cap at max_len = 1 keeps every amplitude at theta0 (the burst of col 1 sends 0.25 twice)
    _, o3 = self.variant(lambda zz: _run(snn.burst_neuron(0.25, beta=2.0, max_len=1), zz))(z)
    np.testing.assert_array_equal(np.asarray(o3)[:, 1], [0.25, 0.25, 0.25])


class HybridCodingTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_period_is_k_and_bias_gate_on_only_at_multiples_of_k(self):
    """Hybrid coding (phase input, burst hidden): the period is K and g(t) = 1 exactly when t mod K = 0; with no
    phase layer (burst) the period is 1 and the bias enters every step."""
    for k in (3, 8):
      coding = snn.get_coding("hybrid", period=k)
      assert (coding.input, coding.hidden) == ("phase", "burst")
      assert codings.period(coding) == k
      t = jnp.arange(3 * k + 2, dtype=jnp.int32)
      gate = np.asarray(self.variant(lambda tt, c=coding: snn.bias_gate(c, tt))(t))
      np.testing.assert_array_equal(gate, (np.arange(3 * k + 2) % k == 0).astype(np.float32))
    burst = snn.get_coding("burst", period=5)
    assert codings.period(burst) == 1
    np.testing.assert_array_equal(np.asarray(self.variant(lambda tt: snn.bias_gate(burst, tt))(jnp.arange(7))), 1.0)
