"""Spiking neurons as pure ``(init, step)`` pairs over a fixed :class:`State` pytree.

Every neuron shares one state layout (``v, theta, n, a, fired, t_first``) so a network's carry has the same
structure whatever the coding. ``step(state, z, t)`` integrates the input current ``z`` at (global, int32)
time ``t`` and returns ``(state, o)``, ``o`` being the value sent downstream (0 when silent).

References:
  Park et al., "Fast and Efficient Information Transmission with Burst Spikes in Deep Spiking Neural Networks",
  DAC 2019, arXiv:1809.03142 (burst, phase).
  Park et al., "T2FSNN: Deep Spiking Neural Networks with Time-to-first-spike Coding", DAC 2020,
  arXiv:2003.11741.
  Kim et al., "Spiking-YOLO: Spiking Neural Network for Energy-Efficient Object Detection", AAAI 2020,
  arXiv:1903.06530 (signed neuron with imbalanced threshold).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

__all__ = [
    "State",
    "Neuron",
    "init_state",
    "if_neuron",
    "lif_neuron",
    "phase_neuron",
    "burst_neuron",
    "ttfs_neuron",
    "ibt_neuron",
    "integrator",
]


class State(NamedTuple):
  """Per-neuron state; all fields exist for every neuron type.

  Attributes:
    v: membrane potential.
    theta: current threshold (burst: grows while it fires; phase/TTFS: the last threshold used).
    n: spike events so far (int32).
    a: cumulative |amplitude| sent so far (drives the spiking max-pool's ``"abs"`` selection).
    a_signed: cumulative signed amplitude sent so far (the ``"signed"`` selection; equals ``a`` for neurons that
      only send positive amplitudes).
    fired: whether it has fired at least once.
    t_first: time of the first spike (TTFS: local window time), -1 if none.
  """

  v: Float[Array, "..."]
  theta: Float[Array, "..."]
  n: Int[Array, "..."]
  a: Float[Array, "..."]
  a_signed: Float[Array, "..."]
  fired: Bool[Array, "..."]
  t_first: Int[Array, "..."]


class Neuron(NamedTuple):
  """A neuron type: ``init(shape) -> State`` and ``step(state, z, t) -> (state, o)``."""

  init: Callable[..., State]
  step: Callable[[State, Array, Array], tuple[State, Array]]


def init_state(shape, theta0=1.0, v0=None) -> State:
  """A zero state of ``shape`` with threshold ``theta0`` (broadcast) and optional initial potential ``v0``."""
  v = jnp.zeros(shape, jnp.float32) if v0 is None else jnp.broadcast_to(jnp.asarray(v0, jnp.float32), shape)
  return State(
      v=v,
      theta=jnp.broadcast_to(jnp.asarray(theta0, jnp.float32), shape),
      n=jnp.zeros(shape, jnp.int32),
      a=jnp.zeros(shape, jnp.float32),
      a_signed=jnp.zeros(shape, jnp.float32),
      fired=jnp.zeros(shape, bool),
      t_first=jnp.full(shape, -1, jnp.int32),
  )


def _count(state: State, v, theta, spike, o, t) -> State:
  """Updates the counters after a step (events, amplitude, first-spike time)."""
  s_int = spike.astype(jnp.int32)
  fired_now = s_int != 0
  return State(
      v=v,
      theta=theta,
      n=state.n + jnp.abs(s_int),
      a=state.a + jnp.abs(o),
      a_signed=state.a_signed + o,
      fired=state.fired | fired_now,
      t_first=jnp.where(fired_now & ~state.fired, jnp.asarray(t, jnp.int32), state.t_first),
  )


def _check_positive(name, value):
  if not value > 0:
    raise ValueError(f"{name}={value!r} must be > 0")


def if_neuron(threshold: float = 1.0, *, fire_threshold: float | None = None, leak: float = 1.0,
              scale=1.0) -> Neuron:
  """Integrate-and-fire (``leak=1``) or LIF neuron with reset by subtraction.

  Fires when ``V >= fire_threshold`` and then sends and subtracts ``threshold``: ``rate_std`` is
  ``fire_threshold = threshold = 1``; ``rate_official`` fires at 0.4 and subtracts 1 (a rounding quantiser).

  Args:
    threshold: amplitude sent and subtracted on a spike (theta_r).
    fire_threshold: firing threshold (theta_f); defaults to ``threshold``.
    leak: multiplicative leak lambda applied before integration (1 = IF).
    scale: multiplies both thresholds (threshold-form normalisation; scalar or per-neuron array).

  Returns:
    A :class:`Neuron`.

  References:
    Rueckauer et al., "Conversion of Continuous-Valued Deep Networks to Efficient Event-Driven Networks for
    Image Classification", Frontiers in Neuroscience 2017 (reset by subtraction).
  """
  _check_positive("threshold", threshold)
  theta_f = threshold if fire_threshold is None else fire_threshold
  _check_positive("fire_threshold", theta_f)
  if not 0 < leak <= 1:
    raise ValueError(f"leak={leak!r} must be in (0, 1]")

  def init(shape):
    return init_state(shape, threshold * scale)

  def step(state, z, t):
    v = state.v * leak + z if leak != 1.0 else state.v + z
    spike = v >= theta_f * scale
    o = spike.astype(jnp.float32) * (threshold * scale)
    return _count(state, v - o, state.theta, spike, o, t), o

  return Neuron(init, step)


def lif_neuron(leak: float = 0.7, threshold: float = 1.0, *, scale=1.0) -> Neuron:
  """Leaky integrate-and-fire, ``V <- leak*V + z``, fire at ``threshold``, subtract it."""
  return if_neuron(threshold, leak=leak, scale=scale)


def phase_neuron(theta0: float = 1.0, *, period: int = 8, scale=1.0) -> Neuron:
  """Phase-coding neuron: ``theta(t) = theta0 * 2**-(t mod period)``, amplitude theta(t), subtraction reset.

  ``theta0 = 0.5`` gives the input layer's weights ``2**-(1 + phase)``.

  References:
    Kim et al., "Deep neural networks with weighted spikes", Neurocomputing 2018, as used in Park et al., DAC
    2019, arXiv:1809.03142.
  """
  _check_positive("theta0", theta0)
  if period < 1:
    raise ValueError(f"period={period!r} must be >= 1")

  def init(shape):
    return init_state(shape, theta0 * scale)

  def step(state, z, t):
    phase = jnp.asarray(t, jnp.int32) % period
    theta = (theta0 * jnp.exp2(-phase.astype(jnp.float32))) * scale
    v = state.v + z
    spike = v >= theta
    o = spike.astype(jnp.float32) * theta
    return _count(state, v - o, jnp.broadcast_to(theta, v.shape), spike, o, t), o

  return Neuron(init, step)


def burst_neuron(theta0: float = 0.4, *, beta: float = 2.0, max_len: int | None = None, scale=1.0) -> Neuron:
  """Burst neuron: the threshold grows by ``beta`` on each consecutive spike and returns to ``theta0`` after a
  silent step; amplitude and subtraction are the current threshold.

  Args:
    theta0: base threshold (hidden 0.4, input 0.125 in the paper).
    beta: growth factor (beta = 1 is the IF neuron).
    max_len: if set, the threshold stops growing at ``beta**(max_len-1) * theta0``.
    scale: threshold-form normalisation factor.

  References:
    Park et al., "Fast and Efficient Information Transmission with Burst Spikes in Deep Spiking Neural
    Networks", DAC 2019, arXiv:1809.03142 (the equation for theta(t+1)).
  """
  _check_positive("theta0", theta0)
  _check_positive("beta", beta)
  if max_len is not None and max_len < 1:
    raise ValueError(f"max_len={max_len!r} must be None or >= 1")
  cap = None if max_len is None else theta0 * beta ** (max_len - 1)

  def init(shape):
    return init_state(shape, theta0 * scale)

  def step(state, z, t):
    v = state.v + z
    theta = state.theta
    spike = v >= theta
    o = spike.astype(jnp.float32) * theta
    grown = theta * beta if cap is None else jnp.minimum(theta * beta, cap * scale)
    new_theta = jnp.where(spike, grown, theta0 * scale)
    return _count(state, v - o, new_theta, spike, o, t), o

  return Neuron(init, step)


def ttfs_neuron(tau: float = 5.0, t_d: float = 0.0, *, depth: int = 0, t_s: int = 20, t_w: int = 20,
                theta0: float = 1.0) -> Neuron:
  """Time-to-first-spike neuron with the T2FSNN kernel-based dynamic threshold.

  At depth ``d`` the neuron may fire only in ``[d*t_s, d*t_s + t_w)``, at local time ``t' = t - d*t_s``, when
  ``V >= theta0 * exp(-(t' - t_d)/tau)``; it fires once, resets ``V <- 0`` and ignores later input. It sends
  the dendrite-kernel value ``exp(-(t' - t_d)/tau)`` (the unit spike times the presynaptic kernel, applied at the
  sender because the kernel is the same for the whole layer), which is the decoded activation.

  Args:
    tau: kernel time constant.
    t_d: kernel delay.
    depth: the layer's depth (input 0).
    t_s: window start spacing between depths (``t_s < t_w`` is early firing).
    t_w: window length.
    theta0: threshold scale.

  References:
    Park et al., "T2FSNN: Deep Spiking Neural Networks with Time-to-first-spike Coding", DAC 2020,
    arXiv:2003.11741 (the threshold and dendrite kernels).
  """
  _check_positive("tau", tau)
  if t_w < 1 or t_s < 1:
    raise ValueError(f"t_w={t_w!r} and t_s={t_s!r} must be >= 1")
  start = depth * t_s

  def init(shape):
    return init_state(shape, theta0)

  def step(state, z, t):
    tl = jnp.asarray(t, jnp.int32) - start
    in_window = (tl >= 0) & (tl < t_w)
    kernel = jnp.exp(-(tl.astype(jnp.float32) - t_d) / tau)
    theta = jnp.where(in_window, theta0 * kernel, jnp.inf)
    v = jnp.where(state.fired, 0.0, state.v + z)
    spike = (v >= theta) & ~state.fired
    o = spike.astype(jnp.float32) * kernel
    v = jnp.where(spike, 0.0, v)
    new = _count(state, v, jnp.broadcast_to(theta, v.shape), spike, o, tl)
    return new, o

  return Neuron(init, step)


def ibt_neuron(threshold: float = 1.0, *, alpha: float = 0.1, scale=1.0) -> Neuron:
  """Signed neuron with imbalanced threshold for leaky-ReLU ``max(x, alpha*x)``.

  ``+threshold`` when ``V >= threshold`` (reset ``V -= threshold``); ``-threshold`` when
  ``V <= -threshold/alpha`` (reset ``V += threshold/alpha``): the mean output tends to ``leaky_relu(x, alpha)``.

  References:
    Kim et al., "Spiking-YOLO: Spiking Neural Network for Energy-Efficient Object Detection", AAAI 2020,
    arXiv:1903.06530.
  """
  _check_positive("threshold", threshold)
  _check_positive("alpha", alpha)

  def init(shape):
    return init_state(shape, threshold * scale)

  def step(state, z, t):
    v = state.v + z
    th = threshold * scale
    pos = v >= th
    neg = v <= -th / alpha
    spike = pos.astype(jnp.int32) - neg.astype(jnp.int32)
    o = spike.astype(jnp.float32) * th
    v = v - jnp.where(pos, th, 0.0) + jnp.where(neg, th / alpha, 0.0)
    return _count(state, v, state.theta, spike, o, t), o

  return Neuron(init, step)


def integrator() -> Neuron:
  """Output neuron that only integrates (readout ``V_L``); it never fires (readout ``vmem``)."""

  def init(shape):
    return init_state(shape, jnp.inf)

  def step(state, z, t):
    return state._replace(v=state.v + z), jnp.zeros_like(z)

  return Neuron(init, step)
