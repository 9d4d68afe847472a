"""Tests of jaxhw.snn against independent oracles: numpy references, explicit loops, closed forms."""

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxhw import layers as L
from jaxhw import snn
from jaxhw.models.snn_cnn import SequentialCNN, bn_population_stats
from jaxhw.snn import neurons as nr
from jaxhw.snn import t2fsnn
from jaxhw.snn.network import at_path

TINY = (
    L.conv(4, 3, "VALID"), L.batch_norm(), L.relu(), L.max_pool(2),
    L.conv(6, 2, "SAME"), L.relu(), L.flatten(), L.dropout(0.5), L.dense(5),
)
MODEL = SequentialCNN(layers=TINY)


def _tiny(seed=0, n=64, shape=(8, 8, 1)):
  """A tiny Flax CNN's variables (population BN statistics over x) and its inputs x."""
  x = np.random.default_rng(seed + 1).uniform(size=(n,) + shape).astype(np.float32)
  variables = MODEL.init(jax.random.key(seed), jnp.asarray(x[:1]))
  params = jax.tree.map(lambda a: a, variables["params"])
  params["Conv_0"]["bias"] = params["Conv_0"]["bias"] + 0.05
  params["BatchNorm_0"]["bias"] = params["BatchNorm_0"]["bias"] + 0.1
  variables = {"params": params, "batch_stats": variables["batch_stats"]}
  return {**variables, "batch_stats": bn_population_stats(MODEL, variables, x)}, x


@pytest.fixture(scope="module")
def tiny_net():
  variables, x = _tiny()
  return snn.convert(MODEL, variables, x), variables, x


def _run_neuron(neuron, z, steps, v0=None):
  state = neuron.init(z.shape)
  if v0 is not None:
    state = state._replace(v=jnp.broadcast_to(jnp.float32(v0), z.shape))

  def body(s, t):
    s, o = neuron.step(s, z, t)
    return s, o

  return jax.lax.scan(body, state, jnp.arange(steps, dtype=jnp.int32))


# 1. IF with constant input.
class IFCountTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_count_formula(self):
    current = np.array([0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0], np.float32)
    steps = 64
    for theta_f, theta_r in [(1.0, 1.0), (0.5, 1.0), (0.375, 0.5)]:
      neuron = snn.if_neuron(theta_r, fire_threshold=theta_f)
      run = self.variant(lambda z, neuron=neuron: _run_neuron(neuron, z, steps))
      state, _ = run(jnp.asarray(current * theta_r))
      i_scaled = current * theta_r
      want = np.maximum(np.floor((i_scaled * steps - theta_f) / theta_r) + 1, 0)
      np.testing.assert_array_equal(np.asarray(state.n), want)


# 3. Phase input.
class PhaseTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_one_period_sends_x_and_bits(self):
    n = np.arange(256)
    x = jnp.asarray(n / 256.0, jnp.float32)
    enc = snn.input_encoder(snn.Coding(input="phase", hidden="phase"))

    def run(x):
      def body(s, t):
        s, o = enc.step(s, x, t, None)
        return s, o
      return jax.lax.scan(body, enc.init(x), jnp.arange(8, dtype=jnp.int32))

    _, o = self.variant(run)(x)
    o = np.asarray(o)
    np.testing.assert_array_equal(o.sum(0), n / 256.0)
    for phase in range(8):
      np.testing.assert_array_equal(o[phase] > 0, (n >> (7 - phase)) & 1 == 1)
    x255 = jnp.asarray(n / 255.0, jnp.float32)
    _, o = self.variant(run)(x255)
    assert np.max(np.abs(np.asarray(o).sum(0) - n / 255.0)) <= 2.0 ** -8 + 1e-7


# 4. Burst neuron.
class BurstTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_burst_drains_in_k_steps(self):
    theta0 = 0.25
    for k in range(1, 6):
      neuron = snn.burst_neuron(theta0, beta=2.0)
      state, o = self.variant(lambda z, neuron=neuron, k=k: _run_neuron(neuron, z, k + 2,
                                                                        v0=(2**k - 1) * theta0))(jnp.zeros((1,)))
      want = [theta0 * 2**i for i in range(k)] + [0.0, 0.0]
      np.testing.assert_array_equal(np.asarray(o)[:, 0], want)
      assert float(state.v[0]) == 0.0

  def test_beta_one_equals_if(self):
    theta0, k = 0.25, 4
    z = jnp.asarray([0.0, 0.0625, 0.3125])
    sb, ob = _run_neuron(snn.burst_neuron(theta0, beta=1.0), z, 40, v0=(2**k - 1) * theta0)
    si, oi = _run_neuron(snn.if_neuron(theta0), z, 40, v0=(2**k - 1) * theta0)
    np.testing.assert_array_equal(np.asarray(ob), np.asarray(oi))
    _, o0 = _run_neuron(snn.burst_neuron(theta0, beta=1.0), jnp.zeros((1,)), 2**k + 1, v0=(2**k - 1) * theta0)
    assert int((np.asarray(o0) > 0).sum()) == 2**k - 1 and np.asarray(o0)[2**k - 2, 0] > 0

  def test_burst_reaches_count_faster_than_rate(self):
    v0 = 3.0  # a large potential: burst drains it in O(log) steps, a rate neuron in O(V) steps
    _, ob = _run_neuron(snn.burst_neuron(0.25), jnp.zeros((1,)), 40, v0=v0)
    _, orate = _run_neuron(snn.if_neuron(0.25), jnp.zeros((1,)), 40, v0=v0)
    sent_b, sent_r = np.cumsum(np.asarray(ob)[:, 0]), np.cumsum(np.asarray(orate)[:, 0])
    steps_b = int(np.argmax(sent_b >= 2.75)) + 1
    steps_r = int(np.argmax(sent_r >= 2.75)) + 1
    assert steps_b < steps_r, (steps_b, steps_r)


