"""Exactly-once metering with honest times.

- A job that finished while the platform was not looking is recorded ``scheduled -> dispatch
  -> succeed`` with no start event; it is still metered, over the executor's own times.
- Jobs recorded out of order (an older finish recorded after newer ones, as after a restart)
  are all metered, each once, on SQLite and PostgreSQL.
- A job that cannot be metered is parked and raised as an alert; it never blocks the others.
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.executors.sandbox_env import BINDS, shared_dir
from yungu.adapters.config import load_catalogue, load_config
from yungu.adapters.executors.local import LocalExecutor
from yungu.adapters.ledger.alerts import TableAlerts
from yungu.adapters.ledger.billing_store import BillingStore
from yungu.adapters.ledger.store import LedgerStore, ensure_system_accounts
from yungu.adapters.store.db import create_engine, migrate
from yungu.adapters.store.job_store import SqlStore
from yungu.adapters.system import SystemClock
from yungu.control.billing import BillingLoop
from yungu.control.reconciler import Reconciler, run_times
from yungu.domain.clock import FixedClock
from yungu.domain.job import Allocation, Event, JobSpec, JobState, ReplicaPlacement
from yungu.ports.executor import ExecPhase, ExecStatus, Launch, ReplicaLaunch
from yungu.ports.store import Transition

WORLD = load_config().world  # the embedded default world
T0 = datetime(2026, 11, 22, 8, tzinfo=UTC)


def scheduled(store: SqlStore, job_id: str, command: str, now: datetime, pool: str = "horinger-cpu") -> None:
    store.submit("t1", JobSpec("m", command), now, job_id)
    j = store.get(job_id)
    q = j.apply(Event.ADMIT, now)
    s = q.apply(Event.PLACE, now, allocation=Allocation(job_id, pool, (ReplicaPlacement(0, ()),), 1, 1))
    assert len(store.record([Transition(j, q, Event.ADMIT), Transition(q, s, Event.PLACE)])) == 1


def test_a_job_that_finished_unseen_is_metered_over_the_executors_times(tmp_path: Path) -> None:
    """The crash case, with real components: the executor launched the job, the platform died
    before recording the dispatch, the job ran and ended. The restarted loop dispatches again
    with the same request id, gets the first launch's outcome, and records dispatch + succeed."""
    engine = create_engine(f"sqlite:///{tmp_path / 'y.db'}")
    migrate(engine)
    store = SqlStore(engine, WORLD.platform_id)
    store.create_tenant("t1", "lab", T0)
    shared = shared_dir("metering")  # bound into the sandbox by the operator's setting
    own = shared / "own"
    scheduled(store, "j1", f"date +%s.%N > {own}.start; sleep 0.6; date +%s.%N > {own}.end", T0)
    job = store.get("j1")
    ex = LocalExecutor("local", {"binds": BINDS}, tmp_path / "data")
    try:
        launch = Launch(job.request_id, job.id, job.tenant_id, "horinger-cpu", job.spec.command, (ReplicaLaunch(0),))
        assert isinstance(ex.submit(launch), ExecStatus)  # "before the crash"
        deadline = time.monotonic() + 20
        while not ex.status(job.request_id).done:  # type: ignore[union-attr]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(1.0)  # the platform is "down" a while longer: none of this may be billed
        loop = Reconciler(store, None, {"local": ex}, WORLD, load_catalogue(), SystemClock())  # type: ignore[arg-type]
        loop.run_once()
    finally:
        ex.close()
    done = store.get("j1")
    assert done.state is JobState.SUCCEEDED
    assert [e["event"] for e in store.events("j1")] == ["admit", "place", "dispatch", "succeed"]  # no start
    real = float((shared / "own.end").read_text()) - float((shared / "own.start").read_text())
    ledger = LedgerStore(engine, SystemClock())
    ensure_system_accounts(ledger)
    usage = BillingStore(engine, SystemClock())
    billing = BillingLoop(ledger, usage, WORLD, SystemClock())
    assert billing.meter_from(store) == 1
    assert billing.meter_from(store) == 0  # marked: never metered twice
    [row] = usage.usage()
    billed = (row.usage.ended_at - row.usage.started_at).total_seconds()
    assert abs(billed - real) < 0.5, (billed, real)  # the run, not the platform's downtime
    assert abs(row.usage.device_seconds - real) <= 0.5 + 0.5  # 1 CPU, whole seconds, rounded
    assert billing.book_due() == 1


