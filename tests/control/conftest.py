"""A control loop on a mock clock: real scheduler and SQLite store, fake engines.

``Rig`` drives ``Reconciler.run_once`` round by round (``background=False``: stops, cancels
and probes run inline), so every test is a deterministic sequence of rounds and clock jumps.
The engines are ``yungu.testing.FakeCluster``s in scripted mode: no processes, no sleeps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from yungu.adapters.store import tables as _tables  # noqa: F401  (registers core tables)
from yungu.adapters.store.db import create_engine, migrate
from yungu.adapters.store.job_store import SqlStore
from yungu.control.reconciler import Reconciler
from yungu.domain.job import Job, JobSpec, JobState, Resources
from yungu.domain.world import World
from yungu.engines.scheduler.green import GreenScheduler
from yungu.ports.executor import Launch
from yungu.testing import FakeCluster, FakeExecutor, MockClock, Script
from yungu.testing.world import T0, catalogue, pool, site, world


@dataclass
class Rig:
    clock: MockClock
    store: SqlStore
    world: World
    clusters: dict[str, FakeCluster]
    rec: Reconciler
    tenant: str
    scripts: dict[str, Script] = field(default_factory=dict)  # job name -> how it runs

    def submit(self, name: str, *, devices: int = 0, priority: int = 0, pool_id: str | None = None,
               script: Script | None = None, **spec: Any) -> str:
        if script is not None:
            self.scripts[name] = script
        s = JobSpec(name=name, command=f"run {name}", resources=Resources(cpus=1, memory_gb=1, accelerators=devices),
                    priority=priority, pool=pool_id, estimated_duration_s=3600, **spec)
        job, _ = self.store.submit(self.tenant, s, self.clock.now(), f"job-{name}")
        self.rec.wake()
        return job.id

    def round(self, n: int = 1, *, jump: float = 0.0) -> None:
        for _ in range(n):
            if jump:
                self.clock.jump(jump)
            self.rec.run_once()

    def job(self, jid: str) -> Job:
        return self.store.get(jid)

    def state(self, jid: str) -> JobState:
        return self.job(jid).state

    def events(self, jid: str) -> list[tuple[str, str, int]]:
        return [(e["event"], e["to"], e["attempt"]) for e in self.store.events(jid)]


def _script_for(rig_scripts: dict[str, Script]) -> Callable[[Launch], Script]:
    def script(launch: Launch) -> Script:
        name = launch.job_id.removeprefix("job-")
        return rig_scripts.get(name, Script(run_s=60))

    return script


@pytest.fixture
def make_rig(tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    made: list[Rig] = []

    def make(w: World | None = None, **kw: Any) -> Rig:
        w = w or world(pool("gpu", "site-a", devices=8))
        clock = MockClock(T0)
        engine = create_engine(f"sqlite:///{tmp_path / f'rig{len(made)}.db'}")
        migrate(engine)
        store = SqlStore(engine, w.platform_id)
        tenant = store.create_tenant("tenant-1", "lab one", clock.now()).id
        scripts: dict[str, Script] = {}
        clusters = {s.executor: FakeCluster(clock, script=_script_for(scripts)) for s in w.sites}
        executors = {name: FakeExecutor(name, c) for name, c in clusters.items()}
        rec = Reconciler(store, GreenScheduler(catalogue()), executors, w, catalogue(), clock, background=False,
                         **kw)
        rig = Rig(clock, store, w, clusters, rec, tenant, scripts)
        made.append(rig)
        return rig

    yield make
    for r in made:
        r.store.engine.dispose()


def two_sites() -> World:
    """Two sites of one 8-device pool each, with their own engines (``exec-a``, ``exec-b``);
    site a is the cheaper, so jobs go there first."""
    return world(pool("gpu-a", "site-a", devices=8, price="5"), pool("gpu-b", "site-b", devices=8, price="50"),
                 sites=[site("site-a", executor="exec-a"), site("site-b", executor="exec-b")])
