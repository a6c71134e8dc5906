"""The composition root: config -> objects. Everything is wired here and only here."""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from yungu.adapters.config import PlatformConfig, load_catalogue, load_config
from yungu.adapters.executors.registry import build_executor
from yungu.adapters.files import private_dir, private_sqlite
from yungu.adapters.signals import LiveSignals
from yungu.adapters.store import tables as _tables  # noqa: F401  (registers core tables)
from yungu.adapters.store.batcher import SubmitBatcher
from yungu.adapters.store.db import create_engine, migrate, sqlite_url
from yungu.adapters.store.job_store import SqlStore
from yungu.adapters.system import Ids, SystemClock
from yungu.api.routes.ledger import services as ledger_services
from yungu.api.routes.telemetry import telemetry_store
from yungu.app import tokens as tokens_wiring  # issue 14: the token service
from yungu.control.billing import BillingLoop, budget_admission, release_unused
from yungu.control.reconciler import Reconciler
from yungu.domain.catalogue import Catalogue
from yungu.domain.clock import Clock
from yungu.domain.world import World
from yungu.engines.scheduler.green import GreenScheduler
from yungu.ports.executor import Executor

log = logging.getLogger("yungu")


@dataclass
class Container:
    data_dir: Path
    config: PlatformConfig
    catalogue: Catalogue
    engine: Engine
    store: SqlStore
    executors: dict[str, Executor]
    reconciler: Reconciler
    clock: Clock
    ids: Ids
    extras: dict[str, Any] = field(default_factory=dict)  # area services (ledger, telemetry, ...)

    @property
    def world(self) -> World:
        return self.config.world

    def close(self) -> None:
        tokens = self.extras.get("tokens")
        if tokens is not None:
            tokens.close()
        runner = self.extras.get("billing_runner")
        if runner is not None:
            runner.stop()
        batcher = self.extras.get("submit_batcher")
        if batcher is not None:
            batcher.close()
        self.reconciler.stop()
        for ex in self.executors.values():
            ex.close()
        self.engine.dispose()


def build(data_dir: Path, config_path: Path | None = None, db_url: str | None = None,
          start_loop: bool = True, clock: Clock | None = None) -> Container:
    """Wire the platform. ``clock`` is injected by tests that need a fixed instant (default: system)."""
    data_dir = private_dir(data_dir.resolve())  # 0700: the database, keys and run dirs are the platform's
    catalogue = load_catalogue()
    config = load_config(config_path, catalogue)
    url = db_url or os.environ.get("YUNGU_DB_URL") or sqlite_url(data_dir)
    if url == sqlite_url(data_dir):
        private_sqlite(data_dir / "yungu.db")
    engine = create_engine(url)
    migrate(engine)
    store = SqlStore(engine, config.world.platform_id)
    if store.platform_value("platform_id") is None:
        store.set_platform_value("platform_id", config.world.platform_id)
    clock, ids = clock or SystemClock(), Ids()
    executors: dict[str, Executor] = {
        name: build_executor(str(settings["type"]), name, tokens_wiring.with_runtime_binds(dict(settings), data_dir),
                             data_dir)  # issue 14: inference replicas run the platform's model server
        for name, settings in config.executors.items()
    }
    scheduler = GreenScheduler(catalogue, config.policy)
    signals = LiveSignals(config.world, config.forecast_error)
    signals(clock.now())  # build today's modelled feeds at start, not in the first busy round
    reconciler = Reconciler(store, scheduler, executors, config.world, catalogue, clock, signals=signals)
    c = Container(data_dir, config, catalogue, engine, store, executors, reconciler, clock, ids)
    ledger = ledger_services(c)  # builds c.extras["ledger"]: ledger, billing, market, budgets, loop
    reconciler.admission = budget_admission(ledger.budgets, config.world, store.is_prepaid)
    reconciler.on_transition = release_unused(ledger.budgets)
    reconciler.reservations = lambda now: [(r.tenant_id, r.pool_id, r.devices)
                                           for r in ledger.market.reservations_at(now)]
    c.extras["billing_runner"] = runner = BillingRunner(c, ledger.loop)
    c.extras["submit_batcher"] = SubmitBatcher(store)
    tokens_wiring.wire(c, ledger, start=start_loop)  # issue 14: gateway, inference jobs, token billing
    if start_loop:
        reconciler.start()
        runner.start()
    return c


class BillingRunner:
    """Housekeeping: meters finished jobs and books their usage every few seconds (idempotent
    by usage id, so a restart that meters the same jobs again books nothing twice), and about
    once a minute folds telemetry into rollups and applies retention."""

    def __init__(self, c: Container, loop: BillingLoop, interval_s: float = 5.0) -> None:
        self.c, self.loop, self.interval_s = c, loop, interval_s
        self._since: datetime | None = None  # first pass after a start rescans everything
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="yungu-billing", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def run_once(self) -> tuple[int, int, int]:
        jobs = self.c.store.finished_since(self._since)
        for hook in self.c.extras.get("billing_hooks", ()):  # e.g. token usage -> usage records
            try:
                hook()
            except Exception:
                log.exception("billing hook %s failed", getattr(hook, "__qualname__", hook))
        out = self.loop.run_once(jobs)
        if jobs:
            # Keep the last instant: jobs finishing in the same instant are seen again (harmless).
            self._since = jobs[-1].finished_at
        return out

    def _run(self) -> None:
        passes = 0
        while not self._stop.wait(self.interval_s):
            passes += 1
            try:
                self.run_once()
            except Exception:  # a bug: log it and keep the platform serving
                log.exception("billing pass failed")
            if passes % 12 == 0:  # about once a minute: telemetry rollups and retention
                try:
                    store = telemetry_store(self.c)
                    now = self.c.clock.now()
                    store.rollup(now)
                    store.enforce_retention(now)
                except Exception:
                    log.exception("telemetry housekeeping failed")
