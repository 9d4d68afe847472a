"""jaxhw.snn against hand-written references that share no code with its neurons: an event-driven T2FSNN with
early firing, a step loop of burst coding's input re-load and bias gating, and the bootstrap latency metric."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from jaxhw import layers as L
from jaxhw import snn
from jaxhw.models.snn_cnn import SequentialCNN
from jaxhw.snn import latency as lat

DENSE = (L.flatten(), L.dense(10), L.relu(), L.dense(8), L.relu(), L.dense(4))
MODEL = SequentialCNN(layers=DENSE)


def _dense_net(params, x):
  """A converted all-dense net whose normalised weights are exactly `params` (all lambdas 1)."""
  variables = {"params": params}
  return snn.convert(MODEL, variables, x, lambdas=[np.ones(10), np.ones(8), np.ones(4)])


def _weights(rng, scale, dyadic=None):
  shapes = {"Dense_0": (12, 10), "Dense_1": (10, 8), "Dense_2": (8, 4)}
  out = {}
  for name, (i, o) in shapes.items():
    w = rng.normal(size=(i, o)) * scale / math.sqrt(i)
    b = rng.normal(size=(o,)) * 0.1 + 0.05
    if dyadic:
      w, b = np.round(w * dyadic) / dyadic, np.round(b * dyadic) / dyadic
    out[name] = {"kernel": jnp.asarray(w, jnp.float32), "bias": jnp.asarray(b, jnp.float32)}
  return out


# ---- T2FSNN with early firing: an event-driven reference ------------------------------------------------------


def _fire_time(times, contrib, bias, start, t_w, tau, t_d, horizon):
  """First spike of one TTFS neuron, event by event: between two input events its potential is constant, so the
  first step at which the decaying threshold ``exp(-(t - start - t_d)/tau)`` falls to it is found in closed form;
  inputs that arrive after it fired are lost. Returns (time, sent value) or None."""
  order = np.argsort(times, kind="stable")
  times, contrib = np.asarray(times)[order], np.asarray(contrib)[order]
  points = np.unique(np.concatenate([[0], times]))
  v = 0.0
  for k, u in enumerate(points):
    v += (bias if u == 0 else 0.0) + float(contrib[times == u].sum())
    nxt = points[k + 1] if k + 1 < len(points) else horizon
    lo, hi = max(u, start), min(nxt, start + t_w)
    if lo >= hi or v <= 0:
      continue
    t_star = max(lo, math.ceil(start + t_d - tau * math.log(v)))
    if t_star < hi:
      return t_star, math.exp(-(t_star - start - t_d) / tau)
  return None


def _ttfs_event_reference(params, x, taus, tds, t_w, t_s, horizon):
  """Spike times of every layer (input first; -1 silent, global steps) and the output readout after every step."""
  names = ["Dense_0", "Dense_1", "Dense_2"]
  w = [np.asarray(params[n]["kernel"], np.float64) for n in names]
  b = [np.asarray(params[n]["bias"], np.float64) for n in names]
  batch = x.shape[0]
  xf = np.asarray(x, np.float64).reshape(batch, -1)
  times_all, readout = [], np.zeros((horizon, batch, 4))
  for s in range(batch):
    # input layer (depth 0): potential x at t = 0, no further input
    ev = []
    for xi in xf[s]:
      f = _fire_time([0], [xi], 0.0, 0, t_w, taus[0], tds[0], horizon)
      ev.append(f)
    sample_times = [[-1 if f is None else f[0] for f in ev]]
    for d in (1, 2):
      post = []
      for j in range(w[d - 1].shape[1]):
        t_in = [f[0] for f in ev if f is not None]
        c_in = [f[1] * w[d - 1][i, j] for i, f in enumerate(ev) if f is not None]
        post.append(_fire_time(t_in, c_in, b[d - 1][j], d * t_s, t_w, taus[d], tds[d], horizon))
      ev = post
      sample_times.append([-1 if f is None else f[0] for f in ev])
    times_all.append(sample_times)
    v = np.tile(b[2], (horizon, 1))
    for i, f in enumerate(ev):
      if f is not None:
        v[f[0]:] += f[1] * w[2][i]
    readout[:, s] = v
  per_layer = [np.array([t[layer] for t in times_all]) for layer in range(3)]
  return per_layer, readout


@pytest.mark.parametrize("t_s", [6, 10])
def test_ttfs_early_firing_matches_event_driven_reference(t_s):
  rng = np.random.default_rng(3)
  x = rng.uniform(0.0, 1.0, size=(24, 12)).astype(np.float32)
  params = _weights(rng, 2.5)
  net = _dense_net(params, x.reshape(24, 12))
  taus, tds = (5.0, 4.0, 6.0), (0.0, -1.0, 0.5)
  coding = snn.Coding(input="ttfs", hidden="ttfs", tau=taus, t_d=tds, t_w=10, t_s=t_s)
  horizon = snn.pipeline_length(net, coding)
  assert horizon == 2 * t_s + 10
  res = snn.simulate(net, x, coding, horizon, record=("output", "first_spike"))
  ref_times, ref_out = _ttfs_event_reference(params, x, taus, tds, 10, t_s, horizon)
  starts = [0, t_s, 2 * t_s]
  for layer, (got, want) in enumerate(zip(res.first_spike, ref_times)):
    got = np.asarray(got).reshape(x.shape[0], -1)
    got = np.where(got >= 0, got + starts[layer], -1)  # local -> global time
    assert np.mean(got == want) >= 0.99, layer
    assert np.any(want >= 0)
  # early firing loses late inputs: the sim and the reference agree on the readout after every step
  np.testing.assert_allclose(np.asarray(res.output), ref_out, rtol=1e-4, atol=1e-4)


# ---- burst coding: input re-load and bias gating against a step loop ------------------------------------------


def _burst_loop(params, x, steps, *, theta0_in, theta0, beta, reload, bias):
  """Burst input and burst hidden neurons over `steps`, one step at a time in float32 numpy."""
  names = ["Dense_0", "Dense_1", "Dense_2"]
  w = [np.asarray(params[n]["kernel"], np.float32) for n in names]
  b = [np.asarray(params[n]["bias"], np.float32) for n in names]
  f32 = np.float32
  batch = x.shape[0]
  xin = x.reshape(batch, -1).astype(f32)
  v_in, th_in = np.zeros_like(xin), np.full_like(xin, theta0_in)
  reload_now = np.ones(batch, bool)
  v = [np.zeros((batch, 10), f32), np.zeros((batch, 8), f32)]
  th = [np.full((batch, 10), theta0, f32), np.full((batch, 8), theta0, f32)]
  v_out, n_b = np.zeros((batch, 4), f32), np.zeros(batch, f32)
  outs, input_events = [], []
  for _ in range(steps):
    g = np.ones(batch, f32) if bias == "every" else reload_now.astype(f32)
    v_in = np.where(reload_now[:, None], xin, v_in)
    fire = v_in >= th_in
    o = np.where(fire, th_in, f32(0))
    v_in = v_in - o
    th_in = np.where(fire, th_in * f32(beta), f32(theta0_in))
    input_events.append(fire.sum(1))
    silent = ~fire.any(axis=1)
    reload_now = silent if reload == "sample" else np.full(batch, silent.all())
    for layer in range(2):
      z = o @ w[layer] + g[:, None] * b[layer]
      vv = v[layer] + z
      fire = vv >= th[layer]
      o = np.where(fire, th[layer], f32(0))
      v[layer] = vv - o
      th[layer] = np.where(fire, th[layer] * f32(beta), f32(theta0))
    v_out = v_out + o @ w[2] + g[:, None] * b[2]
    n_b = n_b + g
    outs.append(v_out / np.maximum(n_b, 1)[:, None])
  return np.stack(outs), np.stack(input_events)


@pytest.mark.parametrize("reload,bias", [("sample", "reload"), ("tensor", "reload"), ("sample", "every")])
def test_burst_reload_and_bias_gating_match_step_loop(reload, bias):
  rng = np.random.default_rng(5)
  # dyadic inputs, weights and thresholds: float32 sums are exact, so spikes must agree bit for bit
  x = (rng.integers(0, 17, size=(16, 12)) / 16).astype(np.float32)
  x[:3] = x[:3] * 0.1  # a few dim images: they fall silent early and are re-loaded often
  x[:3] = np.round(x[:3] * 64) / 64
  params = _weights(rng, 1.0, dyadic=64)
  net = _dense_net(params, x)
  coding = snn.Coding(input="burst", hidden="burst", burst_theta0=0.5, burst_theta0_input=0.125,
                      burst_reload=reload, burst_bias=bias)
  steps = 24
  ref_out, ref_in = _burst_loop(params, x, steps, theta0_in=0.125, theta0=0.5, beta=2.0, reload=reload, bias=bias)
  for mode in ("stepwise", "layerwise"):
    res = snn.simulate(net, x, coding, steps, mode=mode, chunk=8)
    np.testing.assert_array_equal(np.asarray(res.step_events)[..., 0], ref_in)
    np.testing.assert_allclose(np.asarray(res.output), ref_out, rtol=1e-6, atol=1e-6)
  # the re-load really happened more than once for some image, and the bias gate differed from every step
  assert (ref_in == 0).any()


# ---- the latency metric --------------------------------------------------------------------------------------


def test_curve_latency_and_bootstrap():
  curves = np.array([[0.1, 0.5, 0.95, 0.9, 0.96, 0.97], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]])
  np.testing.assert_array_equal(lat.curve_latencies(curves, np.array([0.95, 0.9])), [5, np.inf])
  assert snn.latency_steps(curves[0], 0.95) == 5  # the same definition as the existing helper
  rng = np.random.default_rng(0)
  n, t = 400, 30
  # image i is classified correctly from step k_i on
  k = rng.integers(1, t, size=n)
  correct = np.arange(1, t + 1)[:, None] >= k[None]
  correct[:, :8] = False  # 8 images never right
  ann = np.ones(n, bool)
  ann[:8] = False  # the ANN misses the same 8
  cum = np.cumsum(np.ones((t, n)), axis=0)  # one event per step and image: spikes at latency = latency
  w = lat.bootstrap_weights(n, 200, seed=1)
  assert w.shape == (200, n) and np.all(w.sum(1) == n)
  st = lat.latency_stats(correct, ann, cum, 2 * cum, w)
  curve = correct.mean(1)
  assert st.latency == snn.latency_steps(curve, 0.99 * ann.mean()) and np.isfinite(st.latency)
  assert st.spikes == st.latency and st.synops == 2 * st.latency
  lo, hi = lat.interval(st.boot_latency)
  assert lo is not None and hi is not None and lo <= st.latency <= hi
  np.testing.assert_allclose(st.boot_spikes[np.isfinite(st.boot_latency)],
                             st.boot_latency[np.isfinite(st.boot_latency)])
  # uniform weights reproduce the point estimate
  st1 = lat.latency_stats(correct, ann, cum, cum, np.ones((1, n), np.float32))
  assert st1.boot_latency[0] == st.latency
