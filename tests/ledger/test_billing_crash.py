"""The crash test, extended to billing: kill -9 the real server at least 50 times.

Short jobs are submitted (with idempotency keys, retried while the server is down) while the
``yungu server`` process — embedded default world, live loop, billing runner — is killed
with SIGKILL at random moments, again and again, and restarted on the same data dir. Many
jobs start, run and end while no platform is watching. Each job writes its own start and end
(``date +%s.%N``) to a file. Afterwards:

- every job succeeded and ran exactly once (its id is in the file once);
- every succeeded job has exactly one usage record, booked;
- its billed duration is within 1 s of the run time the job itself measured — the platform's
  downtime is never billed.

Jobs run in the sandbox, which shows them nothing of the host but what the operator binds:
the world is the embedded default one plus an operator bind of the file's directory
(docs/security.md, "Operator binds").
"""

from __future__ import annotations

import os
import random
import threading
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import ServerProcess, default_world_with
from tests.executors.sandbox_env import binds_toml, shared_dir

pytestmark = [pytest.mark.slow]

JOBS = int(os.environ.get("YUNGU_BILLING_CRASH_JOBS", "120"))
KILLS = int(os.environ.get("YUNGU_BILLING_CRASH_KILLS", "50"))


def _submit_all(url: str, admin: dict[str, str], tenant: str, out: Path, rng: random.Random,
                ids: dict[int, str], stop: threading.Event) -> None:
    for i in range(JOBS):
        nap = f"{rng.uniform(0.1, 1.2):.2f}"
        body = {"name": f"c{i}", "tenant_id": tenant,
                "command": f"s=$(date +%s.%N); sleep {nap}; e=$(date +%s.%N); echo \"$YUNGU_JOB_ID $s $e\" >> {out}"}
        while not stop.is_set():  # the server may be down or restarting: retry with the same key
            try:
                r = httpx.post(url + "/api/v1/jobs", json=body, headers={**admin, "Idempotency-Key": f"bc-{i}"},
                               timeout=5)
                if r.status_code in (200, 201):
                    ids[i] = r.json()["id"]
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        time.sleep(rng.uniform(0.0, 0.15))


