"""Estimates of one option (run time, energy, cost, carbon, green share, slack) and the score
floor that lets a round skip options that cannot win without estimating them."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from yungu.domain.job import Job
from yungu.domain.world import Pool
from yungu.engines.scheduler.capacity import devices
from yungu.engines.scheduler.plugins import Option, Reference
from yungu.engines.scheduler.ranking import Scored, bucket, score_option
from yungu.engines.scheduler.round import Round


def option(
    rd: Round,
    job: Job,
    pool: Pool,
    start: datetime,
    ref_s: float,
    room: bool,
    *,
    with_deadline: bool = True,
    means: tuple[float, float, float] | None = None,
    unit: bool = True,
) -> Option:
    """Running ``job`` on ``pool`` from ``start``: the estimates a score plugin reads.

    ``unit`` (for scoring): the estimates of one *unit* of the job — one device, or one CPU
    of one replica for a CPU-only job. Cost and carbon scale linearly with the job's size and
    so do the rankings' normalisers, which are computed once per round for a unit job, so a
    score is the same whatever the size; estimating the real size against a unit normaliser
    would inflate or shrink the cost and carbon terms by the size. ``unit=False``: the job's
    own figures (start notes, explanations).

    ``means``: forecast (price, carbon, renewable share) over the run when the caller has them
    (a ranking's bucket means); otherwise integrated from the site's outlook.
    """
    site = rd.sites[pool.site_id]
    run = ref_s / rd.tput[pool.id]
    n = devices(job)
    if unit:
        hourly, n = rd.table.hourly_unit(job, pool.id), min(n, 1)
    else:
        hourly = rd.table.hourly(job, pool.id)
    kwh = n * rd.table.kw_dev[pool.id] * run / 3600
    if means is None:
        ol = rd.fc.outlooks[site.id]
        price, ci, re = ol.price.mean(start, run), ol.carbon.mean(start, run), ol.renewable.mean(start, run)
    else:
        price, ci, re = means
    cost = hourly * run / 3600 + kwh * price
    green = site.green_contract_share + (1 - site.green_contract_share) * re
    slack = None
    if with_deadline and job.spec.deadline is not None:
        slack = (job.spec.deadline - start).total_seconds() - run
    return Option(
        pool.id,
        site.id,
        site.region_id,
        start,
        run,
        max(0.0, (start - rd.now).total_seconds()),
        cost,
        kwh * ci,
        kwh,
        green,
        rd.policy.latency(job.spec.data_location, site.region_id),
        slack,
        room,
    )


def score(rd: Round, job: Job, opt: Option, ref: Reference, w: Mapping[str, float]) -> Scored:
    return score_option(rd.registry, job, opt, ref, w)


def start_note(rd: Round, job: Job, pool: Pool, ref_s: float, chosen: Scored, among: int) -> str:
    """The one-line reason stored with a start: the job's own cost and carbon estimate.

    Device count, run time, power and prices are the job's own; the forecast means over the
    run are those of the run-length bucket the ranking used (the same ones it decided by),
    so writing the note costs no new forecast integrals.
    """
    means = rd.fc.bucket_means(pool, rd.tput[pool.id], bucket(ref_s))
    o = option(rd, job, pool, rd.now, ref_s, True, with_deadline=False, means=means, unit=False)
    return (
        f"{pool.id}: score {chosen.score:.3f} (best of {among}), est. {o.cost_cny:.2f} CNY, "
        f"{o.carbon_g / 1000:.2f} kgCO2e, green {o.green_share:.0%}"
    )


def wait_floor(
    rd: Round, job: Job, sc: Scored, wait_s: float, run: float, w: Mapping[str, float], ref: Reference
) -> float:
    """A lower bound on the score of starting on ``sc``'s pool ``wait_s`` from now or later,
    without forecast integrals (used to skip waits and shifts that cannot win).

    Exact: the wait term (it grows with the wait), the latency term, the deadline-risk
    term at ``wait_s`` (it grows with the start). Bounded: energy cost, carbon and green
    share at the site's most favourable forecast hour (no mean over a run beats the best
    hour); the device-hour part of the cost does not depend on the start.
    """
    o = sc.option
    n = min(devices(job), 1)  # one unit of the job, as every scored option (see option())
    kwh = n * rd.table.kw_dev[o.pool_id] * run / 3600
    best = rd.fc.best_hours(o.site_id)
    floor = 0.0
    wt = w.get("wait", 0.0)
    if wt or w.get("deadline_risk", 0.0):
        scale = run
        if job.spec.deadline is not None:
            slack = (job.spec.deadline - rd.now).total_seconds() - wait_s - run
            scale = max(run, wait_s + slack)
            wr = w.get("deadline_risk", 0.0)
            if wr:
                floor += wr * (1.0 if slack <= 0 else max(0.0, 1.0 - slack / max(run, 1.0)))
        floor += wt * wait_s / max(scale, 1.0)
    wl = w.get("latency", 0.0)
    if wl and ref.latency > 0:
        floor += wl * o.latency_ms / ref.latency
    wf = w.get("finish", 0.0)
    if wf and ref.finish > 0:
        floor += wf * (wait_s + run) / ref.finish
    wc = w.get("cost", 0.0)
    if wc and ref.cost > 0:
        floor += wc * (rd.table.hourly_unit(job, o.pool_id) * run / 3600 + kwh * best[0]) / ref.cost
    wco = w.get("carbon", 0.0)
    if wco and ref.carbon > 0:
        floor += wco * kwh * best[1] / ref.carbon
    wg = w.get("green", 0.0)
    if wg:
        gcs = rd.sites[o.site_id].green_contract_share
        floor += wg * (1.0 - (gcs + (1 - gcs) * best[2]))
    return floor
