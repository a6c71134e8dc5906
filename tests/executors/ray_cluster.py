"""A real local Ray cluster (head node with the Jobs API) for tests and benchmarks.

``ray start --head --block`` runs in its own process group, on free ports (the dashboard,
client server and agent ports are all chosen here so two test sessions, or another
engineer's Ray, never collide), with a private ``--temp-dir``. Stopping sends SIGTERM to
that process group only — never ``ray stop``, which would stop every Ray on the machine.

The venv's ``bin`` goes first on PATH so the Jobs API's entrypoints find the ``python``
that has ``ray`` installed (the executor's gang launcher runs ``python -c``).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.net import free_ports


class ClusterStartError(RuntimeError):
    pass


@dataclass
class RayCluster:
    address: str  # Jobs API / dashboard URL
    proc: subprocess.Popen[bytes]
    log: Path
    temp_dir: Path  # Ray's session files (sockets, logs); removed on stop

    def stop(self) -> None:
        try:
            self._stop_head()
        finally:
            shutil.rmtree(self.temp_dir, ignore_errors=True)

    def _stop_head(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(timeout=8)  # gcs_server can ignore SIGTERM for a long time
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def start_cluster(root: Path, num_cpus: int = 4, timeout_s: float = 90.0) -> RayCluster:
    """Start a Ray head under ``root`` and wait until its Jobs API answers."""
    ray_bin = Path(sys.executable).parent / "ray"
    if not ray_bin.exists():
        raise ClusterStartError(f"{ray_bin} not found: install the pinned extra with pip install -e '.[dev,ray]'")
    dash, client, agent, metrics = free_ports(4)
    # Ray's unix socket paths must stay short (108 bytes): use a short temp dir.
    temp_dir = Path(tempfile.mkdtemp(prefix="yr", dir="/tmp"))
    root.mkdir(parents=True, exist_ok=True)
    log = root / "ray-head.log"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    argv = [str(ray_bin), "start", "--head", "--block", "--port=0", f"--dashboard-port={dash}",
            "--dashboard-host=127.0.0.1", f"--ray-client-server-port={client}",
            f"--dashboard-agent-listen-port={agent}", f"--metrics-export-port={metrics}",
            f"--num-cpus={num_cpus}", "--num-gpus=0", "--include-dashboard=true", f"--temp-dir={temp_dir}",
            "--disable-usage-stats", "--node-ip-address=127.0.0.1"]  # loopback only: no traffic off this host
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    cluster = RayCluster(address=f"http://127.0.0.1:{dash}", proc=proc, log=log, temp_dir=temp_dir)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ClusterStartError(f"ray start exited with {proc.returncode}\n{cluster.log_tail()}")
        try:
            r = httpx.get(f"{cluster.address}/api/cluster_status", timeout=2)
            nodes = r.json().get("data", {}).get("clusterStatus", {}).get("loadMetricsReport", {}).get("nodeTypes")
            if r.status_code == 200 and nodes and httpx.get(f"{cluster.address}/api/jobs/", timeout=2).status_code == 200:
                return cluster
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.5)
    cluster.stop()
    raise ClusterStartError(f"Ray head did not serve the Jobs API within {timeout_s:.0f}s\n{cluster.log_tail()}")
