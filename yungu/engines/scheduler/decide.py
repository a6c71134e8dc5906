"""What to do with one job once its pools are scored: the decision hooks of a round.

Each hook is a one-method :class:`DecisionStep` (like the filter and score plugins): it looks
at the job's :class:`Choice` and either decides (returns a :data:`Decision`) or passes (None)
to the next. The default order is the policy described in ``docs/scheduler.md``:

1. :class:`WaitForBetterPool` — wait briefly for a clearly better pool that is full now;
2. :class:`TimeShift` — defer to a forecast-better hour;
3. :class:`StartNow` — start on the best pool with room;
4. :class:`QuotaHold` — the tenant's quota (with borrowing) is used up: wait;
5. :class:`PreemptLowerPriority` — make room by preempting lower-priority work (least lost work);
6. :class:`Reserve` — an EASY reservation on the pool where the gang fits earliest.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from yungu.domain.job import Job
from yungu.domain.status import Code, Status
from yungu.engines.scheduler import estimate as E
from yungu.engines.scheduler.capacity import RunningInfo, devices
from yungu.engines.scheduler.policy import TenantPolicy
from yungu.engines.scheduler.ranking import Ranking, Scored
from yungu.engines.scheduler.round import Round
from yungu.engines.scheduler.steps import future_options
from yungu.engines.scheduler.types import Defer, Infeasible, Preempt, Start


@dataclass(frozen=True)
class Preempting:
    """Victims to preempt for a job, and the job's own deferral until their devices are free."""

    preempts: tuple[Preempt, ...]
    defer: Defer


Decision = Start | Defer | Infeasible | Preempting


class Choice:
    """One job's situation in the round once its pools are scored (what the hooks read)."""

    __slots__ = ("chosen", "finish_by", "job", "quota_blocked", "ranked", "ref_s", "room", "tenant", "urgent", "where")

    def __init__(self, job: Job, ref_s: float, ranked: Ranking, urgent: bool, tenant: TenantPolicy) -> None:
        self.job, self.ref_s, self.ranked, self.urgent, self.tenant = job, ref_s, ranked, urgent, tenant
        self.room: list[int] = []  # positions in ``ranked`` that pass the quick room test
        self.chosen: Scored | None = None  # the best pool with room now
        self.where: list[tuple[int, tuple[int, ...]]] | None = None  # its nodes and devices
        self.quota_blocked = False  # some pool had room but the tenant's quota forbade it
        # Epoch seconds by which any choice must finish (the finish budget), None: no bound.
        self.finish_by: float | None = None


class DecisionStep(Protocol):
    def decide(self, rd: Round, c: Choice) -> Decision | None: ...


def find_room(rd: Round, c: Choice) -> Choice:
    """The best-ranked pool where the gang fits now (quota and reservations respected)."""
    job, tp = c.job, c.tenant
    c.room = rd.cap.room_positions(job, c.ranked) if job.spec.resources.accelerators <= rd.cap.max_node_free else []
    now_s = rd.now.timestamp()
    if c.room and rd.policy.finish_budget_frac != math.inf:
        c.finish_by = finish_limit(rd, c, now_s)
    for pos in c.room:
        sc = c.ranked[pos]
        free = rd.free.get(sc.option.pool_id)
        if free is None:
            continue
        if c.finish_by is not None and now_s + c.ref_s / rd.tput[sc.option.pool_id] > c.finish_by:
            continue  # slower than the finish budget allows
        pool = rd.pools[sc.option.pool_id]
        used = rd.usage.get(job.tenant_id, 0.0) + rd.units(job, pool)
        if tp.quota_units is not None and used > tp.quota_units + tp.borrow_units:
            c.quota_blocked = True
            continue
        res = rd.holds.reservations.get(pool.id)
        if res is not None and not c.urgent:
            ends = rd.now.timestamp() + c.ref_s / rd.tput[pool.id]
            if ends > res[0] and devices(job) > res[1]:
                continue
        w = free.find(job)
        if w is not None:
            c.chosen, c.where = sc, w
            break
    return c


