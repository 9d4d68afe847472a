"""One-shot initialisation of a Flax module: ``module.init`` compiled once, cheaply.

``init`` runs once per model, so what it costs is its compilation. Compiled at XLA backend optimisation level 0 it
compiles in about half the time (measured on 2 CPU cores: ResNet-18 5.0 -> 2.5 s, VGG-16 4.0 -> 2.3 s, Tiny YOLO
3.9 -> 2.0 s) and gives the same variables; run eagerly, every layer's ops compile one by one (Tiny YOLO 8.5 s).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax

ONE_SHOT = {"xla_backend_optimization_level": 0}
"""XLA compiler options for a function that runs once (``jax.jit(f, compiler_options=ONE_SHOT)``): skip the backend's
optimisation passes. Not for loops that run many times: fused elementwise code is much slower at level 0."""


def init_variables(module: nn.Module, key: jax.Array, *args: Any, **kwargs: Any) -> dict:
  """``module.init(key, *args, **kwargs)``, jitted with `ONE_SHOT` compiler options.

  Args:
    module: a Linen module.
    key: its PRNG key.
    *args: example inputs (arrays; their shapes and dtypes are what matters).
    **kwargs: static keyword arguments of the module's ``__call__`` (e.g. ``train=False``).

  Returns:
    The variables (``{"params": ..., "batch_stats": ...}``), as ``module.init`` returns them.
  """
  return jax.jit(lambda k, *a: module.init(k, *a, **kwargs), compiler_options=ONE_SHOT)(key, *args)
