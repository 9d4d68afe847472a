"""Cluster cost model, pure functions: per-device compute, ring all-reduce, parameter server, switched Ethernet and a
shared-medium Wi-Fi cell with contention, and the synchronous data-parallel iteration built from them.

Every constant lives in a preset carrying its ``source``; ``[R]`` marks a reconstructed value (a config field, not
a published number). The smartphone presets are reconstructed so that the model lands near the figures of
Na et al., "Scalable Smartphone Cluster for Deep Learning", arXiv:2110.12172 (138 Galaxy S10+ phones at about 0.9x
a P100 on ResNet-50, 43x a V100 on MobileNet-v1, a Wi-Fi limit near 30 devices); the paper does not give the
mechanism of its Wi-Fi limit.

Times in seconds, sizes in bytes, bandwidths in bytes/s, compute in FLOP/s.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """A network as the cost model sees it: gradient bytes and training FLOPs per image (about 3x forward)."""

  name: str
  params: float
  grad_bytes: float
  train_flops: float
  source: str


@dataclasses.dataclass(frozen=True)
class DeviceSpec:
  """A worker: effective training FLOP/s (peak x utilisation, or throughput x FLOPs per image)."""

  name: str
  flops: float
  source: str


@dataclasses.dataclass(frozen=True)
class LinkSpec:
  """A switched full-duplex link: bandwidth per direction and per-message latency."""

  name: str
  bandwidth: float
  latency: float
  source: str


@dataclasses.dataclass(frozen=True)
class WifiSpec:
  """One half-duplex cell: aggregate goodput C, latency, contention kappa (C_eff = C / (1 + kappa (p - 1))), and k,
  the number of times each gradient crosses the medium per step (2: server wired to the AP; 4: ring or phone server)."""

  name: str
  goodput: float
  latency: float
  contention: float
  crossings: int
  source: str


RESNET50 = ModelSpec("ResNet-50", 25.6e6, 102e6, 24.6e9,
                     "He et al. 2016 [V]: 25.6 M params, 4.1 GMAC forward at 224x224; fp32 grads, train = 3x fwd")
MOBILENET_V1 = ModelSpec("MobileNet-v1", 4.2e6, 16.9e6, 3.4e9,
                         "Howard et al. 2017 [V]: 4.2 M params, 0.57 GMAC forward; fp32 grads, train = 3x fwd")
GALAXY_S10 = DeviceSpec("Galaxy S10+ (Exynos 9820)", 1.6 * 24.6e9,
                        "[R] 1.6 img/s on ResNet-50 (= 39 GFLOP/s effective), inverted from the paper's 0.9x P100 "
                        "through this model")
P100 = DeviceSpec("P100", 220 * 24.6e9, "10.6 TFLOP/s fp32 datasheet [V]; ResNet-50 220 img/s benchmarks [R]")
V100 = DeviceSpec("V100", 380 * 24.6e9, "15.7 TFLOP/s fp32 datasheet [V]; ResNet-50 380 img/s benchmarks [R]")
GBE_USB = LinkSpec("GbE over USB", 110e6, 0.5e-3, "[R] USB 3 gigabit adapters, 110 MB/s goodput, 0.5 ms latency")
WIFI5 = WifiSpec("Wi-Fi 5 cell", 40e6, 3e-3, 0.03, 2, "[R] 40 MB/s aggregate goodput, 3 ms latency, contention "
                 "0.03: reconstructed to land near the paper's ~30-device limit")
#: Per-device batch: 32 on Ethernet, 256 at the Wi-Fi knee [R].
BATCH_ETHERNET, BATCH_WIFI = 32, 256
#: The paper's figures [V] (abstract of arXiv:2110.12172).
PAPER = {"resnet50_138_over_p100": 0.9, "mobilenet_138_over_v100": 43.0, "wifi_limit_devices": 30}


def compute_time(batch: float, model: ModelSpec, device: DeviceSpec) -> float:
  """t_c(b) = b F_train / R: one device's forward and backward pass on `batch` images."""
  return batch * model.train_flops / device.flops


