"""The MemN2N training recipe: summed cross-entropy, plain SGD clipped at a global norm of 40, linear start (LS),
random empty memories (RN), a step schedule halving the learning rate, and best-of-N seeds chosen on validation.

It works on any ``apply_fn(params, stories, query, time, linear) -> logits`` (any model with MemN2N's inputs) and
trains through the one trainer, `jaxhw.train.train`.

References:
  Sukhbaatar et al., "End-To-End Memory Networks", NeurIPS 2015, arXiv:1503.08895, section 4.2 (training).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxhw.mann.babi import BabiArrays
from jaxhw.mann.batches import BucketedBatches
from jaxhw.mann.encoding import random_time_indices
from jaxhw.train import TrainConfig, TrainResult, train

ApplyFn = Callable[..., jax.Array]


@dataclasses.dataclass(frozen=True)
class Recipe:
  """MemN2N optimisation settings (defaults: the per-task 1k recipe with LS and RN).

  Attributes:
    lr: learning rate after linear start.
    ls_lr: learning rate during linear start.
    epochs: epochs after linear start.
    decay_every: halve the learning rate every this many epochs (after linear start).
    ls_epochs: linear-start epochs (raw scores, no hop softmax) at a constant `lr`; 0 disables LS.
    batch_size: questions per step; the loss is the batch's summed cross-entropy.
    clip_norm: global gradient L2 norm clip.
    random_noise: RN, the fraction of empty memories mimicked by the temporal indices (0 disables).
    buckets: memory sizes the training batches are cut to by story length (see `BucketedBatches`).
  """

  lr: float = 0.005
  ls_lr: float = 0.005
  epochs: int = 100
  decay_every: int = 25
  ls_epochs: int = 20
  batch_size: int = 32
  clip_norm: float = 40.0
  random_noise: float = 0.1
  buckets: tuple[int, ...] = (10, 25, 50)

  def __post_init__(self):
    for name in ("epochs", "decay_every", "batch_size"):
      if getattr(self, name) < 1:
        raise ValueError(f"recipe.{name} must be >= 1, got {getattr(self, name)}.")
    if self.ls_epochs < 0 or self.lr <= 0 or self.clip_norm <= 0 or not 0 <= self.random_noise < 1:
      raise ValueError(f"invalid recipe {self}: need ls_epochs >= 0, lr > 0, clip_norm > 0, 0 <= random_noise < 1.")

  def total_epochs(self) -> int:
    return self.ls_epochs + self.epochs


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
  return max(1, num_examples // batch_size)


def make_optimizer(recipe: Recipe, steps_per_epoch: int) -> optax.GradientTransformation:
  """Global-norm clipping, then SGD: ``ls_lr`` during linear start, then ``lr`` halved every ``decay_every``
  epochs."""
  start = recipe.ls_epochs * steps_per_epoch
  boundaries = {start + i * recipe.decay_every * steps_per_epoch: 0.5
                for i in range(1, recipe.epochs // recipe.decay_every + 1)}
  after = optax.piecewise_constant_schedule(recipe.lr, {b - start: f for b, f in boundaries.items()})
  schedule = optax.join_schedules([optax.constant_schedule(recipe.ls_lr), after], [start]) if start else after
  return optax.chain(optax.clip_by_global_norm(recipe.clip_norm), optax.sgd(schedule))


def make_loss_fn(apply_fn: ApplyFn, recipe: Recipe, steps_per_epoch: int, memory_size: int):
  """``loss_fn(params, batch, key, step)`` for `jaxhw.train.train`: summed cross-entropy with LS and RN.

  Args:
    apply_fn: ``apply_fn(params, stories, query, time, linear, key) -> logits`` (params already transformed).
    recipe: the recipe.
    steps_per_epoch: optimiser steps per epoch (sets the end of linear start).
    memory_size: memory slots M.
  """
  ls_steps = recipe.ls_epochs * steps_per_epoch

  def loss_fn(params, batch, key, step):
    stories, queries, answers, story_len = batch
    k_time, k_apply = jax.random.split(key)
    if recipe.random_noise > 0:
      time = random_time_indices(k_time, story_len, memory_size, recipe.random_noise, slots=stories.shape[1])
    else:
      time = None
    logits = apply_fn(params, stories, queries, time, step < ls_steps, k_apply)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, answers).sum()
    return loss, {"train_error": 1.0 - jnp.mean(jnp.argmax(logits, -1) == answers)}

  return loss_fn


def predict(apply_fn: Callable[[Any, jax.Array, jax.Array], jax.Array], params: Any, data: BabiArrays,
            batch_size: int = 1000) -> np.ndarray:
  """Logits of ``apply_fn(params, stories, query)`` over `data`, in fixed-size batches (pass a jitted function:
  every batch, a short last one or a split smaller than `batch_size` included, is padded to `batch_size` rows, so
  it compiles once for every split)."""
  fn = apply_fn
  n = len(data.answers)
  out = []
  for start in range(0, n, batch_size):
    idx = np.arange(start, min(start + batch_size, n))
    pad = np.concatenate([idx, np.full(batch_size - len(idx), idx[-1])]) if len(idx) < batch_size else idx
    logits = fn(params, jnp.asarray(data.stories[pad]), jnp.asarray(data.queries[pad]))
    out.append(np.asarray(logits)[: len(idx)])
  return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def task_errors(predictions: np.ndarray, data: BabiArrays, tasks: Sequence[int]) -> dict[int, float]:
  """Error (fraction) per task of predicted classes against `data.answers`."""
  wrong = predictions != data.answers
  return {int(t): float(wrong[data.tasks == t].mean()) if np.any(data.tasks == t) else float("nan") for t in tasks}


def fit(apply_fn: ApplyFn, params: Any, data: BabiArrays, recipe: Recipe, *, memory_size: int, seed: int = 0,
        workdir: str | Path | None = None, eval_fn: Callable[[Any], dict[str, float]] | None = None,
        eval_every_epochs: int = 0, fingerprint: dict | None = None, quiet: bool = True,
        desc: str = "memn2n") -> TrainResult:
  """Trains `params` with the recipe through `jaxhw.train.train`.

  Args:
    apply_fn: ``apply_fn(params, stories, query, time, linear, key) -> logits``.
    params: initial parameters.
    data: training questions.
    recipe: the recipe.
    memory_size: memory slots M.
    seed: data-order and per-step key seed.
    workdir: checkpoints and ``metrics.jsonl`` (None: in memory).
    eval_fn: run every `eval_every_epochs` epochs and at the end.
    eval_every_epochs: 0 evaluates only at the end.
    fingerprint: the run's identity for the checkpoints.
    quiet: hide the progress bar.
    desc: progress-bar label.
  """
  spe = steps_per_epoch(len(data.answers), recipe.batch_size)
  config = TrainConfig(optimizer="sgd", lr=recipe.lr, batch_size=recipe.batch_size, epochs=recipe.total_epochs(),
                       log_every=spe, eval_every=eval_every_epochs * spe, checkpoint_every=0, seed=seed)
  loss_fn = make_loss_fn(apply_fn, recipe, spe, memory_size)
  stream = BucketedBatches(data, recipe.batch_size, seed, recipe.buckets)
  return train(loss_fn, params, stream, config, workdir, eval_fn=eval_fn,
               tx=make_optimizer(recipe, spe), fingerprint=fingerprint or dataclasses.asdict(recipe), quiet=quiet,
               desc=desc)
