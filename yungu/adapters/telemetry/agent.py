"""``yungu agent``: sample a node, buffer on disk, send batches to the platform.

Loop: every ``interval`` seconds take one sample (psutil + RAPL + NVML, model where no
sensor), commit it to the on-disk buffer with the next sequence number, then try to send
the oldest buffered samples (up to ``batch`` per request). A sample leaves the buffer only
when the platform has answered for it (accepted, resent or quarantined: a quarantined
sample is bad data and resending cannot fix it). Connection errors and 5xx answers leave
the buffer untouched and back off; sampling never stops.
"""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from yungu.adapters.telemetry.buffer import SampleBuffer
from yungu.adapters.telemetry.sensors import (
    Nvml,
    RaplZone,
    job_processes,
    node_busy_seconds,
    rapl_zones,
    tree_cpu_seconds,
)
from yungu.engines.energy.power import PowerModel
from yungu.engines.energy.samples import GpuReading, JobUsage, NodeSample, columns_or_none, sample_to_dict
from yungu.engines.energy.signals import Provenance

log = logging.getLogger("yungu.agent")


@dataclass
class AgentConfig:
    api_url: str
    node_id: str
    node_key: str
    state_dir: Path
    interval_s: float = 1.0
    batch: int = 5000  # the platform's MAX_BATCH; a 413 (body over 1 MiB) halves it
    cpu_model: PowerModel = field(default_factory=lambda: PowerModel(10.0, 65.0))
    gpu_model: PowerModel | None = None
    jobs: dict[str, int] = field(default_factory=dict)  # explicit job_id -> root pid
    job_gpus: dict[str, tuple[int, ...]] = field(default_factory=dict)
    use_rapl: bool = True
    use_nvml: bool = True
    timeout_s: float = 5.0
    max_backoff_s: float = 30.0
    columns: bool = True  # send batches as parallel columns (False: one object per sample)
    # Send at most this often: samples go in batches of ~send_interval/interval, so the
    # platform stores one chunk per batch instead of one per sample (fewer requests, faster
    # raw queries). Samples are on disk from the moment they are taken either way.
    send_interval_s: float = 10.0


