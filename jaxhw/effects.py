"""Hardware effects attached to any Flax model from outside: the one mechanism every effect uses.

An effect never edits a model. There are two kinds:

* **Parameter effects** act on ``variables["params"]`` before the forward pass (bit flips, random bit errors,
  programming weights onto a crossbar, quantization). Each is a `ParamTransform`, an optax-style
  ``(init, apply)`` pair of pure functions: ``state = init(params)``,
  ``params, state = apply(params, state, key)``. Compose them with `chain`.
* **Forward effects** act on the Dense/Conv calls of a forward pass (crossbar read noise with pulse counts, an ADC,
  recording activations for conversion). Each is a function ``effect(call: LayerCall) -> output`` that sees the
  layer's identity (its path in the params tree), its inputs and parameters, and may recompute the layer with
  other parameters (``call.forward``), transform its output, draw noise with ``call.make_rng("noise")`` or store
  values with ``call.sow``. `attach(apply_fn, *effects)` returns an ``apply_fn`` with the effects in force; it is
  built on ``flax.linen.intercept_methods``, so it works on any Linen model, under ``jit``, ``grad`` and ``vmap``.

Example::

    noisy_apply = effects.attach(model.apply, crossbar.read_noise(sigma=0.5, pulses={"Dense_0": 4}))
    logits = jax.jit(noisy_apply)(variables, x, rngs={"noise": key})

Several effects on one layer nest: the first one given is the outermost, so its ``call.next()`` runs the others.

References:
  Heek et al., "Flax: A neural network library and ecosystem for JAX", 2020 (``intercept_methods``).
  Babuschkin et al., "The DeepMind JAX Ecosystem" (optax's ``GradientTransformation`` pattern), 2020.
"""

from __future__ import annotations

import contextvars
import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
from jaxtyping import Array, PRNGKeyArray

__all__ = [
    "ParamTransform", "identity", "chain", "LayerCall", "ForwardEffect", "attach", "intercept", "LAYER_TYPES",
    "layer_kind", "path_matches", "record_activations",
]

PyTree = Any
Path = tuple[str, ...]


class ParamTransform(NamedTuple):
  """An `(init, apply)` pair acting on a parameter pytree: ``apply(params, state, key) -> (params, state)``.

  ``init(params)`` returns the transform's state (any pytree, often ``()``); ``apply`` is pure and jittable, with
  every random draw taken from the explicit ``key``.
  """

  init: Callable[[PyTree], PyTree]
  apply: Callable[[PyTree, PyTree, PRNGKeyArray], tuple[PyTree, PyTree]]


def identity() -> ParamTransform:
  """The parameter effect that changes nothing (a neutral element for `chain`)."""
  return ParamTransform(lambda params: (), lambda params, state, key: (params, state))


def chain(*transforms: ParamTransform) -> ParamTransform:
  """Applies `transforms` in order, each with its own state and its own split of the key.

  Args:
    *transforms: parameter effects; the first is applied first.

  Returns:
    A `ParamTransform` whose state is the tuple of the transforms' states.
  """

  def init(params):
    return tuple(t.init(params) for t in transforms)

  def apply(params, state, key):
    keys = jax.random.split(key, max(1, len(transforms)))
    new_state = []
    for t, s, k in zip(transforms, state, keys):
      params, s = t.apply(params, s, k)
      new_state.append(s)
    return params, tuple(new_state)

  return ParamTransform(init, apply)


#: Linen layer classes whose ``__call__`` forward effects intercept, with the kind name effects see.
LAYER_TYPES: dict[type, str] = {nn.Dense: "dense", nn.Conv: "conv", nn.DenseGeneral: "dense"}


def layer_kind(module: nn.Module) -> str | None:
  """``"dense"`` or ``"conv"`` for a layer forward effects act on, else None."""
  for cls, kind in LAYER_TYPES.items():
    if isinstance(module, cls):
      return kind
  return None