def finish_limit(rd: Round, c: Choice, now_s: float) -> float:
    """The finish budget: ``1 + finish_budget_frac`` times the completion time (from
    submission) the job would have on the fastest pool that seems to have room now."""
    tput, order = rd.table.tput_idx, c.ranked.order
    fastest = max(tput[order[p]] for p in c.room)
    sub = c.job.submitted_at.timestamp()
    return sub + (1 + rd.policy.finish_budget_frac) * (now_s - sub + c.ref_s / fastest) + 1e-6


def frees_in_time(rd: Round, c: Choice, *, by_deadline: bool = True) -> tuple[datetime, int, str] | None:
    """The pool among the job's best ``reserve_pools`` (not held by another job) where its gang
    finishes first by the running jobs' estimates: ``(shadow time, devices left, pool)``.
    ``by_deadline``: only if that finish still meets the deadline with the safety margin."""
    job = c.job
    best: tuple[float, datetime, int, str] | None = None
    for sc in c.ranked.top(rd.policy.reserve_pools):
        pid = sc.option.pool_id
        if pid in rd.holds.reservations or pid not in rd.free:
            continue
        got = rd.earliest(job, pid)
        if got is None:
            continue
        run = c.ref_s / rd.tput[pid]
        end = got[0].timestamp() + run
        if best is None or end < best[0]:
            best = (end, got[0], got[1], pid)
    if best is None:
        return None
    if by_deadline:
        deadline = job.spec.deadline
        run = c.ref_s / rd.tput[best[3]]
        if deadline is None or best[0] + rd.policy.margin(run) > deadline.timestamp():
            return None
    return best[1], best[2], best[3]


def _wait(rd: Round, job: Job, reason: str, until: datetime | None = None) -> Defer:
    return Defer(job.id, until, Status(Code.WAIT, (reason,), rd.s.name))


def wait_frac(rd: Round, job: Job) -> float:
    """How much of its run a job may wait for a clearly better full pool."""
    pol = rd.policy
    return pol.flexible_wait_frac if rd.flexible(rd.weights(job)) else pol.max_wait_frac


def wait_key(rd: Round, c: Choice, frac: float) -> tuple[object, ...]:
    """What a failed wait for a better pool depends on besides the run length (see Memos.no_wait)."""
    return (id(c.ranked), rd.facts(c.job).shape_id, frac)


