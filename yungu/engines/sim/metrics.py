"""Summary metrics of a simulation run (one row of the report table per policy)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from yungu.engines.sim.model import SimResult


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return 0.0
    xs = sorted(xs)
    k = min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))
    return xs[k]


@dataclass(frozen=True)
class Metrics:
    policy: str
    jobs: int
    finished: int
    failed: int
    avg_jct_h: float
    p50_jct_h: float
    p99_jct_h: float
    avg_wait_h: float
    makespan_h: float
    utilisation: float  # busy device-hours / capacity device-hours over the submission window
    cost_cny: Decimal
    energy_kwh: float
    carbon_kg: float
    green_share: float
    deadline_jobs: int
    deadline_misses: int
    feasible_misses: int  # misses among deadlines feasible at submission
    preemptions: int
    round_ms_p50: float
    round_ms_p99: float
    rounds: int


def summarise(res: SimResult, window_s: float | None = None) -> Metrics:
    done = [r for r in res.records if r.state == "succeeded"]
    jct = [r.jct_s / 3600 for r in done if r.jct_s is not None]
    wait = [r.wait_s / 3600 for r in done if r.wait_s is not None]
    energy = sum(r.energy_kwh for r in res.records)
    green = sum(r.green_kwh for r in res.records)
    dl = [r for r in res.records if r.deadline is not None]
    cap = sum(res.capacity_devices.values())
    if window_s is None:
        subs = [r.submit for r in res.records]
        window_s = (max(subs) - res.start).total_seconds() if subs else 0.0
    hours = max(1, int(window_s // 3600))
    busy = sum(sum(v[:hours]) for v in res.site_load.values())
    ms = sorted(x * 1000 for x in res.round_s)
    return Metrics(
        res.policy,
        len(res.records),
        len(done),
        sum(1 for r in res.records if r.state == "failed"),
        sum(jct) / len(jct) if jct else 0.0,
        _pct(jct, 0.5),
        _pct(jct, 0.99),
        sum(wait) / len(wait) if wait else 0.0,
        (res.end - res.start).total_seconds() / 3600,
        busy / (cap * hours) if cap else 0.0,
        sum((r.cost_cny for r in res.records), Decimal("0")),
        energy,
        sum(r.carbon_g for r in res.records) / 1000,
        green / energy if energy else 0.0,
        len(dl),
        sum(1 for r in dl if r.missed),
        sum(1 for r in dl if r.missed and r.deadline_feasible),
        res.preemptions,
        _pct(ms, 0.5),
        _pct(ms, 0.99),
        res.rounds,
    )
