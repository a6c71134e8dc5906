"""The job store on SQLite and on a real PostgreSQL server."""

from datetime import UTC, datetime, timedelta
from threading import Thread

import pytest

from yungu.adapters.store import tables
from yungu.adapters.store.db import create_engine, migrate
from yungu.adapters.store.job_store import SqlStore
from yungu.adapters.system import Ids
from yungu.domain.errors import Conflict, NotFound
from yungu.domain.job import Allocation, Event, JobSpec, JobState, ReplicaPlacement, Resources
from yungu.domain.tenancy import Role
from yungu.ports.store import Transition

T0 = datetime(2026, 11, 22, 8, tzinfo=UTC)


@pytest.fixture
def store(db_url: str) -> SqlStore:
    engine = create_engine(db_url)
    migrate(engine)
    migrate(engine)  # idempotent
    return SqlStore(engine, "test-platform")


def test_submit_roundtrip_keeps_every_spec_field(store: SqlStore) -> None:
    t = store.create_tenant("t1", "lab", T0)
    spec = JobSpec("train", "python train.py", resources=Resources(4, 32, 2, ("H800", "A800")), replicas=2,
                   deadline=T0 + timedelta(hours=3), labels={"team": "nlp"}, env={"A": "1"})
    _, created = store.submit(t.id, spec, T0, "j1")
    assert created
    store._spec_cache.clear()
    back = store.get("j1")
    assert back.spec == spec and back.state is JobState.PENDING and back.submitted_at == T0


def test_idempotency_key_returns_first_job_and_rejects_a_different_body(store: SqlStore) -> None:
    store.create_tenant("t1", "lab", T0)
    a, created_a = store.submit("t1", JobSpec("n", "true"), T0, "j1", "key-1", "h1")
    b, created_b = store.submit("t1", JobSpec("n", "true"), T0, "j2", "key-1", "h1")
    assert created_a and not created_b and b.id == a.id
    with pytest.raises(Conflict, match="different request body"):
        store.submit("t1", JobSpec("n", "false"), T0, "j3", "key-1", "h2")
    with pytest.raises(NotFound):
        store.get("j3")


def test_transitions_are_compare_and_set_and_logged(store: SqlStore) -> None:
    store.create_tenant("t1", "lab", T0)
    j, _ = store.submit("t1", JobSpec("n", "true"), T0, "j1")
    q = j.apply(Event.ADMIT, T0)
    assert store.record([Transition(j, q, Event.ADMIT)]) == [q]
    # A stale writer that still believes the job is pending changes nothing.
    assert store.record([Transition(j, j.apply(Event.CANCEL, T0), Event.CANCEL)]) == []
    alloc = Allocation("j1", "horinger-cpu", (ReplicaPlacement(0, ()),), 1, 1)
    s = q.apply(Event.PLACE, T0, allocation=alloc)
    store.record([Transition(q, s, Event.PLACE)])
    got = store.get("j1")
    assert got.state is JobState.SCHEDULED and got.allocation == alloc
    assert [e["event"] for e in store.events("j1")] == ["admit", "place"]


def test_tenant_listing_is_scoped_and_paginated(store: SqlStore) -> None:
    store.create_tenant("t1", "a", T0)
    store.create_tenant("t2", "b", T0)
    ids = Ids()
    mine = [store.submit("t1", JobSpec("n", "true"), T0, ids.new())[0].id for _ in range(7)]
    store.submit("t2", JobSpec("n", "true"), T0, ids.new())
    page1 = store.page("t1", limit=5)
    page2 = store.page("t1", after=page1[-1].id, limit=5)
    assert [j.id for j in page1 + page2] == sorted(mine, reverse=True)


def test_api_keys_are_hashed_and_revocable(store: SqlStore) -> None:
    store.create_tenant("t1", "lab", T0)
    _, secret = store.create_key("k1", Role.TENANT, "t1", "ci", T0)
    assert secret not in str(store.engine.url)
    with store.engine.connect() as c:
        stored = [r.secret_hash for r in c.execute(tables.api_keys.select())]
    assert secret not in stored and len(stored[0]) == 64
    assert store.principal(secret).tenant_id == "t1"
    store.revoke_key("k1")
    assert store.principal(secret) is None


