"""Multi-process runs on JAX's own runtime: `jax.distributed` initialisation and a localhost launcher.

`launch_local` starts N copies of a command on this machine, each told its rank through environment variables;
inside each, `initialize_from_env` calls `jax.distributed.initialize` (CPU collectives over gloo) before any
computation. Every process then sees the global device list, builds the same mesh and feeds only its own rows of
each batch. On a multi-GPU node or a multi-host TPU slice the same code runs with `initialize()` auto-detecting
the cluster (TPU metadata, Slurm, Open MPI); no networking of our own.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from jaxhw.parallel.mesh import with_cpu_device_count

ENV_COORDINATOR = "JAXHW_COORDINATOR"
ENV_NUM_PROCESSES = "JAXHW_NUM_PROCESSES"
ENV_PROCESS_ID = "JAXHW_PROCESS_ID"
#: Memory one CPU JAX process needs at least (a loaded runtime is a few hundred MB).
PROCESS_MEMORY_BYTES = 400 * 2**20


class LaunchError(RuntimeError):
  """A launched process failed or timed out; every process was stopped."""


def free_port(host: str = "127.0.0.1") -> int:
  """A port the OS reports free (from a socket bound to port 0)."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind((host, 0))
    return s.getsockname()[1]


def check_port_free(port: int, host: str = "127.0.0.1") -> None:
  """Raises a `ValueError` if `port` cannot be bound (another coordinator or program holds it)."""
  if not 1 <= port <= 65535:
    raise ValueError(f"coordinator port must be in [1, 65535], got {port}.")
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    try:
      s.bind((host, port))
    except OSError as e:
      raise ValueError(f"coordinator port {port} on {host} is in use ({e.strerror}); pick another port, or omit it "
                       "to get a free one.") from None


