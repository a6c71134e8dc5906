"""The layering contract of STYLE.md holds: domain <- engines <- ports <- control <- adapters <- api/cli <- app."""

import shutil
import subprocess
import sys
from pathlib import Path


def test_import_linter_contracts_hold() -> None:
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    r = subprocess.run([exe], capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert r.returncode == 0, r.stdout + r.stderr


def test_core_does_not_import_io_frameworks() -> None:
    code = ("import sys, yungu.domain.job, yungu.engines.scheduler.firstfit;"
            "bad=[m for m in ('fastapi','sqlalchemy','httpx','ray','pynvml','psutil') if m in sys.modules];"
            "print(','.join(bad))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == ""
