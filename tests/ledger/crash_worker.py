"""The crash-test worker: reserve -> meter -> book -> close March -> late usage -> close April.

Every step is re-run from the start after a kill -9; ids make each one harmless to repeat.
Prints READY once imports are done (the parent kills it at a random moment after that) and
writes DONE when the whole sequence has completed.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

from tests.ledger.billing_world import WORLD, march_jobs
from yungu.adapters.ledger.billing_store import BillingStore
from yungu.adapters.ledger.store import LedgerStore, ensure_system_accounts, new_accounts_for_tenant
from yungu.adapters.store.db import create_engine, migrate
from yungu.control.billing import BillingLoop, Budgets, wallet
from yungu.domain.clock import FixedClock
from yungu.engines.ledger import Transfer

N_EARLY, N_LATE = 16, 8


def main(db: str) -> None:
    print("READY", flush=True)
    engine = create_engine(f"sqlite:///{db}")
    migrate(engine)
    clock = FixedClock(datetime(2026, 4, 2, tzinfo=UTC))
    ledger = LedgerStore(engine, clock)
    ensure_system_accounts(ledger)
    for t in ("t1", "t2"):
        ledger.open_accounts(new_accounts_for_tenant(t))
        ledger.submit([Transfer(f"topup:{t}", "sys:cny:external", wallet(t), 5_000_00)])
    jobs = march_jobs(N_EARLY + N_LATE)
    budgets = Budgets(ledger)
    for j in jobs[::2]:
        budgets.reserve(j.tenant_id, j.id, 30_00)
    loop = BillingLoop(ledger, BillingStore(engine, clock), WORLD, clock)
    for j in jobs[:N_EARLY]:  # one job per step: many small transactions to land kills in
        loop.meter([j])
        loop.book(limit=1)
    loop.close_period("2026-03")
    for j in jobs[N_EARLY:]:  # these arrive after March closed: late usage, booked into April
        loop.meter([j])
        loop.book(limit=1)
    loop.book()
    loop.close_period("2026-04")
    Path(db + ".done").write_text("DONE")


if __name__ == "__main__":
    main(sys.argv[1])
