"""The job control loop: observe, decide, act, record.

One round (``run_once``):

1. **observe** every dispatched/running job through its executor (one batch call per
   executor) and record what the world says: started, succeeded, failed, cancelled, lost;
2. **cancel** what users asked to cancel (queued jobs at once; running ones via the executor);
3. **admit** pending jobs (validate against the world);
4. **decide**: build a frozen snapshot and ask the scheduler for a plan; record placements
   (queued -> scheduled, with the allocation) *before* acting on them;
5. **act**: dispatch scheduled jobs through their site's executor with the attempt's request
   id. A crash anywhere here is harmless: on restart a scheduled job is dispatched again with
   the same request id, and the executor returns the first launch instead of running twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from yungu.control.capacity import hold_devices, pool_states
from yungu.domain.catalogue import Catalogue
from yungu.domain.clock import Clock
from yungu.domain.job import PLATFORM_STOP, Event, Job, JobState
from yungu.domain.status import Code, Status
from yungu.domain.world import World
from yungu.engines.federation.offers import executor_name, split_remote
from yungu.engines.scheduler.types import Plan, PoolState, Scheduler, Snapshot
from yungu.ports.executor import (
    ExecError,
    ExecErrorCode,
    ExecPhase,
    ExecStatus,
    Executor,
    Launch,
    ReplicaLaunch,
)
from yungu.ports.federation import RemoteCapacity
from yungu.ports.store import Transition

log = logging.getLogger("yungu.control")

ACTIVE = (JobState.SCHEDULED, JobState.DISPATCHED, JobState.RUNNING)
WAITING = (JobState.PENDING, JobState.QUEUED)


def run_times(j: Job, st: ExecStatus, now: datetime) -> tuple[dict[str, datetime], str]:
    """When the attempt really ran — the executor's own times, never when this loop noticed
    (a platform restart would otherwise bill its downtime). Returns job fields and a note.

    Where an executor reports no start, a job that surely ran (running, succeeded, or failed
    with an exit code) is timed from its dispatch — still metered, exactly once — and the
    event says so; a cancelled or failed job with no sign of having started gets no start
    (it is not metered, and its budget hold is released).
    """
    note = ""
    started = st.started_at or j.started_at
    if started is None:
        if st.phase is ExecPhase.RUNNING:
            started = now
            note = "run times: the executor reported no start; timed from when the platform saw it running"
        elif st.phase is ExecPhase.SUCCEEDED or (st.phase is ExecPhase.FAILED and st.exit_code is not None):
            started = j.updated_at if j.state is JobState.DISPATCHED else now
            note = "run times: the executor reported no start; timed from the dispatch"
    times: dict[str, datetime] = {} if started is None else {"started_at": started}
    if st.done:
        finished = st.finished_at
        if finished is None:
            finished = now
            if started is not None:
                note = (note + "; " if note else "run times: ") + "the executor reported no end; timed to when seen"
        times["finished_at"] = max(finished, started) if started is not None else finished
    return times, note


def stopping(st: ExecStatus) -> bool:
    """A cancel the executor has accepted whose processes have not ended yet (it reports the
    start but no end): the job is still running, and billed, until they do."""
    return st.phase is ExecPhase.CANCELLED and st.started_at is not None and st.finished_at is None


def cancel_reason(j: Job) -> str:
    """A stop the platform decided (``PLATFORM_STOP``: e.g. a budget ran out) keeps its reason."""
    return j.reason if j.reason.startswith(PLATFORM_STOP) else "cancelled by request"


class Reconciler:
    def __init__(self, store: Any, scheduler: Scheduler, executors: Mapping[str, Executor], world: World,
                 catalogue: Catalogue, clock: Clock,
                 signals: Callable[[datetime], Mapping[str, object]] | None = None,
                 on_transition: Callable[[list[Job]], None] | None = None,
                 cancel_grace_s: float = 5.0,
                 admission: Callable[[Job], Status] | None = None,
                 reservations: Callable[[datetime], Sequence[tuple[str, str, int]]] | None = None) -> None:
        self.store = store
        self.scheduler = scheduler
        self.executors = executors  # executor name -> Executor
        self.world = world
        self.catalogue = catalogue
        self.clock = clock
        self.signals = signals
        self.on_transition = on_transition
        self.cancel_grace_s = cancel_grace_s
        self.admission = admission  # e.g. the budget check; UNSCHEDULABLE holds the job pending
        self.reservations = reservations  # (tenant, pool, devices) in force now: market trades
        self._site_executor = {s.id: s.executor for s in world.sites}
        self._pool_executor = {p.id: self._site_executor[p.site_id] for p in world.pools}
        self.federation: RemoteCapacity | None = None  # issue 12: peers' offers as pools
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._cancelling: set[str] = set()
        self._dirty = True
        self._last_decide = 0.0
        self.decide_interval_s = 1.0
        # Jobs the scheduler deferred to a time rest (store: ``not_before``) until then, or at
        # most ``revisit_s`` since forecasts and capacity change, so thousands of jobs waiting
        # for greener hours do not make every round expensive.
        self.revisit_s = 300.0
        # Active jobs are cached between rounds (this loop makes their transitions) and
        # reloaded from the store at least every ``active_refresh_s`` and after any wake.
        self._active: dict[str, Job] | None = None
        self._active_at = 0.0
        self.active_refresh_s = 1.0
        self._retry_at: dict[str, float] = {}  # dispatch back-off for unreachable engines
        self.dispatch_retry_s = 5.0
        self._cancel_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="yungu-cancel")
        self._decided: OrderedDict[str, Snapshot] = OrderedDict()  # job -> the round that decided it
        self.last_plan: Plan | None = None
        self.last_snapshot: Snapshot | None = None
        self.rounds = 0
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ lifecycle
    def executor_name(self, pool_id: str) -> str:
        name = self._pool_executor.get(pool_id)
        if name is None:
            remote = split_remote(pool_id)
            if remote is None:
                raise KeyError(pool_id)
            name = executor_name(remote[0])  # a peer's pool: its platform is the executor
        return name

    def executor_for_pool(self, pool_id: str) -> Executor:
        return self.executors[self.executor_name(pool_id)]

    def wake(self) -> None:
        """Something changed (a submission, a cancel): schedule in the next round, now."""
        self._dirty = True
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="yungu-reconciler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=10)
        self._cancel_pool.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        self.adopt_orphans()
        while not self._stop.is_set():
            busy = False
            try:
                busy = self.run_once()
            except Exception:  # a bug: log it and keep the platform serving
                log.exception("reconcile round failed")
            self._wake.wait(timeout=0.01 if busy else 0.5)
            self._wake.clear()

    # ------------------------------------------------------------ the round
    def run_once(self) -> bool:
        """One reconcile round; returns True while there is work in flight.

        Scheduling runs only when something changed — a submission or cancel (``wake``),
        capacity freed by a finished job — or every ``decide_interval_s`` for deferred and
        held jobs. Deferred jobs are not "work in flight": a platform with thousands of jobs
        waiting for greener hours does not spin.
        """
        self.rounds += 1
        mono = time.monotonic()
        if self._active is None or self._dirty or mono - self._active_at >= self.active_refresh_s:
            active = self.store.in_states(ACTIVE)  # the store is the truth; the cache saves reloads
            self._active_at = mono
        else:
            active = list(self._active.values())
        observed = self._observe([j for j in active if j.state is not JobState.SCHEDULED])
        if any(j.state not in ACTIVE for j in observed):
            self._dirty = True  # capacity was freed
        active = observed + [j for j in active if j.state is JobState.SCHEDULED]
        placed: list[Job] = []
        if self._dirty or mono - self._last_decide >= self.decide_interval_s:
            self._dirty = False
            self._last_decide = mono
            waiting = self.store.waiting(self.clock.now())
            waiting = self._cancel(waiting, active)
            admits, waiting = self._admit(waiting)
            active = [j for j in active if j.state in ACTIVE]
            placed = self._decide([j for j in waiting if j.state is JobState.QUEUED], active, admits)
        else:
            self._cancel([], active)
            active = [j for j in active if j.state in ACTIVE]
        after = {j.id: j for j in active}
        for j in self._dispatch([j for j in active if j.state is JobState.SCHEDULED] + placed):
            after[j.id] = j
        self._active = {k: j for k, j in after.items() if j.state in ACTIVE}
        self._cancelling.intersection_update(self._active)  # stops that ended (see ``stopping``)
        return bool(active or placed)

    def _record(self, trs: list[Transition]) -> list[Job]:
        applied = self.store.record(trs)
        if applied and self.on_transition:
            self.on_transition(applied)
        return applied

    def _observe(self, jobs: list[Job]) -> list[Job]:
        by_exec: dict[str, list[Job]] = defaultdict(list)
        for j in jobs:
            if j.allocation:
                by_exec[self.executor_name(j.allocation.pool_id)].append(j)
        now = self.clock.now()
        trs: list[Transition] = []
        result: dict[str, Job] = {j.id: j for j in jobs}
        for name, group in by_exec.items():
            statuses = self.executors[name].observe([j.request_id for j in group])
            for j in group:
                st = statuses.get(j.request_id)
                tr = self._transition_for(j, st, now)
                if tr:
                    trs.append(tr)
        for a in self._record(trs):
            result[a.id] = a
        return list(result.values())

    def _transition_for(self, j: Job, st: ExecStatus | ExecError | None, now: datetime) -> Transition | None:
        if st is None or isinstance(st, ExecError):
            if isinstance(st, ExecError) and st.code is ExecErrorCode.NOT_FOUND:
                return Transition(j, j.apply(Event.REQUEUE, now, reason=f"executor lost the job: {st.message}"),
                                  Event.REQUEUE, st.message)
            return None  # unreachable: keep the job where it is and try again
        p = st.phase
        if p is ExecPhase.RUNNING and j.state is JobState.DISPATCHED:
            times, note = run_times(j, st, now)
            return Transition(j, j.apply(Event.START, now, **times), Event.START, note)
        if p is ExecPhase.SUCCEEDED:
            times, note = run_times(j, st, now)
            return Transition(j, j.apply(Event.SUCCEED, now, exit_code=st.exit_code or 0, reason="", **times),
                              Event.SUCCEED, note)
        if p is ExecPhase.FAILED:
            why = st.reason or f"exit code {st.exit_code}"
            times, note = run_times(j, st, now)
            return Transition(j, j.apply(Event.FAIL, now, exit_code=st.exit_code, reason=why, **times), Event.FAIL,
                              f"{why}; {note}" if note else why)
        if stopping(st):
            return None  # cancelled, processes still in their grace period: bill them until they end
        if p is ExecPhase.CANCELLED:
            times, note = run_times(j, st, now)
            why = cancel_reason(j)
            return Transition(j, j.apply(Event.CANCEL, now, exit_code=st.exit_code, reason=why, **times),
                              Event.CANCEL, f"{why}; {note}" if note else why)
        if p is ExecPhase.LOST:
            why = st.reason or "the engine lost the job"
            if j.cancel_requested:
                return Transition(j, j.apply(Event.CANCEL, now, reason=why), Event.CANCEL, why)
            return Transition(j, j.apply(Event.REQUEUE, now, reason=f"requeued: {why}"), Event.REQUEUE, why)
        return None

    def _cancel(self, waiting: list[Job], active: list[Job]) -> list[Job]:
        """Waiting jobs are cancelled at once. Placed ones go through the executor, even when
        only *scheduled*: a crash may have left a launch the store never recorded."""
        now = self.clock.now()
        trs = [Transition(j, j.apply(Event.CANCEL, now, reason=cancel_reason(j)), Event.CANCEL, cancel_reason(j))
               for j in waiting if j.cancel_requested]
        done = {a.id for a in self._record(trs)}
        for j in active:
            if j.cancel_requested and j.id not in self._cancelling:
                self._cancelling.add(j.id)
                self._cancel_pool.submit(self._cancel_placed, j)
        return [j for j in waiting if j.id not in done]

    def _cancel_placed(self, job: Job) -> None:
        stopping_now = False
        try:
            assert job.allocation is not None
            now = self.clock.now()
            st = self.executor_for_pool(job.allocation.pool_id).cancel(job.request_id, self.cancel_grace_s)
            if isinstance(st, ExecError) and st.code is not ExecErrorCode.NOT_FOUND:
                log.warning("cancel of %s failed, will retry: %s", job.id, st.message)
                return
            if isinstance(st, ExecStatus) and job.state is not JobState.SCHEDULED and (stopping(st) or not st.done):
                # Asked to stop; its processes run on through their grace period (and are billed):
                # the observation that sees them gone records the end, at the executor's time.
                stopping_now = True
                return
            if isinstance(st, ExecStatus) and st.phase in (ExecPhase.SUCCEEDED, ExecPhase.FAILED, ExecPhase.CANCELLED):
                tr = self._transition_for(job, st, now)  # the executor's outcome, with its run times
            else:
                exit_code = st.exit_code if isinstance(st, ExecStatus) else None
                why = cancel_reason(job)
                tr = Transition(job, job.apply(Event.CANCEL, now, exit_code=exit_code, reason=why), Event.CANCEL, why)
            if tr:
                self._record([tr])
        except Exception:
            log.exception("cancel of %s failed", job.id)
        finally:
            if not stopping_now:  # a stopping job stays claimed until it leaves the active set
                self._cancelling.discard(job.id)
            self.wake()

    def _admit(self, waiting: list[Job]) -> tuple[list[Transition], list[Job]]:
        """Admission transitions (recorded together with this round's placements, so a job
        admitted and placed at once costs one write) and the jobs as they will then be."""
        now = self.clock.now()
        trs: list[Transition] = []
        after: list[Job] = []
        for j in waiting:
            if j.state is not JobState.PENDING:
                after.append(j)
                continue
            problem = self._admission_problem(j)
            held = None if problem or self.admission is None else self.admission(j)
            if problem:
                trs.append(Transition(j, j.apply(Event.REJECT, now, reason=problem), Event.REJECT, problem))
            elif held is not None and held.code is Code.UNSCHEDULABLE:
                self.store.set_reasons({j.id: "held: " + "; ".join(held.reasons)})  # retried next round
            elif held is not None and not held.ok:
                why = "admission failed: " + "; ".join(held.reasons)
                trs.append(Transition(j, j.apply(Event.REJECT, now, reason=why), Event.REJECT, why))
            else:
                tr = Transition(j, j.apply(Event.ADMIT, now, reason=""), Event.ADMIT)
                trs.append(tr)
                after.append(tr.after)
        return trs, after

    def _admission_problem(self, j: Job) -> str:
        s = j.spec
        if s.pool and s.pool not in {p.id for p in self.world.pools}:
            return f"unknown pool {s.pool!r}"
        for acc in s.resources.accelerator_types:
            if acc not in self.catalogue:
                return f"unknown accelerator {acc!r}"
        return ""

    def _decide(self, queued: list[Job], active: list[Job], admits: list[Transition]) -> list[Job]:
        if not queued:
            self._record(admits)
            return []
        now = self.clock.now()
        plan = self._plan(now, queued, active)
        by_id = {j.id: j for j in queued}
        trs = [Transition(by_id[s.job_id], by_id[s.job_id].apply(Event.PLACE, now, allocation=s.allocation,
                                                                  reason=s.explanation), Event.PLACE, s.explanation)
               for s in plan.starts]
        for inf in plan.infeasible:
            why = "infeasible: " + "; ".join(inf.status.reasons)[:2000]
            trs.append(Transition(by_id[inf.job_id], by_id[inf.job_id].apply(Event.REJECT, now, reason=why),
                                  Event.REJECT, why))
        placed = self._record(admits + trs)
        revisit = now + timedelta(seconds=self.revisit_s)
        self.store.rest({d.job_id: min(d.until, revisit) for d in plan.defers if d.until is not None and d.until > now})
        reasons = {d.job_id: "waiting: " + "; ".join(d.status.reasons) for d in plan.defers}
        self.store.set_reasons({k: v for k, v in reasons.items() if by_id[k].reason != v})  # write changes only
        return [j for j in placed if j.state is JobState.SCHEDULED]

    def _schedule(self, now: datetime, pending: list[Job], active: list[Job], pools: dict[str, PoolState]) -> Plan:
        world = self.world
        signals: Mapping[str, object] = self.signals(now) if self.signals else {}
        if self.federation is not None:
            world, pools, signals = self.federation.extend_snapshot(now, world, pools, signals, active)
        snapshot = Snapshot(now=now, world=world, catalogue=self.catalogue, pools=pools, pending=tuple(pending),
                            running=tuple(active), signals=signals)
        plan = self.scheduler.schedule(snapshot)
        self.last_plan, self.last_snapshot = plan, snapshot
        for d in (*plan.starts, *plan.defers, *plan.infeasible):
            self._decided[d.job_id] = snapshot  # explanations are computed on demand from it
            self._decided.move_to_end(d.job_id)
        while len(self._decided) > 20_000:
            self._decided.popitem(last=False)
        return plan

    def _plan(self, now: datetime, queued: list[Job], active: list[Job]) -> Plan:
        """Schedule; with market reservations in force, in two passes: the holders first (their
        reserved devices are theirs), then everyone else on what the reservations leave."""
        held = list(self.reservations(now)) if self.reservations else []
        if not held:
            return self._schedule(now, queued, active, pool_states(self.world, active))
        left: dict[tuple[str, str], int] = defaultdict(int)
        for tenant, pool, devices in held:
            left[(tenant, pool)] += devices
        for j in active:  # devices a holder already uses on the pool count toward its reservation
            if j.allocation and (j.tenant_id, j.allocation.pool_id) in left:
                left[(j.tenant_id, j.allocation.pool_id)] -= j.allocation.devices
        holders = {t for (t, _p), n in left.items() if n > 0}
        first = [j for j in queued if j.tenant_id in holders]
        rest = [j for j in queued if j.tenant_id not in holders]
        plan1 = self._schedule(now, first, active, pool_states(self.world, active)) if first else Plan()
        by_id = {j.id: j for j in first}
        placed = [replace(by_id[s.job_id], allocation=s.allocation) for s in plan1.starts]
        for s in plan1.starts:
            key = (by_id[s.job_id].tenant_id, s.allocation.pool_id)
            if key in left:
                left[key] -= s.allocation.devices
        pools = pool_states(self.world, [*active, *placed])
        for (_tenant, pool), n in left.items():
            if n > 0 and pool in pools:
                pools[pool] = hold_devices(pools[pool], n)
        plan2 = self._schedule(now, rest, [*active, *placed], pools) if rest else Plan()
        return Plan(starts=plan1.starts + plan2.starts, defers=plan1.defers + plan2.defers,
                    preempts=plan1.preempts + plan2.preempts, infeasible=plan1.infeasible + plan2.infeasible)

    def snapshot_for(self, job_id: str) -> Snapshot | None:
        """The frozen snapshot of the round that last decided ``job_id`` (for ``explain``)."""
        return self._decided.get(job_id)

    def launch_for(self, j: Job) -> Launch:
        a = j.allocation
        assert a is not None
        return Launch(request_id=j.request_id, job_id=j.id, tenant_id=j.tenant_id, pool_id=a.pool_id,
                      command=j.spec.command, replicas=tuple(ReplicaLaunch(r.node, r.devices) for r in a.replicas),
                      cpus_per_replica=a.cpus_per_replica, memory_gb_per_replica=a.memory_gb_per_replica,
                      accelerators_per_replica=j.spec.resources.accelerators, env=dict(j.spec.env))

    def _dispatch(self, scheduled: list[Job]) -> list[Job]:
        """Launch scheduled jobs; returns every job as it now is (recorded or unchanged)."""
        now = self.clock.now()
        mono = time.monotonic()
        trs: list[Transition] = []
        out: dict[str, Job] = {}
        for j in scheduled:
            out[j.id] = j
            if j.cancel_requested or self._retry_at.get(j.id, 0.0) > mono:
                continue
            assert j.allocation is not None
            st = self.executor_for_pool(j.allocation.pool_id).submit(self.launch_for(j))
            if isinstance(st, ExecError):
                if st.code is ExecErrorCode.REJECTED:
                    why = f"executor rejected the launch: {st.message}"
                    trs.append(Transition(j, j.apply(Event.FAIL, now, reason=why), Event.FAIL, why))
                else:  # unreachable: keep the job placed, retry after a pause
                    self._retry_at[j.id] = mono + self.dispatch_retry_s
                    self.store.set_reasons({j.id: f"dispatch retrying: {st.message}"})
                continue
            self._retry_at.pop(j.id, None)
            d = j.apply(Event.DISPATCH, now, reason="")
            trs.append(Transition(j, d, Event.DISPATCH))
            follow = self._transition_for(d, st, now)
            if follow:
                trs.append(follow)
        for a in self._record(trs):
            out[a.id] = a
        return list(out.values())

    def adopt_orphans(self) -> None:
        """After a restart: stop engine work that no live job attempt owns (never both run)."""
        live = {j.request_id for j in self.store.in_states(ACTIVE)}
        for name, ex in self.executors.items():
            listed = ex.list_active()
            if isinstance(listed, ExecError):
                log.warning("executor %s unreachable at start: %s", name, listed.message)
                continue
            for st in listed:
                if st.request_id not in live:
                    log.warning("cancelling orphan %s on %s (no live job attempt owns it)", st.request_id, name)
                    ex.cancel(st.request_id, self.cancel_grace_s)