def ring_allreduce_time(size: float, p: int, bandwidth: float, latency: float, gamma: float = 0.0) -> float:
  """Ring all-reduce (Horovod / NCCL): 2(p-1) alpha + 2(p-1)/p S/B (+ (p-1)/p S gamma reduction); 0 for p = 1."""
  if p <= 1:
    return 0.0
  return 2 * (p - 1) * latency + 2 * (p - 1) / p * size / bandwidth + (p - 1) / p * size * gamma


def parameter_server_time(size: float, p: int, server_bandwidth: float, bandwidth: float, latency: float,
                          shards: int = 1) -> float:
  """Parameter server on `shards` ports: 2 alpha + max(2 p S / (k B_s), 2 S / B); 0 for p = 1."""
  if p <= 1:
    return 0.0
  return 2 * latency + max(2 * p * size / (shards * server_bandwidth), 2 * size / bandwidth)


def switched_bandwidth(adapter: float, port: float, uplink: float | None = None, flows_per_uplink: int = 1) -> float:
  """Switched Ethernet: B = min(adapter, port); through a tree uplink min(B, B_up / flows)."""
  b = min(adapter, port)
  return b if uplink is None else min(b, uplink / max(1, flows_per_uplink))


def wifi_effective_goodput(p: int, cell: WifiSpec) -> float:
  """C_eff(p) = C / (1 + kappa (p - 1))."""
  return cell.goodput / (1 + cell.contention * (p - 1))


def wifi_time(size: float, p: int, cell: WifiSpec) -> float:
  """Shared half-duplex cell: k p S / C_eff(p) (+ 2 alpha); 0 for p = 1."""
  if p <= 1:
    return 0.0
  return cell.crossings * p * size / wifi_effective_goodput(p, cell) + 2 * cell.latency


def iteration_time(t_compute: float, t_comm: float, overlap: bool = False) -> float:
  """T_it = t_c + T_comm, or max(t_c, T_comm) when communication overlaps the backward pass."""
  return max(t_compute, t_comm) if overlap else t_compute + t_comm


def comm_time(network: str, size: float, p: int, *, link: LinkSpec = GBE_USB, cell: WifiSpec = WIFI5,
              shards: int = 1) -> float:
  """Per-step communication of `network`: ``ring`` (Ethernet ring), ``ps`` (parameter server with `shards` ports on
  the same link type) or ``wifi``."""
  if network == "ring":
    return ring_allreduce_time(size, p, link.bandwidth, link.latency)
  if network == "ps":
    return parameter_server_time(size, p, link.bandwidth, link.bandwidth, link.latency, shards)
  if network == "wifi":
    return wifi_time(size, p, cell)
  raise ValueError(f"network must be 'ring', 'ps' or 'wifi', got {network!r}.")


def scaling(devices, model: ModelSpec, device: DeviceSpec, network: str, batch: int, *, overlap: bool = False,
            **kw) -> dict[str, np.ndarray]:
  """Throughput X(p) = p b / T_it, speedup X(p)/X(1) and efficiency t_c/T_it for each device count."""
  ps = np.asarray(list(devices), dtype=int)
  tc = compute_time(batch, model, device)
  t_it = np.array([iteration_time(tc, comm_time(network, model.grad_bytes, int(p), **kw), overlap) for p in ps])
  x = ps * batch / t_it
  return {"devices": ps, "step_s": t_it, "throughput": x, "speedup": x / (batch / tc), "efficiency": tc / t_it}


def wifi_half_efficiency_devices(t_compute: float, size: float, cell: WifiSpec) -> float:
  """p_1/2 = t_c C / (k S): where efficiency falls to 50 % (kappa = 0)."""
  return t_compute * cell.goodput / (cell.crossings * size)


def wifi_peak_devices(t_compute: float, size: float, cell: WifiSpec) -> float:
  """p* = sqrt(p_1/2 / kappa): where throughput peaks under contention (inf for kappa = 0)."""
  if cell.contention <= 0:
    return math.inf
  return math.sqrt(wifi_half_efficiency_devices(t_compute, size, cell) / cell.contention)


