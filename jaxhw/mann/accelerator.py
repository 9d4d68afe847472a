"""A cost model of MemN2N inference: operation counts per question, energy per operation, and a dataflow
accelerator's cycles and FLOPS/kJ. A model, not a measurement: every constant is a configurable field with its
source, and reports print them.

Operation counts per question (n statements, J words, d dims, V outputs, K hops, adjacent tying):
  embedding  (K+1) n J d adds and as many PE multiplies for the memories, J d of each for the question;
  addressing per hop n d MACs (or n d Hamming terms), n exp, n adds and n divisions for the softmax;
  read       per hop n d MACs and d adds (u + o);
  output     V d MACs (k d with inference thresholding); argmax only, no output softmax.
FLOPs = 2 MAC + add + mul + exp + div (a Hamming term counts as one MAC).

References:
  Horowitz, "Computing's energy problem (and what we can do about it)", ISSCC 2014 (45 nm energies).
  Park et al., "Quantized Memory-Augmented Neural Networks", AAAI 2018, arXiv:1711.03712 (22x energy claim).
  Park et al., "Energy-Efficient Inference Accelerator for Memory-Augmented Neural Networks on an FPGA",
  DATE 2019, arXiv:1805.07978 (dataflow accelerator, 125x / 140x FLOPS/kJ over a TITAN V).
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

#: The phases of one MemN2N inference that the cost model counts operations for, in order.
PHASES = ("embedding", "addressing", "read", "output")
PRECISIONS = ("fp32", "int8", "binary")


class OpCounts(NamedTuple):
  """Operations of one phase: multiply-accumulates, adds, multiplies, exponentials, divisions, Hamming terms."""

  macs: float = 0.0
  adds: float = 0.0
  muls: float = 0.0
  exps: float = 0.0
  divs: float = 0.0
  hamming: float = 0.0

  @property
  def flops(self) -> float:
    return 2 * (self.macs + self.hamming) + self.adds + self.muls + self.exps + self.divs


def count_ops(n: float, words: float, dim: int, vocab: int, hops: int = 3, *, hamming: bool = False,
              output_rows: float | None = None) -> dict[str, OpCounts]:
  """Operation counts per question by phase.

  Args:
    n: statements in memory.
    words: words per sentence J.
    dim: d.
    vocab: V.
    hops: K.
    hamming: addressing by Hamming terms instead of MACs.
    output_rows: inner products computed in the output layer (k with thresholding; default V).
  """
  k_out = vocab if output_rows is None else output_rows
  emb = (hops + 1) * n * words * dim + words * dim
  addr = hops * n * dim
  return {
      "embedding": OpCounts(adds=emb, muls=emb),
      "addressing": OpCounts(macs=0.0 if hamming else addr, hamming=addr if hamming else 0.0,
                             exps=hops * n, adds=hops * n, divs=hops * n),
      "read": OpCounts(macs=hops * n * dim, adds=hops * dim),
      "output": OpCounts(macs=k_out * dim),
  }


@dataclasses.dataclass(frozen=True)
class EnergyTable:
  """Energy per operation in pJ at 45 nm.

  Horowitz (ISSCC 2014): add int8 0.03, int16 0.05, int32 0.1, fp32 0.9; mul int8 0.2, fp32 3.7; so a MAC is
  fp32 4.6 and int8 0.23 (20x). Assumed [model]: int16 mul 0.8; a Hamming term = 2 int8 adds + (WL-1) 1-bit
  XNORs at 0.03/8 + 1 int8 add; exp and div cost one multiply at the column's precision; a binary MAC is one
  XNOR plus an int8 add. The output layer keeps 16-bit (Q(1.8.7)) in every quantized column.
  """

  add_int8: float = 0.03
  add_int16: float = 0.05
  add_fp32: float = 0.9
  mul_int8: float = 0.2
  mul_int16: float = 0.8
  mul_fp32: float = 3.7
  xnor_bit: float = 0.03 / 8
  source: str = "Horowitz, ISSCC 2014 (45 nm); int16 mul, Hamming, exp/div and binary MAC costs assumed"

  def mac(self, precision: str) -> float:
    return {"fp32": self.mul_fp32 + self.add_fp32, "int8": self.mul_int8 + self.add_int8,
            "int16": self.mul_int16 + self.add_int16, "binary": self.xnor_bit + self.add_int8}[precision]

  def add(self, precision: str) -> float:
    return {"fp32": self.add_fp32, "int16": self.add_int16}.get(precision, self.add_int8)

  def mul(self, precision: str) -> float:
    return {"fp32": self.mul_fp32, "int16": self.mul_int16}.get(precision, self.mul_int8)

  def hamming(self, word_length: int) -> float:
    return 3 * self.add_int8 + (word_length - 1) * self.xnor_bit


def energy_pj(counts: dict[str, OpCounts], precision: str, table: EnergyTable = EnergyTable(), *,
              word_length: int = 8, output_precision: str | None = None) -> dict[str, float]:
  """Energy per question (pJ) by phase, plus ``"total"``.

  Args:
    counts: from `count_ops`.
    precision: ``fp32``, ``int8`` or ``binary`` (the column).
    table: energies per operation.
    word_length: Hamming word length.
    output_precision: the output layer's precision (default: ``fp32`` for fp32, else ``int16``).
  """
  if precision not in PRECISIONS:
    raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}.")
  out_p = output_precision or ("fp32" if precision == "fp32" else "int16")
  act = "int8" if precision == "binary" else precision  # sums and softmax of a binary net run on int8 adders
  out = {}
  for phase, c in counts.items():
    p = out_p if phase == "output" else precision
    e = (c.macs * table.mac(p) + c.hamming * table.hamming(word_length) + c.adds * table.add(act if p != out_p
         else p) + c.muls * table.mul(act) + (c.exps + c.divs) * table.mul(act))
    out[phase] = e
  out["total"] = sum(out[p] for p in counts)
  return out


@dataclasses.dataclass(frozen=True)
class DataflowModel:
  """The FPGA dataflow accelerator and GPU baseline [model; structure from the DATE 2019 paper].

  Attributes:
    clock_hz: accelerator clock (100 MHz).
    lanes: d lanes with a tree adder of ceil(log2 lanes) stages.
    exp_cycles: cycles per softmax exponential (16-segment piecewise-linear unit).
    latency: pipeline fill cycles.
    io_cycles: host transfer cycles per question (unknown; a parameter).
    power_w: accelerator power (unknown; a parameter).
    gpu_power_w: GPU power (TITAN V TDP, 250 W).
    gpu_kernel_s: GPU time per kernel launch at batch 1 (10 us).
    gpu_kernels_per_hop, gpu_kernels_fixed: kernels of one question on the GPU.
  """

  clock_hz: float = 100e6
  lanes: int = 32
  exp_cycles: int = 1
  latency: int = 0
  io_cycles: int = 0
  power_w: float = 2.0
  gpu_power_w: float = 250.0
  gpu_kernel_s: float = 10e-6
  gpu_kernels_per_hop: int = 6
  gpu_kernels_fixed: int = 4

  def cycles(self, n: float, words: float, vocab: float, hops: int = 3, output_rows: float | None = None) -> float:
    """``(K+1) n J + J + K (2n + n c_exp + 1) + V (or k) + latency + tree depth + t_io``."""
    rows = vocab if output_rows is None else output_rows
    tree = math.ceil(math.log2(max(2, self.lanes)))
    return ((hops + 1) * n * words + words + hops * (2 * n + n * self.exp_cycles + 1) + rows + self.latency + tree
            + self.io_cycles)

  def gpu_seconds(self, hops: int = 3) -> float:
    return (self.gpu_kernels_fixed + hops * self.gpu_kernels_per_hop) * self.gpu_kernel_s


def flops_per_kj(flops: float, power_w: float, seconds: float) -> float:
  """``1000 F / (P T^2)``: FLOPS per kJ of one question taking `seconds` at `power_w`."""
  return 1000.0 * flops / (power_w * seconds ** 2)
