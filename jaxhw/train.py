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
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm.auto import tqdm

from jaxhw.checkpoint import Checkpointer
from jaxhw.data.iterator import BatchIterator, Stream
from jaxhw.metrics import append_jsonl, read_jsonl, to_jsonable, write_jsonl
from jaxhw.parallel.mesh import (
  DATA_AXIS,
  ParallelConfig,
  check_divisible,
  current_parallel,
  data_mesh,
  replicate,
  resolve_devices,
  shard_batch,
  to_host_local,
)

PyTree = Any
LossFn = Callable[..., tuple[jax.Array, Any]]

OPTIMIZERS = ("adam", "adamw", "sgd", "momentum", "rmsprop", "sam", "lars", "lamb")
SCHEDULES = ("constant", "cosine", "warmup_cosine", "warmup_constant")
LR_SCALINGS = ("none", "linear")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Optimisation settings shared by every study.

  Attributes:
    optimizer: one of `jaxhw.train.OPTIMIZERS`; ``sam`` is SAM (optax.contrib.sam, opaque mode) around Adam; ``lars``
      (You et al., arXiv:1708.03888) and ``lamb`` (You et al., arXiv:1904.00962) are the layer-wise large-batch
      rules, with weight decay and trust ratio on kernels only (biases and norm scales excluded).
    lr: peak learning rate (at ``base_batch_size`` when ``lr_scaling`` is ``linear``).
    schedule: one of `jaxhw.train.SCHEDULES`.
    warmup_steps: linear warm-up steps for ``warmup_cosine`` and ``warmup_constant``.
    lr_scaling: ``linear`` multiplies ``lr`` by ``batch_size / base_batch_size`` (Goyal et al., arXiv:1706.02677);
      ``none`` keeps it.
    base_batch_size: the batch size ``lr`` was tuned for (linear scaling only).
    weight_decay: decoupled for ``adamw``, ``lars`` and ``lamb``, an L2 term added to the gradient otherwise
      (0 disables).
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
  lr_scaling: str = "none"
  base_batch_size: int = 256
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
    if self.lr_scaling not in LR_SCALINGS:
      raise ValueError(f"train.lr_scaling must be one of {LR_SCALINGS}, got {self.lr_scaling!r}.")
    for name in ("batch_size", "keep_checkpoints", "log_every", "base_batch_size"):
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


def peak_lr(config: TrainConfig) -> float:
  """``lr``, scaled by ``batch_size / base_batch_size`` under linear scaling (Goyal et al., arXiv:1706.02677)."""
  if config.lr_scaling == "linear":
    return config.lr * config.batch_size / config.base_batch_size
  return config.lr


def make_schedule(config: TrainConfig, steps: int) -> optax.Schedule:
  """The learning-rate schedule named by ``config.schedule``, peaking at `peak_lr`."""
  lr = peak_lr(config)
  if config.schedule == "constant":
    return optax.constant_schedule(lr)
  if config.schedule == "cosine":
    return optax.cosine_decay_schedule(lr, decay_steps=max(1, steps))
  if config.schedule == "warmup_constant":
    return optax.join_schedules([optax.linear_schedule(0.0, lr, max(1, config.warmup_steps)),
                                 optax.constant_schedule(lr)], [max(1, config.warmup_steps)])
  return optax.warmup_cosine_decay_schedule(0.0, lr, warmup_steps=config.warmup_steps,
                                            decay_steps=max(config.warmup_steps + 1, steps))


def _kernel_mask(params: PyTree) -> PyTree:
  """True for weight matrices and conv kernels; False for biases and norm scales (ndim <= 1)."""
  return jax.tree.map(lambda x: jnp.ndim(x) > 1, params)


