"""The first steps of a round, per job: order the queue, filter pools, score them, find room.

Each is a plain function of the round (:class:`~yungu.engines.scheduler.round.Round`) so the
scheduler's ``schedule()`` reads as the algorithm; the decisions that follow (start, wait,
shift, preempt, reserve) are the hooks in :mod:`yungu.engines.scheduler.decide`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from functools import partial

from yungu.domain.job import Job
from yungu.domain.status import Status
from yungu.domain.world import Pool
from yungu.engines.scheduler import estimate as E
from yungu.engines.scheduler.capacity import devices
from yungu.engines.scheduler.plugins import Option, PoolView
from yungu.engines.scheduler.ranking import (
    Ranking,
    Scored,
    bucket,
    bucket_run_s,
    option_arrays,
    rank_options,
    reference,
)
from yungu.engines.scheduler.round import Round, hourly_price


def queue_order(rd: Round, pending: Iterable[Job]) -> list[Job]:
    """Deadline-urgent jobs, then priority, then tenants within quota before borrowers, then
    weighted fair share (current usage / weight), then submission time."""

    def key(j: Job) -> tuple[object, ...]:
        tp = rd.policy.tenant(j.tenant_id)
        used = rd.usage.get(j.tenant_id, 0.0)
        over = tp.quota_units is not None and used >= tp.quota_units
        return (not rd.urgent(j), -j.spec.priority, over, used / max(tp.weight, 1e-9), j.submitted_at, j.id)

    return sorted(pending, key=key)


def filter_pools(rd: Round, job: Job) -> tuple[list[Pool], dict[str, Status]]:
    """The pools every filter plugin admits, and each rejected pool's status (memoised per
    feasibility key while the world and the pools' reachability stay the same)."""
    keyed = rd.s.keyed_filters
    key: object = rd.facts(job).filter_id if not keyed else (rd.facts(job).filter_id, *(p.key(job) for p in keyed))
    hit = rd.filters.views.get(key)
    if hit is not None:
        return hit
    ok: list[Pool] = []
    rejected: dict[str, Status] = {}
    for pool in rd.snap.world.pools:
        st = rd.snap.pools.get(pool.id)
        view = PoolView(pool, rd.sites[pool.site_id], st is not None and st.available, hourly_price(job, pool))
        for _, plugin in rd.registry.filters():
            status = plugin.filter(job, view)
            if not status.ok:
                rejected[pool.id] = status
                break
        else:
            ok.append(pool)
    rd.filters.views[key] = (ok, rejected)
    return ok, rejected


def rank_now(rd: Round, job: Job, pools: list[Pool], ref_s: float) -> Ranking:
    """Start-now options on ``pools``, best first.

    Every metric scales linearly with the job's device count and so does its normaliser,
    so the ranking depends only on the weights, the data location and the run length:
    it is computed once per (weights, data location, run-length bucket) over all pools
    (reference = the federation's worst pool) and then cut down to the job's feasible
    pools. Run lengths are bucketed on a log scale (ratio 1.5), which moves a carbon or
    price mean by little while keeping a round over 1,000 jobs and 100 pools fast.
    """
    b = bucket(ref_s)
    f = rd.facts(job)
    key = f.now_id if b == f.bucket else -1 - b  # another run length than the job's own (explain): no memo
    memo = rd.ranks
    hit = memo.now.get(key)
    if hit is not None:
        return hit
    w = rd.weights(job)
    rkey = (tuple(sorted(w.items())), job.spec.data_location, b, devices(job) > 0)
    ranked = memo.rank.get(rkey)
    if ranked is None:
        okey = (job.spec.data_location, b, devices(job) > 0)
        cached = memo.opts.get(okey)
        if cached is None:
            rep_s = bucket_run_s(b)
            t = rd.fc.anchor
            opts = [
                E.option(rd, job, p, t, rep_s, True, with_deadline=False, means=rd.fc.bucket_means(p, rd.tput[p.id], b))
                for p in rd.snap.world.pools
            ]
            cached = memo.opts[okey] = (opts, reference(opts), option_arrays(opts))
        opts, ref, arrays = cached
        ranked = memo.rank[rkey] = rank_options(rd.registry, job, opts, ref, arrays, w, rd.table.id_rank)
    if len(pools) == len(rd.pools):
        scored = ranked  # no filter excluded a pool: the ranking itself
    else:
        ckey = (id(ranked), id(pools))  # candidate lists live in the filter store beside the rankings
        cut = memo.cut.get(ckey)
        if cut is None:
            ids = {rd.table.pidx[p.id] for p in pools}
            cut = memo.cut[ckey] = ranked.subset(ids.__contains__)
        scored = cut
    if key >= 0:
        memo.now[key] = scored
    return scored


