"""The composition root: config -> objects. Everything is wired here and only here.

``build()`` makes every service the platform runs — stores, executors, the scheduler, the
control loop with its hooks (budget admission, budget release, market reservations), the
ledger and billing services, telemetry, certificate and statement stores, the submission
batcher, the billing runner — and the ``Leadership`` that decides whether *this* process
runs the control loop and the billing runner (it holds the ``loop`` lease) or stands by
serving the API. Nothing is built lazily elsewhere; the API reads the typed ``Container``.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.engine import Engine

from yungu.adapters.certs import CertSigner
from yungu.adapters.config import PlatformConfig, load_catalogue, load_config
from yungu.adapters.executors.registry import build_executor
from yungu.adapters.executors.standby import ExclusiveExecutors, StandbyLocal
from yungu.adapters.federation.service import Federation, FederationDeps
from yungu.adapters.federation.settings import load_settings
from yungu.adapters.files import private_dir, private_sqlite
from yungu.adapters.ledger.alerts import TableAlerts
from yungu.adapters.ledger.billing_store import BillingStore
from yungu.adapters.ledger.market_store import MarketStore
from yungu.adapters.ledger.statement_keys import platform_key
from yungu.adapters.ledger.store import LedgerStore, ensure_system_accounts
from yungu.adapters.signals import LiveSignals
from yungu.adapters.store import tables as _tables  # noqa: F401  (registers core tables)
from yungu.adapters.store.audit_store import AuditLog
from yungu.adapters.store.batcher import SubmitBatcher
from yungu.adapters.store.db import create_engine, migrate, sqlite_url
from yungu.adapters.store.job_store import SqlStore
from yungu.adapters.store.lease_store import SqlLeaseStore
from yungu.adapters.store.read_models import ReadModels
from yungu.adapters.store.record_store import CertificateStore, StatementStore
from yungu.adapters.system import Ids, SystemClock
from yungu.adapters.telemetry.store import TelemetryStore
from yungu.app import tokens as tokens_wiring  # issue 14: the token service
from yungu.control.billing import BillingLoop, Budgets, meter
from yungu.control.billing_runner import BillingRunner
from yungu.control.budgets import BudgetEnforcer, LoopJobs, budget_admission, release_unused
from yungu.control.leader import Leadership
from yungu.control.reconciler import Reconciler
from yungu.domain.catalogue import Catalogue
from yungu.domain.clock import Clock
from yungu.domain.world import World
from yungu.engines.ledger.invoice import Party
from yungu.engines.scheduler.green import GreenScheduler
from yungu.ports.executor import Executor
from yungu.ports.store import Lease

# Federation seams (issue 12 wires them): peer platforms' quotes for a job the console asks
# about, the peers for the big screen, and peers' public keys for token receipts.
PeerQuotes = Callable[[Any, str], list[dict[str, Any]]]
Peers = Callable[[], list[dict[str, Any]]]

log = logging.getLogger("yungu")
# What the console and the big screen show of a peer (no keys, no URLs: the screen is public-facing).
PEER_FIELDS = ("id", "name", "state", "reason", "usable", "latency_ms", "offers", "open_delegations", "last_ok")


@dataclass(frozen=True)
class LedgerServices:
    ledger: LedgerStore
    billing: BillingStore
    market: MarketStore
    budgets: Budgets
    loop: BillingLoop


@dataclass
class Container:
    data_dir: Path
    config: PlatformConfig
    catalogue: Catalogue
    engine: Engine
    store: SqlStore
    executors: ExclusiveExecutors
    reconciler: Reconciler
    clock: Clock
    ids: Ids
    ledger: LedgerServices
    telemetry: TelemetryStore
    certificates: CertificateStore
    statements: StatementStore
    submit_batcher: SubmitBatcher
    billing_runner: BillingRunner
    leader: Leadership
    audit: AuditLog
    read_models: ReadModels
    tokens: tokens_wiring.TokenServices | None = None
    federation: Federation | None = None  # issue 12
    peer_quotes: PeerQuotes | None = None
    peers: Peers | None = None
    peer_keys: dict[str, Any] = field(default_factory=dict)
    api_only: bool = False  # `yungu server --api-only`: built with start_loop=False, never leads

    @property
    def world(self) -> World:
        return self.config.world

    @cached_property
    def signer(self) -> CertSigner:
        """The certificate signing key (``<data dir>/cert-signing.key``, made on first use)."""
        return CertSigner.load_or_create(self.data_dir)

    @cached_property
    def statement_key(self) -> Ed25519PrivateKey:
        """This platform's key for clearing statements (``<data dir>/clearing-ed25519.pem``)."""
        return platform_key(self.data_dir)

    @property
    def role(self) -> str:
        return "leader" if self.leader.leading else "api-only" if self.api_only else "standby"

    def close(self) -> None:
        if self.tokens is not None:
            self.tokens.close()
        self.leader.stop(release=True)  # stops the loop and the billing runner if leading
        if self.federation is not None:
            self.federation.stop()
        self.submit_batcher.close()
        self.reconciler.stop()
        self.executors.close_all()
        self.store.close_reads()
        self.engine.dispose()


