"""Binary MLP and CNN whose binary layers run on a (simulated) crossbar.

Parameters are plain dicts. Binary crossbar layers are named `xb0`, `xb1`, ... with latent
real weights `w` (dense [in, out] or conv HWIO) and BN affine `gamma`, `beta`; a CNN has a
full-precision digital first conv `conv0`; the classifier `head` is full-precision by default.
Layer order: binary layer -> BN -> `ste_sign` (-> 2x2 max-pool after every second binary conv,
starting with the first). Every binary layer's matmul goes through a `layer_fn(index, h, w)`
hook so that a crossbar simulator, GBO's relaxed noise or a sensitivity probe can replace it.

BN statistics live outside the parameters (`bn_stats`); training uses batch statistics and
`binary_net_bn_stats` recomputes population statistics afterwards. `fold_binary_net` turns
the net into inference form: binary weights plus per-channel thresholds (spec section 4).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from jaxhw.crossbar._random import normal as _normal
from jaxhw.crossbar._random import uniform
from jaxhw.crossbar.binary import batch_norm, bn_sign_threshold, fold_bn, ste_sign

Params = dict[str, dict[str, Array]]
LayerFn = Callable[[int, Array, Array], Array]


def _xb_names(params) -> list[str]:
  return sorted((k for k in params if k.startswith("xb")), key=lambda k: int(k[2:]))


def _uniform(key, shape):
  return uniform(key, shape, -1.0, 1.0)  # flat draw: rank >= 3 threefry draws compile slowly on XLA:CPU


def _bn_init(c):
  return {"gamma": jnp.ones((c,), jnp.float32), "beta": jnp.zeros((c,), jnp.float32)}


def binary_mlp_init(key: PRNGKeyArray, sizes: Sequence[int] = (784, 512, 256, 128, 10), *,
                    last_layer_binary: bool = False) -> Params:
  """Binary MLP: every hidden layer is a binary crossbar layer, the classifier full precision.

  Args:
    key: PRNG key.
    sizes: widths incl. input and classes; len(sizes) - 2 binary layers.
    last_layer_binary: binarise the classifier weights too (still digital).

  Returns:
    {"xb0": {"w", "gamma", "beta"}, ..., "head": {"w", "b"}}.

  References:
    GBO spec, section 5 ("Quick protocol": MLP 784-512-256-128-10).
  """
  if len(sizes) < 3 or any(s < 1 for s in sizes):
    raise ValueError(f"sizes must list input, >= 1 hidden and output widths, got {tuple(sizes)}")
  return _mlp_init(key, tuple(int(s) for s in sizes), bool(last_layer_binary))


@functools.partial(jax.jit, static_argnums=(1, 2))
def _mlp_init(key, sizes, last_layer_binary):
  k_w, k_head = jax.random.split(key)
  pairs = list(zip(sizes[:-2], sizes[1:-1]))
  flat = _uniform(k_w, (sum(a * b for a, b in pairs),))  # one draw for every latent weight (one RNG kernel)
  params, start = {}, 0
  for i, (a, b) in enumerate(pairs):
    params[f"xb{i}"] = {"w": flat[start:start + a * b].reshape(a, b), **_bn_init(b)}
    start += a * b
  a, b = sizes[-2:]
  params["head"] = {"w": _normal(k_head, (a, b)) / np.sqrt(a), "b": jnp.zeros((b,))}
  if last_layer_binary:
    params["head"]["binary"] = jnp.ones(())
  return params


def binary_cnn_init(key: PRNGKeyArray, in_shape: Sequence[int] = (32, 32, 3),
                    channels: Sequence[int] = (128, 256, 512), dense: Sequence[int] = (1024,),
                    num_classes: int = 10, *, first_layer_on_crossbar: bool = False) -> Params:
  """VGG-style binary CNN: conv0 (full precision, digital), then two binary 3x3 convs per entry of
  `channels` (a 2x2 max-pool after the second... of each pair), binary dense layers, full-precision head.

  With channels (128, 256, 512) and dense (1024,) this is the VGG-9 BNN layout of the GBO
  paper's family (6 conv + 3 FC incl. the head counted with conv0 as conv).

  Args:
    key: PRNG key.
    in_shape: (H, W, C) of the input.
    channels: width of each conv stage.
    dense: widths of the binary dense layers.
    num_classes: classes.
    first_layer_on_crossbar: put the first conv on the crossbar as binary layer xb0 with
      multi-bit inputs (no full-precision conv0).

  Returns:
    {"conv0"?, "xb0", ..., "head"}.
  """
  return _cnn_init(key, tuple(int(s) for s in in_shape), tuple(int(s) for s in channels),
                   tuple(int(s) for s in dense), int(num_classes), bool(first_layer_on_crossbar))


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4, 5))
def _cnn_init(key, in_shape, channels, dense, num_classes, first_layer_on_crossbar):
  h, w, c = in_shape
  convs = []
  cin = c
  for i, ch in enumerate(channels):
    if i == 0 and not first_layer_on_crossbar:
      convs.append(("conv0", cin, ch))
    else:
      convs.append(("xb", cin, ch))
    convs.append(("xb", ch, ch))
    cin = ch
  n_layers = len(convs) + len(dense) + 1
  keys = list(jax.random.split(key, n_layers))
  params = {}
  xb = 0
  for kind, a, b in convs:
    k = keys.pop(0)
    if kind == "conv0":
      params["conv0"] = {"w": _normal(k, (3, 3, a, b)) / np.sqrt(9 * a), **_bn_init(b)}
    else:
      params[f"xb{xb}"] = {"w": _uniform(k, (3, 3, a, b)), **_bn_init(b)}
      xb += 1
  flat = (h // 2 ** len(channels)) * (w // 2 ** len(channels)) * cin
  for d in dense:
    params[f"xb{xb}"] = {"w": _uniform(keys.pop(0), (flat, d)), **_bn_init(d)}
    xb += 1
    flat = d
  params["head"] = {"w": _normal(keys.pop(0), (flat, num_classes)) / np.sqrt(flat),
                    "b": jnp.zeros((num_classes,))}
  return params


def _matmul(h, w):
  if w.ndim == 4:
    return jax.lax.conv_general_dilated(h, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return h @ w


def _pool(h):
  return jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


def _stats(y):
  axes = tuple(range(y.ndim - 1))
  return jnp.mean(y, axes), jnp.var(y, axes)


def _input(params, x, binarize_input):
  if "conv0" in params:
    return x
  first = params[_xb_names(params)[0]]["w"]
  if first.ndim == 2:
    x = x.reshape(x.shape[0], -1)
  if binarize_input is None:
    return x
  return jnp.where(x >= binarize_input, 1.0, -1.0)


def binary_net_apply(params: Params, x: Float[Array, "batch ..."], *, bn_stats: dict | None = None,
                     layer_fn: LayerFn | None = None, sign: Callable = ste_sign,
                     binarize_input: float | None = 0.5, return_stats: bool = False):
  """Applies a binary MLP or CNN (training / reference form, BN unfolded).

  Args:
    params: from `binary_mlp_init` or `binary_cnn_init`.
    x: images [batch, H, W, C] (or already flat for an MLP).
    bn_stats: {"xb0": {"mean", "var"}, ...}; None uses batch statistics (training).
    layer_fn: `layer_fn(i, h, w_bin) -> y` for binary layer i; default the exact matmul/conv.
    sign: the binarising activation (STE).
    binarize_input: threshold mapping input pixels to +-1 for a first binary layer (None keeps
      the raw input, e.g. multi-bit inputs in [0, 1]).
    return_stats: also return the batch statistics used, {"xb0": {"mean", "var"}, ...}.

  Returns:
    logits [batch, classes] (and the stats dict when return_stats).

  References:
    GBO spec, section 4.
  """
  h = _input(params, x, binarize_input)
  used = {}
  if "conv0" in params:
    p = params["conv0"]
    y = _matmul(h, p["w"])
    m, v = _stats(y) if bn_stats is None or "conv0" not in bn_stats else (bn_stats["conv0"]["mean"],
                                                                         bn_stats["conv0"]["var"])
    used["conv0"] = {"mean": m, "var": v}
    h = sign(batch_norm(y, p["gamma"], p["beta"], m, v))
  n_conv = 0
  for i, name in enumerate(_xb_names(params)):
    p = params[name]
    if p["w"].ndim == 2 and h.ndim > 2:
      h = h.reshape(h.shape[0], -1)
    wb = sign(p["w"])
    y = _matmul(h, wb) if layer_fn is None else layer_fn(i, h, wb)
    if bn_stats is None:
      m, v = _stats(y)
    else:
      m, v = bn_stats[name]["mean"], bn_stats[name]["var"]
    used[name] = {"mean": m, "var": v}
    h = sign(batch_norm(y, p["gamma"], p["beta"], m, v))
    if p["w"].ndim == 4:
      if n_conv % 2 == (0 if "conv0" in params else 1):
        h = _pool(h)
      n_conv += 1
  if h.ndim > 2:
    h = h.reshape(h.shape[0], -1)
  hw = params["head"]["w"]
  if "binary" in params["head"]:
    hw = sign(hw) * jnp.mean(jnp.abs(hw), 0)
  logits = h @ hw + params["head"]["b"]
  return (logits, used) if return_stats else logits


def binary_net_bn_stats(params: Params, x: np.ndarray, *, batch_size: int = 1000,
                        binarize_input: float | None = 0.5) -> dict:
  """Population BN statistics over a data set, layer by layer (exact, chunked).

  Layer l's statistics are taken with every earlier layer normalised by its population
  statistics. One compiled pass returns the moments of every layer; pass l fixes layer l, so
  L passes over the data share one compilation. When the data fit in one chunk a single pass
  with batch statistics is exact.

  Args:
    params: the net.
    x: the data (e.g. the training images).
    batch_size: chunk size.
    binarize_input: as in `binary_net_apply`.

  Returns:
    {"xb0": {"mean", "var"}, ...} (and "conv0").
  """
  if len(x) <= batch_size:
    _, used = _batch_stats(params, jnp.asarray(x), binarize_input=binarize_input)
    return used
  names = (["conv0"] if "conv0" in params else []) + _xb_names(params)
  stats = _unit_stats(params)
  for name in names:
    s1 = s2 = 0.0
    n = 0
    for i in range(0, len(x), batch_size):
      xb = jnp.asarray(x[i:i + batch_size])
      m1, m2 = _moments(params, xb, stats, binarize_input=binarize_input)
      s1 = s1 + m1[name] * xb.shape[0]
      s2 = s2 + m2[name] * xb.shape[0]
      n += xb.shape[0]
    mean = s1 / n
    stats[name] = {"mean": mean, "var": jnp.maximum(s2 / n - mean**2, 0.0)}
  return stats


@functools.partial(jax.jit, static_argnames=("binarize_input",))
def _batch_stats(params, x, *, binarize_input):
  return binary_net_apply(params, x, bn_stats=None, binarize_input=binarize_input, return_stats=True)


@functools.partial(jax.jit, static_argnames=("binarize_input",))
def _moments(params, xb, stats, *, binarize_input):
  """(E[y], E[y^2]) per channel of every layer's pre-activation, normalised with `stats`."""
  m1, m2 = {}, {}
  names = _xb_names(params)

  def keep(name, y):
    axes = tuple(range(y.ndim - 1))
    m1[name], m2[name] = jnp.mean(y, axes), jnp.mean(y * y, axes)

  def layer_fn(i, h, w):
    y = _matmul(h, w)
    keep(names[i], y)
    return y

  if "conv0" in params:
    keep("conv0", _matmul(xb, params["conv0"]["w"]))
  binary_net_apply(params, xb, bn_stats=stats, layer_fn=layer_fn, binarize_input=binarize_input)
  return m1, m2


