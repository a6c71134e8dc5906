"""Ray executor: Yungu jobs as Ray jobs through the Ray Jobs API (``JobSubmissionClient``).

How our concepts map to Ray's:

==========================  ==========================================================
Yungu                       Ray
==========================  ==========================================================
one attempt (``Launch``)    one Ray job; ``submission_id`` = our request id, so the Jobs
                            server itself refuses a second copy (idempotent submit)
platform ownership          job ``metadata`` ``{"yungu.platform": <name>, ...}``;
                            ``list_active`` lists jobs carrying our tag
single replica              the command *is* the entrypoint (run by ``/bin/sh``), holding
                            ``entrypoint_num_cpus`` / ``_num_gpus`` / ``_memory``
gang of N replicas          the entrypoint is a small launcher (no resources of its own)
                            that reserves a placement group of N bundles
                            ``{CPU, GPU, memory}`` (strategy ``SPREAD``: one per node where
                            the cluster has enough), runs the command once per bundle as
                            a Ray task (``YUNGU_REPLICA`` = bundle index), and fails the
                            whole gang on the first non-zero exit
status                      ``JobStatus``: PENDING/RUNNING/SUCCEEDED/FAILED/STOPPED ->
                            pending/running/succeeded/failed/cancelled; exit code from
                            ``driver_exit_code``
logs                        ``get_job_logs``: stdout and stderr merged by Ray; we drop the
                            Jobs server's own lines and the ``(run_replica pid=...)``
                            prefix Ray puts on a gang replica's lines
cancel                      ``stop_job`` (SIGTERM to the entrypoint, SIGKILL after
                            ``RAY_JOB_STOP_WAIT_TIME_S``, 3 s by default)
run times (billing)         the job info's ``start_time`` and ``end_time`` (ms). Ray has no
                            "running since": ``start_time`` is when the Jobs server accepted
                            the job, so it includes the entrypoint's start-up (typically
                            well under a second on a cluster with room; the platform only
                            places onto free capacity, so Ray does not queue the job).
                            A job stopped for its time limit ends when the stop was issued.
==========================  ==========================================================

Ray queues a job whose resources no node has forever; so submit compares the request with
the cluster's node types (``/api/cluster_status``, cached briefly) and returns ``REJECTED``
with the reason instead. Connection failures are ``UNREACHABLE``; other 4xx answers are
``REJECTED``.

``ray`` is imported here only, lazily, so importing the platform never imports Ray.
"""

from __future__ import annotations

import base64
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

import httpx

from yungu.adapters.executors.base import BaseExecutor
from yungu.adapters.executors.env import ensure_checkpoint_dir, platform_env
from yungu.domain.clock import Clock
from yungu.ports.executor import (
    Capabilities,
    ExecError,
    ExecErrorCode,
    ExecPhase,
    ExecStatus,
    Launch,
    LogChunk,
)

if TYPE_CHECKING:
    from ray.job_submission import JobDetails, JobSubmissionClient

_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,120}$")
_TAG = "yungu.platform"
_NODE_TYPES_TTL_S = 30.0

# The gang launcher, run as ``python -c`` on the cluster. It is plain text so that the Ray
# cluster needs nothing of Yungu installed; the command and sizes arrive as env vars.
_GANG_LAUNCHER = r'''
import ctypes, os, signal, subprocess, sys
import ray
from ray.util.placement_group import placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

n = int(os.environ["YUNGU_REPLICAS"])
bundle = {"CPU": float(os.environ["YUNGU_CPUS"])}
if float(os.environ["YUNGU_GPUS"]):
    bundle["GPU"] = float(os.environ["YUNGU_GPUS"])
if int(os.environ["YUNGU_MEMORY"]):
    bundle["memory"] = int(os.environ["YUNGU_MEMORY"])
ray.init(log_to_driver=True, logging_level="WARNING")
pg = placement_group([dict(bundle) for _ in range(n)], strategy="SPREAD")
ray.get(pg.ready())

def _die_with_parent():
    try:  # the replica must not outlive its Ray worker (PR_SET_PDEATHSIG = 1)
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)
    except OSError:
        pass

@ray.remote(max_retries=0)
def run_replica(i):
    env = dict(os.environ, YUNGU_REPLICA=str(i))
    p = subprocess.Popen(["/bin/sh", "-c", os.environ["YUNGU_COMMAND"]], env=env,
                         start_new_session=True, preexec_fn=_die_with_parent)
    try:
        return p.wait()
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)

opts = {"num_cpus": bundle["CPU"], "num_gpus": bundle.get("GPU", 0)}
refs = [run_replica.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=i),
                            **opts).remote(i) for i in range(n)]

def _stop(*_):
    for r in refs:
        ray.cancel(r)
    sys.exit(143)

signal.signal(signal.SIGTERM, _stop)
pending, rc = list(refs), 0
while pending and rc == 0:
    done, pending = ray.wait(pending, num_returns=1)
    rc = ray.get(done[0])
for r in pending:
    ray.cancel(r)
sys.stdout.flush()
sys.exit(rc)
'''


