"""A root node agent meters sandboxed jobs too: they run under per-tenant uids (issue 10), and
the agent finds a job's processes by the ``YUNGU_JOB_ID`` the executor sets."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from yungu.adapters.telemetry.sensors import job_processes


@pytest.mark.skipif(not hasattr(os, "getuid") or os.getuid() != 0, reason="needs root to start a process as another uid")
def test_root_agent_finds_a_job_running_under_another_uid() -> None:
    env = {"YUNGU_JOB_ID": "job-sandboxed-probe", "PATH": os.environ.get("PATH", "")}
    proc = subprocess.Popen(["/bin/sleep", "30"], env=env,
                            user=65534, group=65534)  # nobody: not the agent's uid
    try:
        deadline = time.monotonic() + 10
        found: list[int] = []
        while not found and time.monotonic() < deadline:
            found = [p.pid for p in job_processes({}).get("job-sandboxed-probe", [])]
            time.sleep(0.1)
        assert found == [proc.pid]
    finally:
        proc.kill()
        proc.wait()
