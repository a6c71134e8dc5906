"""Applying a scheduler's :class:`Plan`: one pure function for the simulator and the live loop.

``apply_plan(plan, pending, running, now)`` turns every entry of a plan into what must
happen, as values; it reads no clock, store or executor:

- **starts** -> ``queued -place-> scheduled`` with the allocation and the scheduler's note;
- **infeasible** -> ``queued -reject-> failed`` with the filters' reasons;
- **defers** -> the time the job rests until (capped by ``revisit_s``: forecasts and
  capacity change) and its "waiting: ..." reason;
- **preempts** -> ``running -preempt-> preempted`` plus a :class:`Stop`: the executor must stop
  the victim's attempt with SIGTERM and, after the victim's grace period, SIGKILL. The victim
  keeps its devices until the stop is confirmed; then :func:`stopped` requeues it as
  attempt + 1 (a new request id, the same ``YUNGU_CHECKPOINT_DIR``), and the preempting job,
  deferred by the scheduler with "preempting to make room", is placed on the freed devices
  by a later round. While a victim is stopping, the job it makes room for waits
  (:func:`preempting`) so the next round does not pick a second set of victims.

The caller records the transitions (the live loop: one compare-and-set per job; the
simulator: its in-memory tables) and carries out the stops (the live loop: the victim's
executor; the simulator: at once). Every field of :class:`Plan` has exactly one handler in
``HANDLERS``; a field without one is a ``TypeError`` on the first call (and a test).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any

from yungu.domain.job import Event, Job, JobState
from yungu.engines.scheduler.types import Defer, Infeasible, Plan, Preempt, Start

MAX_REASON = 2000


@dataclass(frozen=True)
class Transition:
    """One state change to record: applied with compare-and-set on (state, attempt)."""

    before: Job
    after: Job
    event: Event
    reason: str = ""


@dataclass(frozen=True)
class Stop:
    """Stop this attempt: SIGTERM now, SIGKILL once ``grace_s`` has passed."""

    job: Job  # the victim as recorded (state ``preempted``)
    grace_s: float
    for_job_id: str


@dataclass(frozen=True)
class Effects:
    """What a plan means, as values. ``unknown`` lists plan entries that name jobs the caller
    did not pass (a scheduler bug in the simulator; a job that moved meanwhile, live)."""

    transitions: tuple[Transition, ...] = ()
    stops: tuple[Stop, ...] = ()
    rest: Mapping[str, datetime] = field(default_factory=dict)
    reasons: Mapping[str, str] = field(default_factory=dict)
    unknown: tuple[str, ...] = ()


GraceFor = Callable[[Job], float]

_PREEMPTED_FOR = re.compile(r"^preempted for (\S+?):")


@dataclass
class _Acc:
    pending: Mapping[str, Job]
    running: Mapping[str, Job]
    now: datetime
    grace_for: GraceFor
    revisit: datetime | None
    explain: bool
    transitions: list[Transition] = field(default_factory=list)
    stops: list[Stop] = field(default_factory=list)
    rest: dict[str, datetime] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)
    stopping: set[str] = field(default_factory=set)


def _starts(acc: _Acc, starts: Sequence[Start]) -> None:
    for s in starts:
        job = acc.pending.get(s.job_id)
        if job is None or job.state is not JobState.QUEUED or s.allocation.job_id != job.id:
            acc.unknown.append(s.job_id)
            continue
        acc.transitions.append(Transition(job, job.apply(Event.PLACE, acc.now, allocation=s.allocation,
                                                         reason=s.explanation), Event.PLACE, s.explanation))


def _infeasible(acc: _Acc, entries: Sequence[Infeasible]) -> None:
    for inf in entries:
        job = acc.pending.get(inf.job_id)
        if job is None or job.state is not JobState.QUEUED:
            acc.unknown.append(inf.job_id)
            continue
        why = ("infeasible: " + "; ".join(inf.status.reasons))[:MAX_REASON]
        acc.transitions.append(Transition(job, job.apply(Event.REJECT, acc.now, reason=why), Event.REJECT, why))


def _defers(acc: _Acc, defers: Sequence[Defer]) -> None:
    for d in defers:
        job = acc.pending.get(d.job_id)
        if job is None:
            acc.unknown.append(d.job_id)
            continue
        if d.until is not None and d.until > acc.now:
            acc.rest[d.job_id] = d.until if acc.revisit is None else min(d.until, acc.revisit)
        if acc.explain:
            why = ("waiting: " + "; ".join(d.status.reasons))[:MAX_REASON]
            if job.reason != why:  # write changes only
                acc.reasons[d.job_id] = why


def _preempts(acc: _Acc, preempts: Sequence[Preempt]) -> None:
    for p in preempts:
        victim = acc.running.get(p.job_id)
        if victim is None:
            acc.unknown.append(p.job_id)
            continue
        if victim.state is JobState.PREEMPTED or victim.id in acc.stopping:
            continue  # already being stopped: one stop per attempt
        why = f"preempted for {p.for_job_id}: {p.reason}"[:MAX_REASON]
        after = victim.apply(Event.PREEMPT, acc.now, reason=why)
        acc.transitions.append(Transition(victim, after, Event.PREEMPT, why))
        acc.stops.append(Stop(after, acc.grace_for(victim), p.for_job_id))
        acc.stopping.add(victim.id)


Handler = Callable[[_Acc, Sequence[Any]], None]

# The one handler per Plan field, in the order they are applied (capacity is released by
# preemptions before starts take it, which only matters to a caller that stops at once).
HANDLERS: Mapping[str, Handler] = {
    "infeasible": _infeasible,
    "preempts": _preempts,
    "starts": _starts,
    "defers": _defers,
}


def _check_handlers() -> None:
    missing = [f.name for f in fields(Plan) if f.name not in HANDLERS]
    extra = [name for name in HANDLERS if name not in {f.name for f in fields(Plan)}]
    if missing or extra:
        raise TypeError(f"apply_plan handlers do not match Plan: missing {missing}, unknown {extra}")


def fixed_grace(seconds: float) -> GraceFor:
    if not (seconds >= 0 and math.isfinite(seconds)):
        raise ValueError(f"grace must be a finite number of seconds >= 0, got {seconds!r}")
    return lambda _job: seconds


def apply_plan(plan: Plan, pending: Mapping[str, Job], running: Mapping[str, Job], now: datetime, *,
               grace: GraceFor | float = 10.0, revisit_s: float | None = None, explain: bool = True) -> Effects:
    """Every entry of ``plan`` as transitions, stops, rests and reasons (see the module doc).

    ``pending``: the queued jobs the plan was made for; ``running``: the jobs holding capacity
    (the snapshot's ``running``). ``grace``: the victim's grace period (seconds, or a function of
    the victim). ``explain=False`` skips building reason strings (the simulator's hot path).
    """
    _check_handlers()
    acc = _Acc(pending, running, now, grace if callable(grace) else fixed_grace(grace),
               None if revisit_s is None else now + timedelta(seconds=revisit_s), explain)
    for name, handler in HANDLERS.items():
        handler(acc, getattr(plan, name))
    return Effects(tuple(acc.transitions), tuple(acc.stops), acc.rest, acc.reasons, tuple(acc.unknown))


def stopped(job: Job, now: datetime, *, finished: bool = False, exit_code: int | None = None,
            why: str = "") -> Transition:
    """What to record once the executor no longer runs a preempted attempt.

    ``finished``: the attempt completed successfully before the stop reached it (recorded as
    succeeded: running it again would run it twice). Otherwise it is requeued as attempt + 1,
    or cancelled if the user asked for that meanwhile.
    """
    if job.state is not JobState.PREEMPTED:
        raise ValueError(f"job {job.id} is {job.state.value}, not preempted")
    if finished:
        return Transition(job, job.apply(Event.SUCCEED, now, exit_code=exit_code or 0, reason=""), Event.SUCCEED)
    if job.cancel_requested:
        reason = "cancelled by request while being preempted"
        return Transition(job, job.apply(Event.CANCEL, now, exit_code=exit_code, reason=reason), Event.CANCEL, reason)
    reason = f"requeued after preemption{': ' + why if why else ''}"[:MAX_REASON]
    return Transition(job, job.apply(Event.REQUEUE, now, reason=reason), Event.REQUEUE, reason)


def preempting(victims: Iterable[Job]) -> dict[str, list[str]]:
    """Jobs waiting for preempted victims to stop: preempting job id -> its victims' ids."""
    out: dict[str, list[str]] = {}
    for v in victims:
        if v.state is JobState.PREEMPTED:
            m = _PREEMPTED_FOR.match(v.reason)
            if m:
                out.setdefault(m.group(1), []).append(v.id)
    return out


_check_handlers()
