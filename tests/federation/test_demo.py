"""``yungu demo federation --check`` as a user runs it: real platforms, one closing line."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

from yungu.cli.federation_demo import yungu_exe

pytestmark = pytest.mark.slow


def test_the_federation_demo_checks_itself(tmp_path: Path) -> None:
    t = time.monotonic()
    r = subprocess.run([yungu_exe(), "demo", "federation", "--platforms", "3", "--jobs", "12", "--check",
                        "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=240)
    last = r.stdout.strip().splitlines()[-1]
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    m = re.fullmatch(r"federation check: (\d+) delegated, 0 lost, 0 duplicated, clearing nets to 0\.00 CNY "
                     r"across 3 platforms", last)
    assert m and int(m.group(1)) > 0, last
    assert time.monotonic() - t < 180
