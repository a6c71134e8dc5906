"""Inference services: jobs of kind ``inference`` that run model servers, published to the
gateway as replicas once healthy, scaled between a minimum and a maximum.

How our concepts map:

- an **inference service** (``inference_services`` row) names a model, the replica job's
  resources and command template, and ``min_replicas..max_replicas``;
- a **replica** is one ordinary job (``kind = inference``, labels ``yungu.service``,
  ``yungu.model``, ``yungu.endpoint``): the scheduler places it like any job (green, cheap,
  near the data), the executor runs it, the ledger meters its device-hours to the tenant
  that owns the service (the platform's ``token-service`` tenant in the demo);
- its **endpoint** is chosen when the job is submitted (a free port on the executor's host;
  the local executor's host is 127.0.0.1) and published in the job's labels; the manager
  health-checks ``GET /health`` and registers the replica with the gateway only while the
  job is running and healthy, so the router never sees a replica that is starting or gone;
- **scaling**: ``engines.gateway.autoscale.desired`` on the requests in flight and the
  time to first byte the gateway observed; the manager submits or cancels replica jobs.

A CPU pool runs ``yungu.adapters.gateway.model_server`` (SmolLM2 on transformers); a GPU pool
runs vLLM's OpenAI server with the same labels (docs/tokens.md); anything that speaks the
OpenAI API can be a replica.
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from yungu.adapters.gateway.service import TokenService
from yungu.adapters.gateway.store import Service, TokenStore
from yungu.domain.clock import Clock
from yungu.domain.job import Job, JobKind, JobSpec, JobState, Resources
from yungu.domain.world import World
from yungu.engines.gateway.autoscale import Observed, ScalePolicy, desired
from yungu.engines.gateway.routing import Replica

log = logging.getLogger("yungu.inference")

LIVE = (JobState.PENDING, JobState.QUEUED, JobState.SCHEDULED, JobState.DISPATCHED, JobState.RUNNING)
MODEL_SERVER = ("{python} -m yungu.adapters.gateway.model_server --port {port} --model {model} "
                "--cache-dir {cache_dir} --embeddings")


def model_cache_dir() -> Path:
    """Where dequantised weights are cached, shared by every replica: ``$YUNGU_MODEL_CACHE``, else
    ``/var/cache/yungu/models`` (root) or ``~/.cache/yungu/models``. Outside any data dir on
    purpose: sandboxed replicas see it read-only, and a sandbox never shows a data dir."""
    import os

    env = os.environ.get("YUNGU_MODEL_CACHE")
    if env:
        return Path(env)
    return Path("/var/cache/yungu/models") if os.geteuid() == 0 else Path.home() / ".cache" / "yungu" / "models"


def ensure_model_cache() -> Path:
    """Create the model cache readable by every replica's uid (the platform runs with umask 077)."""
    import os

    cache = model_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    for d in (cache, cache.parent):
        try:
            if d.stat().st_uid == os.geteuid() and d.name in ("models", "yungu"):
                d.chmod(0o755)
        except OSError:
            pass
    return cache


def _reachable(path: Path) -> bool:
    """Can an unprivileged user (a sandboxed job's uid) reach ``path``? Every parent must be
    searchable by others (a Python under /root, mode 0700, is not)."""
    import os
    import stat

    p = path.resolve()
    for d in [*reversed(p.parents), p] if p.is_dir() else [*reversed(p.parents)]:
        try:
            if not os.stat(d).st_mode & stat.S_IXOTH:
                return False
        except OSError:
            return False
    return True


def runtime_python() -> tuple[str, dict[str, str]]:
    """The interpreter a replica job runs the model server with, and the environment it needs.

    The platform's own (``sys.executable``) when an unprivileged user can reach it; otherwise the
    system's Python of the same minor version with the venv's site-packages and the ``yungu``
    package on ``PYTHONPATH`` (the packages are cp3XX wheels: any 3.XX runs them)."""
    import sysconfig

    exe = Path(sys.executable)
    if _reachable(exe.resolve()):
        return sys.executable, {}
    system = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
    if not system.exists():
        return sys.executable, {}
    import yungu

    site = sysconfig.get_paths()["purelib"]
    code_root = str(Path(yungu.__file__).resolve().parent.parent)
    return str(system), {"PYTHONPATH": f"{site}:{code_root}"}


def runtime_dirs() -> list[Path]:
    """What a sandbox must show (read-only) for ``runtime_python`` to run the model server."""
    import sysconfig

    import yungu

    _exe, env = runtime_python()
    out = [Path(sysconfig.get_paths()["purelib"]).resolve(), Path(yungu.__file__).resolve().parent, model_cache_dir()]
    if not env:
        out += [Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve()]
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def healthy(url: str, timeout_s: float = 1.0) -> bool:
    base = url[: -len("/v1")] if url.endswith("/v1") else url
    try:
        with urllib.request.urlopen(base + "/health", timeout=timeout_s) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


