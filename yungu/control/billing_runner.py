"""The billing runner: the loop that keeps money in step with the jobs.

Every second it checks running prepaid jobs against their holds (``BudgetEnforcer``); every
few seconds it meters the finished jobs the store has not marked, books what is due and
expires stale holds; about once a minute it runs the platform's housekeeping hook (telemetry
rollups and retention). Every step is idempotent by id, so a restart that repeats one books
nothing twice; the first pass after a start also retries jobs whose metering was parked.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from yungu.control.billing import BillingLoop
from yungu.control.budgets import BudgetEnforcer
from yungu.ports.billing import MeteringPort

log = logging.getLogger("yungu.billing")


class BillingRunner:
    def __init__(self, loop: BillingLoop, metering: MeteringPort, enforcer: BudgetEnforcer | None = None,
                 housekeeping: Callable[[], None] | None = None, interval_s: float = 5.0,
                 budget_interval_s: float = 1.0, housekeeping_interval_s: float = 60.0) -> None:
        self.loop, self.metering, self.enforcer, self.housekeeping = loop, metering, enforcer, housekeeping
        self.interval_s = interval_s
        self.budget_interval_s = budget_interval_s
        self.housekeeping_interval_s = housekeeping_interval_s
        self._unparked = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="yungu-billing", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def run_once(self) -> tuple[int, int, int]:
        """Meter every unmetered finished job, book what is due, expire stale holds."""
        if not self._unparked:  # once per start: jobs parked earlier may be meterable now
            self.metering.unpark_metering()
            self._unparked = True
        metered = self.loop.meter_from(self.metering)
        booked = self.loop.book_due()
        expired = len(self.loop.ledger.expire_due())
        return metered, booked, expired

    def enforce_budgets(self) -> list[str]:
        return self.enforcer.run_once() if self.enforcer else []

    def _run(self) -> None:
        bill_every = max(1, round(self.interval_s / self.budget_interval_s))  # in budget ticks
        house_every = max(1, round(self.housekeeping_interval_s / self.budget_interval_s))
        tick = 0
        while not self._stop.wait(self.budget_interval_s):
            tick += 1
            self._guard("budget check", self.enforce_budgets)
            if tick % bill_every == 0:
                self._guard("billing pass", self.run_once)
            if self.housekeeping is not None and tick % house_every == 0:
                self._guard("housekeeping", self.housekeeping)

    @staticmethod
    def _guard(what: str, step: Callable[[], object]) -> None:
        try:
            step()
        except Exception:  # a bug or the database: log it and keep the platform serving
            log.exception("%s failed", what)