@pytest.mark.timeout(3600)  # 50 restarts: a start takes 5 s on a quiet VM, 30 s at load 30
def test_after_50_kill_9s_every_job_is_billed_once_for_its_real_run_time(tmp_path: Path) -> None:
    rng = random.Random(int(os.environ.get("YUNGU_CRASH_SEED", "20261201")))
    data = tmp_path / "data"
    data.mkdir()
    out = shared_dir("billing-crash") / "ran.txt"
    out.touch()
    out.chmod(0o666)
    world = ["--config", str(default_world_with(tmp_path / "world.toml", binds_toml()))]
    t0 = time.monotonic()
    srv = ServerProcess(data, extra=world).start(timeout=120)
    boot = time.monotonic() - t0  # how long a start takes on this machine, now
    admin = {"Authorization": f"Bearer {srv.admin_key}"}
    tenant = httpx.post(srv.url + "/api/v1/admin/tenants", json={"name": "billing-crash-lab"}, headers=admin,
                        timeout=30).json()["id"]
    ids: dict[int, str] = {}
    stop = threading.Event()
    submitter = threading.Thread(target=_submit_all, args=(srv.url, admin, tenant, out, rng, ids, stop),
                                 daemon=True)
    submitter.start()
    kills = 0
    try:
        while kills < KILLS:
            # At random moments: mostly once the server serves and runs jobs, some while it starts.
            time.sleep(rng.uniform(0.5 * boot, boot + 2.5) if kills else rng.uniform(0.2, 2.5))
            assert srv.proc is not None and srv.proc.poll() is None, "the server died on its own: see its log"
            srv.kill9()
            kills += 1
            srv = ServerProcess(data, port=srv.port, extra=world)
            if kills % 5 == 0:
                srv.start(timeout=120)  # now and then, wait until it serves (and catches up)
            else:
                _start_nowait(srv)
        submitter.join(timeout=600)
        srv.stop()
        srv = ServerProcess(data, port=srv.port, extra=world).start(timeout=120)
        states: dict[str, str] = {}
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            page = httpx.get(srv.url + "/api/v1/jobs", params={"limit": 500}, headers=admin, timeout=30).json()
            states = {j["id"]: j["state"] for j in page["items"]}
            if len(states) == JOBS and all(s in ("succeeded", "failed", "cancelled") for s in states.values()):
                break
            time.sleep(0.5)
        httpx.post(srv.url + "/api/v1/billing/run", headers=admin, timeout=120).raise_for_status()
        usage = httpx.get(srv.url + "/api/v1/billing/usage", params={"limit": 10_000}, headers=admin,
                          timeout=60).json()
        # The same run through the old rule (times = when the loop recorded start and end), to compare.
        noticed = {j: _noticed(httpx.get(f"{srv.url}/api/v1/jobs/{j}/events", headers=admin, timeout=30).json()["items"])
                   for j in states}
    finally:
        stop.set()
        srv.stop()

    assert kills >= KILLS
    assert len(ids) == JOBS and len(set(ids.values())) == JOBS
    assert set(states.values()) == {"succeeded"}, {s for s in states.values()}
    own: dict[str, tuple[float, float]] = {}
    for line in out.read_text().splitlines():
        job, s, e = line.split()
        assert job not in own, f"job {job} ran twice"
        own[job] = (float(s), float(e))
    assert sorted(own) == sorted(ids.values()), "every job ran exactly once"
    by_job: dict[str, list[dict[str, object]]] = {}
    for u in usage:
        by_job.setdefault(str(u["job_id"]), []).append(u)
    assert sorted(by_job) == sorted(ids.values()), "every succeeded job is metered"
    assert all(len(rows) == 1 for rows in by_job.values()), "... exactly once"
    errors = []
    detail = []
    for job, [u] in by_job.items():
        assert u["booked"] is True and u["booking_error"] is None, u
        billed = (datetime.fromisoformat(str(u["ended_at"])) - datetime.fromisoformat(str(u["started_at"])))
        real = own[job][1] - own[job][0]
        errors.append(billed.total_seconds() - real)
        detail.append((abs(errors[-1]), job, datetime.fromisoformat(str(u["started_at"])).timestamp() - own[job][0],
                       datetime.fromisoformat(str(u["ended_at"])).timestamp() - own[job][1]))
        assert abs(int(str(u["device_seconds"])) - real) <= 1.0, (job, u, real)  # 1 CPU: whole seconds
    worst = max(errors, key=abs)
    old_errors = [noticed[j] - (own[j][1] - own[j][0]) for j in own if noticed.get(j) is not None]
    print(f"\nbilling crash test: {kills} kill -9s, {JOBS} jobs, boot {boot:.1f} s, load {os.getloadavg()[0]:.1f}\n"
          f"  executor's times (billed):  metered {len(by_job)}/{JOBS}, max |billed - real| {abs(worst):.3f} s, "
          f"mean {sum(errors) / len(errors):+.3f} s\n"
          f"  loop's times (the old rule): would meter {len(old_errors)}/{JOBS} (a job without a start event "
          f"was never billed), "
          f"max |error| {max(map(abs, old_errors), default=0):.3f} s, "
          f"mean {sum(old_errors) / max(1, len(old_errors)):+.3f} s")
    for err, job, ds, de in sorted(detail)[-3:]:  # the worst: start and end offsets from the job's own
        print(f"  {job}: |error| {err:.3f} s (start {ds:+.3f} s, end {de:+.3f} s)")
    assert abs(worst) < 1.0, sorted(errors)[-5:]


def _start_nowait(srv: ServerProcess) -> None:
    """Start the server process without waiting for it to answer (a kill may land mid-start)."""
    import subprocess

    from tests.e2e.server import yungu_exe

    log = open(srv.data_dir.parent / f"server-{srv.port}.log", "ab")  # noqa: SIM115
    srv.proc = subprocess.Popen([yungu_exe(), "server", "--port", str(srv.port), "--data-dir", str(srv.data_dir),
                                 *srv.extra], stdout=log, stderr=subprocess.STDOUT)


def _noticed(events: list[dict[str, object]]) -> float | None:
    """Run time as the loop saw it: its succeed event minus its start event (None: no start)."""
    at = {str(e["event"]): datetime.fromisoformat(str(e["at"])) for e in events}
    if "start" not in at or "succeed" not in at:
        return None
    return (at["succeed"] - at["start"]).total_seconds()