@dataclass(frozen=True)
class RayConfig:
    """Connection settings of one Ray site (from the site's TOML ``[executor]`` table)."""

    address: str  # the Jobs API (dashboard) URL, e.g. http://head:8265
    platform: str = "yungu"  # tag written to job metadata; list_active only returns ours
    python: str = "python"  # interpreter with ray installed, on the cluster's PATH (gang launcher)
    reject_infeasible: bool = True  # False on an autoscaling cluster that may grow a bigger node
    http_timeout_s: float = 10.0
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, object]) -> RayConfig:
        if not cfg.get("address"):
            raise ValueError("ray executor needs `address` (the Ray dashboard / Jobs API URL)")
        headers = cfg.get("headers") or {}
        return cls(
            address=str(cfg["address"]).rstrip("/"),
            platform=str(cfg.get("platform", "yungu")),
            python=str(cfg.get("python", "python")),
            reject_infeasible=bool(cfg.get("reject_infeasible", True)),
            http_timeout_s=float(cfg.get("http_timeout_s", 10.0)),  # type: ignore[arg-type]
            headers=tuple((str(k), str(v)) for k, v in dict(headers).items()),  # type: ignore[call-overload]
        )


class RayExecutor(BaseExecutor):
    kind: ClassVar[str] = "ray"

    def __init__(self, name: str, config: RayConfig, clock: Clock | None = None) -> None:
        super().__init__(name, clock)
        self.config = config
        self._client: JobSubmissionClient | None = None
        self._client_lock = threading.Lock()
        self._node_types: tuple[float, list[dict[str, float]]] | None = None

    # ---- capabilities ----------------------------------------------------------------

    def capabilities(self) -> Capabilities:
        unsupported = {
            "stderr": "Ray merges a job's stderr into its stdout; logs(stream='stderr') is always empty",
            "energy_accounting": "Ray reports no per-job energy",
        }
        types = self._cluster_node_types()
        gpus = any(t.get("GPU", 0) > 0 for t in types) if types is not None else None
        if gpus is False:
            unsupported["devices"] = "no node of this Ray cluster has GPU resources"
        return Capabilities(name=self.name, gangs=True, devices=bool(gpus), logs=True, energy_accounting=False,
                            unsupported=unsupported)

    # ---- backend hooks -----------------------------------------------------------------

    def _submit(self, launch: Launch) -> ExecStatus | ExecError:
        bad = _validate(launch)
        if bad:
            return ExecError(ExecErrorCode.REJECTED, bad)
        client = self._connect()
        if isinstance(client, ExecError):
            return client
        infeasible = self._infeasible(launch)
        if infeasible:
            return ExecError(ExecErrorCode.REJECTED, infeasible)
        n = len(launch.replicas)
        memory = int(launch.memory_gb_per_replica * (1 << 30))
        problem = ensure_checkpoint_dir(launch)  # on a real cluster: shared storage
        if problem:
            return ExecError(ExecErrorCode.REJECTED, problem)
        env = {**launch.env, **platform_env(launch), "YUNGU_COMMAND": launch.command}
        kwargs: dict[str, Any]
        if n == 1:
            env["YUNGU_REPLICA"] = "0"
            kwargs = {"entrypoint": launch.command, "entrypoint_num_cpus": launch.cpus_per_replica,
                      "entrypoint_num_gpus": launch.accelerators_per_replica or None,
                      "entrypoint_memory": memory or None}
        else:
            env |= {"YUNGU_CPUS": str(launch.cpus_per_replica), "YUNGU_GPUS": str(launch.accelerators_per_replica),
                    "YUNGU_MEMORY": str(memory)}
            env["YUNGU_GANG_LAUNCHER"] = base64.b64encode(_GANG_LAUNCHER.encode()).decode()
            launcher = "import base64,os;exec(base64.b64decode(os.environ['YUNGU_GANG_LAUNCHER']))"
            kwargs = {"entrypoint": f'{self.config.python} -c "{launcher}"', "entrypoint_num_cpus": 0}
        metadata = {_TAG: self.config.platform, "yungu.job_id": launch.job_id, "yungu.tenant_id": launch.tenant_id,
                    "yungu.pool_id": launch.pool_id, "yungu.replicas": str(n)}
        if launch.time_limit_s:
            metadata["yungu.time_limit_s"] = str(launch.time_limit_s)
        try:
            client.submit_job(submission_id=launch.request_id, runtime_env={"env_vars": env}, metadata=metadata,
                              **kwargs)
        except Exception as exc:
            err = _map_error(exc)
            if "already exists" not in str(exc):
                return err
            # A duplicate: the first submission stands; report its status (idempotent submit).
            return self._status(launch.request_id)
        return ExecStatus(launch.request_id, ExecPhase.PENDING, native_id=launch.request_id)

    def _cancel(self, request_id: str, grace_s: float) -> ExecStatus | ExecError:
        current = self._status(request_id)
        if isinstance(current, ExecError) or current.done:
            return current
        client = self._connect()
        if isinstance(client, ExecError):
            return client
        try:
            client.stop_job(request_id)
        except Exception as exc:
            return _map_error(exc)
        deadline = self.clock.monotonic() + min(grace_s, 5.0)
        while True:
            st = self._status(request_id)
            if isinstance(st, ExecError) or st.done or self.clock.monotonic() >= deadline:
                return st
            self.clock.sleep(0.2)

    def _status(self, request_id: str) -> ExecStatus | ExecError:
        client = self._connect()
        if isinstance(client, ExecError):
            return client
        try:
            info = client.get_job_info(request_id)
        except Exception as exc:
            return _map_error(exc)
        return self._to_status(info)

    def _observe(self, request_ids: Sequence[str]) -> Mapping[str, ExecStatus | ExecError]:
        """One ``list_jobs`` round-trip for the whole batch."""
        client = self._connect()
        if isinstance(client, ExecError):
            return {rid: client for rid in request_ids}
        try:
            jobs = client.list_jobs()
        except Exception as exc:
            err = _map_error(exc)
            return {rid: err for rid in request_ids}
        by_id = {j.submission_id: j for j in jobs if j.submission_id}
        return {rid: self._to_status(by_id[rid]) if rid in by_id
                else ExecError(ExecErrorCode.NOT_FOUND, f"Ray has no job {rid!r}") for rid in request_ids}

    def _logs(self, request_id: str, stream: str, offset: int, limit: int) -> LogChunk | ExecError:
        if stream not in ("stdout", "stderr"):
            return ExecError(ExecErrorCode.REJECTED, f"stream must be stdout or stderr, got {stream!r}")
        st = self._status(request_id)
        if isinstance(st, ExecError):
            return st
        if stream == "stderr":  # merged into stdout by Ray
            return LogChunk(b"", offset, eof=st.done)
        client = self._connect()
        if isinstance(client, ExecError):
            return client
        try:
            text = client.get_job_logs(request_id)
        except Exception as exc:
            return _map_error(exc)
        data = job_output(text, request_id).encode()
        chunk = data[offset:offset + limit]
        end = offset + len(chunk)
        return LogChunk(chunk, end, eof=st.done and end >= len(data))

    def _list_active(self) -> Sequence[ExecStatus] | ExecError:
        client = self._connect()
        if isinstance(client, ExecError):
            return client
        try:
            jobs = client.list_jobs()
        except Exception as exc:
            return _map_error(exc)
        ours = [self._to_status(j) for j in jobs
                if j.submission_id and (j.metadata or {}).get(_TAG) == self.config.platform]
        return [s for s in ours if not s.done]

    def _check(self) -> Mapping[str, object]:
        try:
            version = self._http_get("/api/version")
            status = self._http_get("/api/cluster_status")
        except (httpx.HTTPError, ValueError) as exc:
            return {"reachable": False, "error": f"{type(exc).__name__}: {exc}", "address": self.config.address}
        report = status.get("data", {}).get("clusterStatus", {}).get("loadMetricsReport", {})
        usage = report.get("usage", {})
        total = {k: v[1] for k, v in usage.items() if isinstance(v, list) and len(v) == 2}
        used = {k: v[0] for k, v in usage.items() if isinstance(v, list) and len(v) == 2}
        nodes = sum(int(count) for _, count in report.get("nodeTypes", []))
        return {
            "reachable": True,
            "address": self.config.address,
            "ray_version": version.get("ray_version"),
            "nodes": nodes,
            "cpus": total.get("CPU", 0.0),
            "cpus_in_use": used.get("CPU", 0.0),
            "gpus": total.get("GPU", 0.0),
            "memory_gb": round(total.get("memory", 0.0) / (1 << 30), 1),
        }

    def _close(self) -> None:
        self._client = None

    # ---- helpers -----------------------------------------------------------------------

    def _connect(self) -> JobSubmissionClient | ExecError:
        """The Jobs API client, created on first use (its constructor calls the server)."""
        if self._client is not None:
            return self._client
        with self._client_lock:
            if self._client is None:
                from ray.job_submission import JobSubmissionClient

                try:
                    self._client = JobSubmissionClient(self.config.address, headers=dict(self.config.headers) or None)
                except Exception as exc:
                    return _map_error(exc)
            return self._client

    def _to_status(self, info: JobDetails) -> ExecStatus:
        from ray.job_submission import JobStatus

        rid = info.submission_id or ""
        started = _ms(info.start_time)
        finished = _ms(info.end_time)
        code = info.driver_exit_code
        status = info.status
        if status == JobStatus.PENDING:
            return ExecStatus(rid, ExecPhase.PENDING, reason=_short(info.message), native_id=rid)
        limit = _time_limit(info)
        if status == JobStatus.RUNNING:
            if limit is not None and started is not None and (self.clock.now() - started).total_seconds() > limit:
                # Ray has no time limit of its own: the executor enforces it when it observes the
                # job. The stop is asynchronous; the outcome reads the same before and after it.
                self._stop_quietly(rid)
                return ExecStatus(rid, ExecPhase.FAILED, reason=f"time limit of {limit}s exceeded", native_id=rid,
                                  started_at=started, finished_at=self.clock.now())
            return ExecStatus(rid, ExecPhase.RUNNING, native_id=rid, started_at=started)
        if status == JobStatus.SUCCEEDED:
            return ExecStatus(rid, ExecPhase.SUCCEEDED, exit_code=0 if code is None else code, native_id=rid,
                              started_at=started, finished_at=finished)
        if status == JobStatus.STOPPED:
            if limit is not None and started is not None and finished is not None and (
                (finished - started).total_seconds() >= limit
            ):  # stopped by the executor's time-limit check above (or cancelled past its limit)
                return ExecStatus(rid, ExecPhase.FAILED, exit_code=code, reason=f"time limit of {limit}s exceeded",
                                  native_id=rid, started_at=started, finished_at=finished)
            return ExecStatus(rid, ExecPhase.CANCELLED, exit_code=code, reason="stopped (stop_job)", native_id=rid,
                              started_at=started, finished_at=finished)
        reason = str(info.error_type or "FAILED")
        if code is not None:
            reason = f"exited with {code}"
        elif info.message:
            reason = f"{reason}: {_short(info.message)}"
        return ExecStatus(rid, ExecPhase.FAILED, exit_code=code, reason=reason, native_id=rid, started_at=started,
                          finished_at=finished)

    def _stop_quietly(self, request_id: str) -> None:
        client = self._connect()
        if isinstance(client, ExecError):
            return  # retried at the next observation: the job still reads as over its limit
        try:
            client.stop_job(request_id)
        except Exception:  # the next observation tries again
            return

    def _http_get(self, path: str) -> dict[str, Any]:
        r = httpx.get(self.config.address + path, timeout=self.config.http_timeout_s,
                      headers=dict(self.config.headers))
        r.raise_for_status()
        body = r.json()
        if not isinstance(body, dict):
            raise ValueError(f"{path}: expected a JSON object")
        return body

    def _cluster_node_types(self) -> list[dict[str, float]] | None:
        """Resources of each node type (cached for a few seconds); None when unreachable."""
        now = self.clock.monotonic()
        if self._node_types and now - self._node_types[0] < _NODE_TYPES_TTL_S:
            return self._node_types[1]
        try:
            body = self._http_get("/api/cluster_status")
        except (httpx.HTTPError, ValueError):
            return None
        report = body.get("data", {}).get("clusterStatus", {}).get("loadMetricsReport", {})
        types = [dict(t) for t, _count in report.get("nodeTypes", []) if isinstance(t, dict)]
        self._node_types = (now, types)
        return types

    def _infeasible(self, launch: Launch) -> str:
        if not self.config.reject_infeasible:
            return ""
        types = self._cluster_node_types()
        if not types:
            return ""  # cannot tell: let Ray decide
        need = {"CPU": float(launch.cpus_per_replica), "GPU": float(launch.accelerators_per_replica),
                "memory": float(launch.memory_gb_per_replica * (1 << 30))}
        for t in types:
            if all(t.get(k, 0.0) >= v for k, v in need.items() if v > 0):
                return ""
        biggest = max(types, key=lambda t: (t.get("GPU", 0.0), t.get("CPU", 0.0)))
        return (f"no Ray node can hold one replica ({launch.cpus_per_replica} CPU, "
                f"{launch.accelerators_per_replica} GPU, {launch.memory_gb_per_replica} GB); the largest node has "
                f"{biggest.get('CPU', 0):g} CPU, {biggest.get('GPU', 0):g} GPU, "
                f"{biggest.get('memory', 0) / (1 << 30):.1f} GB")


