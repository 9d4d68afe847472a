"""Discovers the studies in ``experiments/`` and runs them into work directories (resumable)."""

from __future__ import annotations

import importlib
import itertools
import pkgutil
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from jaxhw.config import PRESETS, ConfigError, apply_overrides, check_preset, config_to_dict, leaf_keys  # noqa: F401
from jaxhw.metrics import write_json


class UnknownStudyError(ValueError):
  """No study of that name exists in ``experiments/``."""


def list_studies() -> list[str]:
  """Names of the study modules in ``experiments/`` (found without importing them, so one broken study does not
  stop the others from running)."""
  from jaxhw import experiments

  return sorted(info.name for info in pkgutil.iter_modules(experiments.__path__) if not info.name.startswith("_"))


def load_study(name: str) -> ModuleType:
  """Imports ``experiments.<name>``; an unknown name raises `UnknownStudyError` listing the known ones."""
  known = list_studies()
  if name not in known:
    raise UnknownStudyError(f"unknown study {name!r}. Known studies: {', '.join(known)}")
  module = importlib.import_module(f"jaxhw.experiments.{name}")
  if not (callable(getattr(module, "get_config", None)) and callable(getattr(module, "run", None))):
    raise UnknownStudyError(f"experiments/{name}.py is not a study: it must define get_config(preset) and "
                            f"run(config, workdir, *, quiet).")
  return module


def study_summary(module: ModuleType) -> str:
  """The first line of a study module's docstring."""
  return (module.__doc__ or "").strip().splitlines()[0] if module.__doc__ else ""


#: Overrides with this prefix configure data parallelism for any study (`jaxhw.parallel.ParallelConfig`).
PARALLEL_PREFIX = "parallel."


def parallel_keys() -> tuple[str, ...]:
  """The ``parallel.*`` override keys every study accepts."""
  from jaxhw.parallel import ParallelConfig

  return tuple(PARALLEL_PREFIX + k for k in leaf_keys(ParallelConfig()))


def split_parallel(overrides: dict[str, str]) -> tuple[Any, dict[str, str]]:
  """Separates the ``parallel.*`` overrides: returns ``(ParallelConfig, the study's own overrides)``.

  One mechanism for every study: the trainer reads the `ParallelConfig` (`jaxhw.parallel.use_parallel` around the
  study's run), so a study needs no parallel field of its own.
  """
  from jaxhw.parallel import ParallelConfig

  par = {k[len(PARALLEL_PREFIX):]: v for k, v in overrides.items() if k.startswith(PARALLEL_PREFIX)}
  rest = {k: v for k, v in overrides.items() if not k.startswith(PARALLEL_PREFIX)}
  valid = leaf_keys(ParallelConfig())
  unknown = [PARALLEL_PREFIX + k for k in par if k not in valid]
  if unknown:
    raise ConfigError(f"unknown config key {unknown[0]!r}. Valid parallel keys: {', '.join(parallel_keys())}")
  return apply_overrides(ParallelConfig(), par), rest


def make_config(name: str, preset: str = "quick", overrides: dict[str, str] | None = None) -> Any:
  """The config of study `name` at `preset` with `overrides` applied (``parallel.*`` keys excluded: see
  `split_parallel`)."""
  check_preset(preset)
  return apply_overrides(load_study(name).get_config(preset), overrides or {}, extra_keys=parallel_keys())


def is_finished(workdir: Path) -> bool:
  """A run is finished when its ``summary.json`` exists."""
  return (Path(workdir) / "summary.json").is_file()


def run_study(name: str, config: Any, workdir: str | Path, *, quiet: bool = True, parallel: Any = None
              ) -> dict[str, Any]:
  """Runs study `name` with `config` in `workdir`, writing ``config.json`` first.

  Rerunning into the same workdir resumes the study's checkpointed training (a different config is refused by
  the checkpoints' fingerprints). `parallel` (a `jaxhw.parallel.ParallelConfig`) applies to every training call
  of the study and is recorded in ``config.json`` when not the default.
  """
  import dataclasses

  from jaxhw.parallel import ParallelConfig, use_parallel

  parallel = parallel if parallel is not None else ParallelConfig()
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  record = {"study": name, **config_to_dict(config)}
  if parallel != ParallelConfig():
    record["parallel"] = dataclasses.asdict(parallel)
  write_json(workdir / "config.json", record)
  t0 = time.perf_counter()
  with use_parallel(parallel):
    summary = load_study(name).run(config, workdir, quiet=quiet)
  summary.setdefault("wall_s", time.perf_counter() - t0)
  return summary


def parse_grid(specs: list[str], config: Any) -> list[dict[str, str]]:
  """Expands ``["train.lr=0.1,0.01", "train.seed=0,1"]`` into the list of override dicts (cartesian product)."""
  axes = []
  valid = leaf_keys(config) + list(parallel_keys())
  for spec in specs:
    if "=" not in spec:
      raise ConfigError(f"grid axis {spec!r} must look like key=v1,v2.")
    key, values = spec.split("=", 1)
    if key not in valid:
      raise ConfigError(f"unknown config key {key!r}. Valid keys: {', '.join(valid)}")
    axes.append([(key, v) for v in values.split(",") if v != ""])
  return [dict(point) for point in itertools.product(*axes)]


def point_name(point: dict[str, str]) -> str:
  """A directory name for a grid point, e.g. ``train.lr=0.1,train.seed=0``."""
  return ",".join(f"{k}={v}" for k, v in point.items()).replace("/", "_") or "default"
