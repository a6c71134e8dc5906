"""The composition root: config -> objects. Everything is wired here and only here."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from yungu.adapters.config import PlatformConfig, load_catalogue, load_config
from yungu.adapters.executors.registry import build_executor
from yungu.adapters.federation.service import Federation, FederationDeps
from yungu.adapters.federation.settings import load_settings
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
from yungu.control.billing_runner import BillingRunner
from yungu.control.budgets import BudgetEnforcer, LoopJobs, budget_admission, release_unused
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
        fed = self.extras.get("federation")
        if fed is not None:
            fed.stop()
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
    enforcer = BudgetEnforcer(ledger.budgets, LoopJobs(store, clock, reconciler.wake), config.world, clock)

    def housekeeping(now: datetime) -> None:  # telemetry rollups and retention, about once a minute
        tstore = telemetry_store(c)
        tstore.rollup(now)
        tstore.enforce_retention(now)

    c.extras["billing_runner"] = runner = BillingRunner(store, ledger.loop, clock, housekeeping, enforcer,
                                                        hooks=lambda: c.extras.get("billing_hooks", ()))
    c.extras["submit_batcher"] = SubmitBatcher(store)
    c.extras["federation"] = fed = Federation(FederationDeps(  # issue 12: peers as executors, offers as pools
        me=config.world.platform_id, name=config.world.platform_name, world=config.world, catalogue=catalogue,
        jobs=store, engine=engine, ledger=ledger.ledger, clock=clock, new_id=ids.new, data_dir=data_dir,
        settings=load_settings(config_path), signals=signals, wake=reconciler.wake,
        executor_for_pool=reconciler.executor_for_pool))
    fed.register_executors(executors)
    reconciler.federation = fed
    tokens_wiring.wire(c, ledger, start=start_loop)  # issue 14: gateway, inference jobs, token billing
    if start_loop:
        fed.start()  # stops what expired while we were down before the loop observes anything
        reconciler.start()
        runner.start()
    return c