class Agent:
    def __init__(self, cfg: AgentConfig) -> None:
        self.cfg = cfg
        self.buffer = SampleBuffer(cfg.state_dir / "agent-buffer.db")
        self.rapl: list[RaplZone] = rapl_zones() if cfg.use_rapl else []
        self.nvml = Nvml() if cfg.use_nvml else None
        self.cores = psutil.cpu_count() or 1
        self._last_busy = node_busy_seconds()
        self._last_t = time.time()
        self._last_rapl_j = self._rapl_j()
        self._client = httpx.Client(base_url=cfg.api_url, timeout=cfg.timeout_s)
        self.sent = 0
        self.failures = 0
        self._backoff_until = 0.0

    def _rapl_j(self) -> float | None:
        if not self.rapl:
            return None
        try:
            return sum(z.read() for z in self.rapl)
        except OSError:
            self.rapl = []
            return None

    def sample(self) -> NodeSample:
        now = time.time()
        busy = node_busy_seconds()
        dt = max(1e-6, now - self._last_t)
        util = min(1.0, max(0.0, (busy - self._last_busy) / (dt * self.cores)))
        mem = psutil.virtual_memory().percent / 100.0
        energy = self._rapl_j()
        if energy is not None and self._last_rapl_j is not None:
            cpu_power, method = max(0.0, (energy - self._last_rapl_j) / dt), Provenance.MEASURED
        else:
            cpu_power, method = self.cfg.cpu_model.power(util), Provenance.MODELLED
        self._last_t, self._last_busy, self._last_rapl_j = now, busy, energy
        gpus: list[GpuReading] = []
        gpu_idle = 0.0
        if self.nvml is not None and self.nvml.available:
            gpu_idle = self.cfg.gpu_model.idle_w if self.cfg.gpu_model else 0.0
            gpus = self.nvml.read(gpu_idle)
        jobs = []
        for job, procs in job_processes(self.cfg.jobs).items():
            jobs.append(JobUsage(job, tree_cpu_seconds(procs), self.cfg.job_gpus.get(job, ()), 0))
        return NodeSample(
            node_id=self.cfg.node_id,
            seq=self.buffer.next_seq(),
            ts=now,
            cpu_utilisation=util,
            memory_utilisation=mem,
            cpu_power_w=cpu_power,
            cpu_method=method,
            node_cpu_seconds=busy,
            cores=self.cores,
            cpu_energy_j=energy,
            cpu_idle_w=self.cfg.cpu_model.idle_w if method is Provenance.MODELLED else 0.0,
            gpu_idle_w=gpu_idle,
            gpus=tuple(gpus),
            jobs=tuple(jobs),
        )

    def record(self) -> NodeSample:
        s = self.sample()
        self.buffer.put(sample_to_dict(s))
        return s

    def flush(self, max_batches: int = 20, *, force: bool = False) -> int:
        """Send buffered samples, oldest first. Returns how many the platform answered for."""
        if not force and time.monotonic() < self._backoff_until:
            return 0
        done = 0
        limit = self.cfg.batch
        for _ in range(max_batches):
            batch = self.buffer.oldest(limit)
            if not batch:
                break
            try:
                r = self._send(batch)
            except httpx.HTTPError as exc:
                self._fail(f"platform unreachable: {exc}")
                break
            if r.status_code >= 500 or r.status_code in (401, 429):
                self._fail(f"platform answered {r.status_code}")
                break
            # 413: body over the platform's limit. 403: a sample names a job this node may not
            # meter; halving isolates it, so one refused sample never holds back the rest.
            if r.status_code in (403, 413) and len(batch) > 1:
                limit = max(1, len(batch) // 2)
                continue
            if r.status_code >= 400:  # the whole batch is malformed: it cannot improve by waiting
                log.error("batch refused (%s): %s", r.status_code, r.text[:500])
            self.buffer.ack([int(s["seq"]) for s in batch])
            done += len(batch)
            self.failures = 0
        self.sent += done
        return done

    def _send(self, batch: list[dict[str, Any]]) -> httpx.Response:
        """POST one batch as parallel columns (the platform checks them a column at a time).

        Falls back to one object per sample when the samples do not share their fields, or
        when the platform refuses the column form (422: a platform that predates it), so a
        batch is never acknowledged on a refusal of the envelope alone.
        """
        headers = {"X-Node-Key": self.cfg.node_key}
        cols = columns_or_none(batch) if self.cfg.columns else None
        if cols is not None:
            r = self._client.post(
                "/api/v1/telemetry/ingest",
                json={"node_id": self.cfg.node_id, "columns": cols},
                headers=headers,
            )
            if r.status_code != 422:
                return r
            log.warning("platform refused the column form (422); sending objects")
        return self._client.post(
            "/api/v1/telemetry/ingest", json={"node_id": self.cfg.node_id, "samples": batch}, headers=headers
        )

    def _fail(self, why: str) -> None:
        self.failures += 1
        delay = min(self.cfg.max_backoff_s, 0.5 * 2 ** min(self.failures, 6))
        self._backoff_until = time.monotonic() + delay
        log.warning("%s; %d samples buffered; retry in %.1f s", why, len(self.buffer), delay)

    def run(self, *, duration_s: float | None = None, stop: Any = None) -> None:
        end = None if duration_s is None else time.monotonic() + duration_s
        next_t = next_send = time.monotonic()
        while (end is None or time.monotonic() < end) and not (stop is not None and stop.is_set()):
            self.record()
            if time.monotonic() >= next_send:
                self.flush()
                next_send = time.monotonic() + self.cfg.send_interval_s
            next_t += self.cfg.interval_s
            time.sleep(max(0.0, next_t - time.monotonic()))
        self.flush(max_batches=1000, force=True)

    def close(self) -> None:
        self._client.close()
        self.buffer.close()
        if self.nvml is not None:
            self.nvml.close()


def default_node_id() -> str:
    return socket.gethostname()
