"""Real processes, real networks: three platforms in network namespaces, a delaying TCP proxy per
link (Beijing-Horinger 12 ms RTT, 30 ms to Guizhou), then partitions, kill -9, an origin restart
during a partition and a skewed clock. After each: no job lost, none ran twice (each job appends
its name to a file when it finishes), every receipt booked once on both sides, every ledger
balances; at the end the clearing nets to zero.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.federation.netlab import Lab
from yungu.cli import federation_demo as fd
from yungu.engines.ledger.rating import period_of

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

SHORT = {"bj": "beijing", "hr": "horinger", "gz": "guizhou"}
TERMS = {"lease_ttl_s": 10, "renew_every_s": 1, "max_clock_skew_s": 2, "stop_budget_s": 2.5, "kill_grace_s": 1,
         "suspect_after_s": 1.5, "call_timeout_s": 1.5, "replace_margin_s": 0.5}
JOB_S = 15  # longer than a lease: a job cut off by a partition has not finished


class World:
    def __init__(self, lab: Lab, root: Path) -> None:
        self.lab, self.root = lab, root
        self.p = {}
        for short, region in SHORT.items():
            p = fd.Platform(region, root / region, lab.port, host=lab.ip(short), netns=lab.ns[short])
            p.write_config([r for r in SHORT.values() if r != region], TERMS)
            self.p[short] = p
        self.runs = 0
        self.cut: set[str] = set()

    @property
    def all(self) -> list[fd.Platform]:
        return list(self.p.values())

    def start(self, short: str, env: dict[str, str] | None = None) -> None:
        p = self.p[short]
        p.env = env or {}
        p.start()
        p.wait_ready()

    def scenario(self, disrupt: Callable[[], None], n: int = 6) -> dict[str, dict[str, Any]]:
        self.runs += 1
        fd.wait_offers(self.all, timeout=60)  # every link healthy, reconciled, offers exchanged
        ran = fd.ran_file(self.root, f"ran-{self.runs}.txt")
        origin = self.p["bj"]
        ids = fd.submit_jobs(origin, n, ran, sleep_s=JOB_S, tenant="zgc-lab", prefix=f"s{self.runs}")
        deadline = time.monotonic() + 60
        with origin.api() as c:
            while time.monotonic() < deadline:
                states = [c.get(f"/jobs/{j}").json()["state"] for j in ids]
                if all(s == "running" for s in states):
                    break
                time.sleep(0.2)
            assert all(s == "running" for s in states), states
            # the jobs a disruption now certainly cuts off mid-run (not about to finish anyway)
            now = datetime.now(UTC)
            self.cut = set()
            for jid in ids:
                j = c.get(f"/jobs/{jid}").json()
                on_hr = (j.get("allocation") or {}).get("pool_id", "").startswith("yungu-horinger/")
                if on_hr and (now - datetime.fromisoformat(j["started_at"])).total_seconds() < JOB_S - 8:
                    self.cut.add(jid)
        disrupt()
        jobs = fd.wait_jobs(origin, ids, timeout=240)  # a loaded shared machine is slow to re-place
        names = [ln for ln in ran.read_text().split()] if ran.exists() else []
        assert all(j["state"] == "succeeded" for j in jobs.values()), [(j["state"], j["reason"]) for j in jobs.values()]
        assert sorted(names) == sorted({j["name"] for j in jobs.values()}), (f"lost or duplicated: {sorted(names)}",
                                                                             describe(jobs))
        return jobs

    def settle(self, timeout: float = 60) -> None:
        """Every receipt booked once on both sides; every ledger balances; nothing runs that should not."""
        deadline = time.monotonic() + timeout
        while True:
            issued, received = {}, {}
            for p in self.all:
                with p.api() as c:
                    for r in c.get("/federation/receipts").json()["items"]:
                        if r["booked"]:
                            (issued if r["side"] == "issued" else received)[r["receipt_id"]] = r["amount_fen"]
            with self.p["hr"].api() as c:
                active = [h for h in c.get("/federation/hosted").json()["items"] if h["state"] == "active"]
            if issued == received and not active:
                break
            assert time.monotonic() < deadline, (f"receipts: {len(issued)} issued, {len(received)} received; "
                                                 f"{len(active)} still active at horinger")
            time.sleep(0.5)
        for p in self.all:
            with p.api() as c:
                assert c.get("/federation/books").json()["sum_fen"] == 0, f"{p.id} does not balance"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    why = Lab.available()
    if why:
        pytest.skip(f"needs network namespaces: {why}")
    lab = Lab(["bj", "hr", "gz"], {frozenset(("bj", "hr")): 12, frozenset(("bj", "gz")): 30,
                                   frozenset(("hr", "gz")): 30})
    w = World(lab, tmp_path_factory.mktemp("fedlab"))
    try:
        lab.up()
        for short in SHORT:
            w.p[short].start()
        for p in w.all:
            p.wait_ready()
        time.sleep(2.5)  # each platform refuses messages signed before its start + the skew bound
        rev = {v: k for k, v in SHORT.items()}
        fd.peer_all(w.all, lambda a, b: lab.url(rev[a.region], rev[b.region]))
        fd.wait_offers(w.all, timeout=30)
        yield w
    finally:
        for p in w.all:
            p.stop()
        lab.close()
        fd.remove_shared(w.root)


def pools(jobs: dict[str, dict[str, Any]]) -> list[str]:
    return sorted((j.get("allocation") or {}).get("pool_id", "?") for j in jobs.values())


def attempts(world: World, jobs: dict[str, dict[str, Any]]) -> list[int]:
    """Attempts of the jobs the disruption cut off mid-run."""
    return sorted(j["attempt"] for jid, j in jobs.items() if jid in world.cut)


def describe(jobs: dict[str, dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(j["name"], j["attempt"], (j.get("allocation") or {}).get("pool_id"), j["reason"][:120])
            for j in jobs.values()]


def test_jobs_submitted_in_beijing_run_in_horinger_through_the_delaying_links(world: World) -> None:
    jobs = world.scenario(lambda: None)
    assert all(p.startswith("yungu-horinger/") for p in pools(jobs)), pools(jobs)
    with world.p["bj"].api() as c:  # explain shows the remote option that won and the local one that lost
        text = c.get(f"/jobs/{next(iter(jobs))}/explain").text
    assert "yungu-horinger/horinger-gpu" in text and "beijing-gpu" in text, text[:500]
    world.settle()


def test_a_short_partition_heals_before_any_lease_runs_out(world: World) -> None:
    def disrupt() -> None:
        world.lab.partition("bj", "hr")
        time.sleep(1.5)
        world.lab.heal("bj", "hr")

    jobs = world.scenario(disrupt)
    assert all(j["attempt"] == 0 for j in jobs.values()), describe(jobs)  # kept where they ran
    world.settle()


def test_a_long_partition_stops_the_peer_copy_then_re_places_once(world: World) -> None:
    def disrupt() -> None:
        world.lab.partition("bj", "hr")
        time.sleep(16)
        world.lab.heal("bj", "hr")

    jobs = world.scenario(disrupt)
    assert world.cut and all(a >= 1 for a in attempts(world, jobs))
    assert not any(p.startswith("yungu-horinger/") for p in pools(jobs)), pools(jobs)
    world.settle()


def test_a_cancel_during_a_partition_ends_the_jobs_by_their_lease(world: World) -> None:
    """The origin cannot reach the peer to cancel: it stops renewing, the peer's watchdog stops
    the copies, and the jobs read cancelled once the lease has certainly run out — during the
    partition, not after it heals. Nothing runs to its end."""
    world.runs += 1
    fd.wait_offers(world.all, timeout=60)
    ran = fd.ran_file(world.root, f"ran-{world.runs}.txt")
    origin = world.p["bj"]
    ids = fd.submit_jobs(origin, 4, ran, sleep_s=JOB_S, tenant="zgc-lab", prefix=f"s{world.runs}")
    with origin.api() as c:
        deadline = time.monotonic() + 60
        while True:
            jobs = [c.get(f"/jobs/{j}").json() for j in ids]
            if all(j["state"] == "running" for j in jobs) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert all(j["state"] == "running" for j in jobs), describe({j["id"]: j for j in jobs})
        assert all(p.startswith("yungu-horinger/") for p in pools({j["id"]: j for j in jobs}))
        now = datetime.now(UTC)  # the jobs the partition certainly catches mid-run (a slow start is staggered)
        cut = {j["name"] for j in jobs if (now - datetime.fromisoformat(j["started_at"])).total_seconds() < JOB_S - 8}
        world.lab.partition("bj", "hr")
        try:
            for jid in ids:
                assert c.post(f"/jobs/{jid}/cancel").status_code == 202
            deadline = time.monotonic() + 40  # the lease (10 s) and its margin, with room for a slow machine
            while True:
                jobs = [c.get(f"/jobs/{j}").json() for j in ids]
                if all(j["state"] in ("cancelled", "succeeded") for j in jobs) or time.monotonic() > deadline:
                    break
                time.sleep(0.3)
            assert cut and all(j["state"] == "cancelled" for j in jobs if j["name"] in cut), describe(
                {j["id"]: j for j in jobs})
            assert all(j["state"] in ("cancelled", "succeeded") for j in jobs), describe({j["id"]: j for j in jobs})
        finally:
            world.lab.heal("bj", "hr")
    last_end = max(datetime.fromisoformat(j["started_at"]) for j in jobs).timestamp() + JOB_S + 2
    time.sleep(max(0.0, last_end - time.time()))
    names = ran.read_text().split()
    assert not cut & set(names), f"a cancelled job ran to its end: {names}"
    assert sorted(names) == sorted(j["name"] for j in jobs if j["state"] == "succeeded"), names
    world.settle()


def test_kill_9_of_the_peer_mid_run_then_its_return(world: World) -> None:
    def disrupt() -> None:
        world.p["hr"].kill9()  # its jobs' processes live on: the lease watchdog stops them

    jobs = world.scenario(disrupt)
    assert world.cut and all(a >= 1 for a in attempts(world, jobs))
    world.start("hr")
    world.settle()


def test_origin_restart_during_a_partition(world: World) -> None:
    def disrupt() -> None:
        world.lab.partition("bj", "hr")
        time.sleep(1)
        world.p["bj"].kill9()
        time.sleep(2)
        world.start("bj")
        time.sleep(14)
        world.lab.heal("bj", "hr")

    jobs = world.scenario(disrupt)
    assert world.cut and all(a >= 1 for a in attempts(world, jobs)), describe(jobs)
    world.settle()


def test_a_peer_clock_ahead_by_1_5_s_within_the_skew_bound(world: World) -> None:
    world.p["hr"].stop()
    world.start("hr", {"YUNGU_CLOCK_OFFSET_S": "1.5"})
    fd.wait_offers(world.all, timeout=30)

    def disrupt() -> None:
        world.lab.partition("bj", "hr")
        time.sleep(16)
        world.lab.heal("bj", "hr")

    world.scenario(disrupt)
    world.settle()


def test_clearing_nets_to_zero_across_the_three_platforms(world: World) -> None:
    fd.wait_offers(world.all, timeout=30)
    period = period_of(__import__("datetime").datetime.now(__import__("datetime").UTC))
    with world.p["hr"].api(timeout=120) as c:
        r = c.post("/federation/clearing/run", json={"period": period})
        assert r.status_code == 200, r.text
        doc = r.json()
    assert doc["net_sum_fen"] == 0 and len(doc["parties"]) == 3 and doc["statement"]["transfers"]
    assert set(doc["signatures"]) == set(doc["parties"])
    for p in world.all:
        with p.api() as c:
            books = c.get("/federation/books").json()
            assert books["sum_fen"] == 0 and books["clearing"].get("peer:federation:netting", 0) == 0