# 5. Signed IBT neuron.
def test_ibt_mean_output_is_leaky_relu():
  x = np.linspace(-1, 1, 41).astype(np.float32)
  steps = 1000
  state, o = _run_neuron(snn.ibt_neuron(1.0, alpha=0.1), jnp.asarray(x), steps)
  mean = np.asarray(o).sum(0) / steps
  want = np.where(x > 0, x, 0.1 * x)
  assert np.max(np.abs(mean - want)) <= 1.0 / steps + 1e-6
  assert np.all(np.asarray(state.n) >= 0)


# 6. TTFS.
class TTFSTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_spike_time_formula_and_monotone(self):
    tau, t_d, t_w = 5.0, 0.0, 20
    x = np.linspace(0.01, 1.5, 301).astype(np.float32)
    x = x[np.abs(np.asarray(t_d - tau * np.log(x.astype(np.float64))) % 1) > 1e-3]  # no ties
    neuron = snn.ttfs_neuron(tau, t_d, depth=0, t_s=t_w, t_w=t_w)

    def run(x):
      def body(s, t):
        return neuron.step(s, jnp.where(t == 0, x, 0.0), t)
      return jax.lax.scan(body, neuron.init(x.shape), jnp.arange(t_w, dtype=jnp.int32))

    state, o = self.variant(run)(jnp.asarray(x))
    t_first = np.asarray(state.t_first)
    ref = np.maximum(0, np.ceil(t_d - tau * np.log(x.astype(np.float64))))
    ref = np.where(ref < t_w, ref, -1)
    np.testing.assert_array_equal(t_first, ref)
    fired = t_first >= 0
    assert np.all(np.diff(t_first[fired]) <= 0)  # non-increasing in x
    assert np.all(np.asarray(state.n) <= 1)
    # decode bounds inside the range: e^{-1/tau} x < x_hat <= x
    x_hat = np.asarray(o).sum(0)
    inside = fired & (x <= np.exp(t_d / tau))
    assert np.all(x_hat[inside] <= x[inside] + 1e-6)
    assert np.all(x_hat[inside] > np.exp(-1 / tau) * x[inside])


def test_stepwise_equals_closed_form(tiny_net):
  net, _, x = tiny_net
  coding = snn.Coding(input="ttfs", hidden="ttfs", tau=(5.0, 4.0, 6.0), t_d=(0.0, -1.0, 0.5), t_w=20)
  T = snn.pipeline_length(net, coding)
  res = snn.simulate(net, x[:32], coding, T, mode="stepwise", record=("output", "first_spike"))
  v_closed = np.asarray(snn.closed_form(net, jnp.asarray(x[:32]), coding))
  np.testing.assert_allclose(np.asarray(res.vmem), v_closed, rtol=1e-5, atol=1e-5)
  assert np.all(np.asarray(res.spikes)[:, 1:] <= np.array([np.prod(s) for s, op in zip(net.shapes, net.ops)
                                               if op.kind == "spike"]))

def test_early_firing_shortens_pipeline(tiny_net):
  net, _, x = tiny_net
  c0 = snn.Coding(input="ttfs", hidden="ttfs", t_w=20)
  c1 = snn.Coding(input="ttfs", hidden="ttfs", t_w=20, t_s=10)
  assert snn.pipeline_length(net, c0) == 60 and snn.pipeline_length(net, c1) == 40

def test_go_jax_grad_matches_analytic():
  a = np.asarray(jax.nn.relu(jax.random.normal(jax.random.key(3), (16, 50)) * 0.3))
  analytic = jax.jit(functools.partial(snn.go_step_analytic, t_w=20))
  grad = jax.jit(functools.partial(snn.go_step_grad, t_w=20))
  for tau, t_d in [(5.0, 0.0), (4.0, -1.5)]:
    t1, d1 = analytic(jnp.asarray(a), jnp.float32(tau), jnp.float32(t_d))
    t2, d2 = grad(jnp.asarray(a), jnp.float32(tau), jnp.float32(t_d))
    np.testing.assert_allclose([float(t1), float(d1)], [float(t2), float(d2)], rtol=1e-5, atol=1e-6)
    assert float(t1) != tau or float(d1) != t_d  # the update moves something


