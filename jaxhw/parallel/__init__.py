"""Data parallelism on JAX's own runtime, multi-process launch, and a calibrated cluster cost model.

  mesh       `ParallelConfig` (``parallel.data``, ``parallel.variant``), the ``("data",)`` mesh, batch sharding;
             `jaxhw.train.train` reads it (``--set parallel.data=2`` for any study)
  launch     `jax.distributed` initialisation (gloo on CPU) and `launch_local` for N processes on localhost
  cost       pure cost model: compute, ring all-reduce, parameter server, switched Ethernet, Wi-Fi with contention
  (the calibration of the host model on real steps lives with the cluster study, experiments/_cluster_calibrate.py)

References: Na et al., "Scalable Smartphone Cluster for Deep Learning", arXiv:2110.12172; Goyal et al.,
arXiv:1706.02677 (linear scaling, warm-up); You et al., arXiv:1708.03888 (LARS), arXiv:1904.00962 (LAMB).
"""

from jaxhw.parallel import cost
from jaxhw.parallel.launch import (
                                   LaunchError,
                                   check_port_free,
                                   check_process_count,
                                   free_port,
                                   initialize,
                                   initialize_from_env,
                                   launch_local,
                                   max_local_processes,
)
from jaxhw.parallel.mesh import (
                                   DATA_AXIS,
                                   VARIANTS,
                                   ParallelConfig,
                                   check_divisible,
                                   current_parallel,
                                   data_mesh,
                                   replicate,
                                   request_cpu_devices,
                                   shard_batch,
                                   to_host_local,
                                   use_parallel,
)

__all__ = ["DATA_AXIS", "VARIANTS", "LaunchError", "ParallelConfig", "check_divisible", "check_port_free",
           "check_process_count", "cost", "current_parallel", "data_mesh", "free_port", "initialize",
           "initialize_from_env", "launch_local", "max_local_processes", "replicate", "request_cpu_devices",
           "shard_batch", "to_host_local", "use_parallel"]