def make_optimizer(config: TrainConfig, steps: int) -> optax.GradientTransformation:
  """Builds the optax optimizer described by `config` for a run of `steps` steps."""
  lr = make_schedule(config, steps)
  decoupled = ("adamw", "lars", "lamb")
  l2 = ([optax.add_decayed_weights(config.weight_decay)] if config.weight_decay and config.optimizer not in decoupled
        else [])
  if config.optimizer == "adamw":
    return optax.adamw(lr, weight_decay=config.weight_decay)
  if config.optimizer == "lars":
    return optax.lars(lr, weight_decay=config.weight_decay, weight_decay_mask=_kernel_mask,
                      trust_coefficient=1e-3, trust_ratio_mask=_kernel_mask, momentum=config.momentum)
  if config.optimizer == "lamb":
    return optax.lamb(lr, b1=0.9, b2=0.999, eps=1e-6, weight_decay=config.weight_decay, mask=_kernel_mask)
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
                    stateful: bool = False, axis_name: str | None = None):
  """The pure step ``(params, opt_state, model_state, batch, key, step) -> (params, opt_state, model_state, loss,
  aux)``; without `stateful`, `loss_fn` takes no model state and ``model_state`` passes through unchanged.

  With `axis_name` the step runs per device inside ``jax.shard_map`` on its shard of the batch: it differentiates
  ``pmean`` of the local mean loss over `axis_name` (so the gradient is the global-batch gradient, replicated), and
  averages ``aux`` and the new model state (per-device batch statistics become their mean).
  """
  if stateful:
    local_fn = loss_fn
  else:
    def local_fn(params, mstate, batch, key, step):
      loss, aux = loss_fn(params, batch, key, step)
      return loss, (aux, mstate)

  if axis_name is None:
    grad_fn = jax.value_and_grad(local_fn, has_aux=True)
  else:
    def global_fn(params, mstate, batch, key, step):
      # Params enter shard_map invariant (P()); differentiating pmean(local loss) gives the mean gradient. A pmean
      # of the gradient of the local loss would be wrong: that gradient is already psummed (n times too large).
      loss, (aux, new_mstate) = local_fn(params, mstate, batch, key, step)
      mean = functools.partial(jax.lax.pmean, axis_name=axis_name)
      return mean(loss), (jax.tree.map(mean, aux), jax.tree.map(mean, new_mstate))

    grad_fn = jax.value_and_grad(global_fn, has_aux=True)

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


@functools.lru_cache(maxsize=16)
def _jitted_dp_step(loss_fn: LossFn, tx: optax.GradientTransformation, sam: bool, stateful: bool, mesh, variant: str,
                    donate: bool):
  replicated = NamedSharding(mesh, P())
  if variant == "shard_map":
    inner = make_train_step(loss_fn, tx, sam=sam, stateful=stateful, axis_name=DATA_AXIS)
    body = jax.shard_map(inner, mesh=mesh, in_specs=(P(), P(), P(), P(DATA_AXIS), P(), P()), out_specs=P())
  else:
    body = make_train_step(loss_fn, tx, sam=sam, stateful=stateful)

  def step(params, opt_state, mstate, batch, key_data, step):
    return body(params, opt_state, mstate, batch, jax.random.wrap_key_data(key_data), step)

  return jax.jit(step, out_shardings=replicated, donate_argnums=(0, 1, 2) if donate else ())


def compiled_step(loss_fn: LossFn, tx: optax.GradientTransformation, *, sam: bool = False, stateful: bool = False,
                  mesh=None, variant: str = "gspmd", donate: bool = True):
  """The jitted train step the trainer uses (cached per arguments).

  Without `mesh`: ``(params, opt_state, model_state, batch, key, step)`` on one device. With a ``("data",)``
  `mesh`: the batch sharded ``P("data")``, everything else replicated, the key passed as ``key_data``; `variant`
  ``gspmd`` lets XLA insert the all-reduce, ``shard_map`` runs the explicit per-device step.
  """
  if mesh is None:
    return _jitted_step(loss_fn, tx, sam, stateful) if donate else jax.jit(
        make_train_step(loss_fn, tx, sam=sam, stateful=stateful))
  return _jitted_dp_step(loss_fn, tx, sam, stateful, mesh, variant, donate)