def test_concurrent_duplicate_idempotency_keys_create_one_job(store: SqlStore) -> None:
    store.create_tenant("t1", "lab", T0)
    results: list[str] = []

    def go(i: int) -> None:
        job, _ = store.submit("t1", JobSpec("n", "true"), T0, f"job-{i}", "same-key", "h")
        results.append(job.id)

    threads = [Thread(target=go, args=(i,)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(set(results)) == 1 and len(store.page("t1")) == 1


def test_a_cancel_request_is_not_lost_to_a_concurrent_transition(store: SqlStore) -> None:
    store.create_tenant("t1", "lab", T0)
    j, _ = store.submit("t1", JobSpec("n", "true"), T0, "j1")  # the loop read this view
    store.request_cancel("j1", T0)  # then the user cancelled
    store.record([Transition(j, j.apply(Event.ADMIT, T0), Event.ADMIT)])  # the loop writes its transition
    assert store.get("j1").cancel_requested


def test_admit_and_place_in_one_batch_log_both_events(store: SqlStore) -> None:
    store.create_tenant("t1", "lab", T0)
    j, _ = store.submit("t1", JobSpec("n", "true"), T0, "j1")
    q = j.apply(Event.ADMIT, T0)
    s = q.apply(Event.PLACE, T0 + timedelta(seconds=1),
                allocation=Allocation("j1", "horinger-cpu", (ReplicaPlacement(0, ()),), 1, 1))
    assert store.record([Transition(j, q, Event.ADMIT), Transition(q, s, Event.PLACE)]) == [s]
    assert store.get("j1").state is JobState.SCHEDULED
    assert [(e["from"], e["to"]) for e in store.events("j1")] == [("pending", "queued"), ("queued", "scheduled")]


def test_reasons_are_written_in_one_batch_and_only_where_they_changed(store: SqlStore) -> None:
    t = store.create_tenant("t1", "lab", T0)
    for i in range(5):
        store.submit(t.id, JobSpec(f"j{i}", "true"), T0, f"r{i}")
    store.set_reasons({f"r{i}": f"waiting: {i}" for i in range(5)})
    assert [store.get(f"r{i}").reason for i in range(5)] == [f"waiting: {i}" for i in range(5)]
    before = store.get("r0").updated_at
    store.set_reasons({"r0": "waiting: 0", "r1": "held: quota", "nope": "x"})  # unchanged, changed, unknown
    assert store.get("r0").reason == "waiting: 0" and store.get("r0").updated_at == before
    assert store.get("r1").reason == "held: quota" and store.get("r2").reason == "waiting: 2"
    store.set_reasons({})  # nothing to write is fine


def test_async_status_read_equals_the_store_read_and_sees_each_commit(store: SqlStore) -> None:
    """``get_async`` (the API's status read: its own connection, on the event loop) reads
    every field as ``get`` does, sees each committed change at once, and 404s the same."""
    import asyncio

    store.create_tenant("t1", "lab", T0)
    j, _ = store.submit("t1", JobSpec("n", "true", resources=Resources(2, 4)), T0, "j1")

    async def reads() -> None:
        assert await store.get_async("j1") == store.get("j1") == j
        q = j.apply(Event.ADMIT, T0)
        alloc = Allocation("j1", "horinger-cpu", (ReplicaPlacement(0, ()),), 1, 1)
        s = q.apply(Event.PLACE, T0 + timedelta(seconds=1), allocation=alloc)
        store.record([Transition(j, q, Event.ADMIT), Transition(q, s, Event.PLACE)])
        got = await store.get_async("j1")
        assert got == store.get("j1") and got.state is JobState.SCHEDULED and got.allocation == alloc
        assert got.updated_at.tzinfo is not None and got.updated_at == T0 + timedelta(seconds=1)
        with pytest.raises(NotFound):
            await store.get_async("no-such-job")

    asyncio.run(reads())
    store.close_reads()
