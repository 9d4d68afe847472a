"""The ``jaxhw`` command line: list, run, reproduce, sweep and report studies.

Exit codes: 0 ok; 1 a run failed (the error is printed; checkpoints are kept), or a data set it needs is not
prepared (the message names it, where it was looked for and the ``tfds build`` command; nothing is trained, no
``summary.json`` is written, so the run is not marked finished); 2 usage error (unknown study, preset or config key,
a value of the wrong type); 143 interrupted by SIGTERM after saving a checkpoint (rerun the same command to resume).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import traceback
from pathlib import Path

from jaxhw.config import PRESETS

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 143

_EPILOG = """examples:
  jaxhw list
  jaxhw run mnist_baseline --preset quick --set train.lr=0.002 --workdir runs/mnist
  jaxhw run mnist_baseline --set parallel.data=2               # data-parallel over 2 (simulated) devices
  jaxhw run mnist_baseline --processes 2                       # 2 jax.distributed processes on localhost
  jaxhw run mnist_baseline --coordinator HOST:PORT --num-processes 2 --process-id 0   # one per host
  jaxhw reproduce --preset quick --workdir runs/quick          # every study, then one report
  jaxhw sweep mnist_baseline --grid train.lr=0.001,0.003 --grid train.seed=0,1
  jaxhw report runs/quick                                      # rebuild report.md and index.html

