"""The one training loop: optax optimizer from the config, jitted steps, metrics, checkpoints, resume.

Every study trains through `train`. A run with a workdir is resumable: it checkpoints params, optimizer state,
step, the data iterator's position and the RNG key, and a rerun of the same config continues from the latest
checkpoint and ends with exactly the params and loss curve of an uninterrupted run. SIGTERM saves and stops
(`TrainingInterrupted`); a non-finite loss stops with `NonFiniteLossError` naming the step and the last good
checkpoint.
"""

from __future__ import annotations

import dataclasses
import functools
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from jaxhw.checkpoint import Checkpointer
from jaxhw.data.iterator import BatchIterator, Stream
from jaxhw.metrics import append_jsonl, read_jsonl, to_jsonable, write_jsonl

PyTree = Any
LossFn = Callable[..., tuple[jax.Array, Any]]

OPTIMIZERS = ("adam", "adamw", "sgd", "momentum", "rmsprop", "sam")
SCHEDULES = ("constant", "cosine", "warmup_cosine")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Optimisation settings shared by every study.

  Attributes:
    optimizer: one of `OPTIMIZERS`; ``sam`` is SAM (optax.contrib.sam, opaque mode) around Adam.
    lr: peak learning rate.
    schedule: one of `SCHEDULES`.
    warmup_steps: linear warm-up steps for ``warmup_cosine``.
    weight_decay: decoupled for ``adamw``, an L2 term added to the gradient otherwise (0 disables).
    momentum: momentum for ``momentum``; decay for ``rmsprop``.
    sam_rho: SAM's neighbourhood radius.
    batch_size: examples per step.
    epochs: passes over the data (ignored when ``steps`` > 0).
    steps: total optimisation steps; 0 derives them from ``epochs``.
    eval_every: run ``eval_fn`` every this many steps (0: only at the end).
    log_every: append a line to ``metrics.jsonl`` every this many steps.
    checkpoint_every: save every this many steps (0: only at the end and on SIGTERM).
    keep_checkpoints: how many recent checkpoints to keep.
    seed: seed of the parameter-independent randomness (data order, per-step keys).
  """

  optimizer: str = "adam"
  lr: float = 1e-3
  schedule: str = "constant"
  warmup_steps: int = 0
  weight_decay: float = 0.0
  momentum: float = 0.9
  sam_rho: float = 0.05
  batch_size: int = 128
  epochs: int = 1
  steps: int = 0
  eval_every: int = 0
  log_every: int = 50
  checkpoint_every: int = 0
  keep_checkpoints: int = 2
  seed: int = 0

  def __post_init__(self):
    if self.optimizer not in OPTIMIZERS:
      raise ValueError(f"train.optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}.")
    if self.schedule not in SCHEDULES:
      raise ValueError(f"train.schedule must be one of {SCHEDULES}, got {self.schedule!r}.")
    for name in ("batch_size", "keep_checkpoints", "log_every"):
      if getattr(self, name) < 1:
        raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}.")
    if self.lr <= 0:
      raise ValueError(f"train.lr must be > 0, got {self.lr}.")
    if self.steps < 0 or self.epochs < 0 or (self.steps == 0 and self.epochs == 0):
      raise ValueError(f"train.steps or train.epochs must be positive, got steps={self.steps}, "
                       f"epochs={self.epochs}.")


class TrainResult(NamedTuple):
  """What `train` returns.

  Attributes:
    params: final parameters.
    steps: steps taken in total (including before a resume).
    history: the logged records (``metrics.jsonl`` lines), oldest first.
    final_eval: ``eval_fn(params)`` at the end (empty without one).
    wall_s: wall time of this call.
    step_time_s: median wall time of one step in this call (after compilation).
    model_state: the final mutable model collections (None when training without `model_state`).
  """

  params: PyTree
  steps: int
  history: list[dict[str, Any]]
  final_eval: dict[str, float]
  wall_s: float
  step_time_s: float
  model_state: PyTree | None = None


class TrainingInterrupted(Exception):
  """SIGTERM arrived; a checkpoint of `step` was saved in `checkpoint`. Rerun to resume."""

  def __init__(self, step: int, checkpoint: Path | None):
    self.step, self.checkpoint = step, checkpoint
    super().__init__(f"interrupted by SIGTERM at step {step}; checkpoint saved at {checkpoint}. "
                     "Run the same command again to resume.")


class NonFiniteLossError(FloatingPointError):
  """The loss became NaN or Inf."""

  def __init__(self, step: int, loss: float, last_good: Path | None):
    self.step, self.loss, self.last_good = step, loss, last_good
    where = f"the last good checkpoint is {last_good}" if last_good else "no checkpoint was saved before it"
    super().__init__(f"loss is {loss} at step {step}; stopped. {where}. Lower the learning rate or check the "
                     "inputs, then rerun.")


def total_steps(config: TrainConfig, num_examples: int) -> int:
  """Steps implied by the config for a dataset of `num_examples` (drop-remainder batches)."""
  if config.steps > 0:
    return config.steps
  return max(1, num_examples // config.batch_size) * config.epochs


def make_schedule(config: TrainConfig, steps: int) -> optax.Schedule:
  """The learning-rate schedule named by ``config.schedule``."""
  if config.schedule == "constant":
    return optax.constant_schedule(config.lr)
  if config.schedule == "cosine":
    return optax.cosine_decay_schedule(config.lr, decay_steps=max(1, steps))
  return optax.warmup_cosine_decay_schedule(0.0, config.lr, warmup_steps=config.warmup_steps,
                                            decay_steps=max(config.warmup_steps + 1, steps))


def make_optimizer(config: TrainConfig, steps: int) -> optax.GradientTransformation:
  """Builds the optax optimizer described by `config` for a run of `steps` steps."""
  lr = make_schedule(config, steps)
  l2 = [optax.add_decayed_weights(config.weight_decay)] if config.weight_decay and config.optimizer != "adamw" else []
  if config.optimizer == "adamw":
    return optax.adamw(lr, weight_decay=config.weight_decay)
  base = {
      "adam": lambda: optax.adam(lr),
      "sam": lambda: optax.adam(lr),
      "sgd": lambda: optax.sgd(lr),
      "momentum": lambda: optax.sgd(lr, momentum=config.momentum),
      "rmsprop": lambda: optax.rmsprop(lr, decay=config.momentum, eps=1e-8),
  }[config.optimizer]()
  tx = optax.chain(*l2, base)
  if config.optimizer == "sam":
    adversary = optax.chain(optax.contrib.normalize(), optax.sgd(config.sam_rho))
    tx = optax.contrib.sam(tx, adversary, opaque_mode=True)
  return tx


def make_train_step(loss_fn: LossFn, tx: optax.GradientTransformation, *, sam: bool = False,
                    stateful: bool = False):
  """The pure step ``(params, opt_state, model_state, batch, key, step) -> (params, opt_state, model_state, loss,
  aux)``; without `stateful`, `loss_fn` takes no model state and ``model_state`` passes through unchanged."""
  if stateful:
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  else:
    def stateless(params, mstate, batch, key, step):
      loss, aux = loss_fn(params, batch, key, step)
      return loss, (aux, mstate)

    grad_fn = jax.value_and_grad(stateless, has_aux=True)

  def step_fn(params, opt_state, mstate, batch, key, step):
    (loss, (aux, new_mstate)), grads = grad_fn(params, mstate, batch, key, step)
    extra = {}
    if sam:
      extra["grad_fn"] = lambda p, _: grad_fn(p, mstate, batch, key, step)[1]
    updates, opt_state = tx.update(grads, opt_state, params, **extra)
    return optax.apply_updates(params, updates), opt_state, new_mstate, loss, aux

  return step_fn


@functools.lru_cache(maxsize=16)
def _jitted_step(loss_fn: LossFn, tx: optax.GradientTransformation, sam: bool, stateful: bool):
  """The jitted step, cached per (loss_fn, tx): calls of `train` that pass the same loss and optimizer objects (a
  sweep over data or initial params) compile it once."""
  return jax.jit(make_train_step(loss_fn, tx, sam=sam, stateful=stateful), donate_argnums=(0, 1, 2))


def as_stream(data: tuple[np.ndarray, ...] | Stream, config: TrainConfig) -> Stream:
  """`data` as a resumable stream: arrays are wrapped in a `BatchIterator` with the config's batch size and seed."""
  if isinstance(data, (tuple, list)):
    return BatchIterator(tuple(data), config.batch_size, seed=config.seed)
  if not isinstance(data, Stream):
    raise TypeError(f"data must be a tuple of arrays or a jaxhw.data.Stream (an iterator with get_state and "
                    f"set_state), got {type(data).__name__}.")
  return data