def as_stream(data: tuple[np.ndarray, ...] | Stream, config: TrainConfig) -> Stream:
  """`data` as a resumable stream: arrays are wrapped in a `jaxhw.data.BatchIterator` (the config's batch size and
  seed)."""
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
          quiet: bool = True, desc: str = "train", parallel: ParallelConfig | None = None) -> TrainResult:
  """Trains `params` on `data` with `loss_fn`.

  Args:
    loss_fn: ``loss_fn(params, batch, key, step) -> (loss, aux)``, with ``batch`` what the stream yields (the
      tuple of arrays for array data), ``key`` a fresh PRNG key per step, ``fold_in(key(config.seed), step)``
      (so a resumed run draws the same keys), and ``step`` an int32 scalar; ``aux`` is a dict of scalars that is
      logged. With `model_state`, the signature is
      ``loss_fn(params, model_state, batch, key, step) -> (loss, (aux, new_model_state))``. Jitted here.
    params: initial parameters (ignored when resuming): any pytree the optimizer updates, e.g. a model's
      ``variables["params"]``, or a dict holding extra optimised state beside them (a dual variable, kernel
      parameters); pass a matching `tx` (e.g. ``optax.multi_transform``) when parts need their own rule.
    data: training arrays sharing their first axis (shuffled into batches by `jaxhw.data.BatchIterator`), or any
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
    parallel: data parallelism (default: the `jaxhw.parallel.use_parallel` setting in effect, else one device).
      With ``data=N`` > 1, or in a multi-process run, each global batch is split over a ``("data",)`` mesh and
      the state replicated; the losses and params equal the single-device run's on the same batches (up to float
      reassociation). The device count is not part of the checkpoint fingerprint: a run may resume on another.
      The returned params and those passed to `eval_fn` are ordinary single-device arrays.

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
  par = parallel if parallel is not None else current_parallel()
  n_dev = resolve_devices(par)
  mesh = data_mesh(n_dev) if (n_dev > 1 or jax.process_count() > 1) else None
  if mesh is not None and isinstance(data, (tuple, list)):
    check_divisible(config.batch_size, n_dev)
  step_fn = compiled_step(loss_fn, tx, sam=sam, stateful=stateful, mesh=mesh, variant=par.variant)
  writer = jax.process_index() == 0  # in a multi-process run, process 0 writes the metrics
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
      if writer:
        write_jsonl(metrics_path, [r for r in read_jsonl(metrics_path) if r.get("step", 0) <= start])
    elif metrics_path.exists() and writer:
      metrics_path.unlink()
  history = read_jsonl(metrics_path) if metrics_path is not None else []
  base_key = jax.random.wrap_key_data(jnp.asarray(state["key"]))
  # Copies: the step donates its buffers, and the caller's arrays must stay valid.
  copy = jnp.array if mesh is None else (lambda x: replicate(np.asarray(x), mesh))
  params, opt_state = jax.tree.map(copy, state["params"]), jax.tree.map(copy, state["opt_state"])
  mstate = jax.tree.map(copy, state["model_state"]) if stateful else {}
  local = (lambda t: t) if mesh is None else to_host_local

  def evaluate() -> dict[str, float]:
    return eval_fn(local(params), local(mstate)) if stateful else eval_fn(local(params))

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
    if metrics_path is not None and writer:
      append_jsonl(metrics_path, record)

  step_times: list[float] = []
  show = not quiet and sys.stderr.isatty()
  with _SigtermFlag() as sigterm, tqdm(total=n_steps, initial=start, desc=desc, disable=not show,
                                       leave=False) as bar:
    for step in range(start, n_steps):
      key = jax.random.fold_in(base_key, step)
      if mesh is None:
        batch, step_arg = jax.tree.map(jnp.asarray, next(iterator)), jnp.asarray(step, jnp.int32)
      else:
        batch, step_arg = shard_batch(next(iterator), mesh), replicate(np.int32(step), mesh)
        key = replicate(np.asarray(jax.random.key_data(key)), mesh)
      t0 = time.perf_counter()
      params, opt_state, mstate, loss, aux = step_fn(params, opt_state, mstate, batch, key, step_arg)
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
        if metrics_path is not None and writer:
          write_jsonl(metrics_path, read_jsonl(metrics_path)[:-1] + [history[-1]])
    save(n_steps)
  if checkpointer is not None:
    checkpointer.close()
  compiled_times = step_times[1:] or step_times
  return TrainResult(local(params), n_steps, history, final_eval, time.perf_counter() - t_start,
                     float(np.median(compiled_times)) if compiled_times else 0.0,
                     local(mstate) if stateful else None)