class WaitForBetterPool:
    """Wait briefly for a clearly better pool that is full now (it frees within a fraction of
    the run time, by the running jobs' estimates). The pool is then reserved for this job
    (EASY-style), so the wait is bounded and later jobs cannot take the hole."""

    def decide(self, rd: Round, c: Choice) -> Decision | None:
        pol = rd.policy
        if c.urgent or not (pol.max_wait_frac > 0 or pol.flexible_wait_frac > 0):
            return None
        job, scored, chosen, ref_s = c.job, c.ranked, c.chosen, c.ref_s
        w = rd.weights(job)
        frac = wait_frac(rd, job)
        memo: tuple[object, ...] | None = None
        if chosen is None:
            memo = wait_key(rd, c, frac)
            if ref_s <= rd.memo.no_wait.get(memo, -1.0):
                return None
        exact = True  # the failure below holds for every shorter run of this shape this round
        ref = scored.ref
        holds = rd.holds
        for sc in scored.top(pol.wait_pools):
            if chosen is not None and sc.score >= chosen.score * (1 - pol.shift_gain):
                break
            pid = sc.option.pool_id
            claimed = holds.claimed.get(pid, 0)
            if pid not in rd.free or (chosen is not None and pid == chosen.option.pool_id):
                continue
            if pid in holds.reservations and not claimed:
                continue  # held for a blocked or preempting job, not for waiters
            # Several jobs may wait for the same pool: each later one needs the devices the
            # earlier ones were promised on top of its own.
            got = rd.earliest(job, pid, claimed)
            if got is None:
                continue
            if got[0] <= rd.now:
                exact = False  # room now, blocked otherwise: it may fill up and be worth a wait later
                continue
            run = ref_s / rd.tput[pid]
            wait_s = (got[0] - rd.now).total_seconds()
            if wait_s > frac * run:
                continue
            if c.finish_by is not None and got[0].timestamp() + run > c.finish_by:
                exact = False  # this job's finish budget, not the shape, ruled the pool out
                continue
            if chosen is not None and E.wait_floor(rd, job, sc, wait_s, run, w, ref) >= chosen.score * (1 - pol.shift_gain):
                continue  # even its start-independent terms lose to starting now: no need to estimate
            opt = E.option(rd, job, rd.pools[pid], got[0], ref_s, False)
            if opt.slack_s is not None and opt.slack_s < pol.margin(run):
                exact = False  # this job's deadline, not the shape, ruled the pool out
                continue
            cand = E.score(rd, job, opt, ref, w)
            if chosen is None or cand.score < chosen.score * (1 - pol.shift_gain) - 1e-9:
                res = holds.reservations.get(pid)
                if res is None:
                    holds.reservations[pid] = [got[0].timestamp(), float(got[1])]
                else:  # the first waiter's shadow time stands; fewer devices are left beside it
                    res[1] -= devices(job)
                holds.claimed[pid] = claimed + devices(job)
                return _wait(
                    rd, job,
                    f"waiting {(got[0] - rd.now).total_seconds() / 60:.0f} min for {pid} (score {cand.score:.3f}"
                    + (f" vs {chosen.score:.3f} now)" if chosen else ")"),
                    got[0],
                )
            exact = False  # scored no better than waiting is not worth it: depends on the job
        if memo is not None and exact:
            rd.memo.no_wait[memo] = max(ref_s, rd.memo.no_wait.get(memo, -1.0))
        return None


class TimeShift:
    """Defer to the forecast-best later start when it beats starting now by ``shift_gain``."""

    def decide(self, rd: Round, c: Choice) -> Decision | None:
        if c.urgent or not c.room:
            return None
        gain = rd.policy.shift_gain
        base = c.chosen.score if c.chosen is not None else None
        beat = None if base is None else base * (1 - gain) - 1e-9
        future = future_options(rd, c.job, c.ranked, c.ref_s, c.room, beat, c.finish_by)
        if not future:
            return None
        best = future[0]
        if base is not None and best.score >= base * (1 - gain) - 1e-9:
            return None
        o = best.option
        return _wait(
            rd, c.job,
            f"forecast better at {o.site_id} from {o.start.isoformat()} (score {best.score:.3f}"
            + (f" vs {base:.3f} now)" if base is not None else ", no room now)"),
            o.start,
        )


class StartNow:
    """Start on the best pool with room: take the devices, count the tenant's usage."""

    def decide(self, rd: Round, c: Choice) -> Decision | None:
        if c.chosen is None or c.where is None:
            return None
        job = c.job
        pool = rd.pools[c.chosen.option.pool_id]
        res = rd.holds.reservations.get(pool.id)
        if res is not None and rd.now.timestamp() + c.ref_s / rd.tput[pool.id] > res[0]:
            res[1] -= devices(job)
        alloc = rd.free[pool.id].take(job, c.where)
        rd.cap.took(pool.id)
        rd.usage[job.tenant_id] = rd.usage.get(job.tenant_id, 0.0) + rd.units(job, pool)
        return Start(job.id, alloc, E.start_note(rd, job, pool, c.ref_s, c.chosen, len(c.ranked)))


class QuotaHold:
    """Room exists but only beyond the tenant's quota (with borrowing): wait."""

    def decide(self, rd: Round, c: Choice) -> Decision | None:
        return _wait(rd, c.job, "tenant quota (with borrowing) reached") if c.quota_blocked else None