def fold_binary_net(params: Params, bn_stats: dict) -> dict:
  """Inference form: binary weights and per-channel sign thresholds, sign(k y + c) = s sign(y + theta).

  Returns:
    {"xb0": {"w": +-1, "s", "theta"}, ..., "conv0"?: {"w", "k", "c"}, "head": {...}} where the
    noisy crossbar output y enters the digital threshold (noise before BN).

  References:
    GBO spec, section 4 ("Inference").
  """
  return _fold(params, bn_stats)


@jax.jit
def _fold(params, bn_stats):
  out = {}
  if "conv0" in params:
    p = params["conv0"]
    k, c = fold_bn(p["gamma"], p["beta"], bn_stats["conv0"]["mean"], bn_stats["conv0"]["var"])
    out["conv0"] = {"w": p["w"], "k": k, "c": c}
  for name in _xb_names(params):
    p = params[name]
    k, c = fold_bn(p["gamma"], p["beta"], bn_stats[name]["mean"], bn_stats[name]["var"])
    s, theta = bn_sign_threshold(k, c)
    out[name] = {"w": jnp.where(p["w"] >= 0, 1.0, -1.0), "k": k, "c": c, "s": s, "theta": theta}
  head = dict(params["head"])
  if "binary" in head:
    head = {"w": jnp.where(head["w"] >= 0, 1.0, -1.0) * jnp.mean(jnp.abs(head["w"]), 0), "b": head["b"]}
  out["head"] = head
  return out