def build(data_dir: Path, config_path: Path | None = None, db_url: str | None = None,
          start_loop: bool = True, *, clock: Clock | None = None,
          executors: Mapping[str, Executor] | None = None, address: str = "",
          lease_ttl_s: float = 3.0) -> Container:
    """Build the platform. ``clock``/``executors`` replace the real ones (tests, embedding);
    ``start_loop=False`` builds everything but never competes for the control loop."""
    data_dir = private_dir(data_dir.resolve())  # 0700: the database, keys and run dirs are the platform's
    catalogue = load_catalogue()
    config = load_config(config_path, catalogue)
    world = config.world
    url = db_url or os.environ.get("YUNGU_DB_URL") or sqlite_url(data_dir)
    if url == sqlite_url(data_dir):
        private_sqlite(data_dir / "yungu.db")
    engine = create_engine(url)
    migrate(engine)
    store = SqlStore(engine, world.platform_id)
    if store.platform_value("platform_id") is None:
        store.set_platform_value("platform_id", world.platform_id)
    clock = clock or SystemClock()
    ids = Ids()
    execs = _executors(config, data_dir, executors, clock)

    ledger_store = LedgerStore(engine, clock)
    ensure_system_accounts(ledger_store)
    billing = BillingStore(engine, clock)

    def buyers(tenant_id: str) -> Party:  # read at invoice time: tenants created later are found
        t = store.tenant(tenant_id)
        return Party(t.name, t.social_credit_code)

    seller = Party(world.platform_name, getattr(config, "social_credit_code", "") or "")
    market = MarketStore(engine, clock)
    budgets = Budgets(ledger_store)
    ledger = LedgerServices(ledger_store, billing, market, budgets,
                            BillingLoop(ledger_store, billing, world, clock, catalogue, seller, buyers,
                                        is_prepaid=store.is_prepaid, alerts=TableAlerts(engine)))

    signals = LiveSignals(world, config.forecast_error)
    signals(clock.now())  # build today's modelled feeds at start, not in the first busy round
    leases = SqlLeaseStore(engine)
    roles = _Roles()
    leader = Leadership(leases, clock, on_gain=roles.gain, on_loss=roles.loss,
                        address=address,
                        ttl_s=lease_ttl_s, renew_s=min(0.5, lease_ttl_s / 5), poll_s=min(0.25, lease_ttl_s / 10),
                        margin_s=min(0.5, lease_ttl_s / 5))
    reconciler = Reconciler(
        store, GreenScheduler(catalogue, config.policy), execs, world, catalogue, clock,
        signals=signals,
        admission=budget_admission(budgets, world, store.is_prepaid),
        on_transition=release_unused(budgets),
        reservations=lambda now: [(r.tenant_id, r.pool_id, r.devices) for r in market.reservations_at(now)],
        checkpoint_root=str(data_dir / "checkpoints"),
        may_act=leader.valid,
        on_fenced=leader.fenced,
    )
    telemetry = TelemetryStore(engine)

    def housekeeping(now: datetime) -> None:
        telemetry.rollup(now)
        telemetry.enforce_retention(now)

    enforcer = BudgetEnforcer(budgets, LoopJobs(store, clock, reconciler.wake), world, clock)
    hooks: list[Callable[[], object]] = []  # more billing passes (token usage), run by the runner first
    runner = BillingRunner(store, ledger.loop, clock, housekeeping, enforcer, hooks=lambda: hooks)
    c = Container(data_dir, config, catalogue, engine, store, execs, reconciler, clock, ids, ledger, telemetry,
                  CertificateStore(engine), StatementStore(engine), SubmitBatcher(store), runner, leader,
                  AuditLog(engine), ReadModels(engine))
    c.federation = fed = Federation(FederationDeps(  # issue 12: peers as executors, offers as pools
        me=world.platform_id, name=world.platform_name, world=world, catalogue=catalogue,
        jobs=store, engine=engine, ledger=ledger_store, clock=clock, new_id=ids.new, data_dir=data_dir,
        settings=load_settings(config_path), signals=signals, wake=reconciler.wake,
        executor_for_pool=reconciler.executor_for_pool,
        meter=lambda job: meter(job, world, catalogue, set())))
    fed.register_executors(execs)  # type: ignore[arg-type]  # peer:<id> executors beside the configured ones
    reconciler.federation = fed
    c.peers = lambda: [{k: p.get(k) for k in PEER_FIELDS} for p in fed.summary()["peers"]]  # console, big screen
    c.tokens = tokens_wiring.wire(c, ledger, hooks)  # issue 14: gateway, inference jobs, token billing
    roles.container = c
    if start_loop:
        leader.start()
    return c