def test_low_percentile_equals_numpy():
  rng = np.random.default_rng(11)
  a = np.maximum(rng.normal(size=(6, 300)), 0.0).astype(np.float32)
  a[2] = 0.0  # a row with no positive entry
  a[3, :-3] = 0.0  # a row with three
  got = np.asarray(jax.jit(lambda v: t2fsnn._low_percentile(v, v > 0, 2.0))(jnp.asarray(a)))
  for r in range(6):
    pos = a[r][a[r] > 0]
    if pos.size:
      np.testing.assert_allclose(got[r], np.percentile(pos, 2.0), rtol=1e-6)
    else:
      assert np.isnan(got[r])


def test_go_finite_difference():
  # the analytic tau update (rho2 = 0, rho_td = 0) is rho1 times minus dL_prec/dtau with t_hat fixed.
  a = jnp.asarray(np.asarray(jax.nn.relu(jax.random.normal(jax.random.key(4), (8, 40)) * 0.3)))
  tau, t_d, t_w = 5.0, 0.0, 20
  t_hat = np.asarray(jax.jit(snn.spike_time, static_argnums=(1, 2, 3))(a, tau, t_d, t_w), np.float64)
  xf = np.asarray(a, np.float64)
  mask = (xf > 0) & (t_hat < t_w)

  def loss(tt):
    xh = np.where(t_hat < t_w, np.exp(-(t_hat - t_d) / tt), 0.0)
    return 0.5 * np.sum(np.where(mask, (xf - xh) ** 2, 0.0)) / mask.sum()

  eps = 1e-4
  fd = (loss(tau + eps) - loss(tau - eps)) / (2 * eps)
  step = jax.jit(functools.partial(snn.go_step_analytic, t_w=t_w, rho1=1.0, rho2=0.0, rho_td=0.0))
  t1, _ = step(a, jnp.float32(tau), jnp.float32(t_d))
  np.testing.assert_allclose(float(t1) - tau, -fd, rtol=1e-3)


# 2. scan = explicit Python loop; stepwise = layerwise; threshold form = weight form.
def _python_loop(net, x, coding, T, key=None):
  """Explicit per-step reference built from the step functions and plain array ops."""
  enc = snn.input_encoder(coding)
  es = enc.init(jnp.asarray(x))
  spike_ops = [op for op in net.ops if op.kind == "spike"]
  neurons = [snn.hidden_neuron(coding, i) for i in range(len(spike_ops))]
  states = [None] * len(spike_ops)
  v_out = None
  keys = jax.random.split(key if key is not None else jax.random.key(0), T)
  outs = []
  for t in range(T):
    tt = jnp.int32(t)
    g = np.full(len(x), float(snn.bias_gate(coding, tt)), np.float32)
    if coding.input == "burst" and coding.burst_bias == "reload":
      g = g * np.asarray(es[1], np.float32)  # bias once per input cycle, at the re-load step
    es, o = enc.step(es, jnp.asarray(x), tt, keys[t])
    a = None
    for k, op in enumerate(net.ops):
      if op.kind in ("conv", "dense"):
        w = at_path(net.params, op.path)
        if op.kind == "conv":
          z = jax.lax.conv_general_dilated(o, w["kernel"], (1, 1), op.padding,
                                           dimension_numbers=("NHWC", "HWIO", "NHWC"))
          z = z + g[:, None, None, None] * w["bias"]
        else:
          z = o.reshape(o.shape[0], -1) @ w["kernel"] + g[:, None] * w["bias"]
        if k + 1 < len(net.ops) and net.ops[k + 1].kind == "spike":
          o = z
        else:
          v_out = z if v_out is None else v_out + z
      elif op.kind == "spike":
        if states[op.index] is None:
          states[op.index] = neurons[op.index].init(o.shape)
        states[op.index], o = neurons[op.index].step(states[op.index], o, tt)
        a = states[op.index].a_signed if coding.maxpool == "signed" else states[op.index].a
      elif op.kind == "maxpool":
        o = _maxpool_ref(np.asarray(o), np.asarray(a), op.window)
      elif op.kind == "flatten":
        o = o.reshape(o.shape[0], -1)
    outs.append(np.asarray(v_out))
  return np.stack(outs), [np.asarray(s.n) for s in states]


