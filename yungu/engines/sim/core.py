"""Trace-driven simulation on a virtual clock, through the *same* ``Scheduler`` as production.

Each round builds a real :class:`Snapshot` (free nodes and device indices, pending and
running :class:`Job` values, forecasts issued at the round's time) and applies the returned
:class:`Plan` exactly as the control loop does: starts take the named devices (an allocation
that over-commits a node is a bug and stops the run), infeasible jobs fail with their
reasons, defers wake the job at ``until``, preemptions requeue the victim (its work is lost).

Rounds happen at multiples of ``round_interval_s`` when something changed (an arrival, a
completion, a wake-up) and at least hourly while jobs wait (forecasts move). Jobs run for
their *true* duration scaled by the pool's relative throughput; the scheduler only sees the
estimate in the spec. Energy, cost and carbon are accounted with the *truth* series.

Pure: no I/O and no clock reads; a ``timer`` callable may be passed to measure round times.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal

from yungu.domain.errors import YunguError
from yungu.domain.job import Allocation, Job, JobSpec, JobState, Resources
from yungu.domain.world import Pool
from yungu.engines.energy.signals import SignalType, SiteForecast, floor_hour
from yungu.engines.scheduler.capacity import device_power_w, throughput
from yungu.engines.scheduler.outlook import Curve
from yungu.engines.scheduler.types import IncrementalScheduler, NodeFree, PoolState, Scheduler, Snapshot
from yungu.engines.sim.model import JobRecord, Scenario, SimResult, TraceJob

ARRIVE, FINISH, WAKE = 0, 1, 2
CENT = Decimal("0.01")


class SimulationError(YunguError):
    """The scheduler returned a plan that cannot be applied (a bug, never an expected outcome)."""


def to_job(t: TraceJob, start: datetime, gpus_per_node: int) -> Job:
    """The domain job for a trace row: gangs of whole nodes above one node's worth of GPUs."""
    if t.num_gpus <= gpus_per_node:
        replicas, per = 1, t.num_gpus
    else:
        replicas, per = math.ceil(t.num_gpus / gpus_per_node), gpus_per_node
    submit = start + timedelta(seconds=t.submit_s)
    spec = JobSpec(
        name=t.id,
        command="sim",
        resources=Resources(cpus=1, memory_gb=0, accelerators=per, accelerator_types=t.gpu_types),
        replicas=replicas,
        estimated_duration_s=max(1, round(t.duration_s)),
        deadline=None if t.deadline_s is None else submit + timedelta(seconds=t.deadline_s),
        priority=t.priority,
        objective=t.objective,
        data_location=t.home,
    )
    return Job(t.id, "sim", t.tenant, spec, JobState.QUEUED, submit, submit)


class _Node:
    __slots__ = ("cpus", "devs", "mem")

    def __init__(self, cpus: int, mem: int, devs: int) -> None:
        self.cpus, self.mem, self.devs = cpus, mem, set(range(devs))


class _PoolRT:
    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.nodes = [_Node(pool.cpus_per_node, pool.memory_gb_per_node, pool.accelerators_per_node) for _ in range(pool.nodes)]
        self.busy = 0
        self._state: PoolState | None = None

    def state(self) -> PoolState:
        if self._state is None:
            self._state = PoolState(
                self.pool.id, tuple(NodeFree(n.cpus, n.mem, tuple(sorted(n.devs))) for n in self.nodes)
            )
        return self._state

    def take(self, a: Allocation) -> None:
        for rp in a.replicas:
            if not 0 <= rp.node < len(self.nodes):
                raise SimulationError(f"{a.job_id}: node {rp.node} does not exist in {self.pool.id}")
            n = self.nodes[rp.node]
            if n.cpus < a.cpus_per_replica or n.mem < a.memory_gb_per_replica or not set(rp.devices) <= n.devs:
                raise SimulationError(f"{a.job_id}: over-commits {self.pool.id} node {rp.node}")
            n.cpus -= a.cpus_per_replica
            n.mem -= a.memory_gb_per_replica
            n.devs -= set(rp.devices)
            self.busy += len(rp.devices)
        self._state = None

    def give(self, a: Allocation) -> None:
        for rp in a.replicas:
            n = self.nodes[rp.node]
            n.cpus += a.cpus_per_replica
            n.mem += a.memory_gb_per_replica
            n.devs |= set(rp.devices)
            self.busy -= len(rp.devices)
        self._state = None