def test_run_times_prefer_the_executor_and_fall_back_visibly() -> None:
    alloc = Allocation("j", "horinger-cpu", (ReplicaPlacement(0, ()),), 1, 1)
    d = replace(_job(JobState.DISPATCHED), allocation=alloc, updated_at=T0)
    now = T0 + timedelta(seconds=30)
    ran = ExecStatus("j.0", ExecPhase.SUCCEEDED, 0, started_at=T0 + timedelta(seconds=1),
                     finished_at=T0 + timedelta(seconds=3))
    assert run_times(d, ran, now) == ({"started_at": ran.started_at, "finished_at": ran.finished_at}, "")
    bare = ExecStatus("j.0", ExecPhase.SUCCEEDED, 0)
    times, note = run_times(d, bare, now)
    assert times == {"started_at": T0, "finished_at": now} and "no start" in note and "dispatch" in note
    never = ExecStatus("j.0", ExecPhase.CANCELLED)  # cancelled, no sign of a start: not metered
    assert "started_at" not in run_times(d, never, now)[0]
    behind = ExecStatus("j.0", ExecPhase.SUCCEEDED, 0, started_at=T0 + timedelta(seconds=2), finished_at=T0)
    assert run_times(d, behind, now)[0]["finished_at"] == T0 + timedelta(seconds=2)  # never negative


def _job(state: JobState):  # type: ignore[no-untyped-def]
    from yungu.domain.job import Job

    return Job("j", "p", "t1", JobSpec("m", "true"), state, T0, T0)


def finish(store: SqlStore, job_id: str, started: datetime, finished: datetime, pool: str = "horinger-cpu") -> None:
    scheduled(store, job_id, "true", T0, pool)
    s = store.get(job_id)
    d = s.apply(Event.DISPATCH, T0)
    r = d.apply(Event.START, T0, started_at=started)
    done = r.apply(Event.SUCCEED, T0, finished_at=finished, exit_code=0)
    assert store.record([Transition(s, d, Event.DISPATCH), Transition(d, r, Event.START),
                         Transition(r, done, Event.SUCCEED)])


def test_jobs_recorded_out_of_order_are_each_metered_once(db_url: str) -> None:
    engine = create_engine(db_url)
    migrate(engine)
    store = SqlStore(engine, WORLD.platform_id)
    store.create_tenant("t1", "lab", T0)
    clock = FixedClock(T0)
    usage = BillingStore(engine, clock)
    loop = BillingLoop(LedgerStore(engine, clock), usage, WORLD, clock)
    for i in range(5):
        finish(store, f"late{i}" if i == 4 else f"j{i}", T0 + timedelta(minutes=i), T0 + timedelta(minutes=i + 1))
    assert loop.meter_from(store, batch=2) == 5
    # Recorded after the others, though it finished before all of them (a restart, a slow observer):
    finish(store, "older", T0 - timedelta(hours=2), T0 - timedelta(hours=1))
    assert loop.meter_from(store, batch=2) == 1
    assert loop.meter_from(store) == 0
    ids = sorted(r.usage.job_id for r in usage.usage())
    assert ids == sorted(["j0", "j1", "j2", "j3", "late4", "older"])
    # ... and booked on the same backend; a parked row waits for its retry time, blocking none.
    ensure_system_accounts(loop.ledger)  # type: ignore[arg-type]
    usage.park("usage:j0.0", "held back by the test", T0 + timedelta(minutes=5))
    assert loop.book_due(limit=2) == 5
    assert [r.usage.id for r in usage.unbooked()] == ["usage:j0.0"]
    clock.advance(300)
    assert loop.book_due() == 1 and usage.unbooked() == []
    assert all(r.booked and r.attempts == 1 and r.error == "" for r in usage.usage() if r.usage.job_id == "j0")
    engine.dispose()


def test_a_job_that_cannot_be_metered_is_parked_with_an_alert_and_blocks_nothing(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'y.db'}")
    migrate(engine)
    store = SqlStore(engine, WORLD.platform_id)
    store.create_tenant("t1", "lab", T0)
    clock = FixedClock(T0)
    alerts = TableAlerts(engine)
    usage = BillingStore(engine, clock)
    finish(store, "j0", T0, T0 + timedelta(minutes=1), pool="beijing-cpu")  # first in line
    for i in range(1, 3):
        finish(store, f"j{i}", T0, T0 + timedelta(minutes=1))
    # j0 ran on a pool that has since left the configuration.
    gone = replace(WORLD, pools=tuple(p for p in WORLD.pools if p.id != "beijing-cpu"))
    loop = BillingLoop(LedgerStore(engine, clock), usage, gone, clock, alerts=alerts)
    assert loop.meter_from(store) == 2  # the others are metered all the same
    [alert] = alerts.open_alerts("billing_unmetered")
    assert alert["subject"] == "j0" and "beijing-cpu" in str(alert["message"])
    assert store.unmetered(10) == []  # parked, not retried every pass
    store.unpark_metering()  # at the next start, with the pool back in the configuration
    assert BillingLoop(LedgerStore(engine, clock), usage, WORLD, clock).meter_from(store) == 1
    assert sorted(r.usage.job_id for r in usage.usage()) == ["j0", "j1", "j2"]
    engine.dispose()
