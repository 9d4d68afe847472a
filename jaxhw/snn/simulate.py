"""Simulating a converted network over T time steps as one ``lax.scan``.

Two modes that compute the same thing: ``stepwise`` (the scan body is the whole network for one step) and
``layerwise`` (the scan runs over chunks of ``chunk`` steps; inside a chunk each synaptic op runs once on the
chunk's spikes with time folded into the batch, then only the elementwise neuron is scanned). A converted
network has no feedback, so the order does not change any value. Only the output potential per step, per-step
event and synaptic-operation counts per image, and (on request) first-spike times are returned; the per-step
spike tensor of a layer never leaves the scan.

`simulate` is a pure function of arrays: it can be jitted, vmapped (e.g. over corrupted weights) and
differentiated, and it returns device arrays. `logits_fn` packages it as ``(params, apply_fn)`` for code that
takes ``apply_fn(params, x) -> logits`` such as `jaxhw.faults.single_bit_sweep`.

References:
  Rueckauer et al., "Conversion of Continuous-Valued Deep Networks to Efficient Event-Driven Networks for Image
  Classification", Frontiers in Neuroscience 2017 (spiking max-pool by cumulative output).
  Park et al., "Fast and Efficient Information Transmission with Burst Spikes in Deep Spiking Neural Networks",
  DAC 2019, arXiv:1809.03142; Park et al., "T2FSNN: Deep Spiking Neural Networks with Time-to-first-spike
  Coding", DAC 2020, arXiv:2003.11741.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, Float, Int

from jaxhw.snn import codings as cd
from jaxhw.snn.network import SNNet, at_path, pool, synapse

__all__ = ["SimResult", "simulate", "logits_fn", "spiking_maxpool", "accuracy_curve", "latency_steps",
           "RECORD_OPTIONS", "MODES"]

#: What `simulate` can record besides the final logits: the decoded output per step, the first spike times.
RECORD_OPTIONS = ("output", "first_spike")
#: Simulation schedules that compute the same thing: the whole network per time step, or one layer over all steps.
MODES = ("stepwise", "layerwise")
INNER_UNROLL = 1


class SimResult(NamedTuple):
  """What :func:`simulate` returns (device arrays).

  Attributes:
    output: ``[T, B, C]`` decoded output ``out_scale * V_L(t) / n_b(t)`` after every step (``None`` unless
      ``"output"`` is recorded).
    vmem: ``[B, C]`` final output potential ``V_L(T)``.
    logits: ``[B, C]`` decoded output after the last step, ``out_scale * V_L(T) / n_b(T)`` (the ANN's logits
      as the SNN estimates them).
    spikes: ``[B, 1 + L]`` events per image over the run: column 0 the input layer (0 for real-valued input),
      then each hidden spiking layer.
    step_events: ``[T, B, 1 + L]`` events per step (same columns).
    sops: ``[T, B]`` synaptic operations per step per image (events times fan-out, after pooling; the first
      layer's are counted only for spiking input).
    first_spike: per spiking layer (input first) ``[B, ...]`` first-spike times, -1 if silent (if recorded).
  """

  output: Array | None
  vmem: Array
  logits: Array
  spikes: Array
  step_events: Array
  sops: Array
  first_spike: tuple | None


def spiking_maxpool(o: Float[Array, "... h w c"], a: Float[Array, "... h w c"], window: int) -> Array:
  """Spiking max-pool: per window, forward the output of the neuron with the largest cumulative amplitude
  ``a`` (this step included; ties go to the first). With TTFS this forwards the earliest spike.

  Args:
    o: outputs of the pooled layer this step, ``[..., H, W, C]``.
    a: their cumulative amplitudes (signed or absolute: `jaxhw.snn.Coding.maxpool` chooses which the simulator
      passes).
    window: window and stride.

  Returns:
    ``[..., H // window, W // window, C]``.
  """
  *lead, h, w, c = o.shape
  ho, wo = h // window, w // window

  def blocks(t):
    t = t[..., :ho * window, :wo * window, :]
    t = t.reshape(*lead, ho, window, wo, window, c)
    nd = t.ndim
    # [..., ho, wo, k, k, c], window taps in row-major order (ties go to the first).
    t = jnp.transpose(t, tuple(range(nd - 5)) + (nd - 5, nd - 3, nd - 4, nd - 2, nd - 1))
    return jnp.moveaxis(t.reshape(*lead, ho, wo, window * window, c), -2, -1)

  ob, ab = blocks(o), blocks(a)
  idx = jnp.argmax(ab, axis=-1)[..., None]
  return jnp.take_along_axis(ob, idx, axis=-1)[..., 0]


def _largest_divisor(t: int, at_most: int) -> int:
  for c in range(min(t, at_most), 0, -1):
    if t % c == 0:
      return c
  return 1


@functools.partial(jax.jit, static_argnames=("ops", "shapes", "coding", "T", "chunk", "unroll", "record"))
def _sim(params, scales, fanouts, out_scale, x, keys, *, ops, shapes, coding, T, chunk, unroll, record):
  batch = x.shape[0]
  enc = cd.input_encoder(coding)
  spike_ops = [k for k, op in enumerate(ops) if op.kind == "spike"]
  neurons = [cd.hidden_neuron(coding, i, scale=1.0 if scales[i] is None else scales[i])
             for i in range(len(spike_ops))]
  states0 = tuple(neurons[i].init((batch,) + shapes[k]) for i, k in enumerate(spike_ops))
  n_classes = shapes[-1][-1]
  real_input = coding.input == "real"
  c = chunk
  carry0 = (enc.init(x), states0, jnp.zeros((batch, n_classes), jnp.float32),
            jnp.zeros((batch,), jnp.float32))
  reload_bias = coding.input == "burst" and coding.burst_bias == "reload"

  def events(o):
    return jnp.sum((o != 0).reshape(o.shape[0], batch, -1), axis=-1, dtype=jnp.int32)

  def body(carry, xs):
    enc_state, states, vout, nb = carry
    tc, kc = xs

    def enc_body(s, tk):
      g = s[1].astype(jnp.float32) if reload_bias else jnp.ones((batch,), jnp.float32)
      s, o = enc.step(s, x, tk[0], tk[1])
      return s, (o, g)

    enc_state, (o, g_in) = lax.scan(enc_body, enc_state, (tc, kc), unroll=True if c == 1 else INNER_UNROLL)
    ev = [jnp.zeros((c, batch), jnp.int32) if real_input else events(o)]
    gate = cd.bias_gate(coding, tc)[:, None] * g_in  # [c, B]
    sops = jnp.zeros((c, batch), jnp.int32)
    new_states = list(states)
    a = None
    first_syn = True
    vseq = None
    for k, op in enumerate(ops):
      if op.kind in ("conv", "dense"):
        if not (first_syn and real_input):
          fan = at_path(fanouts, op.path)
          sent = ((o != 0).astype(jnp.int32) * fan).reshape(c, batch, -1)
          sops = sops + jnp.sum(sent, axis=-1, dtype=jnp.int32)
        first_syn = False
        w = at_path(params, op.path)
        z = synapse(op, w, o.reshape((c * batch,) + o.shape[2:]), bias=False)
        z = z.reshape((c, batch) + z.shape[1:])
        z = z + gate.reshape((c, batch) + (1,) * (z.ndim - 2)) * w["bias"]
        if k + 1 < len(ops) and ops[k + 1].kind == "spike":
          o = z
        else:  # output integrator
          vseq = vout[None] + jnp.cumsum(z, axis=0)
          vout = vseq[-1]
      elif op.kind == "spike":
        i = op.index
        nrn = neurons[i]
        need_a = k + 1 < len(ops) and ops[k + 1].kind == "maxpool"
        signed = coding.maxpool == "signed"

        def nbody(s, zt, nrn=nrn, need_a=need_a, signed=signed):
          s, out = nrn.step(s, zt[0], zt[1])
          return s, ((out, s.a_signed if signed else s.a) if need_a else (out, None))

        new_states[i], (o, a) = lax.scan(nbody, states[i], (o, tc), unroll=True if c == 1 else INNER_UNROLL)
        ev.append(events(o))
      elif op.kind == "maxpool":
        o = spiking_maxpool(o, a, op.window)
      elif op.kind == "avgpool":
        flat = o.reshape((c * batch,) + o.shape[2:])
        o = pool(op, flat).reshape((c, batch) + tuple(shapes[k]))
      elif op.kind == "flatten":
        o = o.reshape(c, batch, -1)
    nbseq = nb + jnp.cumsum(gate, axis=0)  # [c, B]
    ys = {"events": jnp.stack(ev, axis=-1), "sops": sops}
    if "output" in record:
      ys["output"] = out_scale * vseq / jnp.maximum(nbseq, 1.0)[:, :, None]
    return (enc_state, tuple(new_states), vout, nbseq[-1]), ys

  ts = jnp.arange(T, dtype=jnp.int32).reshape(T // c, c)
  kx = keys.reshape((T // c, c) + keys.shape[1:])
  (enc_state, states, vout, nb), ys = lax.scan(body, carry0, (ts, kx), unroll=unroll)
  logits = out_scale * vout / jnp.maximum(nb, 1.0)[:, None]
  ys = jax.tree.map(lambda y: y.reshape((T,) + y.shape[2:]), ys)
  in_n = jnp.zeros((batch,), jnp.int32) if real_input else jnp.sum(
      enc_state[0].n.reshape(batch, -1), axis=1, dtype=jnp.int32)
  spikes = jnp.stack([in_n] + [jnp.sum(s.n.reshape(batch, -1), axis=1, dtype=jnp.int32) for s in states], -1)
  first = None
  if "first_spike" in record:
    first = (enc_state[0].t_first,) + tuple(s.t_first for s in states)
  return ys, vout, logits, spikes, first


def _check(net: SNNet, coding, T, mode, record, key) -> cd.Coding:
  if not isinstance(T, (int, np.integer)) or isinstance(T, bool) or T < 1:
    raise ValueError(f"T={T!r} must be an integer >= 1")
  if mode not in MODES:
    raise ValueError(f"mode={mode!r}; valid modes: {MODES}")
  if isinstance(coding, str):
    coding = cd.get_coding(coding)
  bad = [r for r in record if r not in RECORD_OPTIONS]
  if bad:
    raise ValueError(f"record={record!r}: {bad} not valid; valid options: {RECORD_OPTIONS}")
  if coding.input == "poisson" and key is None:
    raise ValueError("key=None: Poisson input needs a PRNG key")
  n_spike = sum(op.kind == "spike" for op in net.ops)
  if not isinstance(coding.hidden, str) and len(coding.hidden) != n_spike:
    raise ValueError(f"hidden has {len(coding.hidden)} entries; the network has {n_spike} hidden spiking "
                     "layers")
  return coding


def simulate(net: SNNet, x: Float[Array, "batch ..."], coding: cd.Coding | str, T: int, *,
             key: jax.Array | None = None, mode: str = "stepwise", chunk: int = 8,
             record: tuple[str, ...] = ("output",), scan_unroll: int = 1) -> SimResult:
  """Runs the converted network on a batch for ``T`` steps (a pure function: jit, vmap and grad compose).

  Args:
    net: from :func:`jaxhw.snn.convert`; its ``params`` may be traced (e.g. corrupted weights under ``vmap``).
    x: input batch, pixels in [0, 1], NHWC.
    coding: a :class:`Coding` or a preset name (``CODING_PRESETS``).
    T: number of time steps (static, >= 1).
    key: PRNG key (needed by Poisson input; split per step, never reused).
    mode: ``"stepwise"`` (default: on CPU it measured faster than layerwise, see ``benchmarks/bench_snn.py``) or
      ``"layerwise"``.
    chunk: layerwise chunk length (the largest divisor of T not above it is used).
    record: subset of ``RECORD_OPTIONS``: ``"output"`` (decoded output per step), ``"first_spike"``.
    scan_unroll: unroll factor of the outer scan.

  Returns:
    A :class:`SimResult` of device arrays. Gradients flow through the synaptic weights, the biases and the
    real-valued input; a spike itself is a step function (zero derivative).

  Raises:
    ValueError: T < 1, unknown mode / coding / record option, or Poisson input without a key.
  """
  coding = _check(net, coding, T, mode, record, key)
  c = 1 if mode == "stepwise" else _largest_divisor(int(T), int(chunk))
  keys = jax.random.split(key if key is not None else jax.random.key(0), int(T))
  ys, vout, logits, spikes, first = _sim(
      net.params, net.scales, net.fanouts, net.out_scale, jnp.asarray(x, jnp.float32), keys,
      ops=net.ops, shapes=net.shapes, coding=coding, T=int(T), chunk=c, unroll=int(scan_unroll),
      record=tuple(sorted(record)))
  return SimResult(output=ys.get("output"), vmem=vout, logits=logits, spikes=spikes, step_events=ys["events"],
                   sops=ys["sops"], first_spike=first)


def logits_fn(net: SNNet, coding: cd.Coding | str, T: int, *, key: jax.Array | None = None,
              mode: str = "stepwise", chunk: int = 8) -> tuple[dict, Callable[[dict, Array], Array]]:
  """The converted network as ``(params, apply_fn)``, ``apply_fn(params, x) -> logits`` after ``T`` steps.

  ``params`` is ``net.params``, the plain nested dict ``{layer path: {"kernel", "bias"}}`` of the normalised
  weights; ``apply_fn`` simulates the network with those weights (traceable, vmappable over params), so any
  parameter effect or sweep composes with it, e.g.::

      params, apply_fn = snn.logits_fn(net, "burst", 64)
      result = faults.single_bit_sweep(apply_fn, params, x, y, structure="full")

  Args:
    net: a converted network.
    coding: a :class:`Coding` or a preset name.
    T: time steps (static).
    key: PRNG key of the Poisson input (the same draws for every call).
    mode, chunk: as in :func:`simulate`.

  Returns:
    ``(params, apply_fn)``; the logits are ``SimResult.logits`` (``out_scale * V_L(T) / n_b(T)``).
  """
  coding = _check(net, coding, T, mode, (), key)

  def apply_fn(params: dict, x: Array) -> Array:
    return simulate(net._replace(params=params), x, coding, T, key=key, mode=mode, chunk=chunk, record=()).logits

  return net.params, apply_fn


def accuracy_curve(output: Float[Array, "T batch classes"], labels: Int[Array, " batch"]) -> Array:
  """Top-1 accuracy after every step, ``[T]``."""
  return jnp.mean(jnp.argmax(output, -1) == jnp.asarray(labels)[None], axis=-1)


def latency_steps(curve: np.ndarray, target: float) -> int | None:
  """L99-style latency: the smallest number of steps ``t`` with ``curve[t'-1] >= target`` for all ``t' >= t``;
  ``None`` if the last step misses the target (host-side metric)."""
  curve = np.asarray(curve)
  ok = curve >= target
  if not ok[-1]:
    return None
  bad = np.nonzero(~ok)[0]
  return int(bad[-1] + 2) if bad.size else 1
