"""Metering -> rating -> booking -> invoicing, exactly once; late usage; arrears; kill -9."""

from __future__ import annotations

import os
import random
import signal
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.ledger.billing_world import WORLD, march_jobs
from yungu.adapters.ledger.billing_store import BillingStore
from yungu.adapters.ledger.store import LedgerStore, ensure_system_accounts, new_accounts_for_tenant
from yungu.adapters.store.db import create_engine, migrate
from yungu.control.billing import BillingLoop, Budgets, arrears, receivable, wallet
from yungu.domain.clock import FixedClock
from yungu.engines.ledger import Transfer
from yungu.engines.ledger.invoice import render_html
from yungu.engines.ledger.rating import rate_device_time, split_charge


def expected_gross(job) -> int:  # type: ignore[no-untyped-def]
    secs = int((job.finished_at - job.started_at).total_seconds()) * job.allocation.devices
    return rate_device_time(secs, WORLD.pool("bj-1/a100").price_cny_per_device_hour)


def setup(url: str, fund: int = 5_000_00) -> tuple[LedgerStore, BillingStore, BillingLoop, FixedClock]:
    engine = create_engine(url)
    migrate(engine)
    clock = FixedClock(datetime(2026, 4, 2, tzinfo=UTC))
    ledger = LedgerStore(engine, clock)
    ensure_system_accounts(ledger)
    for t in ("t1", "t2"):
        ledger.open_accounts(new_accounts_for_tenant(t))
        ledger.submit([Transfer(f"topup:{t}", "sys:cny:external", wallet(t), fund)])
    usage = BillingStore(engine, clock)
    return ledger, usage, BillingLoop(ledger, usage, WORLD, clock), clock


def check_books(ledger: LedgerStore, usage: BillingStore, jobs, fund: int) -> None:  # type: ignore[no-untyped-def]
    """The ledger equals the model: every usage booked exactly once, money conserved."""
    gross = {j.id: expected_gross(j) for j in jobs}
    rows = usage.usage()
    assert sorted(r.usage.job_id for r in rows) == sorted(gross)  # none lost, none twice
    assert all(r.booked and r.gross == gross[r.usage.job_id] for r in rows)
    for t in ("t1", "t2"):
        spent = sum(g for j, g in gross.items() if next(x for x in jobs if x.id == j).tenant_id == t)
        w = ledger.account(wallet(t))[1]
        a = ledger.account(arrears(t))[1]
        assert fund - w.posted - a.posted == spent
    splits = [split_charge(g) for g in gross.values()]
    assert ledger.account("sys:cny:vat")[1].posted == sum(s.tax for s in splits)
    assert ledger.account("sys:cny:revenue")[1].posted == sum(s.commission for s in splits)
    assert ledger.account(receivable("acme-idc"))[1].posted == sum(s.provider for s in splits)
    assert ledger.account("sys:cny:escrow")[1].posted == 0
    assert ledger.totals() == {"CNY": 0}
    invoiced = [line for inv in usage.invoices() for line in inv["lines"]]  # type: ignore[union-attr]
    assert sorted(line["usage_id"] for line in invoiced) == sorted(r.usage.id for r in rows)


def test_billing_is_exactly_once_and_late_usage_goes_to_the_next_period(tmp_path: Path) -> None:
    ledger, usage, loop, _ = setup(f"sqlite:///{tmp_path / 'b.db'}")
    jobs = march_jobs(12)
    budgets = Budgets(ledger)
    for j in jobs[::3]:
        assert budgets.reserve(j.tenant_id, j.id, 40_00).ok
    for _ in range(3):  # repeated passes change nothing
        loop.run_once(jobs[:9])
    invs = loop.close_period("2026-03")
    assert {i.buyer.name for i in invs} == {"t1", "t2"} and loop.close_period("2026-03") == []
    loop.run_once(jobs)  # jobs 9..11 finished in March but arrive after it closed
    late = [r for r in usage.usage() if r.late_from]
    assert sorted(r.usage.job_id for r in late) == [j.id for j in jobs[9:]]
    assert all(r.booked_period == "2026-04" and r.late_from == "2026-03" for r in late)
    april = loop.close_period("2026-04")
    assert all(line.late_from == "2026-03" for inv in april for line in inv.lines)
    check_books(ledger, usage, jobs, 5_000_00)
    inv = invs[0]
    assert inv.gross == inv.net + inv.tax and inv.to_json()["total_gross_capital"].endswith(("分", "整", "角"))
    assert "价税合计" in render_html(inv) and inv.lines[0].usage_id in render_html(inv)


