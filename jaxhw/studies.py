"""Discovers the studies and runs them into work directories (resumable).

A study is a module with ``get_config(preset)`` and ``run(config, workdir, *, quiet)``. The built-in ones are the
modules of the repository's ``experiments/`` directory, installed as the package jaxhw.experiments. Other
distributions add studies through the ``jaxhw.studies`` entry-point group (`ENTRY_POINT_GROUP`), one entry point per
study naming its module; in ``pyproject.toml``::

    [project.entry-points."jaxhw.studies"]
    my_study = "my_package.my_study"

``jaxhw list`` and ``jaxhw run my_study`` then find it. An entry point whose module fails to import, or is not a
study, is skipped with a `StudyWarning` naming it (the other studies still list and run); a name that clashes with a
built-in study is shadowed: the built-in study wins, with a `StudyWarning`.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import itertools
import pkgutil
import re
import time
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

from jaxhw.config import PRESETS, ConfigError, apply_overrides, check_preset, config_to_dict, leaf_keys  # noqa: F401
from jaxhw.metrics import write_json

#: The entry-point group through which other distributions add studies: ``name = "package.module"``.
ENTRY_POINT_GROUP = "jaxhw.studies"

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


class UnknownStudyError(ValueError):
  """No study of that name exists, or the module registered under that name cannot be loaded as a study."""


class StudyWarning(UserWarning):
  """An external study (entry point) was skipped or shadowed; the message names it and says why."""


_WARNED: set[str] = set()


def _warn(message: str) -> None:
  # Each message once per process, however many times `jaxhw list` (list_studies, then load_study per name) comes
  # across it. (Python's own once-per-location registry is reset whenever an import touches the warning filters.)
  if message not in _WARNED:
    _WARNED.add(message)
    warnings.warn(message, StudyWarning, stacklevel=2)


def _builtin_studies() -> list[str]:
  """Names of the built-in study modules (jaxhw.experiments), found without importing them."""
  from jaxhw import experiments

  return sorted(info.name for info in pkgutil.iter_modules(experiments.__path__) if not info.name.startswith("_"))


def _describe(ep: importlib.metadata.EntryPoint) -> str:
  dist = getattr(ep, "dist", None)
  origin = f", distribution {dist.name} {dist.version}" if dist is not None else ""
  return f"entry point '{ep.name} = {ep.value}' (group {ENTRY_POINT_GROUP}{origin})"


def _external_studies() -> dict[str, importlib.metadata.EntryPoint]:
  """The entry points of `ENTRY_POINT_GROUP` by study name (not imported).

  A name that is not a valid study name is skipped; a name two distributions register keeps the first in sorted
  distribution order. Both are reported with a `StudyWarning`.
  """
  found: dict[str, importlib.metadata.EntryPoint] = {}
  eps = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
  for ep in sorted(eps, key=lambda e: (e.name, getattr(getattr(e, "dist", None), "name", "") or "")):
    if not _NAME.fullmatch(ep.name):
      _warn(f"{_describe(ep)}: {ep.name!r} is not a valid study name (letters, digits, _ and -, not starting "
            f"with a digit or -); skipped.")
    elif ep.name in found:
      _warn(f"study {ep.name!r} is registered twice: {_describe(found[ep.name])} is used, {_describe(ep)} is "
            f"ignored.")
    else:
      found[ep.name] = ep
  return found


def _shadowed(name: str, ep: importlib.metadata.EntryPoint) -> None:
  _warn(f"study {name!r} from {_describe(ep)} has the name of a built-in study: the built-in "
        f"jaxhw.experiments.{name} wins (`jaxhw run {name}` runs it); rename the entry point to use yours.")


def _check_study(module: Any, where: str) -> Any:
  """`module` if it has ``get_config(preset)`` and ``run(config, workdir, *, quiet)``, else `UnknownStudyError`."""
  get_config, run = getattr(module, "get_config", None), getattr(module, "run", None)
  problem = None
  if not (callable(get_config) and callable(run)):
    problem = "it must define get_config(preset) and run(config, workdir, *, quiet)"
  else:
    try:
      inspect.signature(run).bind(None, None, quiet=True)
    except TypeError:
      problem = "its run must accept (config, workdir, *, quiet)"
    except ValueError:  # no signature to inspect (a builtin): accept it
      pass
  if problem:
    raise UnknownStudyError(f"{where} is not a study: {problem}.")
  return module


def _load_external(name: str, ep: importlib.metadata.EntryPoint) -> Any:
  try:
    module = ep.load()
  except Exception as e:  # noqa: BLE001 - whatever a third-party import raises, name the entry point
    raise UnknownStudyError(f"study {name!r} cannot be loaded: {_describe(ep)} failed to import: "
                            f"{type(e).__name__}: {str(e).rstrip('.')}.") from e
  return _check_study(module, f"study {name!r} ({_describe(ep)})")


def list_studies() -> list[str]:
  """Names of every study: the built-in ones and those registered under `ENTRY_POINT_GROUP`.

  Built-in studies are found without importing them, so one broken study does not stop the others from running.
  External ones are imported to check them: one that fails to import or is not a study is left out with a
  `StudyWarning` naming its entry point and the error; one with a built-in study's name is left out (the built-in
  wins) with a `StudyWarning`.

  Returns:
    The names, sorted.
  """
  builtin = _builtin_studies()
  names = set(builtin)
  for name, ep in _external_studies().items():
    if name in names:
      _shadowed(name, ep)
      continue
    try:
      _load_external(name, ep)
    except UnknownStudyError as e:
      _warn(f"{e} Skipped; the other studies are unaffected.")
      continue
    names.add(name)
  return sorted(names)


def load_study(name: str) -> ModuleType:
  """The study module called `name`: ``jaxhw.experiments.<name>``, else the module of entry point `name`.

  Args:
    name: a study name, as `list_studies` gives.

  Returns:
    The module (or object), with ``get_config`` and ``run``.

  Raises:
    UnknownStudyError: no such study (the message lists the known ones), or its module fails to import or lacks
      ``get_config`` / ``run`` (the message names the module or entry point and the error).
  """
  external = _external_studies()
  if name in _builtin_studies():
    if name in external:
      _shadowed(name, external[name])
    module = importlib.import_module(f"jaxhw.experiments.{name}")
    return _check_study(module, f"experiments/{name}.py")
  if name in external:
    return _load_external(name, external[name])
  raise UnknownStudyError(f"unknown study {name!r}. Known studies: {', '.join(list_studies())}")


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

  One mechanism for every study: the trainer reads the `jaxhw.parallel.ParallelConfig`
  (`jaxhw.parallel.use_parallel` around the study's run), so a study needs no parallel field of its own.
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
