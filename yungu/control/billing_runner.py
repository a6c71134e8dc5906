"""The billing runner: the loops that keep money in step with the jobs.

Two threads. **Budgets**: every second, running prepaid jobs are checked against their holds
(``BudgetEnforcer``), on a thread of their own so a long billing pass never delays a stop.
**Billing**: every few seconds, the hooks of other areas run (token usage becomes usage
records), the finished jobs the store has not marked are metered, what is due is booked and
stale holds expire; about once a minute the platform's housekeeping
hook runs (telemetry rollups and retention). Every step is idempotent by id, so a restart
that repeats one books nothing twice; the first pass after a start also retries jobs whose
metering was parked.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from datetime import datetime

from yungu.control.billing import BillingLoop
from yungu.control.budgets import BudgetEnforcer
from yungu.domain.clock import Clock
from yungu.ports.billing import MeteringPort

log = logging.getLogger("yungu.billing")


class BillingRunner:
    def __init__(self, metering: MeteringPort, loop: BillingLoop, clock: Clock,
                 housekeeping: Callable[[datetime], None] | None = None, enforcer: BudgetEnforcer | None = None,
                 interval_s: float = 5.0, budget_interval_s: float = 1.0, housekeeping_interval_s: float = 60.0,
                 hooks: Callable[[], Iterable[Callable[[], object]]] | None = None) -> None:
        self.metering, self.loop, self.clock = metering, loop, clock
        self.housekeeping, self.enforcer = housekeeping, enforcer
        self.hooks = hooks or (lambda: ())  # run before each pass: e.g. token usage -> usage records
        self.interval_s = interval_s
        self.budget_interval_s = budget_interval_s
        self.housekeeping_interval_s = housekeeping_interval_s
        self._unparked = False
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        # Booking and the budget check never interleave: a budget extension is either made
        # before the job's usage is booked (and settled by it) or not at all (see the enforcer).
        self._money = threading.Lock()

    def start(self) -> None:
        """Start (or, after a lost and regained leadership, restart) both threads."""
        self.stop()
        self._stop = threading.Event()
        self._unparked = False
        self._threads = [threading.Thread(target=self._run, name="yungu-billing", daemon=True),
                         threading.Thread(target=self._run_budgets, name="yungu-budgets", daemon=True)]
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            if t.is_alive() and t is not threading.current_thread():
                t.join(timeout=10)

    def run_once(self) -> tuple[int, int, int]:
        """Meter every unmetered finished job, book what is due, expire stale holds."""
        with self._money:
            return self._run_once()

    def _run_once(self) -> tuple[int, int, int]:
        if not self._unparked:  # once per start: jobs parked earlier may be meterable now
            self.metering.unpark_metering()
            self._unparked = True
        for hook in self.hooks():
            try:
                hook()
            except Exception:  # one area's hook failing never stops billing
                log.exception("billing hook %s failed", getattr(hook, "__qualname__", hook))
        metered = self.loop.meter_from(self.metering)
        booked = self.loop.book_due()
        expired = len(self.loop.ledger.expire_due())
        return metered, booked, expired

    def run_housekeeping(self) -> None:
        if self.housekeeping is not None:
            self.housekeeping(self.clock.now())

    def enforce_budgets(self) -> list[str]:
        if self.enforcer is None:
            return []
        with self._money:
            return self.enforcer.run_once()

    def _run(self) -> None:
        house_every = max(1, round(self.housekeeping_interval_s / self.interval_s))  # in passes
        passes = 0
        while not self._stop.wait(self.interval_s):
            passes += 1
            self._guard("billing pass", self.run_once)
            if passes % house_every == 0:
                self._guard("housekeeping", self.run_housekeeping)

    def _run_budgets(self) -> None:
        if self.enforcer is None:
            return
        while not self._stop.wait(self.budget_interval_s):
            self._guard("budget check", self.enforce_budgets)

    @staticmethod
    def _guard(what: str, step: Callable[[], object]) -> None:
        try:
            step()
        except Exception:  # a bug or the database: log it and keep the platform serving
            log.exception("%s failed", what)
