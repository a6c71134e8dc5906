"""GPU energy via NVML: needs an NVIDIA GPU; skipped cleanly elsewhere (as in CI)."""

from __future__ import annotations

import time

import pytest

from yungu.adapters.telemetry.sensors import Nvml

pytestmark = pytest.mark.gpu


def test_nvml_counter_and_power_sampling_agree_on_idle_gpu() -> None:
    nv = Nvml()
    if not nv.available:
        pytest.skip("no NVML / NVIDIA GPU on this machine")
    e0 = nv.energy_j(0)
    if e0 is None:
        pytest.skip("this GPU has no total-energy counter (pre-Volta)")
    t0 = time.time()
    powers = []
    while time.time() - t0 < 5:
        powers.append(nv.power_w(0))
        time.sleep(0.1)
    e1 = nv.energy_j(0)
    assert e1 is not None and e1 > e0
    counter_w = (e1 - e0) / (time.time() - t0)
    assert counter_w == pytest.approx(sum(powers) / len(powers), rel=0.2)
    readings = nv.read(idle_w=70.0)
    assert readings[0].energy_j is not None and readings[0].power_w > 0
    nv.close()