@dataclasses.dataclass(frozen=True)
class LayerCall:
  """One Dense/Conv call seen by a forward effect.

  Attributes:
    module: the bound Linen layer.
    path: the layer's path in the params tree, e.g. ``("Dense_0",)`` or ``("block1", "Conv_0")``.
    kind: ``"dense"`` or ``"conv"``.
    inputs: the layer's input array.
    params: the layer's own parameters (``{"kernel": ..., "bias": ...}``).
    next: runs the rest of the chain (inner effects, then the layer itself) on the original inputs.
  """

  module: nn.Module
  path: Path
  kind: str
  inputs: Array
  params: Mapping[str, Array]
  next: Callable[[], Array]

  def forward(self, inputs: Array, params: Mapping[str, Array] | None = None) -> Array:
    """The layer's own computation on `inputs` with `params` (default: its own), no effects applied."""
    detached = self.module.clone(parent=None)
    token = _BYPASS.set(True)  # the recomputation is the layer itself: no effect sees it
    try:
      return detached.apply({"params": dict(self.params if params is None else params)}, inputs)
    finally:
      _BYPASS.reset(token)

  def make_rng(self, name: str = "noise") -> PRNGKeyArray:
    """A fresh key from the ``rngs={name: key}`` given to ``apply``, distinct for each layer and call."""
    return self.module.make_rng(name)

  def sow(self, collection: str, name: str, value: Any) -> None:
    """Stores `value` under ``collection/<layer path>/name`` (pass ``mutable=[collection]`` to ``apply``)."""
    self.module.sow(collection, name, value)


#: A forward effect: a function of the intercepted layer call that returns the layer's output (see `attach`).
ForwardEffect = Callable[[LayerCall], Array]

_BYPASS: contextvars.ContextVar[bool] = contextvars.ContextVar("jaxhw_effects_bypass", default=False)


def path_matches(path: Path, layers: Iterable[str | Sequence[str]] | None) -> bool:
  """Whether `path` is selected by `layers` (None selects all; entries are ``"a/b"`` strings or tuples)."""
  if layers is None:
    return True
  for sel in layers:
    sel_t = tuple(sel.split("/")) if isinstance(sel, str) else tuple(sel)
    if path[: len(sel_t)] == sel_t:
      return True
  return False


def _interceptor(effect: ForwardEffect):
  def interceptor(next_fun, args, kwargs, context):
    module = context.module
    kind = layer_kind(module)
    if kind is None or context.method_name != "__call__" or not args or _BYPASS.get():
      return next_fun(*args, **kwargs)
    params = module.variables.get("params", {})
    call = LayerCall(module=module, path=tuple(module.path), kind=kind, inputs=args[0], params=params,
                     next=lambda: next_fun(*args, **kwargs))
    return effect(call)

  return interceptor


class intercept:  # noqa: N801 - used as a context manager, like nn.intercept_methods
  """Context manager putting forward `effects` in force for Linen calls traced inside it.

  Prefer `attach`, which enters the context inside the function, so a jitted function always carries its
  effects. The first effect is the outermost.
  """

  def __init__(self, *effects: ForwardEffect):
    self._effects = effects
    self._stack: list[Any] = []

  def __enter__(self):
    for effect in self._effects:
      ctx = nn.intercept_methods(_interceptor(effect))
      ctx.__enter__()
      self._stack.append(ctx)
    return self

  def __exit__(self, *exc):
    while self._stack:
      self._stack.pop().__exit__(*exc)
    return False


def attach(apply_fn: Callable[..., Any], *effects: ForwardEffect) -> Callable[..., Any]:
  """Returns `apply_fn` with forward `effects` in force on every Dense/Conv call it makes.

  Args:
    apply_fn: a Linen ``model.apply`` (or any function that calls one).
    *effects: forward effects; the first is the outermost.

  Returns:
    A function with the signature of `apply_fn`; pass ``rngs={"noise": key}`` when an effect draws noise and
    ``mutable=[...]`` when one sows.
  """
  if not effects:
    return apply_fn

  def wrapped(*args, **kwargs):
    with intercept(*effects):
      return apply_fn(*args, **kwargs)

  wrapped.__wrapped__ = apply_fn
  return wrapped


def record_activations(collection: str = "activations", *, layers=None, inputs: bool = False) -> ForwardEffect:
  """A forward effect that sows each selected layer's output (and optionally input) into `collection`.

  Used to gather the activation statistics that ANN-to-SNN conversion normalises with; call ``apply`` with
  ``mutable=[collection]``.

  Args:
    collection: the variable collection to sow into.
    layers: paths to record (None: all Dense/Conv layers).
    inputs: also record each layer's input under ``"inputs"``.

  Returns:
    A forward effect.
  """

  def effect(call: LayerCall) -> Array:
    out = call.next()
    if path_matches(call.path, layers):
      call.sow(collection, "outputs", out)
      if inputs:
        call.sow(collection, "inputs", call.inputs)
    return out

  return effect