def folded_net_apply(folded: dict, x: Float[Array, "batch ..."], *, layer_fn: LayerFn | None = None,
                     binarize_input: float | None = 0.5, threshold: bool = False,
                     sign: Callable = ste_sign) -> Float[Array, "batch classes"]:
  """Applies the folded (inference) net; `layer_fn(i, h, w)` replaces binary layer i's matmul.

  Args:
    folded: from `fold_binary_net`.
    x: input batch.
    layer_fn: the crossbar (or noise) hook; default the exact matmul / conv.
    binarize_input: as in `binary_net_apply`.
    threshold: use the comparator form s * sign(y + theta) (hard, no gradient); the default
      applies the digital affine k y + c and then `sign` (same forward except ties, and
      differentiable through the STE, which GBO and the sensitivity need).
    sign: the STE sign for the affine form.

  Returns:
    logits.
  """
  h = _input(folded, x, binarize_input)
  sgn = lambda z: jnp.where(z >= 0, 1.0, -1.0)
  if "conv0" in folded:
    p = folded["conv0"]
    h = sign(p["k"] * _matmul(h, p["w"]) + p["c"])
  n_conv = 0
  for i, name in enumerate(_xb_names(folded)):
    p = folded[name]
    if p["w"].ndim == 2 and h.ndim > 2:
      h = h.reshape(h.shape[0], -1)
    y = _matmul(h, p["w"]) if layer_fn is None else layer_fn(i, h, p["w"])
    h = p["s"] * sgn(y + p["theta"]) if threshold else sign(p["k"] * y + p["c"])
    if p["w"].ndim == 4:
      if n_conv % 2 == (0 if "conv0" in folded else 1):
        h = _pool(h)
      n_conv += 1
  if h.ndim > 2:
    h = h.reshape(h.shape[0], -1)
  return h @ folded["head"]["w"] + folded["head"]["b"]