# Lines the Jobs server and the gang launcher's ray.init write into a job's log, and the
# prefix Ray puts on lines forwarded from a replica task: not the job's output.
_RAY_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}\t(INFO|WARNING) (job_manager|worker)\.py:\d+ -- ")
_REPLICA_PREFIX = re.compile(r"^(\x1b\[\d+m)?\(run_replica pid=\d+(, ip=[^)]*)?\)(\x1b\[0m)? ")


def job_output(text: str, request_id: str) -> str:
    """A Ray job log reduced to what the job printed (stable under appends, so offsets hold)."""
    entry = f"Running entrypoint for job {request_id}: "
    out = []
    for line in text.splitlines(keepends=True):
        if _RAY_LINE.match(line) or line.startswith(entry):
            continue
        out.append(_REPLICA_PREFIX.sub("", line))
    return "".join(out)


def _validate(launch: Launch) -> str:
    if not _SAFE_ID.match(launch.request_id):
        return f"request id {launch.request_id!r} must match {_SAFE_ID.pattern}"
    if not launch.replicas:
        return "a launch needs at least one replica"
    if launch.cpus_per_replica < 1 or launch.memory_gb_per_replica < 0 or launch.accelerators_per_replica < 0:
        return "cpus_per_replica must be >= 1; memory and accelerators must be >= 0"
    return ""