def max_local_processes() -> int:
  """How many JAX processes this machine can host: 4 per core, and no more than memory allows."""
  cores = os.cpu_count() or 1
  try:
    avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
  except (ValueError, OSError):
    avail = cores * 4 * PROCESS_MEMORY_BYTES
  return max(1, min(4 * cores, int(avail // PROCESS_MEMORY_BYTES)))


def check_process_count(n: int) -> None:
  """Raises a `ValueError` unless `n` processes fit on this machine."""
  limit = max_local_processes()
  if not 1 <= n <= limit:
    raise ValueError(f"processes={n} cannot run on this machine: it hosts 1 to {limit} JAX processes "
                     f"({os.cpu_count()} cores, 4 per core, {PROCESS_MEMORY_BYTES >> 20} MiB each). For more, run "
                     "one process per host with --coordinator/--num-processes/--process-id.")


def initialize(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None,
               *, timeout_s: int = 60) -> None:
  """`jax.distributed.initialize` with CPU collectives (gloo); with no arguments JAX auto-detects the cluster.

  Call before any JAX computation. Arguments are passed through unchanged on GPUs and TPUs (NCCL / ICI).
  """
  import jax

  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  kwargs = {} if coordinator is None else {"coordinator_address": coordinator, "num_processes": num_processes,
                                           "process_id": process_id}
  jax.distributed.initialize(**kwargs, initialization_timeout=timeout_s)


def initialize_from_env() -> bool:
  """Initialises `jax.distributed` from the ``JAXHW_*`` variables `launch_local` sets; False when none are set."""
  if ENV_COORDINATOR not in os.environ:
    return False
  initialize(os.environ[ENV_COORDINATOR], int(os.environ[ENV_NUM_PROCESSES]), int(os.environ[ENV_PROCESS_ID]))
  return True


def launch_local(argv: Sequence[str], num_processes: int, *, port: int | None = None, local_devices: int = 1,
                 timeout_s: float | None = None, env: dict[str, str] | None = None, cwd: str | None = None,
                 echo_first: bool = True) -> list[str]:
  """Runs `argv` as `num_processes` cooperating JAX processes on localhost and waits for all of them.

  Each process gets ``JAXHW_COORDINATOR`` (``127.0.0.1:port``), ``JAXHW_NUM_PROCESSES``, ``JAXHW_PROCESS_ID``,
  `local_devices` simulated CPU devices and ``JAX_PLATFORMS=cpu`` (unless set). When one process fails, or the
  timeout passes, all are stopped (their whole process groups), so none is left running.

  Args:
    argv: the command, e.g. ``[sys.executable, "-m", "jaxhw", "run", "mnist_baseline"]``.
    num_processes: how many processes (checked against `max_local_processes`).
    port: coordinator port (default: a free one); a port in use is an error before anything starts.
    local_devices: CPU devices per process.
    timeout_s: wall-clock limit for all of them (None: none).
    env: base environment (default: this process's).
    cwd: working directory.
    echo_first: process 0 writes to this terminal; the others' output is kept in log files.

  Returns:
    The captured output (stdout and stderr) of each process (process 0's is empty when echoed).

  Raises:
    ValueError: bad process count, device count or port.
    LaunchError: a process exited non-zero or the timeout passed (the message holds the failing output).
  """
  check_process_count(num_processes)
  if local_devices < 1:
    raise ValueError(f"local_devices must be >= 1, got {local_devices}.")
  port = free_port() if port is None else port
  check_port_free(port)
  base = dict(os.environ if env is None else env)
  base.setdefault("JAX_PLATFORMS", "cpu")
  base = with_cpu_device_count(base, local_devices)
  logdir = Path(tempfile.mkdtemp(prefix="jaxhw-launch-"))
  procs: list[subprocess.Popen] = []
  logs = []
  try:
    for rank in range(num_processes):
      penv = base | {ENV_COORDINATOR: f"127.0.0.1:{port}", ENV_NUM_PROCESSES: str(num_processes),
                     ENV_PROCESS_ID: str(rank)}
      log = open(logdir / f"process_{rank}.log", "w+b")  # noqa: SIM115 - closed in finally
      logs.append(log)
      out = None if (rank == 0 and echo_first) else log
      procs.append(subprocess.Popen(list(argv), env=penv, cwd=cwd, stdout=out,
                                    stderr=out if out is None else subprocess.STDOUT, start_new_session=True))
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
      codes = [p.poll() for p in procs]
      failed = [i for i, c in enumerate(codes) if c not in (None, 0)]
      if failed:
        i = failed[0]
        raise LaunchError(f"process {i} of {num_processes} exited with code {codes[i]}; stopped the others."
                          f"{_tail(logs[i])}")
      if all(c == 0 for c in codes):
        break
      if deadline is not None and time.monotonic() > deadline:
        raise LaunchError(f"the {num_processes} processes did not finish within {timeout_s:.0f} s; stopped all."
                          f"{_tail(logs[0])}")
      time.sleep(0.05)
    return [_read(log) for log in logs]
  finally:
    _stop_all(procs)
    for log in logs:
      log.close()
    for f in logdir.iterdir():
      f.unlink()
    logdir.rmdir()


def _read(log) -> str:
  log.flush()
  log.seek(0)
  return log.read().decode(errors="replace")


def _tail(log, n: int = 3000) -> str:
  text = _read(log)
  return f"\n--- its output (last {n} characters) ---\n{text[-n:]}" if text.strip() else ""


def _stop_all(procs: list[subprocess.Popen]) -> None:
  """SIGTERM, then SIGKILL after 5 s, to each still-running process's group; reaps every one."""
  alive = [p for p in procs if p.poll() is None]
  for p in alive:
    _signal_group(p, signal.SIGTERM)
  end = time.monotonic() + 5
  for p in alive:
    try:
      p.wait(max(0.0, end - time.monotonic()))
    except subprocess.TimeoutExpired:
      _signal_group(p, signal.SIGKILL)
      p.wait()


def _signal_group(p: subprocess.Popen, sig: int) -> None:
  try:
    os.killpg(p.pid, sig)
  except (ProcessLookupError, PermissionError):
    pass


def python_module_argv(module: str, *args: str) -> list[str]:
  """``[python, -m, module, *args]`` with this interpreter."""
  return [sys.executable, "-m", module, *args]