def _steps_for(config: TrainConfig, stream: Stream) -> int:
  if config.steps > 0:
    return config.steps
  n = getattr(stream, "num_examples", None)
  if n is None:
    raise ValueError(f"train.steps must be set (> 0) for a stream without num_examples "
                     f"({type(stream).__name__}); train.epochs needs the epoch size.")
  return total_steps(config, int(n))


class _SigtermFlag:
  """Sets a flag on SIGTERM while active (main thread only); restores the previous handler on exit."""

  def __init__(self):
    self.raised = False
    self._previous = None

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    self.raised = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def train(loss_fn: LossFn, params: PyTree, data: tuple[np.ndarray, ...] | Stream, config: TrainConfig,
          workdir: str | Path | None = None, *, model_state: PyTree | None = None,
          eval_fn: Callable[..., dict[str, float]] | None = None,
          tx: optax.GradientTransformation | None = None, fingerprint: dict[str, Any] | None = None,
          quiet: bool = True, desc: str = "train") -> TrainResult:
  """Trains `params` on `data` with `loss_fn`.

  Args:
    loss_fn: ``loss_fn(params, batch, key, step) -> (loss, aux)``, with ``batch`` what the stream yields (the
      tuple of arrays for array data), ``key`` a fresh PRNG key per step and ``step`` an int32 scalar; ``aux`` is
      a dict of scalars that is logged. With `model_state`, the signature is
      ``loss_fn(params, model_state, batch, key, step) -> (loss, (aux, new_model_state))``. Jitted here.
    params: initial parameters (ignored when resuming): any pytree the optimizer updates, e.g. a model's
      ``variables["params"]``, or a dict holding extra optimised state beside them (a dual variable, kernel
      parameters); pass a matching `tx` (e.g. ``optax.multi_transform``) when parts need their own rule.
    data: training arrays sharing their first axis (shuffled into batches by `BatchIterator`), or any
      `jaxhw.data.Stream` (an endless iterator with ``get_state``/``set_state``); a stream without
      ``num_examples`` needs ``config.steps``.
    config: optimisation settings.
    workdir: where ``metrics.jsonl`` and ``checkpoints/`` go; None trains in memory only.
    model_state: mutable model collections carried from step to step but not optimised (e.g.
      ``{"batch_stats": ...}`` of batch norm); checkpointed with the params.
    eval_fn: ``eval_fn(params) -> dict`` (``eval_fn(params, model_state)`` with `model_state`) run every
      ``config.eval_every`` steps and at the end.
    tx: an optax transformation replacing the one built from `config`.
    fingerprint: JSON-able identity of the run (its full config); checkpoints of another fingerprint are
      refused. Defaults to `config` itself.
    quiet: hide the progress bar (it is also hidden when stderr is not a terminal).
    desc: progress-bar label.

  Returns:
    A `TrainResult`.

  Raises:
    TrainingInterrupted: SIGTERM arrived; the state was saved first.
    NonFiniteLossError: the loss became NaN/Inf.
    jaxhw.checkpoint.CheckpointError: the workdir holds a checkpoint that cannot be trusted.
  """
  t_start = time.perf_counter()
  iterator = as_stream(data, config)
  n_steps = _steps_for(config, iterator)
  sam = tx is None and config.optimizer == "sam"
  tx = tx if tx is not None else make_optimizer(config, n_steps)
  stateful = model_state is not None
  step_fn = _jitted_step(loss_fn, tx, sam, stateful)
  base_key = jax.random.key(config.seed)

  state = {"params": params, "opt_state": tx.init(params), "key": jax.random.key_data(base_key)}
  if stateful:
    state["model_state"] = model_state
  start = 0
  metrics_path = Path(workdir) / "metrics.jsonl" if workdir is not None else None
  checkpointer = None
  if workdir is not None:
    checkpointer = Checkpointer(Path(workdir) / "checkpoints", max_to_keep=config.keep_checkpoints,
                                fingerprint=to_jsonable(fingerprint if fingerprint is not None
                                                        else dataclasses.asdict(config)))
    if checkpointer.latest_step() is not None:
      state, extra, start = checkpointer.restore(state)
      iterator.set_state(extra["iterator"])
      # Lines logged after the checkpoint were produced by the interrupted run; they are redone below.
      write_jsonl(metrics_path, [r for r in read_jsonl(metrics_path) if r.get("step", 0) <= start])
    elif metrics_path.exists():
      metrics_path.unlink()
  history = read_jsonl(metrics_path) if metrics_path is not None else []
  base_key = jax.random.wrap_key_data(jnp.asarray(state["key"]))
  # Copies: the step donates its buffers, and the caller's arrays must stay valid.
  params, opt_state = jax.tree.map(jnp.array, state["params"]), jax.tree.map(jnp.array, state["opt_state"])
  mstate = jax.tree.map(jnp.array, state["model_state"]) if stateful else {}

  def evaluate() -> dict[str, float]:
    return eval_fn(params, mstate) if stateful else eval_fn(params)

  last_saved: Path | None = checkpointer.step_path(start) if checkpointer and start else None

  def save(step: int) -> Path | None:
    nonlocal last_saved
    if checkpointer is None or step == 0 or (last_saved is not None and last_saved.name == str(step)):
      return last_saved
    saved = {"params": params, "opt_state": opt_state, "key": jax.random.key_data(base_key)}
    if stateful:
      saved["model_state"] = mstate
    last_saved = checkpointer.save(step, saved,
                                   {"iterator": iterator.get_state(), "step": step})
    return last_saved

  def log(record: dict[str, Any]) -> None:
    record = to_jsonable(record)
    history.append(record)
    if metrics_path is not None:
      append_jsonl(metrics_path, record)

  step_times: list[float] = []
  show = not quiet and sys.stderr.isatty()
  with _SigtermFlag() as sigterm, tqdm(total=n_steps, initial=start, desc=desc, disable=not show,
                                       leave=False) as bar:
    for step in range(start, n_steps):
      batch = jax.tree.map(jnp.asarray, next(iterator))
      t0 = time.perf_counter()
      key = jax.random.fold_in(base_key, step)
      params, opt_state, mstate, loss, aux = step_fn(params, opt_state, mstate, batch, key,
                                                     jnp.asarray(step, jnp.int32))
      loss_value = float(loss)
      step_times.append(time.perf_counter() - t0)
      done = step + 1
      if not np.isfinite(loss_value):
        raise NonFiniteLossError(done, loss_value, last_saved)
      bar.update(1)
      record = None
      if done % config.log_every == 0 or done == n_steps:
        record = {"step": done, "loss": loss_value, **{k: float(v) for k, v in aux.items()}}
      if eval_fn is not None and config.eval_every and done % config.eval_every == 0 and done != n_steps:
        record = (record or {"step": done, "loss": loss_value}) | {f"eval_{k}": v for k, v in evaluate().items()}
      if record is not None:
        log(record)
        bar.set_postfix(loss=f"{loss_value:.4f}")
      if config.checkpoint_every and done % config.checkpoint_every == 0:
        save(done)
      if sigterm.raised:
        raise TrainingInterrupted(done, save(done))
    final_eval = evaluate() if eval_fn is not None else {}
    if final_eval:
      if history and history[-1]["step"] == n_steps:
        history[-1].update({f"eval_{k}": v for k, v in to_jsonable(final_eval).items()})
        if metrics_path is not None:
          write_jsonl(metrics_path, read_jsonl(metrics_path)[:-1] + [history[-1]])
    save(n_steps)
  if checkpointer is not None:
    checkpointer.close()
  compiled_times = step_times[1:] or step_times
  return TrainResult(params, n_steps, history, final_eval, time.perf_counter() - t_start,
                     float(np.median(compiled_times)) if compiled_times else 0.0,
                     mstate if stateful else None)