def _executors(config: PlatformConfig, data_dir: Path, given: Mapping[str, Executor] | None,
               clock: Clock) -> ExclusiveExecutors:
    """Shared executors (Slurm, Ray, injected ones) are built now; a local executor owns its
    run directories, so only the leader opens it (a standby reads its logs from disk)."""
    if given is not None:
        return ExclusiveExecutors(given, {}, {})
    shared: dict[str, Executor] = {}
    exclusive = {}
    placeholders: dict[str, Executor] = {}
    for name, settings in config.executors.items():
        kind = str(settings["type"])
        rest = {k: v for k, v in settings.items() if k != "type"}
        if kind == "local":  # issue 14: inference replicas run the platform's model server
            rest = tokens_wiring.with_runtime_binds(dict(settings), data_dir)
            exclusive[name] = (lambda k=kind, n=name, s=rest: build_executor(k, n, s, data_dir, clock))
            placeholders[name] = StandbyLocal(name, data_dir / "executors" / name)
        else:
            shared[name] = build_executor(kind, name, rest, data_dir, clock)
    return ExclusiveExecutors(shared, exclusive, placeholders)


class _Roles:
    """What this process runs while it holds the lease: the control loop (its writes fenced by
    the lease's token) and the billing runner, with the local executors opened for it.

    Opening a local executor may wait for its lock (a paused old leader still holds it until
    it wakes and stands by), so it happens on a thread of its own, never on the leadership
    thread: the lease is renewed meanwhile. Until it is open, the loop sees the placeholder
    as an unreachable executor (no placements there); once open, a probe tells the loop."""

    container: Container

    def __init__(self) -> None:
        self._opener: threading.Thread | None = None
        self._stop_opening = threading.Event()
        self._federating = False

    def gain(self, lease: Lease) -> None:
        c = self.container
        c.reconciler.store = c.store.fenced(lease.fence)
        self._stop_opening.clear()
        self._opener = threading.Thread(target=self._start, name="yungu-take-over", daemon=True)
        self._opener.start()

    def _start(self) -> None:
        """Open the exclusive executors (at once, normally), start the loop and the billing
        runner, then keep trying any executor that could not be opened yet."""
        c = self.container
        failed = c.executors.open()
        if self._stop_opening.is_set():
            return
        if c.federation is not None:
            # Before the loop observes anything: the open delegations as the store has them (the
            # first time also stops what expired while we were down and starts the links, which
            # then act for the origin only while this process leads; docs/federation.md).
            if self._federating:
                c.federation.resume()
            else:
                c.federation.start()
                self._federating = True
        c.reconciler.start()
        c.billing_runner.start()
        if c.tokens is not None:
            c.tokens.start_inference()  # it scales inference services by submitting jobs: one process
        while failed and not self._stop_opening.wait(1.0):
            failed = c.executors.open()
            if not failed:
                c.reconciler.health.probe(list(c.executors))  # open now: the loop may use them at once

    def loss(self) -> None:
        c = self.container
        if c.federation is not None:
            c.federation.pause()  # first: no lease renewed for an attempt the next leader may re-place
        self._stop_opening.set()
        if self._opener is not None:
            self._opener.join(timeout=10)
        c.billing_runner.stop()
        if c.tokens is not None:
            c.tokens.stop_inference()
        c.reconciler.stop()
        c.reconciler.store = c.store
        c.executors.close()

