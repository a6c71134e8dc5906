"""A peer as the control loop's executor, in process: two platforms' composition roots (SQLite,
their real federation services, a mock clock), no network and no links running.

What the loop must be able to count on: the ``peer:<id>`` executor is never taken for down by
the loop's health probes (observing it is how the loop learns that a silent peer's lease has
run out); a launch for a peer that stopped answering after the placement is refused at once
(nothing was sent, so it may be placed again now); a cancel the peer cannot hear stops the
lease's renewals, reads "stopping" and ends once the lease has certainly run out.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from yungu.adapters.federation.link import PeerLink
from yungu.adapters.federation.service import Federation
from yungu.app.container import Container, build
from yungu.cli import federation_demo as fd
from yungu.engines.federation import health as H
from yungu.ports.executor import ExecPhase, ExecStatus, Launch, ReplicaLaunch
from yungu.testing import FakeCluster, FakeExecutor, MockClock, Script
from yungu.testing.world import T0

TERMS = {"lease_ttl_s": 10, "renew_every_s": 1, "max_clock_skew_s": 2, "stop_budget_s": 2.5, "kill_grace_s": 1,
         "suspect_after_s": 1.5, "call_timeout_s": 1.5, "replace_margin_s": 0.5}
HR = "yungu-horinger"
PEER = f"peer:{HR}"


def _platform(root: Path, region: str, other: str, clock: MockClock) -> Container:
    cfg = root / f"{region}.toml"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(fd.world_toml(region, [other], TERMS))
    cluster = FakeCluster(clock, script=lambda launch: Script(run_s=60))
    return build(root / region, cfg, start_loop=False, clock=clock,
                 executors={"local": FakeExecutor("local", cluster)}, lease_ttl_s=3600)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Container, Container, MockClock]]:
    clock = MockClock(T0)
    bj = _platform(tmp_path, "beijing", "horinger", clock)
    hr = _platform(tmp_path, "horinger", "beijing", clock)
    try:
        assert bj.federation is not None and hr.federation is not None
        bj.federation.add_peer(HR, "http://127.0.0.1:9", hr.federation.identity.public_key_b64, latency_ms=12)
        caller = bj.federation.peers_map()[HR]
        assert bj.federation.receive_offers(caller, hr.federation.host.offer_set(clock.now())) > 0
        bj.federation.set_health(HR, H.reconciled(bj.federation.health(HR)), None)
        yield bj, hr, clock
    finally:
        bj.close()
        hr.close()


def _launch(job: str, pool: str = f"{HR}/horinger-gpu") -> Launch:
    return Launch(request_id=f"{job}.0", job_id=job, tenant_id="t-lab", pool_id=pool, command="sleep 60",
                  replicas=(ReplicaLaunch(node=0),), cpus_per_replica=1, memory_gb_per_replica=1,
                  accelerators_per_replica=4)


def _silent(fed: Federation, clock: MockClock, state: H.PeerState) -> None:
    h = fed.health(HR)
    fed.set_health(HR, replace(h, state=state, failing_since=clock.now(), reason="timed out"), None)


def test_the_loop_never_takes_a_silent_peer_for_a_down_executor(pair: tuple[Container, Container, MockClock]) -> None:
    bj, _hr, clock = pair
    assert bj.federation is not None
    health = bj.reconciler.health
    _silent(bj.federation, clock, H.PeerState.LOST)
    health.probe([PEER])
    assert health.reachable(PEER), "a silent peer's jobs would no longer be observed, so never re-placed"
    assert bj.reconciler.executor_name(f"{HR}/horinger-gpu") == PEER
    check = bj.executors[PEER].check()
    assert check["reachable"] is True and check["peer_state"] == "lost"


def test_a_launch_for_a_peer_that_went_silent_after_the_placement_is_refused_at_once(
        pair: tuple[Container, Container, MockClock]) -> None:
    bj, _hr, clock = pair
    assert bj.federation is not None
    ex = bj.executors[PEER]
    ok = ex.submit(_launch("j-ok"))
    assert isinstance(ok, ExecStatus) and ok.phase is ExecPhase.PENDING, ok
    _silent(bj.federation, clock, H.PeerState.SUSPECT)
    st = ex.submit(_launch("j-late"))
    assert isinstance(st, ExecStatus) and st.phase is ExecPhase.LOST and "not sent" in st.reason, st
    assert bj.federation.outbound_record("j-late.0") is not None
    assert bj.federation.outbound_record("j-late.0").lease_until is None  # type: ignore[union-attr]


def test_a_cancel_the_peer_cannot_hear_stops_renewals_and_ends_with_the_lease(
        pair: tuple[Container, Container, MockClock]) -> None:
    bj, _hr, clock = pair
    fed = bj.federation
    assert fed is not None
    ex = bj.executors[PEER]
    ex.submit(_launch("j-c"))
    o = fed.out["j-c.0"]
    # as the link records it before sending: lease durable, delegation accepted, job running
    o.lease_until, o.state, o.phase, o.started_at = clock.now() + timedelta(seconds=10), "accepted", "running", T0
    fed.fed.insert_outbound([o.row()])
    o.persisted = True
    _silent(fed, clock, H.PeerState.SUSPECT)

    st = ex.cancel("j-c.0", 5.0)
    assert isinstance(st, ExecStatus) and not st.done and "stopping" in st.reason, st
    assert o.stop_asked
    link = PeerLink(fed, HR)  # not started: its calls would go nowhere; renew must not even try
    try:
        link.renew()
    finally:
        link.client.close()
    assert fed.fed.outbound_one("j-c.0").lease_until == o.lease_until  # type: ignore[union-attr]
    assert [x.request_id for x in fed.open_records(HR) if not x.stop_asked] == []

    clock.jump(5)
    running = ex.observe(["j-c.0"])["j-c.0"]
    assert isinstance(running, ExecStatus) and running.phase is ExecPhase.RUNNING, running
    clock.jump(6)  # past the lease and its margin: the peer's watchdog has stopped the copy
    st = ex.cancel("j-c.0", 5.0)
    assert isinstance(st, ExecStatus) and st.phase is ExecPhase.CANCELLED, st
    gone = ex.observe(["j-c.0"])["j-c.0"]
    assert isinstance(gone, ExecStatus) and gone.phase is ExecPhase.LOST, gone


def test_a_new_leadership_takes_the_store_s_delegations_and_a_lost_one_stops_renewing(
        pair: tuple[Container, Container, MockClock]) -> None:
    """Another process led meanwhile: what it delegated is this one's to renew and poll once it
    leads; after losing the lead the links say nothing for the origin (a standby's renewals would
    keep alive an attempt the new leader re-places)."""
    bj, _hr, clock = pair
    fed = bj.federation
    assert fed is not None
    bj.executors[PEER].submit(_launch("j-mine"))  # queued here, never sent: still this process's
    theirs = replace(fed.out["j-mine.0"], request_id="j-theirs.0", job_id="j-theirs", state="accepted",
                     phase="running", lease_until=clock.now() + timedelta(seconds=10), persisted=True)
    fed.fed.insert_outbound([theirs.row()])  # written by the other leader
    assert "j-theirs.0" not in fed.out
    fed.resume()
    assert {o.request_id for o in fed.open_records(HR)} == {"j-mine.0", "j-theirs.0"}
    assert fed.health(HR).needs_reconcile, "a new leadership tells each peer its live attempts first"

    calls: list[str] = []
    fed.pause()
    link = PeerLink(fed, HR)
    link.client.call = lambda method, path, *a, **k: calls.append(path) or {}  # type: ignore[method-assign]
    link.start()
    try:
        time.sleep(0.8)
        assert calls == [], calls
        fed.resume()
        deadline = time.monotonic() + 10
        while "/federation/v1/leases" not in calls and time.monotonic() < deadline:
            time.sleep(0.05)
        assert calls[0] == "/federation/v1/reconcile" and "/federation/v1/leases" in calls, calls
    finally:
        fed.pause()
        link.stop()
