"""Counters and energy: spikes per image, synaptic operations, and an AC-vs-MAC energy estimate.

References:
  M. Horowitz, "Computing's energy problem", ISSCC 2014 (45 nm,
  fp32: add 0.9 pJ, multiply 3.7 pJ, so MAC 4.6 pJ and AC 0.9 pJ).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from jaxhw.snn.network import SNNet, ann_macs

__all__ = ["EnergyModel", "HOROWITZ_45NM", "spikes_per_image", "synops_per_image", "snn_energy_uj",
           "ann_energy_uj"]


class EnergyModel(NamedTuple):
  """Energy per operation in picojoules.

  Attributes:
    e_ac: one accumulate (a synaptic operation of an SNN).
    e_mac: one multiply-accumulate (ANN, and the SNN's first layer on real-valued input).
  """

  e_ac: float = 0.9
  e_mac: float = 4.6


#: 45 nm energies per operation (Horowitz, ISSCC 2014): 0.9 pJ per accumulate, 4.6 pJ per multiply-accumulate.
HOROWITZ_45NM = EnergyModel()


def spikes_per_image(step_events: np.ndarray, *, upto: int | None = None,
                     include_input: bool = False) -> float:
  """Mean events per image over the spiking layers (input column excluded unless asked), up to step ``upto``.

  Args:
    step_events: ``[T, B, 1 + L]`` from :class:`~jaxhw.snn.simulate.SimResult`.
    upto: number of steps counted (default all).
    include_input: add the input layer's events.
  """
  ev = np.asarray(step_events, np.int64)[:upto]
  ev = ev if include_input else ev[..., 1:]
  return float(ev.sum() / ev.shape[1])


def synops_per_image(sops: np.ndarray, *, upto: int | None = None) -> float:
  """Mean synaptic operations per image (``[T, B]`` counts from the simulation), up to step ``upto``."""
  s = np.asarray(sops, np.int64)[:upto]
  return float(s.sum() / s.shape[1])


def snn_energy_uj(net: SNNet, synops: float, *, real_input: bool,
                  model: EnergyModel = HOROWITZ_45NM) -> float:
  """``E_SNN = e_ac * SOPs + e_mac * MACs_1`` in microjoules per image; the first layer's MACs are counted
  once (constant current) only when the input is real-valued (spiking input already counts its SOPs)."""
  macs1 = ann_macs(net)[0] if real_input else 0
  return (model.e_ac * synops + model.e_mac * macs1) * 1e-6


def ann_energy_uj(net: SNNet, *, model: EnergyModel = HOROWITZ_45NM) -> float:
  """``E_ANN = e_mac * MACs`` in microjoules per image."""
  return model.e_mac * float(sum(ann_macs(net))) * 1e-6
