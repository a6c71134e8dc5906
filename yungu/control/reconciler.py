"""The job control loop: observe, decide, act, record.

One round (``run_once``):

1. **observe** every dispatched, running or preempted job through its executor (one batch
   call per reachable executor) and record what the world says: started, succeeded,
   failed, cancelled, lost, or (for a preempted one) stopped, which requeues it;
2. **re-place** jobs this loop placed on a site whose executor has become unreachable before
   it tried to launch them (a launch that may have been sent is never placed a second time);
3. **cancel** what users asked to cancel (queued jobs at once; placed ones via the executor);
4. **admit** pending jobs (validate against the world; the admission hook, e.g. budgets);
5. **decide**: build a frozen snapshot (free capacity, reachability and capabilities per
   pool) and ask the scheduler for a plan; ``apply_plan`` turns every part of it into
   transitions (placements, rejections, preemptions), stops, rests and reasons, recorded
   *before* acting on them;
6. **act**: stop preempted attempts (SIGTERM, grace, SIGKILL: the executor's cancel) and
   dispatch scheduled jobs with the attempt's request id. A crash anywhere here is
   harmless: on restart a scheduled job is dispatched again with the same request id (the
   executor returns the first launch), a preempted one is stopped again (the grace period
   is not extended).

The loop runs only in the process that holds the control lease (``yungu.control.leader``);
its store is then a fenced view, so every write carries the lease's token and a paused old
leader's writes are refused (``Fenced``). Time comes from the injected ``Clock`` only.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime
from typing import Any

from yungu.control.health import ExecutorHealth
from yungu.domain.catalogue import Catalogue
from yungu.domain.clock import Clock
from yungu.domain.job import PLATFORM_STOP, Event, Job, JobState
from yungu.domain.status import Code, Status
from yungu.domain.world import World
from yungu.engines.apply import apply_plan, preempting, stopped
from yungu.engines.federation.offers import executor_name, split_remote
from yungu.engines.scheduler.pool_state import hold_devices, pool_states
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
from yungu.ports.store import Fenced, JobStore, Transition

log = logging.getLogger("yungu.control")

# Jobs that hold capacity: a preempted one keeps its devices until its stop is confirmed.
ACTIVE = (JobState.SCHEDULED, JobState.DISPATCHED, JobState.RUNNING, JobState.PREEMPTED)
WAITING = (JobState.PENDING, JobState.QUEUED)
GRACE_LABEL = "yungu.grace_s"  # a job may ask for a longer grace period when preempted (capped)

Signals = Callable[[datetime], Mapping[str, object]]
Admission = Callable[[Job], Status]
Reservations = Callable[[datetime], Sequence[tuple[str, str, int]]]
OnTransition = Callable[[list[Job]], None]


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
    def __init__(self, store: JobStore, scheduler: Scheduler, executors: Mapping[str, Executor], world: World,
                 catalogue: Catalogue, clock: Clock, *,
                 signals: Signals | None = None,
                 on_transition: OnTransition | None = None,
                 admission: Admission | None = None,
                 reservations: Reservations | None = None,
                 cancel_grace_s: float = 5.0,
                 preempt_grace_s: float = 10.0,
                 max_preempt_grace_s: float = 300.0,
                 checkpoint_root: str = "",
                 may_act: Callable[[], bool] | None = None,
                 on_fenced: Callable[[Fenced], None] | None = None,
                 background: bool = True) -> None:
        self.store = store
        self.scheduler = scheduler
        self.executors = executors  # executor name -> Executor
        self.world = world
        self.catalogue = catalogue
        self.clock = clock
        self.signals = signals
        self.on_transition = on_transition
        self.admission = admission  # e.g. the budget check; UNSCHEDULABLE holds the job pending
        self.reservations = reservations  # (tenant, pool, devices) in force now: market trades
        self.cancel_grace_s = cancel_grace_s
        self.preempt_grace_s = preempt_grace_s
        self.max_preempt_grace_s = max_preempt_grace_s
        self.checkpoint_root = checkpoint_root.rstrip("/")  # "" : no checkpoint directory
        # Actions on executors happen only while this returns True (the leader sets it to
        # "my lease is still valid by my own clock"): a paused leader that wakes up does not
        # launch or stop anything before it has noticed it lost the lease.
        self.may_act: Callable[[], bool] = may_act or (lambda: True)
        self.on_fenced = on_fenced
        self.health = ExecutorHealth(executors, clock, on_up=self._executor_back)
        self._site_executor = {s.id: s.executor for s in world.sites}
        self._pool_executor = {p.id: self._site_executor[p.site_id] for p in world.pools}
        self.federation: RemoteCapacity | None = None  # issue 12: peers' offers as pools
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._cancelling: set[str] = set()
        self._stopping: set[str] = set()  # preempted attempts whose stop was asked (this process)
        # Request ids this leadership placed and has not yet tried to launch: the only ones that
        # certainly reached no executor, so the only ones that may be placed again elsewhere.
        self._unsent: set[str] = set()
        self._sweep: set[str] = set()  # executors back up: sweep for orphans next round
        self._dirty = True
        self._freed = False  # capacity was freed since the last decision
        self._last_decide = float("-inf")
        self.decide_interval_s = 1.0
        # Jobs the scheduler deferred to a time rest (store: ``not_before``) until then, or at
        # most ``revisit_s`` since forecasts and capacity change, so thousands of jobs waiting
        # for greener hours do not make every round expensive.
        self.revisit_s = 300.0
        # Active jobs are cached between rounds (this loop makes their transitions) and
        # reloaded from the store at least every ``active_refresh_s`` and after any wake.
        self._active: dict[str, Job] | None = None
        self._active_at = float("-inf")
        self.active_refresh_s = 1.0
        self._retry_at: dict[str, float] = {}  # request id -> dispatch back-off (engine errors)
        self.dispatch_retry_s = 5.0
        self._background = background
        self._pool: ThreadPoolExecutor | None = (
            ThreadPoolExecutor(max_workers=4, thread_name_prefix="yungu-act") if background else None)
        self._probing = threading.Lock()
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
        """Start the loop (again): what this process remembered from an earlier leadership
        is dropped, since another process may have led in between."""
        self._stop.clear()
        self._active, self._dirty = None, True
        self._stopping.clear()
        self._unsent.clear()
        self._cancelling.clear()
        self._retry_at.clear()
        self._sweep.clear()
        self.health.reset()
        if self._background:
            self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="yungu-act")
        self._thread = threading.Thread(target=self._run, name="yungu-reconciler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None  # a round run by hand now acts inline

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stop.is_set()

    def _run(self) -> None:
        try:
            self.adopt_orphans()
        except Fenced as exc:
            self._fenced(exc)
            return
        except Exception:
            log.exception("orphan sweep at start failed")
        while not self._stop.is_set():
            busy = False
            try:
                busy = self.run_once()
            except Fenced as exc:
                self._fenced(exc)
                return
            except Exception:  # a bug: log it and keep the platform serving
                log.exception("reconcile round failed")
            self._wake.wait(timeout=0.01 if busy else 0.5)
            self._wake.clear()

    def _fenced(self, exc: Fenced) -> None:
        log.warning("control loop stops: %s", exc.message)
        self._stop.set()
        if self.on_fenced is not None:
            self.on_fenced(exc)

    def _submit(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn`` off the loop thread (inline when built with ``background=False``)."""
        if self._pool is None:
            fn(*args)
        else:
            self._pool.submit(fn, *args)

    # ------------------------------------------------------------ the round
    def run_once(self) -> bool:
        """One reconcile round; returns True while there is work in flight.

        Scheduling runs only when something changed — a submission or cancel (``wake``),
        capacity freed by a finished job — or every ``decide_interval_s`` for deferred and
        held jobs. Deferred jobs are not "work in flight": a platform with thousands of jobs
        waiting for greener hours does not spin.
        """
        self.rounds += 1
        mono = self.clock.monotonic()
        self._probe()
        if self._active is None or self._dirty or mono - self._active_at >= self.active_refresh_s:
            active = self.store.in_states(ACTIVE)  # the store is the truth; the cache saves reloads
            self._active_at = mono
        else:
            active = list(self._active.values())
        observed = self._observe([j for j in active if j.state is not JobState.SCHEDULED])
        if any(j.state not in ACTIVE for j in observed):
            self._dirty = self._freed = True  # capacity was freed
        active = observed + [j for j in active if j.state is JobState.SCHEDULED]
        active = self._replace_unreachable(active)
        placed: list[Job] = []
        if self._dirty or mono - self._last_decide >= self.decide_interval_s:
            self._dirty = False
            self._last_decide = mono
            # Freed capacity: jobs resting until a reservation's estimated start (or a greener
            # hour) are looked at again, as the simulator does, since the room may be theirs now.
            waiting = self.store.waiting(self.clock.now(), resting=self._freed)
            self._freed = False
            waiting = self._cancel(waiting, active)
            admits, waiting = self._admit(waiting)
            active = [j for j in active if j.state in ACTIVE]
            placed, preempted = self._decide([j for j in waiting if j.state is JobState.QUEUED], active, admits)
            active += preempted
        else:
            self._cancel([], active)
            active = [j for j in active if j.state in ACTIVE]
        self._stop_preempted([j for j in active if j.state is JobState.PREEMPTED])
        self._sweep_orphans()
        after = {j.id: j for j in active}
        for j in self._dispatch([j for j in active if j.state is JobState.SCHEDULED] + placed):
            after[j.id] = j
        self._active = {k: j for k, j in after.items() if j.state in ACTIVE}
        self._cancelling.intersection_update(self._active)  # stops that ended (see ``stopping``)
        return bool(active or placed)

    def _record(self, trs: Sequence[Transition]) -> list[Job]:
        applied = self.store.record(trs)
        if applied and self.on_transition:
            self.on_transition(applied)
        return applied

    # ------------------------------------------------------------ observe
    def _observe(self, jobs: list[Job]) -> list[Job]:
        by_exec: dict[str, list[Job]] = defaultdict(list)
        for j in jobs:
            if j.allocation:
                by_exec[self.executor_name(j.allocation.pool_id)].append(j)
        now = self.clock.now()
        trs: list[Transition] = []
        result: dict[str, Job] = {j.id: j for j in jobs}
        for name, group in by_exec.items():
            if not self.health.reachable(name):
                continue  # probes find out when it is back; its jobs stay where they are
            statuses = self.executors[name].observe([j.request_id for j in group])
            for j in group:
                st = statuses.get(j.request_id)
                self.health.note(name, st)
                tr = self._transition_for(j, st, now)
                if tr:
                    trs.append(tr)
        for a in self._record(trs):
            result[a.id] = a
            if a.state is not JobState.PREEMPTED:
                self._stopping.discard(a.id)
        return list(result.values())

    def _transition_for(self, j: Job, st: ExecStatus | ExecError | None, now: datetime) -> Transition | None:
        if j.state is JobState.PREEMPTED:
            return self._stopped_for(j, st, now)
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

    def _stopped_for(self, j: Job, st: ExecStatus | ExecError | None, now: datetime) -> Transition | None:
        """A preempted attempt: once the executor no longer runs it, requeue it (attempt + 1)."""
        if isinstance(st, ExecError):
            if st.code is ExecErrorCode.NOT_FOUND:  # never launched (it was only scheduled) or forgotten
                return stopped(j, now, why="the executor has no such launch")
            return None
        if st is None or not st.done:
            return None  # still stopping (SIGTERM sent; SIGKILL follows after the grace period)
        if st.phase is ExecPhase.SUCCEEDED:
            return stopped(j, now, finished=True, exit_code=st.exit_code)
        return stopped(j, now, exit_code=st.exit_code, why=st.reason or st.phase.value)

    # ------------------------------------------------------------ unreachable sites
    def _replace_unreachable(self, active: list[Job]) -> list[Job]:
        """Jobs this loop placed on a site whose executor has become unreachable, and that it
        has not tried to launch, are placed again under their own policy (a new attempt).

        Only those: a job whose launch was attempted (the answer "unreachable" does not say
        whether it got through) or that an earlier leader placed (it may have been launching
        when it died or paused) stays placed and is launched again with the *same* request id
        when the site answers, which the executor makes harmless. So a job never runs twice."""
        now = self.clock.now()
        scheduled = {j.request_id for j in active if j.state is JobState.SCHEDULED}
        self._unsent &= scheduled
        trs = []
        for j in active:
            if (j.state is not JobState.SCHEDULED or j.allocation is None or j.cancel_requested
                    or j.request_id not in self._unsent):
                continue
            name = self.executor_name(j.allocation.pool_id)
            if self.health.reachable(name):
                continue
            self._retry_at.pop(j.request_id, None)
            why = f"placed again: site of {j.allocation.pool_id} unreachable ({self.health.reason(name)})"[:2000]
            trs.append(Transition(j, j.apply(Event.UNPLACE, now, attempt=j.attempt + 1, reason=why),
                                  Event.UNPLACE, why))
        if not trs:
            return active
        for tr in trs:
            self._unsent.discard(tr.before.request_id)
        moved = {a.id: a for a in self._record(trs)}
        if moved:
            self._dirty = self._freed = True
        return [moved.get(j.id, j) for j in active if moved.get(j.id, j).state in ACTIVE]

    def _probe(self) -> None:
        """Ask down executors whether they are back, and refresh capabilities (off the loop)."""
        due = self.health.due()
        if due and self._probing.acquire(blocking=False):
            def run() -> None:
                try:
                    self.health.probe(due)
                finally:
                    self._probing.release()

            self._submit(run)

    def _executor_back(self, name: str) -> None:
        self._sweep.add(name)
        self.wake()

    def _sweep_orphans(self) -> None:
        while self._sweep:
            name = self._sweep.pop()
            if self.may_act():
                self._submit(self.adopt_orphans, [name])

    # ------------------------------------------------------------ cancel
    def _cancel(self, waiting: list[Job], active: list[Job]) -> list[Job]:
        """Waiting jobs are cancelled at once. Placed ones go through the executor, even when
        only *scheduled*: a crash may have left a launch the store never recorded."""
        now = self.clock.now()
        trs = [Transition(j, j.apply(Event.CANCEL, now, reason=cancel_reason(j)), Event.CANCEL, cancel_reason(j))
               for j in waiting if j.cancel_requested]
        done = {a.id for a in self._record(trs)}
        for j in active:
            if j.cancel_requested and j.id not in self._cancelling and self.may_act():
                self._cancelling.add(j.id)
                self._submit(self._cancel_placed, j)
        return [j for j in waiting if j.id not in done]

    def _cancel_placed(self, job: Job) -> None:
        stopping_now = False
        try:
            assert job.allocation is not None
            now = self.clock.now()
            name = self.executor_name(job.allocation.pool_id)
            st = self.executors[name].cancel(job.request_id, self.cancel_grace_s)
            self.health.note(name, st)
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
            if tr and self._record([tr]):
                self._freed = True
        except Fenced:
            log.info("cancel of %s not recorded: this process no longer leads", job.id)
        except Exception:
            log.exception("cancel of %s failed", job.id)
        finally:
            if not stopping_now:  # a stopping job stays claimed until it leaves the active set
                self._cancelling.discard(job.id)
            self.wake()

    # ------------------------------------------------------------ preemption
    def grace_for(self, job: Job) -> float:
        """The victim's grace period: the platform's, or the job's ``yungu.grace_s`` label
        (capped at ``max_preempt_grace_s``, so a job cannot make itself unpreemptible)."""
        raw = job.spec.labels.get(GRACE_LABEL)
        if raw is not None:
            try:
                asked = float(raw)
            except ValueError:
                asked = -1.0
            if asked >= 0:
                return min(asked, self.max_preempt_grace_s)
        return self.preempt_grace_s

    def _stop_preempted(self, preempted: list[Job]) -> None:
        """Ask the executor to stop every preempted attempt once (SIGTERM, then SIGKILL after
        the grace period); the next observation that finds it gone requeues it."""
        for j in preempted:
            if j.id in self._stopping or j.allocation is None or not self.may_act():
                continue
            if not self.health.reachable(self.executor_name(j.allocation.pool_id)):
                continue
            self._stopping.add(j.id)
            self._submit(self._stop_one, j)

    def _stop_one(self, job: Job) -> None:
        try:
            assert job.allocation is not None
            name = self.executor_name(job.allocation.pool_id)
            st = self.executors[name].cancel(job.request_id, self.grace_for(job))
            self.health.note(name, st)
            if isinstance(st, ExecError) and st.code is not ExecErrorCode.NOT_FOUND:
                log.warning("stop of preempted %s failed, will retry: %s", job.id, st.message)
                self._stopping.discard(job.id)
                return
            tr = self._stopped_for(job, st, self.clock.now())
            if tr is not None and self._record([tr]):
                self._stopping.discard(job.id)
                self._freed = True
                self.wake()  # its devices are free: the preempting job can be placed
        except Fenced:
            log.info("stop of %s not recorded: this process no longer leads", job.id)
        except Exception:
            log.exception("stop of preempted %s failed", job.id)
            self._stopping.discard(job.id)

    # ------------------------------------------------------------ admit
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

    # ------------------------------------------------------------ decide
    def _decide(self, queued: list[Job], active: list[Job], admits: list[Transition]) -> tuple[list[Job], list[Job]]:
        """Schedule and record the plan; returns the jobs placed and the jobs preempted."""
        # A job whose victims are still stopping waits for them: scheduling it again would
        # pick a second set of victims for the same room.
        making_room = preempting(active)
        queued = [j for j in queued if j.id not in making_room]
        if not queued:
            self._record(admits)
            return [], []
        now = self.clock.now()
        plan = self._plan(now, queued, active)
        holding = {j.id: j for j in active if j.state is not JobState.PREEMPTED}
        fx = apply_plan(plan, {j.id: j for j in queued}, holding, now, grace=self.grace_for, revisit_s=self.revisit_s)
        for jid in fx.unknown:
            log.warning("plan names job %s that is not in the round (ignored)", jid)
        recorded = self._record(admits + list(fx.transitions))
        self._unsent.update(j.request_id for j in recorded if j.state is JobState.SCHEDULED)
        self.store.rest(fx.rest)
        self.store.set_reasons(fx.reasons)
        return ([j for j in recorded if j.state is JobState.SCHEDULED],
                [j for j in recorded if j.state is JobState.PREEMPTED])

    def _pool_states(self, holding: Sequence[Job]) -> dict[str, PoolState]:
        available, unsupported = self.health.by_pool(self.world)
        return pool_states(self.world, holding, available, unsupported)

    def _schedule(self, now: datetime, pending: list[Job], active: list[Job], pools: dict[str, PoolState]) -> Plan:
        running = tuple(j for j in active if j.state is not JobState.PREEMPTED)  # stopping: not victims again
        world = self.world
        signals: Mapping[str, object] = self.signals(now) if self.signals else {}
        if self.federation is not None:  # issue 12: peers' offers as pools
            world, pools, signals = self.federation.extend_snapshot(now, world, pools, signals, active)
        snapshot = Snapshot(now=now, world=world, catalogue=self.catalogue, pools=pools, pending=tuple(pending),
                            running=running, signals=signals)
        plan = self.scheduler.schedule(snapshot)
        self.last_plan, self.last_snapshot = plan, snapshot
        decided = [*(s.job_id for s in plan.starts), *(d.job_id for d in plan.defers),
                   *(i.job_id for i in plan.infeasible)]
        for jid in decided:
            self._decided[jid] = snapshot  # explanations are computed on demand from it
            self._decided.move_to_end(jid)
        while len(self._decided) > 20_000:
            self._decided.popitem(last=False)
        return plan

    def _plan(self, now: datetime, queued: list[Job], active: list[Job]) -> Plan:
        """Schedule; with market reservations in force, in two passes: the holders first (their
        reserved devices are theirs), then everyone else on what the reservations leave."""
        held = list(self.reservations(now)) if self.reservations else []
        if not held:
            return self._schedule(now, queued, active, self._pool_states(active))
        left: dict[tuple[str, str], int] = defaultdict(int)
        for tenant, pool, devices in held:
            left[(tenant, pool)] += devices
        for j in active:  # devices a holder already uses on the pool count toward its reservation
            if j.allocation and (j.tenant_id, j.allocation.pool_id) in left:
                left[(j.tenant_id, j.allocation.pool_id)] -= j.allocation.devices
        holders = {t for (t, _p), n in left.items() if n > 0}
        first = [j for j in queued if j.tenant_id in holders]
        rest = [j for j in queued if j.tenant_id not in holders]
        plan1 = self._schedule(now, first, active, self._pool_states(active)) if first else Plan()
        by_id = {j.id: j for j in first}
        placed = [replace(by_id[s.job_id], allocation=s.allocation) for s in plan1.starts]
        for s in plan1.starts:
            key = (by_id[s.job_id].tenant_id, s.allocation.pool_id)
            if key in left:
                left[key] -= s.allocation.devices
        pools = self._pool_states([*active, *placed])
        for (_tenant, pool), n in left.items():
            if n > 0 and pool in pools:
                pools[pool] = hold_devices(pools[pool], n)
        # Devices of the first pass's preemption victims are theirs: not victims again.
        victims = {p.job_id for p in plan1.preempts}
        second = [j for j in [*active, *placed] if j.id not in victims]
        plan2 = self._schedule(now, rest, second, pools) if rest else Plan()
        return Plan(starts=plan1.starts + plan2.starts, defers=plan1.defers + plan2.defers,
                    preempts=plan1.preempts + plan2.preempts, infeasible=plan1.infeasible + plan2.infeasible)

    def snapshot_for(self, job_id: str) -> Snapshot | None:
        """The frozen snapshot of the round that last decided ``job_id`` (for ``explain``)."""
        return self._decided.get(job_id)

    # ------------------------------------------------------------ act
    def launch_for(self, j: Job) -> Launch:
        a = j.allocation
        assert a is not None
        return Launch(request_id=j.request_id, job_id=j.id, tenant_id=j.tenant_id, pool_id=a.pool_id,
                      command=j.spec.command, replicas=tuple(ReplicaLaunch(r.node, r.devices) for r in a.replicas),
                      cpus_per_replica=a.cpus_per_replica, memory_gb_per_replica=a.memory_gb_per_replica,
                      accelerators_per_replica=j.spec.resources.accelerators, env=dict(j.spec.env),
                      checkpoint_dir=f"{self.checkpoint_root}/{j.id}" if self.checkpoint_root else "")

    def _dispatch(self, scheduled: list[Job]) -> list[Job]:
        """Launch scheduled jobs; returns every job as it now is (recorded or unchanged)."""
        now = self.clock.now()
        mono = self.clock.monotonic()
        trs: list[Transition] = []
        out: dict[str, Job] = {}
        for j in scheduled:
            out[j.id] = j
            if j.cancel_requested or self._retry_at.get(j.request_id, float("-inf")) > mono or not self.may_act():
                continue
            assert j.allocation is not None
            name = self.executor_name(j.allocation.pool_id)
            if not self.health.reachable(name):
                continue  # placed again next round if it was never sent; else it waits for the site
            self._unsent.discard(j.request_id)  # from here on the launch may reach the executor
            st = self.executors[name].submit(self.launch_for(j))
            self.health.note(name, st)
            if isinstance(st, ExecError):
                if st.code is ExecErrorCode.REJECTED:
                    why = f"executor rejected the launch: {st.message}"
                    trs.append(Transition(j, j.apply(Event.FAIL, now, reason=why), Event.FAIL, why))
                else:  # unreachable (now marked down) or internal: retried with the same request id
                    self._retry_at[j.request_id] = mono + self.dispatch_retry_s
                    self.store.set_reasons({j.id: f"dispatch retrying: {st.message}"})
                continue
            self._retry_at.pop(j.request_id, None)
            d = j.apply(Event.DISPATCH, now, reason="")
            trs.append(Transition(j, d, Event.DISPATCH))
            follow = self._transition_for(d, st, now)
            if follow:
                trs.append(follow)
        for a in self._record(trs):
            out[a.id] = a
        return list(out.values())

    def adopt_orphans(self, names: Sequence[str] | None = None) -> None:
        """Stop engine work that no live job attempt owns (never both run): at the start of
        leadership, and on an executor that has come back after being unreachable.

        The engines are listed *before* the store is read: a launch made meanwhile was
        recorded as scheduled before it was made, so it is found live, never taken for an
        orphan."""
        listed: dict[str, Sequence[ExecStatus]] = {}
        for name in names if names is not None else list(self.executors):
            got = self.executors[name].list_active()
            self.health.note(name, got)
            if isinstance(got, ExecError):
                log.warning("executor %s unreachable for the orphan sweep: %s", name, got.message)
                continue  # swept when it is back (on_up)
            listed[name] = got
        if not listed:
            return
        live = {j.request_id for j in self.store.in_states(ACTIVE)}
        for name, statuses in listed.items():
            for st in statuses:
                if st.request_id not in live and self.may_act():
                    log.warning("cancelling orphan %s on %s (no live job attempt owns it)", st.request_id, name)
                    self.executors[name].cancel(st.request_id, self.cancel_grace_s)
