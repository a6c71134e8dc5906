"""Leadership of the control loop: one holder at a time, takeover on expiry or release,
fencing tokens that refuse a paused old leader, on SQLite and PostgreSQL alike.

Lease expiry is measured on the database's clock, so these tests use short real TTLs
(a fraction of a second) instead of a mock clock; each waits at most about one TTL.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from yungu.adapters.store import tables as _tables  # noqa: F401
from yungu.adapters.store.db import create_engine, migrate
from yungu.adapters.store.job_store import SqlStore
from yungu.adapters.store.lease_store import SqlLeaseStore
from yungu.control.leader import Leadership
from yungu.domain.job import JobSpec
from yungu.ports.store import Fenced, Lease, Transition
from yungu.testing import MockClock
from yungu.testing.world import T0

TTL = 0.6


@pytest.fixture
def leases(db_url: str) -> Iterator[SqlLeaseStore]:
    engine = create_engine(db_url)
    migrate(engine)
    yield SqlLeaseStore(engine)
    engine.dispose()


class Roles:
    def __init__(self) -> None:
        self.log: list[str] = []
        self.lease: Lease | None = None

    def gain(self, lease: Lease) -> None:
        self.lease = lease
        self.log.append(f"gain {lease.token}")

    def loss(self) -> None:
        self.log.append("loss")


def member(leases: SqlLeaseStore, name: str, clock: object | None = None) -> tuple[Leadership, Roles]:
    from yungu.adapters.system import SystemClock

    roles = Roles()
    lead = Leadership(leases, clock or SystemClock(), on_gain=roles.gain, on_loss=roles.loss, holder=name,  # type: ignore[arg-type]
                      ttl_s=TTL, renew_s=0.1, poll_s=0.05, margin_s=0.1)
    return lead, roles


def until(pred: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_one_leads_the_other_stands_by_and_takes_over_at_release(leases: SqlLeaseStore) -> None:
    a, ra = member(leases, "a")
    b, rb = member(leases, "b")
    a.tick()
    b.tick()
    assert a.leading and not b.leading and ra.log == ["gain 1"] and rb.log == []
    a.stop(release=True)  # a clean shutdown gives the lease up at once
    b.tick()
    assert b.leading and rb.log == ["gain 2"] and ra.log == ["gain 1", "loss"]


def test_a_silent_leader_is_replaced_after_its_ttl_and_then_fenced(leases: SqlLeaseStore, db_url: str) -> None:
    engine = leases.engine
    store = SqlStore(engine, "p")
    t = store.create_tenant("t1", "lab", T0)
    job, _ = store.submit(t.id, JobSpec("j", "true"), T0, "job-1")
    a, ra = member(leases, "a")
    b, rb = member(leases, "b")
    a.tick()
    assert ra.lease is not None
    old_fence = ra.lease.fence
    # a is paused: it stops renewing. b keeps trying and takes over once a's lease has expired.
    t0 = time.monotonic()
    b.start()
    try:
        until(lambda: b.leading)
        took = time.monotonic() - t0
        assert took < TTL + 1.0, took
        assert rb.lease is not None and rb.lease.token == old_fence.token + 1
        # a wakes up and writes with its old token: refused, nothing written
        from yungu.domain.job import Event

        tr = Transition(job, job.apply(Event.ADMIT, T0), Event.ADMIT)
        with pytest.raises(Fenced):
            store.fenced(old_fence).record([tr])
        with pytest.raises(Fenced):
            store.fenced(old_fence).set_reasons({job.id: "stale"})
        assert store.get(job.id).state.value == "pending" and store.get(job.id).reason == ""
        assert [j.state.value for j in store.fenced(rb.lease.fence).record([tr])] == ["queued"]
        a.tick()  # its renewal fails: it stands by
        assert not a.leading and ra.log == ["gain 1", "loss"]
    finally:
        b.stop()


def test_a_leader_that_cannot_renew_in_time_stops_acting_by_its_own_clock(leases: SqlLeaseStore) -> None:
    clock = MockClock(T0)
    a, _roles = member(leases, "a", clock)
    a.tick()
    assert a.leading and a.valid()
    clock.jump(TTL - 0.1)  # past ttl - margin with no renewal (it was paused): no more executor actions
    assert a.leading and not a.valid()
    a.tick()  # renewal succeeds (nobody took it): valid again
    assert a.valid()


def test_a_role_that_reports_fenced_makes_the_process_stand_by(leases: SqlLeaseStore) -> None:
    a, ra = member(leases, "a")
    a.tick()
    a.fenced(Fenced("someone else leads"))
    a.tick()
    assert not a.leading and ra.log == ["gain 1", "loss"]
    a.tick()  # the lease is still its own in the database (nobody took it): it leads again
    assert a.leading and ra.log[-1] == "gain 1"


def test_a_leader_paused_inside_a_write_cannot_block_the_takeover(leases: SqlLeaseStore) -> None:
    """The fencing read takes a share lock on the lease row; a writer paused inside that
    transaction would hold a takeover up for good, so PostgreSQL ends it after 2 s idle."""
    if leases.engine.dialect.name != "postgresql":
        pytest.skip("SQLite is single-process: nothing else can be waiting on the lock")
    store = SqlStore(leases.engine, "p")
    old = leases.acquire("loop", "old", ttl_s=0.5)
    assert old is not None
    fenced = store.fenced(old.fence)
    conn = leases.engine.connect()
    tx = conn.begin()
    fenced._check_fence(conn)  # the old leader is inside a write ... and is paused here
    t0 = time.monotonic()
    got = None
    while got is None and time.monotonic() - t0 < 10:
        try:  # as Leadership.tick does: a lock timeout is an error to retry
            got = leases.acquire("loop", "new", ttl_s=30)
        except Exception:
            time.sleep(0.05)
    took = time.monotonic() - t0
    assert got is not None and got.token == old.token + 1, "the standby never took over"
    assert took < 5, took
    with pytest.raises(Exception):  # noqa: B017  the server ended the paused transaction
        conn.exec_driver_sql("SELECT 1")
        tx.commit()
    conn.close()