Runs are resumable: rerunning a command continues from its checkpoints, and finished
runs (summary.json present) are skipped by reproduce and sweep. A study whose data set is not
prepared (the full presets read CIFAR-10/100, MNIST and VOC 2007 through tensorflow-datasets) stops
before training with the `tfds build` command to run; reproduce lists every such study at the end.
exit codes: 0 ok, 1 run failure or missing data, 2 usage error, 143 interrupted by SIGTERM (state saved)."""


def _parse_sets(items: list[str]) -> dict[str, str]:
  from jaxhw.config import ConfigError

  out = {}
  for item in items:
    if "=" not in item:
      raise ConfigError(f"--set expects key=value, got {item!r}.")
    key, value = item.split("=", 1)
    out[key.strip()] = value
  return out


def _build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="jaxhw", description="jaxhw: hardware-aware deep learning studies in JAX (bit-flip resilience, "
      "noisy crossbars, spiking codings). Each study reproduces a paper's method on vendored data.",
      epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest="command", metavar="COMMAND")

  p = sub.add_parser("list", help="list the studies and their presets")
  p.set_defaults(func=_cmd_list)

  def common(p, *, preset=True):
    if preset:
      p.add_argument("--preset", default="quick", choices=PRESETS,
                     help="scale: smoke (seconds, for tests), quick (minutes on 2 CPU cores, default), "
                          "full (the paper's scale; needs an accelerator and tfds data)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

  p = sub.add_parser("run", help="run one study", description="Run one study into a work directory "
                     "(resumes from its checkpoints when rerun).")
  p.add_argument("study", help="study name (see `jaxhw list`)")
  p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                 help="override a config field, e.g. --set train.lr=0.01 (repeatable)")
  p.add_argument("--workdir", default=None, help="output directory (default runs/<study>-<preset>)")
  p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                 help="continue from the checkpoints in WORKDIR (default); --no-resume refuses a WORKDIR that "
                      "already holds a run instead of touching it")
  g = p.add_argument_group("data parallel and multi-process (any study; see also --set parallel.data=N)")
  g.add_argument("--processes", type=int, default=1, metavar="N",
                 help="start N jax.distributed processes on localhost (CPU, gloo), one simulated device each unless "
                      "--set parallel.data=M (M/N each); process 0 writes WORKDIR")
  g.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                 help="join a multi-process run by hand: the coordinator's address (process 0's host)")
  g.add_argument("--num-processes", type=int, default=None, help="with --coordinator: processes in all")
  g.add_argument("--process-id", type=int, default=None, help="with --coordinator: this process's rank")
  g.add_argument("--distributed", action="store_true",
                 help="jax.distributed.initialize() with auto-detection (TPU slice, Slurm, Open MPI)")
  common(p)
  p.set_defaults(func=_cmd_run)

  p = sub.add_parser("reproduce", help="run every study (or --only some), then write one report",
                     description="Run every study at a preset into WORKDIR/<study>, skipping finished ones, then "
                     "write WORKDIR/report.md and WORKDIR/index.html.")
  p.add_argument("--only", default="", help="comma-separated study names")
  p.add_argument("--workdir", default="runs/quick", help="output directory (default runs/quick)")
  p.add_argument("--rerun", action="store_true", help="rerun studies even when finished (new workdir contents)")
  common(p)
  p.set_defaults(func=_cmd_reproduce)

  p = sub.add_parser("sweep", help="run a study over a grid of config values (resumable)",
                     description="Run the cartesian product of the --grid axes, each point in its own directory. "
                     "Finished points are skipped, interrupted ones resume from their checkpoints.")
  p.add_argument("study")
  p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2", required=True,
                 help="one axis of the grid (repeatable)")
  p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                 help="fixed override for every point")
  p.add_argument("--workdir", default=None, help="output directory (default runs/sweep-<study>)")
  common(p)
  p.set_defaults(func=_cmd_sweep)

  p = sub.add_parser("report", help="rebuild report.md and index.html from the runs in DIR")
  p.add_argument("dir")
  p.set_defaults(func=_cmd_report)
  return parser


def _cmd_list(args) -> int:
  from jaxhw.studies import list_studies, load_study, study_summary

  for name in list_studies():
    try:
      summary = study_summary(load_study(name))
    except Exception as e:  # noqa: BLE001 - one broken study must not hide the others
      summary = f"(cannot be loaded: {type(e).__name__}: {e})"
    print(f"{name:20s} {summary}")
  return EXIT_OK


def _print_summary(name: str, summary: dict, workdir: Path) -> None:
  scalars = {k: v for k, v in summary.items() if isinstance(v, int | float | str) and not isinstance(v, bool)}
  print(f"[{name}] done in {workdir}: " + json.dumps(scalars, default=str)[:400])


def _launch_processes(args, parallel, workdir: Path) -> int:
  """`--processes N`: reruns this command as N cooperating processes on localhost (see `jaxhw.parallel.launch`)."""
  from jaxhw.config import ConfigError
  from jaxhw.parallel import check_process_count, launch_local

  n = args.processes
  check_process_count(n)
  data = parallel.data if parallel.data > 1 else n
  if data % n:
    raise ConfigError(f"parallel.data={data} must be a multiple of --processes={n} (each process hosts an equal "
                      "number of devices).")
  argv = [sys.executable, "-m", "jaxhw", "run", args.study, "--preset", args.preset, "--workdir", str(workdir)]
  for item in args.sets:
    argv += ["--set", item]
  argv += ["--set", "parallel.data=0"] + (["--quiet"] if args.quiet else [])
  print(f"[{args.study}] {n} processes on localhost, {data // n} CPU device(s) each", flush=True)
  launch_local(argv, n, local_devices=data // n)
  return EXIT_OK


def _init_distributed(args) -> bool:
  """Joins a multi-process run when asked to (flags or the launcher's environment); True if it did."""
  from jaxhw.config import ConfigError
  from jaxhw.parallel import initialize, initialize_from_env

  if args.coordinator:
    if args.num_processes is None or args.process_id is None:
      raise ConfigError("--coordinator needs --num-processes and --process-id.")
    if not 0 <= args.process_id < args.num_processes:
      raise ConfigError(f"--process-id must be in [0, {args.num_processes}), got {args.process_id}.")
    initialize(args.coordinator, args.num_processes, args.process_id)
    return True
  if args.distributed:
    initialize()
    return True
  return initialize_from_env()


def _cmd_run(args) -> int:
  from jaxhw.config import ConfigError
  from jaxhw.report import write_index
  from jaxhw.studies import make_config, run_study, split_parallel

  parallel, sets = split_parallel(_parse_sets(args.sets))
  workdir = Path(args.workdir or f"runs/{args.study}-{args.preset}")
  if args.processes < 1:
    raise ConfigError(f"--processes must be >= 1, got {args.processes}.")
  if not args.resume and workdir.exists() and any(workdir.iterdir()):
    raise ConfigError(f"--no-resume: {workdir} already holds a run; it was left untouched. Choose another "
                      "--workdir, or drop --no-resume to continue it.")
  if args.processes > 1:
    make_config(args.study, args.preset, sets)  # validate before starting anything
    return _launch_processes(args, parallel, workdir)
  import jax

  from jaxhw.parallel import request_cpu_devices

  # Before anything (a study's import included) starts JAX's backend: join the processes, or simulate the devices
  # parallel.data asks for on CPU.
  if _init_distributed(args):
    rank = jax.process_index()
  else:
    rank = 0
    request_cpu_devices(parallel.data)
  config = make_config(args.study, args.preset, sets)
  # Process 0 writes WORKDIR; the others keep their own copy (and checkpoints) out of the report's way.
  own = workdir if rank == 0 else workdir / "checkpoints" / f"process_{rank}"
  with _refusal_leaves_no_trace(own):
    summary = run_study(args.study, config, own, quiet=args.quiet or rank > 0, parallel=parallel)
  if rank == 0:
    write_index(workdir, title=f"jaxhw: {args.study} ({args.preset})")
    _print_summary(args.study, summary, workdir)
  return EXIT_OK


def _cmd_reproduce(args) -> int:
  import shutil

  from jaxhw.report import write_index
  from jaxhw.studies import is_finished, list_studies, load_study, make_config, run_study

  names = [n.strip() for n in args.only.split(",") if n.strip()] or list_studies()
  for name in names:
    load_study(name)  # validate every name before running anything
  from jaxhw.data import MissingDataError

  root = Path(args.workdir)
  failures, missing = [], []
  for i, name in enumerate(names, 1):
    workdir = root / name
    if is_finished(workdir) and not args.rerun:
      print(f"[{i}/{len(names)}] {name}: finished earlier, skipped ({workdir}/summary.json)")
      continue
    if args.rerun and workdir.exists():
      shutil.rmtree(workdir)
    print(f"[{i}/{len(names)}] {name} ({args.preset}) ...", flush=True)
    t0 = time.perf_counter()
    try:
      with _refusal_leaves_no_trace(workdir):
        summary = run_study(name, make_config(name, args.preset), workdir, quiet=args.quiet)
    except MissingDataError as e:  # refused before training: listed at the end with the command that fixes it
      missing.append((name, e))
      print(f"[{name}] not run: missing data: {_missing_what(e)}", file=sys.stderr)
      continue
    except Exception as e:  # noqa: BLE001 - one study's failure must not stop the others
      failures.append(name)
      print(f"[{name}] FAILED after {time.perf_counter() - t0:.0f}s: {type(e).__name__}: {e}", file=sys.stderr)
      traceback.print_exc()
      continue
    _print_summary(name, summary, workdir)
  try:
    md, page = write_index(root, title=f"jaxhw results ({args.preset} preset)")
    print(f"report: {md}\n        {page}")
  except FileNotFoundError:  # no study has a report yet (every one refused or failed)
    print(f"report: none, no study below {root} has finished")
  if missing:
    print(f"not run, missing data ({len(missing)} of {len(names)} studies; prepare the data sets, then rerun the "
          "same command, which skips the finished studies):", file=sys.stderr)
    for name, e in missing:
      print(f"  {name}: {_missing_what(e)}", file=sys.stderr)
    commands = list(dict.fromkeys(getattr(e, "command", "") for _, e in missing if getattr(e, "command", "")))
    for command in commands:
      print(f"    {command}", file=sys.stderr)
  if failures:
    print(f"failed studies: {', '.join(failures)}", file=sys.stderr)
  return EXIT_FAILURE if failures or missing else EXIT_OK


def _missing_what(e: BaseException) -> str:
  """One line naming the missing data set and where it was looked for (`DatasetNotPreparedError` attributes, else
  the message's first line)."""
  dataset, data_dir = getattr(e, "dataset", ""), getattr(e, "data_dir", None)
  if dataset:
    return f"tfds dataset {dataset!r} not prepared in {data_dir}"
  return str(e).splitlines()[0]


@contextlib.contextmanager
def _refusal_leaves_no_trace(workdir: Path):
  """When the run inside is refused for missing data (`jaxhw.data.MissingDataError`) and `workdir` held nothing
  before, removes what the refused run created (its ``config.json``), so a refusal leaves no half-started run
  behind. A workdir that already held something is left as it was."""
  from jaxhw.data import MissingDataError

  workdir = Path(workdir)
  fresh = not workdir.exists() or not any(workdir.iterdir())
  try:
    yield
  except MissingDataError:
    if fresh and workdir.is_dir():
      for name in ("config.json", "metrics.jsonl"):
        (workdir / name).unlink(missing_ok=True)
      if not any(workdir.iterdir()):
        workdir.rmdir()
    raise


def _cmd_sweep(args) -> int:
  from jaxhw.config import apply_overrides
  from jaxhw.parallel import request_cpu_devices
  from jaxhw.report import write_index
  from jaxhw.studies import is_finished, make_config, parse_grid, point_name, run_study, split_parallel

  parallel, sets = split_parallel(_parse_sets(args.sets))
  grid_devices = [int(v) for spec in args.grid if spec.startswith("parallel.data=")
                  for v in spec.split("=", 1)[1].split(",") if v.strip().isdigit()]
  request_cpu_devices(max([parallel.data, *grid_devices]))  # before a study's import can start the backend
  base = make_config(args.study, args.preset, sets)
  points = parse_grid(args.grid, base)
  root = Path(args.workdir or f"runs/sweep-{args.study}")
  rows = []
  for i, point in enumerate(points, 1):
    workdir = root / point_name(point)
    if is_finished(workdir):
      print(f"[{i}/{len(points)}] {point_name(point)}: finished, skipped")
    else:
      print(f"[{i}/{len(points)}] {point_name(point)} ...", flush=True)
      point_parallel, study_point = split_parallel({**{f"parallel.{k}": str(v) for k, v in
                                                       vars(parallel).items()}, **point})
      run_study(args.study, apply_overrides(base, study_point), workdir, quiet=args.quiet, parallel=point_parallel)
    summary = json.loads((workdir / "summary.json").read_text())
    rows.append({**point, **{k: v for k, v in summary.items() if isinstance(v, int | float)}})
  from jaxhw.metrics import write_json

  write_json(root / "sweep.json", rows)
  write_index(root, title=f"jaxhw sweep: {args.study}")
  for row in rows:
    print(json.dumps(row, default=str))
  return EXIT_OK


def _cmd_report(args) -> int:
  from jaxhw.report import write_index

  md, page = write_index(Path(args.dir))
  print(f"wrote {md} and {page}")
  return EXIT_OK


def main(argv: list[str] | None = None) -> int:
  """Entry point of ``jaxhw`` and ``python -m jaxhw``; returns the exit code."""
  _short_study_warnings()
  parser = _build_parser()
  args = parser.parse_args(argv)
  if not getattr(args, "command", None):
    parser.print_help()
    return EXIT_USAGE
  try:
    rc = args.func(args)
  except BaseException as e:  # noqa: BLE001 - reported below
    rc = _report_error(e)
  if rc != EXIT_OK and _in_distributed_run():
    # jax.distributed's exit barrier would wait for the other processes forever: leave at once, so the launcher
    # (or the cluster scheduler) sees the failure and stops the rest.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)
  return rc


def _short_study_warnings() -> None:
  """Prints `jaxhw.studies.StudyWarning` (a skipped or shadowed external study) as one ``jaxhw: warning:`` line."""
  import warnings

  from jaxhw.studies import StudyWarning

  default = warnings.formatwarning
  if getattr(default, "_jaxhw", False):
    return

  def fmt(message, category, filename, lineno, line=None):
    if issubclass(category, StudyWarning):
      return f"jaxhw: warning: {message}\n"
    return default(message, category, filename, lineno, line)

  fmt._jaxhw = True
  warnings.formatwarning = fmt


def _in_distributed_run() -> bool:
  try:
    from jax._src import distributed

    return distributed.global_state.client is not None
  except Exception:  # noqa: BLE001 - a private API; without it, exit normally
    return False


def _report_error(e: BaseException) -> int:
  from jaxhw.config import ConfigError
  from jaxhw.data import MissingDataError
  from jaxhw.studies import UnknownStudyError
  from jaxhw.train import TrainingInterrupted

  try:
    raise e
  except (ConfigError, UnknownStudyError) as e:
    print(f"jaxhw: error: {e}", file=sys.stderr)
    return EXIT_USAGE
  except MissingDataError as e:
    print(f"jaxhw: missing data, nothing was run (no summary.json written): {e}", file=sys.stderr)
    return EXIT_FAILURE
  except ValueError as e:
    print(f"jaxhw: run failed: {type(e).__name__}: {e}", file=sys.stderr)
    return EXIT_FAILURE
  except TrainingInterrupted as e:
    print(f"jaxhw: {e}", file=sys.stderr)
    return EXIT_INTERRUPTED
  except KeyboardInterrupt:
    print("jaxhw: interrupted", file=sys.stderr)
    return 130
  except Exception as e:  # noqa: BLE001
    print(f"jaxhw: run failed: {type(e).__name__}: {e}", file=sys.stderr)
    return EXIT_FAILURE