class InferenceManager:
    def __init__(self, jobs: object, tokens: TokenStore, gateway: TokenService, world: World, clock: Clock,
                 new_id: Callable[[], str], data_dir: Path, *, wake: Callable[[], None] = lambda: None,
                 check: Callable[[str], bool] = healthy, interval_s: float = 2.0) -> None:
        self.jobs, self.tokens, self.gateway, self.world = jobs, tokens, gateway, world
        self.clock, self.new_id, self.data_dir = clock, new_id, data_dir
        self.wake, self.check, self.interval_s = wake, check, interval_s
        self._quiet: dict[str, float] = {}
        self._backoff: dict[str, tuple[float, float]] = {}  # service -> (no new replica before, current wait)
        self._seen_failed: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="yungu-inference", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.run_once()
            except Exception:  # a bug: log it, keep serving
                log.exception("inference pass failed")

    def replicas_of(self, job: Job) -> list[Replica]:
        """The replicas a running job serves: one per model it names (chat and embeddings)."""
        url = job.spec.labels.get("yungu.endpoint", "")
        if job.allocation is None or not url:
            return []
        pool = self.world.pool(job.allocation.pool_id)
        site = self.world.site(pool.site_id)
        out = []
        for name in job.spec.labels.get("yungu.models", job.spec.labels.get("yungu.model", "")).split(","):
            model = self.gateway.models.get(name.strip())
            if model is not None:
                out.append(Replica(f"job:{job.id}:{model.model}", model.model, url, site.region_id, model.price,
                                   site.provider, "", pool.id, job.id, site.green_contract_share, model.kind))
        return out

    def note_failures(self, failed: list[Job]) -> None:
        """A replica job that ended without ever running (refused, crashed at once) delays the
        next one: 15 s, doubling to 10 minutes, so a broken service cannot flood the queue."""
        mono = time.monotonic()
        for j in failed:
            name = j.spec.labels.get("yungu.service", "")
            if not name or j.id in self._seen_failed:
                continue
            self._seen_failed.add(j.id)
            _until, wait = self._backoff.get(name, (0.0, 0.0))
            wait = min(600.0, max(15.0, wait * 2))
            self._backoff[name] = (mono + wait, wait)
            log.warning("replica job %s of %s ended without serving (%s): next replica in %.0f s", j.id, name,
                        j.reason or j.state.value, wait)

    def run_once(self) -> dict[str, int]:
        """One pass: register healthy replicas, drop gone ones, scale; returns desired counts."""
        services = self.tokens.services()
        recent = [j for j in self.jobs.in_states((JobState.FAILED,))  # type: ignore[attr-defined]
                  if j.spec.labels.get("yungu.service") and j.started_at is None and j.id not in self._seen_failed]
        self.note_failures(recent)
        active = [j for j in self.jobs.in_states(LIVE) if j.spec.labels.get("yungu.service")]  # type: ignore[attr-defined]
        sources = self.tokens.upstream_sources()
        live_ids: set[str] = set()
        out: dict[str, int] = {}
        now = self.clock.now()
        for svc in services:
            mine = [j for j in active if j.spec.labels.get("yungu.service") == svc.name]
            for j in mine:
                reps = self.replicas_of(j) if j.state is JobState.RUNNING else []
                if not reps:
                    continue
                if rid_ok := self.check(reps[0].url):
                    for rep in reps:
                        live_ids.add(rep.id)
                        if rep.id not in sources:
                            self.tokens.add_upstream(rep, "job", now)
                            log.info("replica %s of %s is serving at %s", rep.id, rep.model, rep.url)
                if not rid_ok:  # keep it registered: the breaker stops traffic; the job's end removes it
                    live_ids.update(r.id for r in reps if r.id in sources)
            out[svc.name] = self._scale(svc, mine)
        for rid, source in sources.items():
            if source == "job" and rid not in live_ids:
                self.tokens.remove_upstream(rid)
        self.gateway.refresh()
        return out

    def _scale(self, svc: Service, mine: list[Job]) -> int:
        ids = {f"job:{j.id}:" for j in mine}
        stats = [s for rid, s in list(self.gateway.stats.items()) if rid[: rid.rfind(":") + 1] in ids]
        queue = sum(s.inflight for s in stats)
        lat = max((s.latency_ms for s in stats), default=0.0)
        mono = time.monotonic()
        policy = ScalePolicy(svc.min_replicas, svc.max_replicas)
        if queue / max(1, len(mine)) >= policy.target_queue or lat > policy.target_latency_ms:
            self._quiet.pop(svc.name, None)
        else:
            self._quiet.setdefault(svc.name, mono)
        want = desired(policy, Observed(len(mine), queue, lat, self._quiet.get(svc.name)), mono)
        starting = [j for j in mine if j.state is not JobState.RUNNING]
        until, _wait = self._backoff.get(svc.name, (0.0, 0.0))
        if want > len(mine) and not starting and mono >= until:  # one replica starting at a time
            self.submit_replica(svc)
        if want < len(mine):
            newest = max(mine, key=lambda j: j.submitted_at)
            self.jobs.request_cancel(newest.id, self.clock.now())  # type: ignore[attr-defined]
            self._quiet[svc.name] = mono
        return want

    def submit_replica(self, svc: Service) -> Job:
        port = free_port()
        cache = ensure_model_cache()
        python, env = runtime_python()
        cmd = svc.command.format(python=python, port=port, model=svc.model.split(",")[0], cache_dir=cache)
        spec = JobSpec(name=f"inference-{svc.name}", command=cmd, kind=JobKind.INFERENCE,
                       resources=Resources(cpus=svc.cpus, memory_gb=svc.memory_gb, accelerators=svc.accelerators),
                       pool=svc.pool, labels={"yungu.service": svc.name, "yungu.models": svc.model,
                                              "yungu.endpoint": f"http://127.0.0.1:{port}/v1"},
                       # no hub is reachable: never try one; caches in the job's own /tmp
                       env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": "/tmp/hf", **env})
        job_id = self.new_id()
        job, _ = self.jobs.submit(svc.tenant_id, spec, self.clock.now(), job_id,  # type: ignore[attr-defined]
                                  idempotency_key=f"inference-{svc.name}-{job_id}", body_hash="inference")
        self.wake()
        log.info("submitted replica job %s for %s (port %d)", job.id, svc.name, port)
        return job  # type: ignore[no-any-return]