def crossbar_layer_shapes(params: Params, in_shape: Sequence[int], *,
                          binarize_input: float | None = 0.5) -> list[tuple[int, int, int]]:
  """(fan_in, fan_out, output positions) of every binary crossbar layer, for tiling and cost."""
  shapes = []

  def layer_fn(i, h, w):
    y = _matmul(h, w)
    if w.ndim == 4:
      shapes.append((int(np.prod(w.shape[:3])), int(w.shape[3]), int(np.prod(y.shape[1:3]))))
    else:
      shapes.append((int(w.shape[0]), int(w.shape[1]), 1))
    return y

  x = jnp.zeros((1,) + tuple(in_shape), jnp.float32)
  jax.eval_shape(lambda p, xx: binary_net_apply(p, xx, layer_fn=layer_fn, binarize_input=binarize_input,
                                                bn_stats=_unit_stats(p)), params, x)
  return shapes


def _unit_stats(params):
  names = (["conv0"] if "conv0" in params else []) + _xb_names(params)
  return {n: {"mean": jnp.zeros_like(params[n]["gamma"]), "var": jnp.ones_like(params[n]["gamma"])}
          for n in names}


def program_net(folded: dict, chip_key: PRNGKeyArray, config) -> list[Array]:
  """Programs every binary layer of a folded net onto a chip: w_eff per layer (static noise).

  Layer l uses fold_in(chip_key, l), so layers get independent device noise.
  """
  from jaxhw.crossbar.noise import program
  return [program(folded[n]["w"], jax.random.fold_in(chip_key, i), config)
          for i, n in enumerate(_xb_names(folded))]