def _fast_enough(tput: list[float], fast: tuple[float, ...], j: int) -> bool:
    return tput[j] in fast


def meeting_deadline(rd: Round, job: Job, ranked: Ranking, ref_s: float) -> Ranking:
    """Pools that can no longer meet the job's deadline drop out (unless none can: best effort)."""
    if job.spec.deadline is None:
        return ranked
    left = (job.spec.deadline - rd.now).total_seconds()
    if ref_s / rd.table.tmin <= left:
        return ranked  # even the slowest pool can
    fast = tuple(t for t in rd.table.tput_values if ref_s / t <= left)
    fkey = (id(ranked), fast)
    fit = rd.ranks.fit_lists.get(fkey)
    if fit is None:
        fit = rd.ranks.fit_lists[fkey] = ranked.subset(partial(_fast_enough, rd.table.tput_idx, fast))
    return fit if fit and len(fit) < len(ranked) else ranked


def future_options(
    rd: Round,
    job: Job,
    now_scored: Ranking,
    ref_s: float,
    room: list[int] | None = None,
    beat: float | None = None,
    finish_by: float | None = None,
) -> list[Scored]:
    """For a flexible job: the forecast-best later start at each site (best pool per site).

    ``room``: positions in ``now_scored`` of the pools that may have room (default: computed).
    ``beat``: only options scoring below this matter to the caller; a site whose score floor
    (:func:`~yungu.engines.scheduler.estimate.wait_floor` at the earliest shift) is not below
    it is skipped unestimated. ``finish_by``: epoch seconds by which a shifted run must end
    (the job's finish budget).
    """
    pol = rd.policy
    if not pol.time_shift:
        return []
    w = rd.weights(job)
    flexible = rd.flexible(w)
    first = rd.next_hour
    if job.spec.deadline is None:
        if not flexible or pol.flex_shift_frac <= 0 or ref_s / rd.table.tmin < pol.flex_min_run_s:
            return []
        if job.submitted_at + timedelta(seconds=pol.flex_shift_frac * ref_s / rd.table.tmin) < first:
            return []  # not even the slowest pool's window reaches the next whole hour
    else:
        run_min = ref_s / rd.table.tmax
        last = job.spec.deadline - timedelta(seconds=run_min + pol.margin(run_min) + pol.urgent_lead_s)
        if last < first:
            return []  # no whole hour to shift into
    kind = "carbon" if w.get("carbon", 0.0) + w.get("green", 0.0) >= w.get("cost", 0.0) else "price"
    seen: set[str] = set()
    out: list[Option] = []
    horizon = rd.now + timedelta(hours=pol.max_shift_hours)
    for pos in rd.cap.room_positions(job, now_scored) if room is None else room:
        o = now_scored[pos].option
        if o.site_id in seen:
            continue
        if o.pool_id not in rd.free:
            # Only pools with room now (by the quick test): a later start on a full pool would
            # chase capacity that others may take first (waiting for a full pool is the
            # wait-for-a-better-pool step's job).
            continue
        seen.add(o.site_id)
        if len(seen) > 3:
            break
        pool = rd.pools[o.pool_id]
        latest: datetime | None = rd.shift_limit(job, pool, ref_s, flexible)
        if latest is None:
            continue
        latest = min(latest, horizon)
        run = ref_s / rd.tput[o.pool_id]
        if finish_by is not None:
            latest = min(latest, datetime.fromtimestamp(finish_by - run, UTC))
        if latest < first:
            continue
        if beat is not None:
            floor = E.wait_floor(rd, job, now_scored[pos], (first - rd.now).total_seconds(), run, w, now_scored.ref)
            if floor >= beat:
                continue
        # The job's own run and window: cheap enough per job (prefix sums) that no cache
        # is worth the approximation.
        t = rd.fc.outlooks[o.site_id].best_start(rd.now, latest, run, kind, first=first)
        if t > rd.now:  # else starting now is already the forecast best at this site
            out.append(E.option(rd, job, pool, t, ref_s, False))
    if not out:
        return []
    ref = now_scored.ref
    return sorted((E.score(rd, job, o, ref, w) for o in out), key=lambda s: s.score)