def _map_error(exc: BaseException) -> ExecError:
    """Ray's client raises RuntimeError('Request failed with status code N: ...') and ConnectionError."""
    msg = str(exc)
    m = re.search(r"status code (\d{3})", msg)
    if m:
        code = int(m.group(1))
        if code == 404 or "does not exist" in msg:
            return ExecError(ExecErrorCode.NOT_FOUND, _short(msg))
        if 400 <= code < 500 or "already exists" in msg:
            return ExecError(ExecErrorCode.REJECTED, _short(msg))
        return ExecError(ExecErrorCode.UNREACHABLE, _short(msg))
    if isinstance(exc, (ConnectionError, OSError, TimeoutError)) or "connect" in msg.lower():
        return ExecError(ExecErrorCode.UNREACHABLE, f"Ray Jobs API unreachable: {_short(msg)}")
    return ExecError(ExecErrorCode.INTERNAL, f"{type(exc).__name__}: {_short(msg)}")


def _short(msg: str | None, limit: int = 500) -> str:
    """Ray packs server tracebacks into messages; keep the last meaningful line."""
    if not msg:
        return ""
    lines = [ln.strip() for ln in msg.strip().splitlines() if ln.strip() and ln.strip() != "."]
    for ln in reversed(lines):
        if not ln.startswith(("File ", "^", "raise ", "await ", "Traceback")):
            return ln[:limit]
    return lines[-1][:limit] if lines else ""


def _time_limit(info: JobDetails) -> int | None:
    raw = (info.metadata or {}).get("yungu.time_limit_s")
    try:
        return int(raw) if raw else None
    except ValueError:
        return None


def _ms(value: int | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromtimestamp(value / 1000, UTC)

