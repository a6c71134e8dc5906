"""Node sensors: psutil, RAPL (``/sys/class/powercap``) and NVML, each optional.

What is read where:

* CPU/memory utilisation and busy CPU seconds: psutil, always.
* CPU package energy: RAPL ``energy_uj`` counters of every package zone
  (``intel-rapl:N``), where the file is readable (often root-only since CVE-2020-8694;
  absent in most cloud VMs). Wrap-around is undone with ``max_energy_range_uj``.
* GPU utilisation, memory, power and the total-energy counter
  (``nvmlDeviceGetTotalEnergyConsumption``, Volta and newer): NVML through ``nvidia-ml-py``.
* Otherwise the catalogue power model, and the reading is flagged ``modelled``.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from yungu.engines.energy.power import PowerModel
from yungu.engines.energy.samples import GpuReading
from yungu.engines.energy.signals import Provenance

RAPL_ROOT = Path("/sys/class/powercap")


@dataclass
class RaplZone:
    path: Path
    max_uj: int
    last_uj: int | None = None
    total_j: float = 0.0

    def read(self) -> float:
        """Cumulative joules since the agent started (wrap-corrected)."""
        uj = int((self.path / "energy_uj").read_text())
        if self.last_uj is not None:
            d = uj - self.last_uj
            if d < 0:
                d += self.max_uj
            self.total_j += d / 1e6
        self.last_uj = uj
        return self.total_j


def rapl_zones(root: Path = RAPL_ROOT) -> list[RaplZone]:
    """Readable package-level RAPL zones (``intel-rapl:N``, not sub-zones ``:N:M``)."""
    zones = []
    for d in sorted(root.glob("intel-rapl:*")):
        if d.name.count(":") != 1:
            continue
        try:
            max_uj = int((d / "max_energy_range_uj").read_text())
            int((d / "energy_uj").read_text())
        except (OSError, ValueError):
            continue
        zones.append(RaplZone(d, max_uj))
    return zones


class Nvml:
    """Thin NVML access; ``available`` is False without the library, a driver or a GPU."""

    def __init__(self) -> None:
        self.available = False
        self.handles: list[Any] = []
        self.names: list[str] = []
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nv = pynvml
            for i in range(pynvml.nvmlDeviceGetCount()):
                h = pynvml.nvmlDeviceGetHandleByIndex(i)
                self.handles.append(h)
                name = pynvml.nvmlDeviceGetName(h)
                self.names.append(name.decode() if isinstance(name, bytes) else str(name))
            self.available = bool(self.handles)
        except Exception:  # NVMLError, ImportError, OSError: no GPU here — the model applies
            self.available = False

    def energy_j(self, index: int) -> float | None:
        try:
            return float(self._nv.nvmlDeviceGetTotalEnergyConsumption(self.handles[index])) / 1000.0
        except Exception:  # not supported before Volta
            return None

    def power_w(self, index: int) -> float:
        return float(self._nv.nvmlDeviceGetPowerUsage(self.handles[index])) / 1000.0

    def read(self, idle_w: float) -> list[GpuReading]:
        out = []
        for i, h in enumerate(self.handles):
            util = self._nv.nvmlDeviceGetUtilizationRates(h)
            mem = self._nv.nvmlDeviceGetMemoryInfo(h)
            out.append(
                GpuReading(
                    index=i,
                    utilisation=float(util.gpu) / 100.0,
                    memory_used_mb=float(mem.used) / 2**20,
                    power_w=self.power_w(i),
                    energy_j=self.energy_j(i),
                    method=Provenance.MEASURED,
                )
            )
        return out

    def close(self) -> None:
        if self.available:
            with contextlib.suppress(Exception):
                self._nv.nvmlShutdown()


# (pid, create time) -> the process's YUNGU_JOB_ID ("" for none): a process's environment is
# fixed at exec, so each process is read once, not at every sample (a node runs hundreds).
_JOB_OF: dict[tuple[int, float], str] = {}


def job_processes(explicit: dict[str, int]) -> dict[str, list[psutil.Process]]:
    """Root processes per job: explicit ``job=pid`` pairs plus any process whose environment
    carries ``YUNGU_JOB_ID`` (set by the executors) and whose parent does not."""
    jobs: dict[str, list[psutil.Process]] = {}
    for job, pid in explicit.items():
        with contextlib.suppress(psutil.Error):
            jobs.setdefault(job, []).append(psutil.Process(pid))
    # An unprivileged agent meters its own user's processes only; a root agent (the usual
    # deployment) meters every job, including sandboxed ones that run under per-tenant uids.
    me = os.getuid() if hasattr(os, "getuid") else None
    seen: dict[int, tuple[psutil.Process, int, str]] = {}  # pid -> (process, ppid, job id)
    live: set[tuple[int, float]] = set()
    for p in psutil.process_iter(["pid", "ppid", "uids", "create_time"]):
        info = p.info
        if me not in (None, 0) and info["uids"] and info["uids"].real != me:
            continue
        key = (info["pid"], info["create_time"] or 0.0)
        live.add(key)
        job = _JOB_OF.get(key)
        if job is None:
            try:
                job = p.environ().get("YUNGU_JOB_ID") or ""
            except (psutil.Error, OSError):
                job = ""  # gone, or not ours to read
            _JOB_OF[key] = job
        seen[info["pid"]] = (p, info["ppid"] or 0, job)
    for key in [k for k in _JOB_OF if k not in live]:
        del _JOB_OF[key]
    for p, ppid, job in seen.values():
        if not job:
            continue
        parent = seen.get(ppid)
        if parent is not None and parent[2] == job:
            continue  # a child inside the job's tree: counted through its root
        if all(q.pid != p.pid for q in jobs.get(job, [])):
            jobs.setdefault(job, []).append(p)
    return jobs


def tree_cpu_seconds(roots: list[psutil.Process]) -> float:
    """CPU seconds of the process trees: live processes plus reaped children of each."""
    total = 0.0
    seen: set[int] = set()
    for root in roots:
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
        for p in procs:
            if p.pid in seen:
                continue
            seen.add(p.pid)
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
    return total


def node_busy_seconds() -> float:
    t = psutil.cpu_times()
    idle = t.idle + getattr(t, "iowait", 0.0)
    return sum(t) - idle - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)


def cpu_model_power(model: PowerModel, utilisation: float) -> float:
    return model.power(utilisation)
