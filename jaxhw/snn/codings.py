"""Neural codings: input encoders, hidden-neuron choice per layer, bias gating, and named presets.

A :class:`Coding` (frozen, hashable: a static jit argument) says how the input layer encodes pixels and which
neuron every hidden layer uses; hybrid coding is simply a different entry for the input and the hidden layers.

References:
  Park et al., "Fast and Efficient Information Transmission with Burst Spikes in Deep Spiking Neural Networks",
  DAC 2019, arXiv:1809.03142 (phase, burst and hybrid coding).
  Park et al., "T2FSNN: Deep Spiking Neural Networks with Time-to-first-spike Coding", DAC 2020,
  arXiv:2003.11741.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxhw.snn import neurons as nr

__all__ = [
    "INPUT_CODINGS",
    "HIDDEN_CODINGS",
    "CODING_PRESETS",
    "Coding",
    "Encoder",
    "get_coding",
    "input_encoder",
    "hidden_neuron",
    "bias_gate",
    "period",
]

#: Input-layer codings: real-valued input current, Poisson rate, phase, burst, time-to-first-spike.
INPUT_CODINGS = ("real", "poisson", "phase", "burst", "ttfs")
#: Hidden-layer neuron codings: rate (IF neurons with the official code's firing threshold, or the standard one),
#: LIF, phase, burst, TTFS and IBT (signed neurons).
HIDDEN_CODINGS = ("rate_official", "rate_std", "lif", "phase", "burst", "ttfs", "ibt")

#: Named codings, each an ``(input coding, hidden coding)`` pair (`get_coding` looks them up).
CODING_PRESETS = {
    "rate-real": ("real", "rate_official"),
    "rate-poisson": ("poisson", "rate_official"),
    "rate-std": ("real", "rate_std"),
    "phase": ("phase", "phase"),
    "burst": ("burst", "burst"),
    "hybrid": ("phase", "burst"),
    "ttfs": ("ttfs", "ttfs"),
    "ibt": ("real", "ibt"),
}


@dataclasses.dataclass(frozen=True)
class Coding:
  """How each layer codes values in spikes.

  Attributes:
    input: input coding, one of ``INPUT_CODINGS``.
    hidden: hidden-neuron coding (one of ``HIDDEN_CODINGS``) or a tuple with one entry per hidden spiking
      layer.
    period: phase period K.
    rate_fire_threshold: ``rate_official`` firing threshold (amplitude and subtraction stay 1).
    lif_leak: leak of ``lif``.
    phase_theta0: hidden phase neurons' theta0 (input uses 0.5).
    burst_theta0: hidden burst base threshold.
    burst_theta0_input: input burst base threshold.
    burst_beta: burst growth factor.
    burst_max_len: optional cap on burst length.
    burst_reload: ``"sample"`` (re-load an image's input when that image sent nothing) or ``"tensor"`` (only
      when the whole batch is silent, as the official code).
    burst_bias: with burst input, inject the bias ``"every"`` step (official) or once per input cycle
      (``"reload"``, default: at each step where the image's input is re-loaded). The burst input sends each
      pixel once per cycle of several steps, so a bias every step outweighs the input by the cycle length
      (measured on the MNIST CNN: 13% accuracy with ``"every"``); gating it per cycle is the analogue of the
      per-period bias gate of phase coding.
    ibt_alpha: leaky-ReLU slope for the signed neuron.
    maxpool: the spiking max-pool's selection (Spiking-YOLO's handling is reconstructed): ``"signed"`` (default)
      forwards the neuron with the largest cumulative signed amplitude, the rate-coded estimate of the ANN's
      max; ``"abs"`` the largest cumulative |amplitude|. The two agree for neurons that only send positive
      amplitudes; with signed (IBT) neurons ``"abs"`` lets a strongly negative neuron win a window.
    tau: TTFS time constant, a float or a tuple (input first, one per spiking layer).
    t_d: TTFS kernel delay, float or tuple like ``tau``.
    t_w: TTFS window length.
    t_s: TTFS window spacing (``None``: ``t_w``, no early firing).
  """

  input: str = "real"
  hidden: str | tuple[str, ...] = "rate_official"
  period: int = 8
  rate_fire_threshold: float = 0.4
  lif_leak: float = 0.7
  phase_theta0: float = 1.0
  burst_theta0: float = 0.4
  burst_theta0_input: float = 0.125
  burst_beta: float = 2.0
  burst_max_len: int | None = None
  burst_reload: str = "sample"
  burst_bias: str = "reload"
  ibt_alpha: float = 0.1
  maxpool: str = "signed"
  tau: float | tuple[float, ...] = 5.0
  t_d: float | tuple[float, ...] = 0.0
  t_w: int = 20
  t_s: int | None = None

  def __post_init__(self):
    if self.input not in INPUT_CODINGS:
      raise ValueError(f"input={self.input!r} is not a coding; valid input codings: {INPUT_CODINGS}")
    hidden = (self.hidden,) if isinstance(self.hidden, str) else tuple(self.hidden)
    for h in hidden:
      if h not in HIDDEN_CODINGS:
        raise ValueError(f"hidden={h!r} is not a coding; valid hidden codings: {HIDDEN_CODINGS}")
    ttfs = [self.input == "ttfs"] + [h == "ttfs" for h in hidden]
    if any(ttfs) and not all(ttfs):
      raise ValueError(
          f"input={self.input!r}, hidden={self.hidden!r}: TTFS windows cannot be mixed with other codings; "
          "set both input and hidden to 'ttfs'")
    if self.burst_bias not in ("every", "reload"):
      raise ValueError(f"burst_bias={self.burst_bias!r}; valid: ('every', 'reload')")
    if self.maxpool not in ("signed", "abs"):
      raise ValueError(f"maxpool={self.maxpool!r}; valid: ('signed', 'abs')")
    if self.burst_reload not in ("sample", "tensor"):
      raise ValueError(f"burst_reload={self.burst_reload!r}; valid: ('sample', 'tensor')")
    if self.period < 1:
      raise ValueError(f"period={self.period!r} must be >= 1")
    if self.t_w < 1 or (self.t_s is not None and not 1 <= self.t_s):
      raise ValueError(f"t_w={self.t_w!r}, t_s={self.t_s!r} must be >= 1")

  @property
  def is_ttfs(self) -> bool:
    return self.input == "ttfs"

  def hidden_of(self, i: int) -> str:
    """Coding of hidden spiking layer ``i`` (0-based)."""
    if isinstance(self.hidden, str):
      return self.hidden
    if i >= len(self.hidden):
      raise ValueError(f"hidden has {len(self.hidden)} entries but the network has more hidden spiking "
                       "layers")
    return self.hidden[i]

  def ttfs_params(self, depth: int) -> tuple[float, float]:
    """``(tau, t_d)`` of the spiking layer at ``depth`` (input = 0)."""
    tau = self.tau if isinstance(self.tau, (int, float)) else self.tau[depth]
    t_d = self.t_d if isinstance(self.t_d, (int, float)) else self.t_d[depth]
    return float(tau), float(t_d)

  @property
  def window_spacing(self) -> int:
    return self.t_w if self.t_s is None else self.t_s


def get_coding(name: str, **overrides) -> Coding:
  """A named coding preset (``CODING_PRESETS``) with optional field overrides.

  Raises:
    ValueError: unknown name (the valid names are listed).
  """
  if name not in CODING_PRESETS:
    raise ValueError(f"coding={name!r} does not exist; valid codings: {tuple(CODING_PRESETS)}")
  inp, hid = CODING_PRESETS[name]
  return Coding(input=inp, hidden=hid, **overrides)


def period(coding: Coding) -> int:
  """``P = K`` if any layer is phase coded, else 1."""
  hidden = (coding.hidden,) if isinstance(coding.hidden, str) else coding.hidden
  return coding.period if (coding.input == "phase" or "phase" in hidden) else 1


def bias_gate(coding: Coding, t):
  """Bias gate g(t): TTFS only at t = 0; phase-involved nets at ``t mod K = 0``; otherwise every step."""
  t = jnp.asarray(t, jnp.int32)
  if coding.is_ttfs:
    return (t == 0).astype(jnp.float32)
  p = period(coding)
  if p > 1:
    return (t % p == 0).astype(jnp.float32)
  return jnp.ones_like(t, jnp.float32)


class Encoder(NamedTuple):
  """Input encoder: ``init(x) -> state``; ``step(state, x, t, key) -> (state, o)``; ``state[0]`` is a
  :class:`~jaxhw.snn.neurons.State` whose ``n`` counts input events (0 for real-valued input)."""

  init: Callable
  step: Callable


def input_encoder(coding: Coding) -> Encoder:
  """The encoder of ``coding.input`` for pixels in [0, 1]."""
  kind = coding.input
  p = period(coding)
  if kind == "real":
    def init(x):
      return (nr.init_state(x.shape),)

    def step(state, x, t, key):
      return state, x / p
    return Encoder(init, step)

  if kind == "poisson":
    def init(x):
      return (nr.init_state(x.shape),)

    def step(state, x, t, key):
      spike = jax.random.uniform(key, x.shape) < x
      o = spike.astype(jnp.float32)
      return (nr._count(state[0], state[0].v, state[0].theta, spike, o, t),), o
    return Encoder(init, step)

  if kind == "phase":
    neuron = nr.phase_neuron(0.5, period=coding.period)

    def init(x):
      return (neuron.init(x.shape),)

    def step(state, x, t, key):
      s = state[0]
      s = s._replace(v=jnp.where(jnp.asarray(t) % coding.period == 0, x, s.v))
      s, o = neuron.step(s, jnp.zeros_like(x), t)
      return (s,), o
    return Encoder(init, step)

  if kind == "burst":
    neuron = nr.burst_neuron(coding.burst_theta0_input, beta=coding.burst_beta, max_len=coding.burst_max_len)

    def init(x):
      return (neuron.init(x.shape), jnp.ones(x.shape[:1], bool))

    def step(state, x, t, key):
      s, reload = state
      mask = reload.reshape((-1,) + (1,) * (x.ndim - 1))
      s = s._replace(v=jnp.where(mask, x, s.v))
      s, o = neuron.step(s, jnp.zeros_like(x), t)
      silent = jnp.all((o == 0).reshape(o.shape[0], -1), axis=1)
      if coding.burst_reload == "tensor":
        silent = jnp.broadcast_to(jnp.all(silent), silent.shape)
      return (s, silent), o
    return Encoder(init, step)

  # ttfs
  tau, t_d = coding.ttfs_params(0)
  neuron = nr.ttfs_neuron(tau, t_d, depth=0, t_s=coding.window_spacing, t_w=coding.t_w)

  def init(x):
    return (neuron.init(x.shape),)

  def step(state, x, t, key):
    z = jnp.where(jnp.asarray(t) == 0, x, 0.0)
    s, o = neuron.step(state[0], z, t)
    return (s,), o
  return Encoder(init, step)


def hidden_neuron(coding: Coding, index: int, *, scale=1.0) -> nr.Neuron:
  """The neuron of hidden spiking layer ``index`` (0-based; its depth is ``index + 1``).

  Args:
    coding: the coding.
    index: hidden layer index.
    scale: threshold-form normalisation factor (not supported for TTFS).
  """
  kind = coding.hidden_of(index)
  if kind == "rate_official":
    return nr.if_neuron(1.0, fire_threshold=coding.rate_fire_threshold, scale=scale)
  if kind == "rate_std":
    return nr.if_neuron(1.0, scale=scale)
  if kind == "lif":
    return nr.lif_neuron(coding.lif_leak, scale=scale)
  if kind == "phase":
    return nr.phase_neuron(coding.phase_theta0, period=coding.period, scale=scale)
  if kind == "burst":
    return nr.burst_neuron(coding.burst_theta0, beta=coding.burst_beta, max_len=coding.burst_max_len,
                           scale=scale)
  if kind == "ibt":
    return nr.ibt_neuron(1.0, alpha=coding.ibt_alpha, scale=scale)
  if not (isinstance(scale, (int, float)) and scale == 1.0):
    raise ValueError("norm_form='threshold' is not supported with TTFS; use norm_form='weight'")
  tau, t_d = coding.ttfs_params(index + 1)
  return nr.ttfs_neuron(tau, t_d, depth=index + 1, t_s=coding.window_spacing, t_w=coding.t_w)