def crossbar_layer_fn(w_effs: Sequence[Array], pulses, read_key: PRNGKeyArray, config, *, sigma=None,
                      sigma_p=None, mode: str | None = None, input_bits: Sequence[int] | None = None) -> LayerFn:
  """layer_fn that runs binary layer l on the simulated crossbar with T_l = pulses[l].

  Args:
    w_effs: programmed weights per layer (`program_net`).
    pulses: per-layer T (Python ints for per_pulse; a traced vector is fine in fast mode).
    read_key: dynamic-noise key; layer l uses fold_in(read_key, l).
    config: CrossbarConfig.
    sigma, sigma_p: overrides (may be traced).
    mode: "fast" / "per_pulse" (default config.mode).
    input_bits: per-layer input precision (default 1 for every layer).

  Returns:
    layer_fn(i, h, w) for `folded_net_apply` / `binary_net_apply`.
  """
  from jaxhw.crossbar.forward import crossbar_conv, crossbar_matmul

  def layer_fn(i, h, w):
    del w
    bits = 1 if input_bits is None else input_bits[i]
    kw = dict(pulses=pulses[i], read_key=jax.random.fold_in(read_key, i), config=config, sigma=sigma,
              sigma_p=sigma_p, input_bits=bits, mode=mode)
    if w_effs[i].ndim == 4:
      return crossbar_conv(h, w_effs[i], **kw)
    return crossbar_matmul(h, w_effs[i], **kw)

  return layer_fn


def noise_layer_fn(stds, key: PRNGKeyArray, offsets: Sequence[Array] | None = None) -> LayerFn:
  """layer_fn adding N(0, stds[l]^2) to binary layer l's exact output (fast-mode noise, as GBO
  uses it), plus optional zero `offsets` to take gradients with respect to the noisy outputs."""

  def layer_fn(i, h, w):
    y = _matmul(h, w)
    xi = _normal(jax.random.fold_in(key, i), y.shape)
    y = y + stds[i] * xi
    return y if offsets is None else y + offsets[i]

  return layer_fn


def gbo_objectives(folded: dict, *, binarize_input: float | None = 0.5):
  """The model side of GBO for a folded (frozen, inference-mode) net.

  Returns:
    (loss_fn, grad_fn): `loss_fn(stds, (x, y), key, net=folded)` mean cross-entropy with
    per-layer noise stds (pass the net as `model=` to `gbo` so that it is a jit argument, not a
    constant); `grad_fn(stds, (x, y), key)` per-sample gradients dl_i/dy_hat_l for every
    binary layer (for `fisher_sensitivity`).
  """
  import optax

  def loss_fn(stds, batch, key, net=None):
    x, y = batch
    net = folded if net is None else net
    logits = folded_net_apply(net, x, layer_fn=noise_layer_fn(stds, key), binarize_input=binarize_input)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))

  def _shapes(x):
    out = []

    def rec(i, h, w):
      y = _matmul(h, w)
      out.append(jax.ShapeDtypeStruct(y.shape, jnp.float32))
      return y

    jax.eval_shape(lambda xx: folded_net_apply(folded, xx, layer_fn=rec, binarize_input=binarize_input), x)
    return out

  @jax.jit
  def grad_fn_(folded, stds, batch, key):
    x, y = batch
    offsets = [jnp.zeros(s.shape, s.dtype) for s in _shapes(x)]

    def total(offs):
      logits = folded_net_apply(folded, x, layer_fn=noise_layer_fn(stds, key, offs), binarize_input=binarize_input)
      return jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits, y))

    return tuple(jax.grad(total)(offsets))

  def grad_fn(stds, batch, key):
    return grad_fn_(folded, stds, batch, key)

  return loss_fn, grad_fn