def test_usage_beyond_the_wallet_goes_to_arrears_not_lost(tmp_path: Path) -> None:
    ledger, usage, loop, _ = setup(f"sqlite:///{tmp_path / 'b.db'}", fund=10_00)
    jobs = march_jobs(6)
    loop.run_once(jobs)
    for t in ("t1", "t2"):
        assert ledger.account(wallet(t))[1].available >= 0
        assert ledger.account(arrears(t))[1].posted < 0  # the tenant owes the rest
    loop.close_period("2026-03")
    check_books(ledger, usage, jobs, 10_00)


def _run_child(db: Path) -> int:
    """Fork a process that runs the worker (imports are already loaded, so it starts at once)."""
    from tests.ledger import crash_worker

    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            crash_worker.main(str(db))
            code = 0
        finally:
            os._exit(code)
    return pid


@pytest.mark.slow
def test_kill_9_at_random_points_leaves_exactly_one_booking(tmp_path: Path) -> None:
    """kill -9 real worker processes at random moments, >= 50 times; the books stay exact."""
    rng = random.Random(int(os.environ.get("YUNGU_CRASH_SEED", "5")))
    kills = rounds = 0
    deadline = time.monotonic() + 300  # a loaded machine needs more rounds to land 50 kills
    while kills < 50 and time.monotonic() < deadline:
        rounds += 1
        db = tmp_path / f"r{rounds}.db"
        for _ in range(8):  # up to 8 kills per round, then let it finish
            pid = _run_child(db)
            time.sleep(rng.uniform(0.005, 0.8))
            finished, _status = os.waitpid(pid, os.WNOHANG)
            if finished == 0:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                kills += 1
            if Path(str(db) + ".done").exists():
                break
        pid = _run_child(db)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        engine = create_engine(f"sqlite:///{db}")
        clock = FixedClock(datetime(2026, 4, 2, tzinfo=UTC))
        check_books(LedgerStore(engine, clock), BillingStore(engine, clock), march_jobs(24), 5_000_00)
        engine.dispose()
    assert kills >= 50, f"only {kills} kills landed in {rounds} rounds"


def test_admission_estimate_uses_the_dearest_eligible_pool() -> None:
    from yungu.control.billing import estimate_fen
    from yungu.domain.job import JobSpec, Resources

    spec = JobSpec("train", "python t.py", resources=Resources(8, 64, 2), replicas=2, estimated_duration_s=1800)
    assert estimate_fen(spec, WORLD) == 2 * 2 * 1250 // 2  # 4 device x 0.5 h x 12.50 CNY = 25.00
    assert estimate_fen(JobSpec("x", "true"), WORLD) is None


