"""The conformance suite against a real ``yungu server`` process: signatures, replay protection,
idempotent delegation, fencing, leases, receipts, isolation between platforms."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from yungu.cli.conformance import run
from yungu.cli.federation_demo import Platform, free_ports

pytestmark = pytest.mark.slow

TERMS = {"lease_ttl_s": 8, "renew_every_s": 1, "max_clock_skew_s": 2, "stop_budget_s": 2.5, "kill_grace_s": 1}


def test_yungu_passes_its_own_conformance_suite(tmp_path: Path) -> None:
    p = Platform("horinger", tmp_path / "horinger", free_ports(1)[0])
    p.write_config(["beijing"], TERMS)
    p.start()
    try:
        p.wait_ready()
        time.sleep(2.5)  # messages signed before start + the skew bound are refused (replay guard)
        lines: list[str] = []
        ok = run(p.url, p.key, lines.append, tmp_path / "tester")
        assert ok, "\n".join(lines)
        assert lines[-1].endswith("0 failed") and len(lines) >= 16
    finally:
        p.stop()
