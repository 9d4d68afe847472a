"""The SSD model: NAND geometry and latencies, channel bus, host link, in-controller compute, named presets.

Units are bytes, seconds and FLOP/s. Defaults follow MQSim's default device configuration (Tavakkol et al., FAST
2018) where it has the value; fields tagged [R] are reconstructions (the ISP-ML paper gives no table), listed in
every report that uses them.
"""

from __future__ import annotations

import dataclasses
import math

#: Named SSD configurations `ssd_preset` accepts.
PRESETS = ("sata", "nvme")
#: The host OS page in bytes (the unit of the IHP page cache).
CACHE_PAGE_BYTES = 4096


@dataclasses.dataclass(frozen=True)
class SSDConfig:
  """A solid-state drive with compute engines in its controller (hashable, a static argument).

  Attributes:
    channels: NAND channels, each with its own bus and (for in-storage processing) its own compute engine.
    ways: dies (ways) per channel; a page read holds its die for `t_read_s`, then die and bus for the transfer.
    page_bytes: NAND page size P (8 KiB).
    t_read_s: t_R, cell array to page register (75 us, MQSim's default).
    t_prog_s: t_PROG, page program (1.0 ms [R]; MQSim stores 75 us, MLC of that era 0.5-1.5 ms).
    t_erase_s: t_ERASE, block erase (3.8 ms); not on the read paths, kept for completeness.
    bus_bytes_per_s: channel bus rate, 333 MT/s x 1 byte (t_xfer = 24.6 us for an 8 KiB page).
    host_link_bytes_per_s: host interface bandwidth: SATA-3 550 MB/s [R]; the NVMe preset 3.5 GB/s (Gen3 x4).
    engine_flops: per-channel compute engine, FLOP/s (1 GFLOP/s [R]).
    internal_bus_bytes_per_s: the controller's internal bus between channel engines and the master (1 GB/s [R]).
    internal_latency_s: per-message latency of that bus (1 us [R]).
    master_flops: the master (parameter server in the cache controller), FLOP/s (2 GFLOP/s [R]).

  References:
    Tavakkol et al., "MQSim: A Framework for Enabling Realistic Studies of Modern Multi-Queue SSD Devices",
    FAST 2018 (default ``ssdconfig.xml``); Choe et al., "Near-Data Processing for Differentiable Machine Learning
    Models", arXiv:1610.02273, 2016.
  """

  channels: int = 8
  ways: int = 4
  page_bytes: int = 8192
  t_read_s: float = 75e-6
  t_prog_s: float = 1.0e-3
  t_erase_s: float = 3.8e-3
  bus_bytes_per_s: float = 333e6
  host_link_bytes_per_s: float = 550e6
  engine_flops: float = 1e9
  internal_bus_bytes_per_s: float = 1e9
  internal_latency_s: float = 1e-6
  master_flops: float = 2e9

  def __post_init__(self):
    for name in ("channels", "ways", "page_bytes"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"SSDConfig.{name} must be an integer >= 1, got {value!r}.")
    for name in ("t_read_s", "t_prog_s", "t_erase_s", "internal_latency_s"):
      value = getattr(self, name)
      if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
        raise ValueError(f"SSDConfig.{name} must be a finite number >= 0 seconds, got {value!r}.")
    for name in ("bus_bytes_per_s", "host_link_bytes_per_s", "engine_flops", "internal_bus_bytes_per_s",
                 "master_flops"):
      value = getattr(self, name)
      if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ValueError(f"SSDConfig.{name} must be a finite number > 0, got {value!r}.")

  @property
  def t_xfer_s(self) -> float:
    """Channel-bus time of one NAND page (P / bus rate)."""
    return self.page_bytes / self.bus_bytes_per_s

  def xfer_s(self, nbytes: float) -> float:
    """Channel-bus time of `nbytes` (a partial page read transfers only what is asked)."""
    return nbytes / self.bus_bytes_per_s

  def host_s(self, nbytes: float) -> float:
    """Host-link time of `nbytes`."""
    return nbytes / self.host_link_bytes_per_s

  def message_s(self, nbytes: float) -> float:
    """Internal-bus time of one message of `nbytes` (latency + size / bandwidth)."""
    return self.internal_latency_s + nbytes / self.internal_bus_bytes_per_s

  @property
  def channel_bytes_per_s(self) -> float:
    """Steady sequential read rate of one channel: min(P / t_xfer, W P / (t_R + t_xfer)) (329 MB/s default)."""
    return min(self.page_bytes / self.t_xfer_s, self.ways * self.page_bytes / (self.t_read_s + self.t_xfer_s))


def ssd_preset(name: str = "sata", **overrides) -> SSDConfig:
  """A named SSD configuration.

  Args:
    name: ``"sata"`` (SATA-3 host link, 550 MB/s [R]) or ``"nvme"`` (PCIe Gen3 x4, 3.5 GB/s).
    **overrides: any `SSDConfig` field, e.g. ``channels=16``.

  Returns:
    The `SSDConfig`.

  References:
    Tavakkol et al., FAST 2018 (MQSim defaults).
  """
  if name not in PRESETS:
    raise ValueError(f"SSD preset must be one of {PRESETS}, got {name!r}.")
  link = {"sata": 550e6, "nvme": 3.5e9}[name]
  return SSDConfig(**{"host_link_bytes_per_s": link, **overrides})