class PreemptLowerPriority:
    """Nothing has room: a priority job (or an urgent deadline job against work without a
    deadline) preempts the cheapest set of victims (least lost work) on one of its best pools."""

    def decide(self, rd: Round, c: Choice) -> Decision | None:
        job = c.job
        if not rd.policy.preemption or not (c.urgent or job.spec.priority > 0):
            return None
        # Urgency alone preempts only when no pool frees in time for the deadline: otherwise a
        # reservation (the next hook) meets it without losing anyone's work.
        urgent = c.urgent and (not rd.policy.preempt_only_if_late or frees_in_time(rd, c) is None)
        if not urgent and job.spec.priority <= 0:
            return None
        victims = self.victims(rd, job, c.ranked, urgent)
        if not victims:
            return None
        # Hold the pool for this job for the rest of the round: otherwise later jobs take the
        # free devices the preemption counted on, and the next round preempts again (a livelock).
        rd.holds.reservations[victims[0].pool_id] = [rd.now.timestamp(), 0.0]
        for v in victims:
            rd.holds.preempted.add(v.job.id)
        why = "deadline" if urgent else "priority"
        return Preempting(
            tuple(Preempt(v.job.id, job.id, f"{why} job {job.id} needs {v.pool_id}") for v in victims),
            _wait(rd, job, "preempting to make room", rd.now),
        )

    def victims(self, rd: Round, job: Job, scored: Ranking, urgent: bool) -> list[RunningInfo]:
        """The cheapest set of victims (least lost work) on one pool that lets the gang fit."""
        best: tuple[float, list[RunningInfo]] | None = None
        for sc in scored.top(rd.policy.preempt_pools):
            pid = sc.option.pool_id
            free = rd.free.get(pid)
            if free is None or not free.available:
                continue
            cands = []
            for r in rd.running.get(pid, []):
                v = r.job
                if v.id in rd.holds.preempted:
                    continue
                lower = v.spec.priority < job.spec.priority
                flexible = urgent and v.spec.deadline is None and v.spec.priority <= job.spec.priority
                if lower or flexible:
                    lost = (rd.now - (v.started_at or rd.now)).total_seconds() * r.devices
                    cands.append((lost, r))
            cands.sort(key=lambda c: (c[0], c[1].job.id))
            trial = free.copy()
            picked: list[RunningInfo] = []
            lost_total = 0.0
            for lost, r in cands:
                if trial.find(job) is not None:
                    break
                assert r.job.allocation is not None
                trial.release(r.job.allocation)
                picked.append(r)
                lost_total += lost
            if picked and trial.find(job) is not None and (best is None or lost_total < best[0]):
                best = (lost_total, picked)
        return best[1] if best else []


class Reserve:
    """EASY backfill: reserve the pool where the gang fits earliest (among the best
    ``reserve_pools``); later jobs may use it only if they end before or fit beside."""

    def decide(self, rd: Round, c: Choice) -> Decision | None:
        if not rd.policy.backfill or id(c.ranked) in rd.memo.reserve_full:
            return None
        if c.job.spec.deadline is not None and rd.policy.preempt_only_if_late:  # where it finishes first
            first = frees_in_time(rd, c, by_deadline=False)
            if first is None:
                return None
            rd.holds.reservations[first[2]] = [first[0].timestamp(), float(first[1])]
            return _wait(rd, c.job, f"reserved from {first[0].isoformat()}", first[0])
        best: tuple[datetime, int, str] | None = None
        open_pools = 0
        for sc in c.ranked.top(rd.policy.reserve_pools):
            pid = sc.option.pool_id
            if pid in rd.holds.reservations or pid not in rd.free:
                continue
            open_pools += 1
            got = rd.earliest(c.job, pid)
            if got is not None and (best is None or got[0] < best[0]):
                best = (got[0], got[1], pid)
        if best is None:
            if not open_pools:  # every pool it would look at is held: so for every later job of the ranking
                rd.memo.reserve_full.add(id(c.ranked))
            return None
        rd.holds.reservations[best[2]] = [best[0].timestamp(), float(best[1])]
        return _wait(rd, c.job, f"reserved from {best[0].isoformat()}", best[0])


DEFAULT_STEPS: Sequence[DecisionStep] = (
    WaitForBetterPool(), TimeShift(), StartNow(), QuotaHold(), PreemptLowerPriority(), Reserve(),
)
