"""LeNet-5 on vendored MNIST: the baseline every hardware study starts from (and the study template).

Run: ``jaxhw run mnist_baseline --preset quick`` (about a minute on 2 CPU cores). ``--preset full`` is the paper's
setting: LeNet-5 on the full MNIST (60,000 train / 10,000 test images, prepared with ``tfds build mnist``; without
it the run stops at once with that command), 40 epochs.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from jaxhw.config import check_preset
from jaxhw.data import MnistConfig, load_mnist_splits, random_shift
from jaxhw.metrics import accuracy, batched_accuracy, cross_entropy, write_json
from jaxhw.models import LeNet5, mlp
from jaxhw.report import Table, figure, write_study_report
from jaxhw.train import TrainConfig, train

PAPER_ACCURACY = 0.9905  # LeCun et al. 1998, LeNet-5 on the full 60k training set (0.95% test error).


@dataclasses.dataclass(frozen=True)
class DataConfig(MnistConfig):
  max_shift: int = 2       # random translation augmentation, pixels (0: off)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  name: str = "lenet"      # lenet | mlp
  hidden: int = 128        # MLP hidden width

  def __post_init__(self):
    if self.name not in ("lenet", "mlp"):
      raise ValueError(f"model.name must be 'lenet' or 'mlp', got {self.name!r}.")


@dataclasses.dataclass(frozen=True)
class Config:
  data: DataConfig = DataConfig()
  model: ModelConfig = ModelConfig()
  train: TrainConfig = TrainConfig()
  seed: int = 0


def get_config(preset: str = "quick") -> Config:
  """Presets: ``smoke`` (seconds), ``quick`` (about a minute on 2 CPU cores, vendored 5k subset), ``full`` (the
  paper's setting: LeNet-5 on the full 60k MNIST through tfds, 40 epochs)."""
  check_preset(preset)
  if preset == "smoke":
    return Config(data=DataConfig(train_size=512, test_size=500),
                  train=TrainConfig(steps=20, batch_size=64, lr=2e-3, log_every=5, checkpoint_every=10))
  if preset == "quick":
    return Config(train=TrainConfig(epochs=12, batch_size=64, lr=2e-3, schedule="cosine", log_every=20,
                                    eval_every=200, checkpoint_every=200))
  return Config(data=DataConfig(source="tfds"),
                train=TrainConfig(epochs=40, batch_size=64, lr=2e-3, schedule="cosine", log_every=20,
                                  eval_every=500, checkpoint_every=500))


def _model(config: Config):
  return LeNet5() if config.model.name == "lenet" else mlp((784, config.model.hidden, 10))


def run(config: Config, workdir: Path, *, quiet: bool = True) -> dict:
  """Trains the model, evaluates it on the test set and writes summary.json, the plot and report.md."""
  workdir = Path(workdir)
  t0 = time.perf_counter()
  data = load_mnist_splits(config.data, seed=config.seed)
  x, y, xt, yt = data.x_train, data.y_train, data.x_test, data.y_test
  model = _model(config)

  def apply(params, images):
    return model.apply({"params": params}, images)

  apply_jit = jax.jit(apply)
  params = jax.jit(model.init)(jax.random.key(config.seed), jnp.zeros((1, *x.shape[1:]), jnp.float32))["params"]

  def loss_fn(params, batch, key, step):
    logits = apply(params, random_shift(key, batch[0], config.data.max_shift))
    return cross_entropy(logits, batch[1]), {"train_accuracy": accuracy(logits, batch[1])}

  def eval_fn(params):
    return {"test_accuracy": batched_accuracy(apply_jit, params, xt, yt)}

  result = train(loss_fn, params, (x, y), config.train, workdir, eval_fn=eval_fn,
                 fingerprint=dataclasses.asdict(config), quiet=quiet, desc="mnist_baseline")
  test_acc = result.final_eval["test_accuracy"]
  summary = {"test_accuracy": test_acc, "steps": result.steps, "wall_s": time.perf_counter() - t0,
             "step_ms": 1e3 * result.step_time_s, "paper_accuracy": PAPER_ACCURACY}
  write_json(workdir / "summary.json", summary)

  fig = figure(figsize=(10, 3.5))
  ax = fig.subplots(1, 2)
  steps = [r["step"] for r in result.history]
  ax[0].plot(steps, [r["loss"] for r in result.history])
  ax[0].set(xlabel="step", ylabel="train loss (batch)", yscale="log", title="training loss")
  ev = [(r["step"], r["eval_test_accuracy"]) for r in result.history if "eval_test_accuracy" in r]
  if ev:
    ax[1].plot(*zip(*ev), marker="o", label="jaxhw")
  ax[1].axhline(PAPER_ACCURACY, color="gray", ls="--", label="LeNet-5 paper (60k train)")
  ax[1].set(xlabel="step", ylabel="test accuracy", title="test accuracy", ylim=(0.9, 1.0))
  ax[1].legend()
  fig.tight_layout()
  fig.savefig(workdir / "training.png", dpi=100)

  src = "full MNIST through tfds" if config.data.source == "tfds" else "vendored subset"
  scale = f"MNIST, {len(x):,} train images ({src}), {len(xt):,} test images"
  write_study_report(
      workdir, study="mnist_baseline", title=f"MNIST baseline: {config.model.name}",
      setup={"data": scale, "model": config.model.name, "optimizer": f"{config.train.optimizer}, lr "
             f"{config.train.lr}, {config.train.schedule}", "steps": result.steps, "seed": config.seed},
      tables=[Table("Test accuracy", ["", "paper (LeNet-5, 60k train)", "jaxhw", "gap (points)"],
                    [["top-1", PAPER_ACCURACY, test_acc, 100 * (test_acc - PAPER_ACCURACY)]]),
              Table("Cost", ["wall s", "steps", "ms / step"], [[summary["wall_s"], result.steps,
                                                                 summary["step_ms"]]])],
      plots=["training.png"],
      notes=[(f"Trained on {len(x):,} images" + (": the paper's setting (60,000 MNIST training images)"
                                                   if len(x) >= 60000 else
                                                   f", {60000 / len(x):.0f}x fewer than the paper's 60,000")
              + f" (with random shifts of up to {config.data.max_shift} px)"
              + ("." if len(x) >= 60000 else "; the gap to the paper's figure is mostly the smaller training set "
                 "(`--preset full` trains on all 60,000)."))])
  return summary