def wifi_ceiling(model: ModelSpec, device: DeviceSpec, batch: int, cell: WifiSpec, max_devices: int = 1000) -> int:
  """The device count of the highest modelled Wi-Fi throughput (the ceiling), searched over 1..max_devices."""
  x = scaling(range(1, max_devices + 1), model, device, "wifi", batch, cell=cell)["throughput"]
  return int(np.argmax(x)) + 1


# --- Calibration on simulated host devices: the backend is a shared medium, not a ring. -----------------------------


def host_allreduce_time(size: float, p: int, latency: float, bandwidth: float) -> float:
  """All-reduce of `size` bytes per device over `p` simulated devices sharing the host: p (a + S / B_mem)."""
  return 0.0 if p <= 1 else p * (latency + size / bandwidth)


def fit_host_allreduce(sizes, devices, times) -> tuple[float, float]:
  """Least-squares (a, B_mem) of T = p (a + S / B_mem) from psum sweeps; returns (latency s, bandwidth B/s)."""
  from scipy.optimize import nnls

  s, p, t = (np.asarray(v, dtype=float) for v in (sizes, devices, times))
  scale = max(float(s.max()), 1.0)
  # Relative errors: each row divided by its time, so small and large messages weigh alike; (a, scale/B) >= 0.
  design = np.stack([p, p * s / scale], axis=1) / t[:, None]
  (a, inv_b), _ = nnls(design, np.ones_like(t))
  return float(a), float(scale / max(inv_b, 1e-30))


def fit_compute(flops, times) -> tuple[float, float]:
  """Least-squares (t0, R) of t_dev = t0 + F / R from single-device step times; returns (t0 s, R FLOP/s)."""
  from scipy.optimize import nnls

  f, t = np.asarray(flops, dtype=float), np.asarray(times, dtype=float)
  scale = max(float(f.max()), 1.0)  # conditioning: solve for (t0, scale / R) >= 0
  (t0, inv_r), _ = nnls(np.stack([np.ones_like(f), f / scale], axis=1), t)
  return float(t0), float(scale / max(inv_r, 1e-30))


def host_step_time(p: int, device_flops: float, grad_bytes: float, *, t0: float, flops_rate: float,
                   latency: float, bandwidth: float, launch: float = 0.0) -> float:
  """T_step(p) = launch + p t_dev(B/p) + T_ar(p, S), with t_dev = t0 + F(B/p) / R (`device_flops` is F at the
  per-device batch): the simulated devices run one after another on the shared cores.

  `launch` is a per-step cost paid once whatever p (dispatching the step); 0 gives the spec's form
  ``p t_dev(B/p) + T_ar``, where the whole fixed cost of a single-device step is repeated per device. Fit it with
  `fit_launch`.
  """
  return launch + p * (t0 + device_flops / flops_rate) + host_allreduce_time(grad_bytes, p, latency, bandwidth)


def fit_launch(devices, times, compute, allreduce, t_fixed: float) -> float:
  """Least-squares per-step launch cost L of T(p) = L + p (t_fixed - L) + p C(p) + A(p) for steps measured on
  several device counts, where the single-device fit gives ``t_fixed = L + t0`` (the fixed cost of one
  single-device step, split into a per-step part L and a per-device part t0). Clipped to ``[0, t_fixed]``.

  Args:
    devices: device counts p of the measured steps.
    times: their measured step times (s).
    compute: per-device compute time ``F(B/p) / R`` at each (s).
    allreduce: the all-reduce time ``T_ar(p, S)`` at each (s).
    t_fixed: the intercept of the single-device fit (`fit_compute`'s t0).

  Returns:
    L in seconds.
  """
  p, t, c, a = (np.asarray(v, dtype=float) for v in (devices, times, compute, allreduce))
  resid = t - p * (t_fixed + c) - a  # = L (1 - p)
  x = 1.0 - p
  if not np.any(x != 0):
    return 0.0
  return float(np.clip(np.sum(resid * x) / np.sum(x * x), 0.0, t_fixed))
