"""Multi-process data parallelism on localhost with `jax.distributed` (gloo CPU collectives): two processes with 2
simulated devices each form a 4-device mesh and train; the losses, first gradient and params equal a single-process
run on the same global batches. Failures stop every process."""

import json
import os
import sys
import textwrap
import time

import jax
import numpy as np
import pytest

from jaxhw.data import synthetic_classification
from jaxhw.metrics import cross_entropy
from jaxhw.models import mlp_apply, mlp_init
from jaxhw.parallel import LaunchError, ParallelConfig, free_port, launch_local
from jaxhw.train import TrainConfig, train

WORKER = textwrap.dedent('''
    import json, sys
    from jaxhw.parallel import initialize_from_env
    initialize_from_env()
    import jax, jax.numpy as jnp, numpy as np
    from jax.experimental import multihost_utils
    from jaxhw.data import synthetic_classification
    from jaxhw.metrics import cross_entropy
    from jaxhw.models import mlp_apply, mlp_init
    from jaxhw.parallel import data_mesh, shard_batch
    from jaxhw.train import TrainConfig, train

    x, y = synthetic_classification(0, 256, (16,), 4)
    params = mlp_init(jax.random.key(1), (16, 32, 4))
    loss = lambda p, b: cross_entropy(mlp_apply(p, b[0]), b[1])
    mesh = data_mesh(jax.device_count())
    batch = shard_batch((x[:32], y[:32]), mesh)
    l0, g0 = jax.jit(jax.value_and_grad(loss))(params, batch)
    res = train(lambda p, b, k, s: (loss(p, b), {}), params, (x, y),
                TrainConfig(optimizer="momentum", lr=0.1, batch_size=32, steps=5, log_every=1))
    ranks = multihost_utils.process_allgather(np.int32(jax.process_index())).tolist()
    if jax.process_index() == 0:
      out = {"devices": jax.device_count(), "processes": jax.process_count(), "ranks": ranks,
             "loss0": float(l0), "grad0": [np.asarray(v).tolist() for v in jax.tree.leaves(g0)],
             "losses": [r["loss"] for r in res.history],
             "params": [np.asarray(v).tolist() for v in jax.tree.leaves(res.params)]}
      json.dump(out, open(sys.argv[1], "w"))
    jax.distributed.shutdown()
''')


def _loss(p, b):
  return cross_entropy(mlp_apply(p, b[0]), b[1])


def test_two_processes_match_single_process(tmp_path):
  """Hard limit: the launcher stops both processes after 110 s."""
  script, out = tmp_path / "worker.py", tmp_path / "out.json"
  script.write_text(WORKER)
  t0 = time.perf_counter()
  launch_local([sys.executable, str(script), str(out)], 2, local_devices=2, timeout_s=110, echo_first=False,
               cwd=os.getcwd())
  assert time.perf_counter() - t0 < 120
  got = json.loads(out.read_text())
  assert got["devices"] == 4 and got["processes"] == 2 and got["ranks"] == [0, 1]

  x, y = synthetic_classification(0, 256, (16,), 4)
  params = mlp_init(jax.random.key(1), (16, 32, 4))
  l0, g0 = jax.value_and_grad(_loss)(params, (x[:32], y[:32]))
  np.testing.assert_allclose(got["loss0"], float(l0), rtol=1e-5)
  for a, b in zip(got["grad0"], jax.tree.leaves(g0), strict=True):
    np.testing.assert_allclose(a, np.asarray(b), rtol=1e-5, atol=1e-6)
  ref = train(lambda p, b, k, s: (_loss(p, b), {}), params, (x, y),
              TrainConfig(optimizer="momentum", lr=0.1, batch_size=32, steps=5, log_every=1),
              parallel=ParallelConfig(data=2))
  np.testing.assert_allclose(got["losses"], [r["loss"] for r in ref.history], rtol=1e-5)
  for a, b in zip(got["params"], jax.tree.leaves(ref.params)):
    np.testing.assert_allclose(a, np.asarray(b), rtol=1e-5, atol=1e-6)


def test_a_failing_process_stops_the_others(tmp_path):
  code = ("import os, sys, time\n"
          f"open(os.path.join({str(tmp_path)!r}, 'pid' + os.environ['JAXHW_PROCESS_ID']), 'w')"
          ".write(str(os.getpid()))\n"
          "if os.environ['JAXHW_PROCESS_ID'] == '0':\n  time.sleep(1); sys.exit(3)\n"
          "time.sleep(300)\n")
  with pytest.raises(LaunchError, match="process 0 of 2 exited with code 3"):
    launch_local([sys.executable, "-c", code], 2, timeout_s=60, echo_first=False)
  for rank in (0, 1):
    pid = int((tmp_path / f"pid{rank}").read_text())
    with pytest.raises(ProcessLookupError):
      os.kill(pid, 0)


def test_timeout_and_port_in_use_leave_nothing_running(tmp_path):
  code = ("import os, time\n"
          f"open(os.path.join({str(tmp_path)!r}, 'pid' + os.environ['JAXHW_PROCESS_ID']), 'w')"
          ".write(str(os.getpid()))\n"
          "time.sleep(300)\n")
  with pytest.raises(LaunchError, match="did not finish within"):
    launch_local([sys.executable, "-c", code], 2, timeout_s=3, echo_first=False)
  for rank in (0, 1):
    with pytest.raises(ProcessLookupError):
      os.kill(int((tmp_path / f"pid{rank}").read_text()), 0)
  import socket

  port = free_port()
  with socket.socket() as s:
    s.bind(("127.0.0.1", port))
    s.listen()
    with pytest.raises(ValueError, match="in use"):
      launch_local([sys.executable, "-c", code], 2, port=port)
  with pytest.raises(ValueError, match="cannot run on this machine"):
    launch_local([sys.executable, "-c", code], 10**6)
