"""Why a job goes where it goes: the chosen option and the best alternatives, as values."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from yungu.domain.errors import NotFound
from yungu.engines.scheduler import estimate as E
from yungu.engines.scheduler.capacity import ref_duration_s
from yungu.engines.scheduler.ranking import Scored
from yungu.engines.scheduler.round import Round
from yungu.engines.scheduler.steps import filter_pools, future_options, rank_now
from yungu.engines.scheduler.types import Snapshot

if TYPE_CHECKING:
    from yungu.engines.scheduler.green import GreenScheduler


@dataclass(frozen=True)
class Alternative:
    """One row of an explanation."""

    pool_id: str
    site_id: str
    start: datetime
    wait_s: float
    run_s: float
    cost_cny: Decimal
    carbon_kg: float
    energy_kwh: float
    green_share: float
    latency_ms: float
    room_now: bool
    score: float
    chosen: bool
    why_lost: tuple[str, ...]


@dataclass(frozen=True)
class Explanation:
    job_id: str
    at: datetime
    decision: str  # "start", "defer", "wait", "infeasible"
    summary: str
    weights: Mapping[str, float]
    alternatives: tuple[Alternative, ...]
    filtered: Mapping[str, tuple[str, ...]]  # pool -> reasons it was excluded


def explain_job(sched: GreenScheduler, snapshot: Snapshot, job_id: str) -> Explanation:
    """The explanation of ``job_id`` against the snapshot alone (as if it were first in the queue)."""
    job = next((j for j in snapshot.pending if j.id == job_id), None)
    if job is None:
        job = next((j for j in snapshot.running if j.id == job_id), None)
    if job is None:
        raise NotFound(f"job {job_id} is not in the snapshot")
    rd = Round(sched, snapshot)
    w = rd.weights(job)
    pools, rejected = filter_pools(rd, job)
    filtered = {pid: st.reasons for pid, st in rejected.items()}
    if not pools:
        return Explanation(job.id, rd.now, "infeasible", "no pool can ever run this job", w, (), filtered)
    ref_s = ref_duration_s(job)
    now_scored = rank_now(rd, job, pools, ref_s)
    rows: list[Scored] = []
    for sc in now_scored:
        free = rd.free.get(sc.option.pool_id)
        room = free is not None and free.find(job) is not None
        exact = E.option(rd, job, rd.pools[sc.option.pool_id], rd.now, ref_s, room, unit=False)
        rows.append(Scored(exact, sc.score, sc.terms))
    for f in future_options(rd, job, now_scored, ref_s):  # scored per unit; shown for the whole job
        o = f.option
        rows.append(Scored(E.option(rd, job, rd.pools[o.pool_id], o.start, ref_s, False, unit=False), f.score, f.terms))
    rows.sort(key=lambda s: (not s.option.room_now and s.option.wait_s == 0, s.score))
    best = rows[0]
    decision = "start" if best.option.wait_s == 0 and best.option.room_now else (
        "defer" if best.option.wait_s > 0 else "wait"
    )
    alts = tuple(_alt(r, r is best, best) for r in rows[:8])
    summary = (
        f"{decision} on {best.option.pool_id} at {best.option.start.isoformat()}: "
        f"est. {best.option.cost_cny:.2f} CNY, {best.option.carbon_g / 1000:.2f} kgCO2e, "
        f"green {best.option.green_share:.0%}"
    )
    return Explanation(job.id, rd.now, decision, summary, w, alts, filtered)


def _alt(r: Scored, chosen: bool, best: Scored) -> Alternative:
    why: list[str] = []
    if not chosen:
        if r.option.wait_s == 0 and not r.option.room_now:
            why.append("no room now")
        for name, t in sorted(r.terms.items(), key=lambda kv: -(kv[1] - best.terms.get(kv[0], 0.0))):
            d = t - best.terms.get(name, 0.0)
            if d > 1e-6:
                why.append(f"worse {name} (+{d:.3f} score)")
        if not why:
            why.append("equal score; lost the tie-break")
    o = r.option
    return Alternative(
        o.pool_id,
        o.site_id,
        o.start,
        o.wait_s,
        o.run_s,
        Decimal(repr(round(o.cost_cny, 2))),
        o.carbon_g / 1000.0,
        o.energy_kwh,
        o.green_share,
        o.latency_ms,
        o.room_now,
        r.score,
        chosen,
        tuple(why[:3]),
    )