def simulate(
    sc: Scenario,
    scheduler: Scheduler,
    *,
    policy_name: str = "",
    timer: Callable[[], float] | None = None,
    progress: Callable[[int, int], None] | None = None,
    max_rounds: int = 10_000_000,
) -> SimResult:
    world, cat = sc.world, sc.catalogue
    pools = {p.id: _PoolRT(p) for p in world.pools}
    sites = {s.id: s for s in world.sites}
    truth = {
        sid: {
            k: Curve(s.start, s.values, 0.0)
            for k, s in sig.series.items()
        }
        for sid, sig in sc.truth.items()
    }
    jobs_by_id = {t.id: t for t in sc.jobs}
    events: list[tuple[float, int, int, str, int]] = []
    seq = 0
    for t in sc.jobs:
        heapq.heappush(events, (t.submit_s, seq, ARRIVE, t.id, 0))
        seq += 1
    pending: dict[str, Job] = {}
    running: dict[str, Job] = {}
    wake_at: dict[str, float] = {}
    records: dict[str, JobRecord] = {}
    feasible: dict[str, bool] = {}
    round_s: list[float] = []
    rounds = 0
    preemptions = 0
    forecast_cache: dict[int, dict[str, object]] = {}
    done = 0
    total = len(sc.jobs)
    interval = max(sc.round_interval_s, 0.0)
    last_round = -1.0
    idle = 0
    t0 = sc.start
    # An incremental scheduler keeps what it derived in earlier rounds in a carry we hold.
    incremental = scheduler if isinstance(scheduler, IncrementalScheduler) else None
    carry = incremental.new_carry() if incremental is not None else None

    def at(sec: float) -> datetime:
        return t0 + timedelta(seconds=sec)

    def signals(now: datetime) -> dict[str, object]:
        h = int((floor_hour(now) - floor_hour(t0)).total_seconds() // 3600)
        got = forecast_cache.get(h)
        if got is None:
            got = {sid: SiteForecast.issue(sig, now, sc.horizon_hours, sc.error_model) for sid, sig in sc.truth.items()}
            forecast_cache.clear()
            forecast_cache[h] = got
        return got

    def account(job: Job, start: datetime, end: datetime, state: str, reason: str = "") -> None:
        a = job.allocation
        assert a is not None
        pool = pools[a.pool_id].pool
        site = sites[pool.site_id]
        hours = (end - start).total_seconds() / 3600
        n = a.devices
        kwh = n * device_power_w(cat, pool, sc.power_load) / 1000 * hours * site.pue
        tr = truth.get(site.id, {})
        secs = (end - start).total_seconds()
        ci = tr[SignalType.CARBON_INTENSITY].mean(start, secs) if SignalType.CARBON_INTENSITY in tr else 0.0
        re = tr[SignalType.RENEWABLE_SHARE].mean(start, secs) if SignalType.RENEWABLE_SHARE in tr else 0.0
        pr = (
            tr[SignalType.PRICE].mean(start, secs)
            if SignalType.PRICE in tr
            else float(site.electricity_price_cny_per_kwh)
        )
        green = site.green_contract_share + (1 - site.green_contract_share) * re
        cost = pool.price_cny_per_device_hour * Decimal(n) * Decimal(repr(round(hours, 6)))
        cost += Decimal(repr(round(kwh * pr, 4)))
        prev = records.get(job.id)
        t = jobs_by_id[job.id]
        rec = JobRecord(
            job.id,
            job.tenant_id,
            job.submitted_at,
            start,
            end,
            pool.id,
            site.id,
            n,
            kwh + (prev.energy_kwh if prev else 0.0),
            kwh * ci + (prev.carbon_g if prev else 0.0),
            kwh * green + (prev.green_kwh if prev else 0.0),
            (cost + (prev.cost_cny if prev else Decimal(0))).quantize(CENT),
            job.spec.deadline,
            feasible.get(job.id, False),
            job.attempt + 1,
            state,
            reason,
        )
        records[job.id] = rec
        del t

    def room_for(job: Job, now: datetime) -> bool:
        """Deadline feasible at submission: some pool has room now and is fast enough."""
        if job.spec.deadline is None:
            return False
        r = job.spec.resources
        for prt in pools.values():
            p = prt.pool
            if r.accelerators > p.accelerators_per_node or (r.accelerator_types and p.accelerator not in r.accelerator_types):
                continue
            run = (job.spec.estimated_duration_s or 0) / throughput(cat, p)
            if now + timedelta(seconds=run) > job.spec.deadline:
                continue
            fits = sum(1 for n in prt.nodes if len(n.devs) >= r.accelerators) >= job.spec.replicas
            if fits:
                return True
        return False

    while events and rounds < max_rounds:
        t_ev = events[0][0]
        now_s = t_ev if interval == 0 else math.ceil(t_ev / interval) * interval
        if now_s <= last_round:
            now_s = last_round if interval == 0 else last_round + interval
        now = at(now_s)
        changed = False
        while events and events[0][0] <= now_s:
            t_event, _, kind, jid, attempt = heapq.heappop(events)
            if kind == ARRIVE:
                job = to_job(jobs_by_id[jid], t0, sc.gpus_per_node)
                pending[jid] = job
                feasible[jid] = room_for(job, job.submitted_at)
                changed = True
            elif kind == FINISH:
                fin = running.get(jid)
                if fin is None or fin.attempt != attempt:
                    continue  # preempted meanwhile
                job = fin
                del running[jid]
                assert job.allocation is not None
                pools[job.allocation.pool_id].give(job.allocation)
                assert job.started_at is not None
                # The job ended at its own time; the platform sees the freed devices only at
                # this round (as the live loop does), but time, energy and money stop at the end.
                account(job, job.started_at, at(t_event), "succeeded")
                done += 1
                if progress:
                    progress(done, total)
                changed = True
            elif kind == WAKE and wake_at.get(jid) is not None and jid in pending:
                changed = True
        if not changed and not pending:
            continue
        again = True
        repeats = 0
        while again and pending and repeats < 5:  # preemptions free capacity: look again, a few times
            again = False
            repeats += 1
            snap = Snapshot(
                now=now,
                world=world,
                catalogue=cat,
                pools={pid: p.state() for pid, p in pools.items()},
                pending=tuple(pending.values()),
                running=tuple(running.values()),
                signals=signals(now),
            )
            t_a = timer() if timer else 0.0
            plan = incremental.schedule(snap, carry=carry) if incremental is not None else scheduler.schedule(snap)
            if timer:
                round_s.append(timer() - t_a)
            rounds += 1
            for inf in plan.infeasible:
                job = pending.pop(inf.job_id)
                records[job.id] = JobRecord(
                    job.id, job.tenant_id, job.submitted_at, None, None, None, None, 0, 0.0, 0.0, 0.0,
                    Decimal("0.00"), job.spec.deadline, feasible.get(job.id, False), job.attempt, "failed",
                    "; ".join(inf.status.reasons)[:500],
                )
                done += 1
            for pre in plan.preempts:
                victim = running.pop(pre.job_id, None)
                if victim is None:
                    raise SimulationError(f"plan preempts {pre.job_id}, which is not running")
                assert victim.allocation is not None and victim.started_at is not None
                pools[victim.allocation.pool_id].give(victim.allocation)
                account(victim, victim.started_at, now, "unfinished", "preempted")
                preemptions += 1
                pending[victim.id] = replace(
                    victim, state=JobState.QUEUED, attempt=victim.attempt + 1, allocation=None, started_at=None
                )
                again = True
            for st in plan.starts:
                if st.job_id not in pending:
                    raise SimulationError(f"plan starts {st.job_id}, which is not pending")
                job = pending.pop(st.job_id)
                if st.allocation.job_id != job.id:
                    raise SimulationError(f"allocation for {st.allocation.job_id} given to {job.id}")
                need = job.spec.resources.accelerators
                if len(st.allocation.replicas) != job.spec.replicas or any(len(r.devices) != need for r in st.allocation.replicas):
                    raise SimulationError(f"{job.id}: allocation splits or resizes the gang")
                prt = pools[st.allocation.pool_id]
                prt.take(st.allocation)
                job = replace(job, state=JobState.RUNNING, allocation=st.allocation, started_at=now, updated_at=now)
                running[job.id] = job
                true_run = jobs_by_id[job.id].duration_s / throughput(cat, prt.pool)
                heapq.heappush(events, (now_s + true_run, seq, FINISH, job.id, job.attempt))
                seq += 1
                wake_at.pop(job.id, None)
            for d in plan.defers:
                if d.until is not None and d.until > now:
                    ws = (d.until - t0).total_seconds()
                    if wake_at.get(d.job_id) != ws:
                        wake_at[d.job_id] = ws
                        heapq.heappush(events, (ws, seq, WAKE, d.job_id, 0))
                        seq += 1
        last_round = now_s
        idle = idle + 1 if (pending and not running) else 0
        if idle > 5000:
            break  # nothing runs and nothing starts: the leftovers are reported unfinished
        if pending and not running:
            nxt = events[0][0] if events else math.inf
            if nxt == math.inf:
                for job in pending.values():
                    records[job.id] = JobRecord(
                        job.id, job.tenant_id, job.submitted_at, None, None, None, None, 0, 0.0, 0.0, 0.0,
                        Decimal("0.00"), job.spec.deadline, feasible.get(job.id, False), job.attempt, "unfinished",
                        "never placed on an idle system",
                    )
                pending.clear()
                break
        if pending:
            # Forecasts move every hour: make sure waiting jobs are looked at again.
            nh = (math.floor(now_s / 3600) + 1) * 3600.0
            if not events or events[0][0] > nh:
                heapq.heappush(events, (nh, seq, WAKE, "", 0))
                seq += 1
    for job in list(pending.values()) + list(running.values()):
        if job.id not in records or records[job.id].state != "succeeded":
            records[job.id] = replace(
                records.get(job.id)
                or JobRecord(
                    job.id, job.tenant_id, job.submitted_at, None, None, None, None, 0, 0.0, 0.0, 0.0,
                    Decimal("0.00"), job.spec.deadline, feasible.get(job.id, False), job.attempt, "unfinished",
                ),
                state="unfinished",
            )
    recs = tuple(records[t.id] for t in sc.jobs if t.id in records)
    end = max((r.end for r in recs if r.end), default=sc.start)
    nh = max(1, math.ceil((end - sc.start).total_seconds() / 3600))
    load: dict[str, list[float]] = {s.id: [0.0] * (nh + 1) for s in world.sites}
    for r in recs:
        if r.start and r.end and r.site_id and r.state == "succeeded":
            a = (r.start - sc.start).total_seconds() / 3600
            b = (r.end - sc.start).total_seconds() / 3600
            h = int(a)
            while h < b and h < nh:
                load[r.site_id][h] += r.devices * (min(b, h + 1) - max(a, h))
                h += 1
    green: dict[str, tuple[float, ...]] = {}
    carbon: dict[str, tuple[float, ...]] = {}
    price: dict[str, tuple[float, ...]] = {}
    for s in world.sites:
        tr = truth.get(s.id, {})
        hours = [sc.start + timedelta(hours=h) for h in range(nh)]
        for out, signal, default in (
            (green, SignalType.RENEWABLE_SHARE, 0.0),
            (carbon, SignalType.CARBON_INTENSITY, 0.0),
            (price, SignalType.PRICE, float(s.electricity_price_cny_per_kwh)),
        ):
            c = tr.get(signal)
            out[s.id] = tuple(c.at(t) for t in hours) if c else (default,) * nh
    cap: dict[str, int] = {}
    for p in world.pools:
        cap[p.site_id] = cap.get(p.site_id, 0) + p.total_devices
    return SimResult(
        sc.name,
        policy_name or getattr(scheduler, "name", type(scheduler).__name__),
        recs,
        tuple(round_s),
        rounds,
        sc.start,
        end,
        cap,
        {k: tuple(v[:nh]) for k, v in load.items()},
        green,
        preemptions,
        carbon,
        price,
    )