def test_a_failing_booking_is_parked_alerted_retried_with_back_off_and_never_blocks_the_rest(tmp_path: Path) -> None:
    from dataclasses import replace

    from yungu.adapters.ledger.alerts import TableAlerts
    from yungu.engines.ledger import Outcome, Result

    ledger, usage, _, clock = setup(f"sqlite:///{tmp_path / 'b.db'}")
    alerts = TableAlerts(ledger.engine)
    failing = {"usage:job0000.0"}  # the first row in id order: today it would block every other

    class Flaky:  # the real ledger, refusing one usage's entry until "the operator fixes it"
        def __getattr__(self, name: str) -> object:
            return getattr(ledger, name)

        def submit(self, transfers, *, linked=False):  # type: ignore[no-untyped-def]
            if any(t.ref in failing for t in transfers):
                return [Outcome(t.id, Result.UNKNOWN_ACCOUNT, "receivable missing") for t in transfers]
            return ledger.submit(transfers, linked=linked)

    loop = BillingLoop(Flaky(), usage, WORLD, clock, alerts=alerts)  # type: ignore[arg-type]
    jobs = march_jobs(6)
    loop.meter(jobs)
    assert loop.book_due() == 5  # the others book at once
    [parked] = usage.unbooked()
    assert parked.usage.id == "usage:job0000.0" and parked.attempts == 1 and "unknown_account" in parked.error
    [alert] = alerts.open_alerts("billing_unbooked")
    assert alert["subject"] == parked.usage.id and "receivable missing" in str(alert["message"])
    assert loop.book_due() == 0 and usage.unbooked()[0].attempts == 1  # not due before its back-off
    clock.advance(5)
    assert loop.book_due() == 0 and usage.unbooked()[0].attempts == 2  # retried, 10 s next
    clock.advance(5)
    assert loop.book_due() == 0 and usage.unbooked()[0].attempts == 2
    failing.clear()
    clock.advance(5)
    assert loop.book_due() == 1 and usage.unbooked() == []
    assert alerts.open_alerts("billing_unbooked") == []  # resolved once booked
    loop.close_period("2026-03")
    check_books(ledger, usage, jobs, 5_000_00)
    assert replace(parked, attempts=0).usage == parked.usage


def test_a_world_whose_providers_have_only_display_names_books_into_derived_ids(tmp_path: Path) -> None:
    """The shape of every shipped site before provider ids were declared: a name with a space."""
    from dataclasses import replace

    from yungu.adapters.config import parse_config
    from yungu.domain.catalogue import Catalogue

    doc = {"executor": {"local": {"type": "local"}},
           "region": [{"id": "bj", "name": "Beijing"}],
           "site": [{"id": "bj-1", "region": "bj", "name": "B1", "provider": "Acme IDC 北京", "lat": 0, "lon": 0},
                    {"id": "bj-2", "region": "bj", "name": "B2", "provider": "北京云", "lat": 0, "lon": 0}],
           "pool": [{"id": "bj-1/a100", "site": "bj-1", "compute_class": "intelligent", "nodes": 4,
                     "cpus_per_node": 64, "memory_gb_per_node": 512, "accelerator": "A100",
                     "accelerators_per_node": 8, "price_cny_per_device_hour": "12.50"}]}
    from yungu.adapters.config import load_catalogue

    cat: Catalogue = load_catalogue()
    world = parse_config(doc, "test.toml", cat).world
    assert [s.provider_id for s in world.sites] == ["acme-idc", "bj-2"]
    ledger, usage, _, clock = setup(f"sqlite:///{tmp_path / 'b.db'}")
    loop = BillingLoop(ledger, usage, replace(world, platform_id="yungu-test"), clock)
    loop.run_once(march_jobs(3))
    assert all(r.booked for r in usage.usage())
    assert ledger.account(receivable("acme-idc"))[0].name == "Acme IDC 北京 receivable"


def test_a_provider_id_that_cannot_key_an_account_is_refused_at_load() -> None:
    from yungu.adapters.config import load_catalogue, parse_config
    from yungu.domain.errors import InvalidInput

    doc = {"executor": {"local": {"type": "local"}}, "region": [{"id": "bj", "name": "Beijing"}],
           "site": [{"id": "bj-1", "region": "bj", "name": "B1", "provider": "Acme", "provider_id": "Acme IDC",
                     "lat": 0, "lon": 0}],
           "pool": [{"id": "p", "site": "bj-1", "compute_class": "general", "nodes": 1, "cpus_per_node": 1,
                     "memory_gb_per_node": 1}]}
    with pytest.raises(InvalidInput, match="provider_id 'Acme IDC'"):
        parse_config(doc, "test.toml", load_catalogue())
