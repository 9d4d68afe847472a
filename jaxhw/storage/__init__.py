"""SSD simulator and SGD inside or beside it (ISP-ML): drive model, page layout, event and analytic timing, page
cache, synchronous / Downpour / elastic-averaging SGD, in-storage and in-host placements.

Only time is simulated: the training numbers come from real JAX computations on the pages each worker reads, in
the order the simulator's event times fix. Reference: Choe et al., "Near-Data Processing for Differentiable Machine
Learning Models", arXiv:1610.02273, 2016; SSD constants from MQSim (Tavakkol et al., FAST 2018).
"""

from jaxhw.storage.cache import CACHE_ORDERS, CacheTrace, lru_hit_ratio, lru_misses_analytic, lru_trace
from jaxhw.storage.ihp import IhpConfig, IhpSchedule, host_step_pages, simulate_ihp
from jaxhw.storage.isp import (
                               IspSchedule,
                               ModelCost,
                               dense_model_cost,
                               lockstep_pages,
                               simulate_isp,
                               staleness,
)
from jaxhw.storage.layout import PagedData, PageLayout, page_layout, paged_data, read_pages
from jaxhw.storage.sgd import (
                               ALGORITHMS,
                               EASGD_MODES,
                               ELASTIC_READ,
                               FETCH,
                               GRAD_ANCHOR,
                               GRAD_DOWNPOUR,
                               GRAD_LOCAL,
                               KIND_NAMES,
                               NOOP,
                               PUSH,
                               SEND,
                               SGDConfig,
                               WorkerState,
                               init_workers,
                               make_async_runner,
                               make_host_sgd_runner,
                               make_sync_easgd_runner,
                               make_sync_sgd_runner,
)
from jaxhw.storage.ssd import CACHE_PAGE_BYTES, PRESETS, SSDConfig, ssd_preset
from jaxhw.storage.timing import (
                                  EventQueue,
                                  NandReader,
                                  Server,
                                  scan_time,
                                  scan_time_analytic,
                                  scan_time_exact,
                                  scan_times,
)

__all__ = [
    "ALGORITHMS", "CACHE_ORDERS", "CACHE_PAGE_BYTES", "EASGD_MODES", "ELASTIC_READ", "FETCH", "GRAD_ANCHOR",
    "GRAD_DOWNPOUR", "GRAD_LOCAL", "KIND_NAMES", "NOOP", "PRESETS", "PUSH", "SEND", "CacheTrace", "EventQueue",
    "IhpConfig", "IhpSchedule", "IspSchedule", "ModelCost", "NandReader", "PageLayout", "PagedData", "SGDConfig",
    "SSDConfig", "Server", "WorkerState", "dense_model_cost", "host_step_pages", "init_workers", "lockstep_pages",
    "lru_hit_ratio", "lru_misses_analytic", "lru_trace", "make_async_runner", "make_host_sgd_runner",
    "make_sync_easgd_runner", "make_sync_sgd_runner", "page_layout", "paged_data", "read_pages", "scan_time",
    "scan_time_analytic", "scan_time_exact", "scan_times", "simulate_ihp", "simulate_isp", "ssd_preset", "staleness",
]
