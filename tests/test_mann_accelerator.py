"""The cost model: the default energy table's 20x MAC ratio, thresholded output MACs, FLOPS/kJ."""

import pytest

from jaxhw.mann import accelerator


def test_default_table_mac_ratio_is_20x():
  table = accelerator.EnergyTable()
  assert table.mac("fp32") / table.mac("int8") == pytest.approx(20.0)


def test_thresholded_output_macs_are_k_times_d():
  full = accelerator.count_ops(10, 6, 20, 150, 3)
  thr = accelerator.count_ops(10, 6, 20, 150, 3, output_rows=4.5)
  assert full["output"].macs == 150 * 20 and thr["output"].macs == 4.5 * 20
  assert full["addressing"].macs == 3 * 10 * 20
  assert accelerator.count_ops(10, 6, 20, 150, 3, hamming=True)["addressing"].hamming == 3 * 10 * 20


def test_energy_orders_and_flops_per_kj():
  counts = accelerator.count_ops(10, 6, 20, 150, 3)
  e32, e8 = accelerator.energy_pj(counts, "fp32"), accelerator.energy_pj(counts, "int8")
  assert e32["total"] > 10 * e8["total"] and set(e32) == {*accelerator.PHASES, "total"}
  with pytest.raises(ValueError, match="precision"):
    accelerator.energy_pj(counts, "fp8")
  fpga = accelerator.DataflowModel()
  assert fpga.cycles(10, 6, 150, output_rows=3) < fpga.cycles(10, 6, 150)
  assert accelerator.flops_per_kj(2e3, 2.0, 1e-3) == pytest.approx(1000 * 2e3 / (2.0 * 1e-6))