def _maxpool_ref(o, a, k):
  b, h, w, c = o.shape
  out = np.zeros((b, h // k, w // k, c), o.dtype)
  for i in range(h // k):
    for j in range(w // k):
      wa = a[:, i * k:(i + 1) * k, j * k:(j + 1) * k, :].reshape(b, k * k, c)
      wo = o[:, i * k:(i + 1) * k, j * k:(j + 1) * k, :].reshape(b, k * k, c)
      idx = np.argmax(wa, axis=1)
      out[:, i, j, :] = np.take_along_axis(wo, idx[:, None, :], axis=1)[:, 0]
  return jnp.asarray(out)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["rate-poisson", "phase", "burst", "ttfs"])
def test_scan_equals_python_loop_and_modes_agree(tiny_net, name):
  net, _, x = tiny_net
  coding = snn.get_coding(name)
  T = 12
  key = jax.random.key(5)
  xb = x[:4]
  ref_v, ref_n = _python_loop(net, xb, coding, T, key)
  step = jax.tree.map(np.asarray, snn.simulate(net, xb, coding, T, key=key, mode="stepwise", record=("output",)))
  ref_spikes = np.stack([n.reshape(len(xb), -1).sum(1) for n in ref_n], -1)
  np.testing.assert_allclose(step.vmem, ref_v[-1], rtol=1e-5, atol=1e-5)
  assert step.output.shape == (T, len(xb), 5)
  agree = np.mean(step.spikes[:, 1:] == ref_spikes)
  assert agree >= 0.999 or np.abs(step.spikes[:, 1:] - ref_spikes).sum() <= 1e-3 * ref_spikes.sum()
  if name in ("phase", "burst"):  # stepwise = layerwise (time folded into the batch, chunks of 4 steps)
    layer = jax.tree.map(np.asarray, snn.simulate(net, xb, coding, T, key=key, mode="layerwise", chunk=4,
                                                  record=("output",)))
    np.testing.assert_array_equal(step.spikes, layer.spikes)
    np.testing.assert_array_equal(step.step_events, layer.step_events)
    np.testing.assert_allclose(step.output, layer.output, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("select", ["signed", "abs"])
def test_ibt_maxpool_selection_equals_python_loop(tiny_net, select):
  """Signed neurons send negative amplitudes: the max-pool's two selection rules differ, and each equals the
  explicit loop that picks by the matching cumulative amplitude."""
  net, _, x = tiny_net
  params = dict(net.params)
  params["Conv_0"] = {k: -3.0 * w for k, w in params["Conv_0"].items()}  # strongly negative potentials
  net = net._replace(params=params)
  coding = snn.get_coding("ibt", maxpool=select)
  ref_v, _ = _python_loop(net, x[:4], coding, 10)
  r = snn.simulate(net, x[:4], coding, 10)
  np.testing.assert_allclose(np.asarray(r.vmem), ref_v[-1], rtol=1e-5, atol=1e-5)
  other = snn.simulate(net, x[:4], snn.get_coding("ibt", maxpool="abs" if select == "signed" else "signed"), 10)
  assert np.abs(np.asarray(other.vmem) - ref_v[-1]).max() > 0.1  # the rules differ on this net


def test_ibt_cumulative_amplitudes():
  z = jnp.array([0.5, -0.3, -0.05], jnp.float32)
  s, o = _run_neuron(snn.ibt_neuron(1.0, alpha=0.1), z, 40)
  np.testing.assert_allclose(np.asarray(s.a_signed), np.asarray(o.sum(0)), atol=1e-6)
  np.testing.assert_allclose(np.asarray(s.a), np.asarray(jnp.abs(o).sum(0)), atol=1e-6)
  assert float(s.a_signed[1]) < 0 < float(s.a[1])  # -0.3 * 40 = -12 reaches -1/alpha = -10 once
  with pytest.raises(ValueError, match="maxpool"):
    snn.Coding(maxpool="max")


def test_threshold_form_equals_weight_form():
  # dyadic weights, inputs and lambdas: both forms do exact arithmetic, so spikes are identical.
  variables, x = _tiny(seed=7)
  params = jax.tree.map(lambda p: jnp.round(p * 64) / 64, variables["params"])
  bs = jax.tree.map(lambda v: v, variables["batch_stats"])
  bs["BatchNorm_0"] = {"mean": jnp.zeros((4,)), "var": jnp.ones((4,)) - 1e-5}
  variables = {"params": params, "batch_stats": bs}
  x = np.round(x * 16) / 16
  lams = [np.full(4, 2.0, np.float32), np.full(6, 4.0, np.float32), np.full(5, 8.0, np.float32)]
  wnet = snn.convert(MODEL, variables, x, lambdas=lams)
  tnet = snn.convert(MODEL, variables, x, lambdas=lams, norm_form="threshold")
  for name in ("burst",):  # batch 4, T = 12, record "output": the compilation of the scan test is reused
    rw = jax.tree.map(np.asarray, snn.simulate(wnet, x[:4], name, 12, key=jax.random.key(5), record=("output",)))
    rt = jax.tree.map(np.asarray, snn.simulate(tnet, x[:4], name, 12, key=jax.random.key(5), record=("output",)))
    assert rw.step_events[:, :, 1:].sum() > 0
    np.testing.assert_array_equal(rw.step_events, rt.step_events)
    np.testing.assert_allclose(rw.output[-1], rt.output[-1], rtol=1e-5, atol=1e-5)


# 7. Conversion.
def _fold_ref(variables, eps=1e-5):
  """Batch norm folded by hand in numpy: {path: (kernel, bias)}."""
  p, bs = jax.tree.map(lambda a: np.asarray(a, np.float64), variables["params"]), variables["batch_stats"]
  mean, var = np.asarray(bs["BatchNorm_0"]["mean"], np.float64), np.asarray(bs["BatchNorm_0"]["var"], np.float64)
  g = p["BatchNorm_0"]["scale"] / np.sqrt(var + eps)
  return {"Conv_0": (p["Conv_0"]["kernel"] * g, (p["Conv_0"]["bias"] - mean) * g + p["BatchNorm_0"]["bias"]),
          "Conv_1": (p["Conv_1"]["kernel"], p["Conv_1"]["bias"]),
          "Dense_0": (p["Dense_0"]["kernel"], p["Dense_0"]["bias"])}


def _ref_activations(folded, x):
  """The folded TINY net written with jax.lax (float64 weights cast to float32): ReLU outputs and logits."""
  conv = lambda h, w, pad: jax.lax.conv_general_dilated(  # noqa: E731
      h, jnp.asarray(w, jnp.float32), (1, 1), pad, dimension_numbers=("NHWC", "HWIO", "NHWC"))
  a1 = jax.nn.relu(conv(jnp.asarray(x), folded["Conv_0"][0], "VALID") + folded["Conv_0"][1].astype(np.float32))
  p1 = jax.lax.reduce_window(a1, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
  a2 = jax.nn.relu(conv(p1, folded["Conv_1"][0], "SAME") + folded["Conv_1"][1].astype(np.float32))
  out = a2.reshape(len(x), -1) @ folded["Dense_0"][0].astype(np.float32) + folded["Dense_0"][1].astype(np.float32)
  return [np.asarray(a1), np.asarray(a2), np.asarray(out)]


def test_bn_fold_equals_conv_bn():
  variables, x = _tiny(seed=2)
  variables["batch_stats"] = jax.tree.map(lambda v: v * 1.7 + 0.1, variables["batch_stats"])
  layers, weights = snn.fold_batchnorm(TINY, variables["params"], variables["batch_stats"])
  assert [s.kind for s in layers] == ["conv", "relu", "maxpool", "conv", "relu", "flatten", "dense"]
  ann = MODEL.apply(variables, jnp.asarray(x))
  net = snn.SNNet(snn.snn_ops(layers), weights, {}, (), None, (8, 8, 1), {}, ())
  np.testing.assert_allclose(np.asarray(snn.snn_ann_apply(net, jnp.asarray(x))), np.asarray(ann),
                             rtol=1e-5, atol=1e-5)
  ref = _fold_ref(variables)
  for path in ("Conv_0", "Conv_1", "Dense_0"):
    np.testing.assert_allclose(np.asarray(weights[path]["kernel"]), ref[path][0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(weights[path]["bias"]), ref[path][1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("norm", ["layer_max", "layer_p99.9", "neuron_p99.9_max", "channel_p99.9", "channel_max"])
def test_normalisation_keeps_argmax_and_channel_stats(norm):
  variables, x = _tiny(seed=3)
  net = snn.convert(MODEL, variables, x, norm=norm)
  ann = np.asarray(MODEL.apply(variables, jnp.asarray(x)))
  logits, acts = snn.snn_ann_apply(net, jnp.asarray(x), return_activations=True)
  np.testing.assert_array_equal(np.argmax(np.asarray(logits) * np.asarray(net.out_scale), -1), ann.argmax(-1))
  np.testing.assert_allclose(np.asarray(logits) * np.asarray(net.out_scale), ann, rtol=1e-4, atol=1e-4)
  # statistics gathered through the effect mechanism = the old statistics (hand-folded net, numpy percentiles).
  ref_acts = _ref_activations(_fold_ref(variables), x)
  for path, a in zip(("Conv_0", "Conv_1", "Dense_0"), ref_acts):
    c = a.shape[-1]
    if norm == "layer_max":
      want = np.full(c, a.max())
    elif norm == "layer_p99.9":
      want = np.full(c, np.percentile(a[a > 0], 99.9))
    elif norm == "neuron_p99.9_max":
      want = np.full(c, np.percentile(a.reshape(len(a), -1), 99.9, axis=0).max())
    elif norm == "channel_p99.9":
      want = np.percentile(a.reshape(-1, c), 99.9, axis=0)
    else:
      want = a.reshape(-1, c).max(0)
    np.testing.assert_allclose(np.asarray(net.lambdas[path]), np.where(want > 0, want, 1.0), rtol=1e-4)
  if norm == "channel_max":
    for a in acts:
      per_channel = np.asarray(a).reshape(-1, a.shape[-1]).max(0)
      np.testing.assert_allclose(per_channel[per_channel > 0], 1.0, rtol=1e-5)
  if norm == "layer_max":
    for a in acts:
      np.testing.assert_allclose(np.asarray(a).max(), 1.0, rtol=1e-5)


@pytest.mark.slow
def test_converted_net_reproduces_ann():
  variables, x = _tiny(seed=4, n=256)
  net = snn.convert(MODEL, variables, x, norm="layer_max")
  ann = np.asarray(MODEL.apply(variables, jnp.asarray(x)))
  res = snn.simulate(net, x, snn.get_coding("rate-std"), 2000, mode="layerwise", chunk=50, record=())
  rate = np.asarray(res.vmem) / 2000.0
  top1 = np.mean(rate.argmax(-1) == ann.argmax(-1))
  assert top1 >= 0.98, top1
  rho = stats.spearmanr(rate.ravel(), (ann / np.asarray(net.out_scale)).ravel()).statistic
  assert rho >= 0.99, rho


# 8. SOP counter.
@pytest.mark.parametrize("padding,kernel,shape", [("SAME", 3, (7, 6, 2)), ("SAME", 4, (5, 8, 1)),
                                                    ("VALID", 3, (7, 6, 2)), ("VALID", 5, (5, 5, 3))])
def test_conv_fanout_equals_vjp_of_an_all_ones_kernel(padding, kernel, shape):
  """The closed-form fan-out of `convert` equals the VJP of the op with an all-ones kernel applied to ones."""
  from jaxhw.snn.convert import _fanout
  from jaxhw.snn.network import SNNOp, synapse
  op = SNNOp("conv", ("c",), padding=padding)
  w_shape = (kernel, kernel, shape[-1], 4)
  ones = {"kernel": jnp.ones(w_shape)}
  y, vjp = jax.vjp(lambda x: synapse(op, ones, x, bias=False), jnp.zeros((1, *shape)))
  np.testing.assert_array_equal(_fanout(op, shape, w_shape), np.asarray(vjp(jnp.ones_like(y))[0][0]))
  assert np.array_equal(_fanout(SNNOp("dense", ("d",)), shape, (int(np.prod(shape)), 5)), np.full(shape, 5))
  with pytest.raises(ValueError, match="padding 'FULL'"):
    _fanout(SNNOp("conv", ("c",), padding="FULL"), shape, w_shape)


def test_sop_counter_equals_brute_force(tiny_net):
  net, _, x = tiny_net
  steps = 12  # as in the scan test: same compiled simulation
  res = snn.simulate(net, x[:4], "rate-poisson", steps, key=jax.random.key(9), mode="stepwise",
                     record=("output",))
  # brute force: rerun the reference loop, record every synaptic op's input spikes and count outgoing synapses.
  coding = snn.get_coding("rate-poisson")
  enc = snn.input_encoder(coding)
  keys = jax.random.split(jax.random.key(9), steps)
  es = enc.init(jnp.asarray(x[:4]))
  neurons = [snn.hidden_neuron(coding, i) for i in range(2)]
  states = [None, None]
  total = np.zeros(4, np.int64)
  for t in range(steps):
    es, o = enc.step(es, jnp.asarray(x[:4]), jnp.int32(t), keys[t])
    a = None
    for op in net.ops:
      if op.kind in ("conv", "dense"):
        w = at_path(net.params, op.path)
        total += _brute_sops(np.asarray(o), op, w["kernel"].shape)
        if op.kind == "conv":
          o = jax.lax.conv_general_dilated(o, w["kernel"], (1, 1), op.padding,
                                           dimension_numbers=("NHWC", "HWIO", "NHWC")) + w["bias"]
        else:
          o = o.reshape(4, -1) @ w["kernel"] + w["bias"]
      elif op.kind == "spike":
        if states[op.index] is None:
          states[op.index] = neurons[op.index].init(o.shape)
        states[op.index], o = neurons[op.index].step(states[op.index], o, jnp.int32(t))
        a = states[op.index].a
      elif op.kind == "maxpool":
        o = _maxpool_ref(np.asarray(o), np.asarray(a), op.window)
      elif op.kind == "flatten":
        o = o.reshape(4, -1)
  np.testing.assert_array_equal(np.asarray(res.sops).sum(0), total)


def _brute_sops(o, op, w_shape):
  """Counts, for every nonzero input, the outputs it feeds (loops over output positions and kernel taps)."""
  b = o.shape[0]
  if op.kind == "dense":
    return (o.reshape(b, -1) != 0).sum(1) * w_shape[-1]
  kh, kw, _, cout = w_shape
  _, h, w, _ = o.shape
  pad = (kh - 1) // 2 if op.padding == "SAME" else 0
  pad_hi = kh - 1 - pad if op.padding == "SAME" else 0
  ho, wo = (h, w) if op.padding == "SAME" else (h - kh + 1, w - kw + 1)
  counts = np.zeros(b, np.int64)
  for i in range(ho):
    for j in range(wo):
      for di in range(kh):
        for dj in range(kw):
          ii, jj = i + di - pad, j + dj - pad
          if 0 <= ii < h and 0 <= jj < w:
            counts += (o[:, ii, jj, :] != 0).sum(-1) * cout
  del pad_hi
  return counts


# 9. Surrogate.
@pytest.mark.parametrize("kind", snn.SURROGATES)
def test_surrogate_forward_and_gradient(kind):
  u = jnp.linspace(-1.0, 1.0, 11)
  f = snn.spike_fn(kind)
  np.testing.assert_array_equal(np.asarray(f(u)), (np.asarray(u) >= 0).astype(np.float32))
  g = jax.vmap(jax.grad(lambda v: f(v)))(u)
  np.testing.assert_allclose(np.asarray(g), np.asarray(snn.surrogate_grad(u, kind)), rtol=1e-6)
  if kind == "fast_sigmoid":
    np.testing.assert_allclose(np.asarray(g), 1.0 / (1.0 + 10 * np.abs(np.asarray(u))) ** 2, rtol=1e-6)


def test_lif_scan_trains():
  currents = jnp.ones((20, 3)) * jnp.asarray([0.05, 0.2, 0.6])
  spikes = snn.lif_scan(currents, leak=1.0)
  np.testing.assert_array_equal(np.asarray(spikes).sum(0), np.floor(20 * np.asarray([0.05, 0.2, 0.6])))
  grad = jax.grad(lambda s: snn.lif_scan(currents * s, leak=1.0).sum())(1.0)
  assert np.isfinite(float(grad)) and float(grad) > 0


# Errors.
def test_clear_errors(tiny_net):
  net, variables, x = tiny_net
  with pytest.raises(ValueError, match="T=0"):
    snn.simulate(net, x[:2], "rate-real", 0)
  with pytest.raises(ValueError, match="valid codings"):
    snn.simulate(net, x[:2], "morse", 8)
  with pytest.raises(ValueError, match="valid input codings"):
    snn.Coding(input="morse")
  with pytest.raises(ValueError, match="TTFS"):
    snn.Coding(input="ttfs", hidden="burst")
  with pytest.raises(ValueError, match="valid kinds"):
    L.LayerSpec("sigmoid")
  with pytest.raises(ValueError, match=r"layer 0 \('relu'\) must follow"):
    snn.fold_batchnorm((L.relu(),) + TINY, variables["params"], variables["batch_stats"])
  with pytest.raises(ValueError, match="LayerSpec"):
    snn.convert(object(), variables, x)
  with pytest.raises(ValueError, match="valid norms"):
    snn.convert(MODEL, variables, x, norm="median")


def test_energy_counts(tiny_net):
  net, _, x = tiny_net
  macs = snn.ann_macs(net)
  assert macs == [6 * 6 * 4 * 9 * 1, 3 * 3 * 6 * 2 * 2 * 4, 54 * 5]
  assert math.isclose(snn.ann_energy_uj(net), 4.6 * sum(macs) * 1e-6)
  assert math.isclose(snn.snn_energy_uj(net, 1000.0, real_input=True), (900.0 + 4.6 * macs[0]) * 1e-6)
  ev = np.ones((3, 2, 3), np.int32)
  assert snn.spikes_per_image(ev) == 6.0 and snn.spikes_per_image(ev, include_input=True) == 9.0


def test_neuron_state_has_all_fields():
  for neuron in (snn.if_neuron(), snn.lif_neuron(), snn.phase_neuron(), snn.burst_neuron(), snn.ttfs_neuron(),
                 snn.ibt_neuron(), snn.integrator()):
    s = neuron.init((2, 3))
    assert isinstance(s, nr.State)
    assert s.n.dtype == jnp.int32 and s.fired.dtype == jnp.bool_ and s.t_first.dtype == jnp.int32
    s2, o = neuron.step(s, jnp.ones((2, 3)), jnp.int32(0))
    assert jax.tree.structure(s2) == jax.tree.structure(s) and o.shape == (2, 3)


# A pure simulator: jit, vmap and grad compose with it.
def test_simulate_is_differentiable(tiny_net):
  net, _, x = tiny_net
  params, apply_fn = snn.logits_fn(net, "rate-real", 8)
  xb = jnp.asarray(x[:8])
  f = lambda p: jnp.sum(apply_fn(p, xb))  # noqa: E731
  g = jax.jit(jax.grad(f))(params)
  # logits = out_scale * (sum_t W o_t + T b) / T: d sum(logits) / d b = out_scale exactly.
  np.testing.assert_allclose(np.asarray(g["Dense_0"]["bias"]), len(xb) * np.asarray(net.out_scale), rtol=1e-5)
  # the output layer is linear in its kernel (the spikes do not depend on it): a finite difference is exact.
  d = jax.random.normal(jax.random.key(1), params["Dense_0"]["kernel"].shape)
  eps = 1e-2
  moved = jax.tree.map(lambda a: a, params)
  moved["Dense_0"] = {**params["Dense_0"], "kernel": params["Dense_0"]["kernel"] + eps * d}
  fd = (float(f(moved)) - float(f(params))) / eps
  np.testing.assert_allclose(float(jnp.sum(g["Dense_0"]["kernel"] * d)), fd, rtol=2e-3)
  # a spike is a step function: hidden weights get a zero (finite) gradient.
  assert np.all(np.asarray(g["Conv_0"]["kernel"]) == 0.0)


def test_simulate_vmaps_over_params(tiny_net):
  net, _, x = tiny_net
  params, apply_fn = snn.logits_fn(net, "rate-real", 8)
  xb = jnp.asarray(x[:8])
  variants = [jax.tree.map(lambda a, s=s: a * s, params) for s in (0.5, 1.0, 1.5)]
  stacked = jax.tree.map(lambda *a: jnp.stack(a), *variants)
  batched = jax.jit(jax.vmap(apply_fn, in_axes=(0, None)))(stacked, xb)
  for i, p in enumerate(variants):
    np.testing.assert_allclose(np.asarray(batched[i]), np.asarray(apply_fn(p, xb)), rtol=1e-5, atol=1e-5)
  direct = snn.simulate(net, xb, "rate-real", 8, record=())
  np.testing.assert_allclose(np.asarray(batched[1]), np.asarray(direct.logits), rtol=1e-6)


def _flip_bit(a: np.ndarray, index: int, bit: int) -> np.ndarray:
  u = np.array(a, np.float32).reshape(-1).view(np.uint32)
  u[index] ^= np.uint32(1 << bit)
  return u.view(np.float32).reshape(np.shape(a))


def test_single_bit_sweep_of_a_converted_net(tiny_net):
  from jaxhw import faults

  net, variables, x = tiny_net
  params, apply_fn = snn.logits_fn(net, "rate-real", 8)
  xb = jnp.asarray(x[:8])
  y = np.asarray(jnp.argmax(apply_fn(params, xb), -1))
  leaves, treedef = jax.tree.flatten(params)  # Conv_0/bias, Conv_0/kernel, Conv_1/..., Dense_0/bias, Dense_0/kernel
  flips = faults.Flips(leaf=np.array([1, 1, 3, 4, 5, 5]), index=np.array([3, 3, 10, 2, 7, 7]),
                       bit=np.array([30, 0, 29, 31, 30, 22]))
  res = faults.single_bit_sweep(apply_fn, params, xb, y, flips=flips, structure="full", with_loss=False)
  assert res.clean_accuracy == 1.0
  assert res.leaf_paths == ["Conv_0/bias", "Conv_0/kernel", "Conv_1/bias", "Conv_1/kernel", "Dense_0/bias",
                            "Dense_0/kernel"]
  for k in range(len(flips.leaf)):
    ls = [np.asarray(v) for v in leaves]
    ls[flips.leaf[k]] = _flip_bit(ls[flips.leaf[k]], int(flips.index[k]), int(flips.bit[k]))
    if not np.isfinite(ls[flips.leaf[k]].reshape(-1)[flips.index[k]]):
      assert res.accuracy[k] == 0.0
      continue
    logits = np.asarray(apply_fn(jax.tree.unflatten(treedef, [jnp.asarray(v) for v in ls]), xb))
    correct = (logits.argmax(-1) == y) & np.all(np.isfinite(logits), -1)
    assert res.correct[k] == correct.sum(), (k, res.correct[k], correct.sum())
  assert res.accuracy.min() < 1.0  # some flip (an exponent bit) does damage
  # the source ANN on the same params tree: the same flips apply to both.
  ann_params, ann_fn = snn.ann_logits_fn(net)
  assert jax.tree.structure(ann_params) == jax.tree.structure(params)
  np.testing.assert_allclose(np.asarray(ann_fn(ann_params, xb)), np.asarray(MODEL.apply(variables, xb)),
                             rtol=1e-4, atol=1e-4)


# T2FSNN kernel optimisation through jaxhw.train.
def test_go_loss_gradient_is_the_go_update():
  acts = [jnp.asarray(np.asarray(jax.nn.relu(jax.random.normal(jax.random.key(k), (8, 30)) * 0.3)))
          for k in range(3)]
  kernels = {"tau": jnp.asarray([5.0, 4.0, 6.0]), "t_d": jnp.asarray([0.0, -1.0, 0.5])}
  for impl in snn.GO_IMPLS:
    g = jax.jit(jax.grad(lambda k, impl=impl: snn.go_loss(k, acts, t_w=20, impl=impl)[0]))(kernels)
    for d, a in enumerate(acts):
      tau, t_d = snn.go_step_analytic(a, kernels["tau"][d], kernels["t_d"][d], t_w=20)
      np.testing.assert_allclose(float(kernels["tau"][d] - g["tau"][d]), float(tau), rtol=1e-5, atol=1e-6)
      np.testing.assert_allclose(float(kernels["t_d"][d] - g["t_d"][d]), float(t_d), rtol=1e-5, atol=1e-6)


def test_optimize_kernels_runs_the_go_update_in_train(tiny_net):
  net, _, x = tiny_net
  coding = snn.Coding(input="ttfs", hidden="ttfs", tau=5.0, t_w=20)
  got = snn.optimize_kernels(net, x, coding, passes=1, batch_size=len(x))  # one batch: one update
  _, acts = snn.snn_ann_apply(net, jnp.asarray(x), return_activations=True)
  for d, a in enumerate([jnp.asarray(x)] + list(acts)):
    tau, t_d = snn.go_step_analytic(a, jnp.float32(5.0), jnp.float32(0.0), t_w=20)
    np.testing.assert_allclose(got.tau[d], max(float(tau), 0.5), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.t_d[d], float(t_d), rtol=1e-5, atol=1e-6)
  assert got.tau != (5.0, 5.0, 5.0)
