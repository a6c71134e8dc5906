"""The operator's scheduling policy: objective presets, tenant shares and the round's knobs.

Plain frozen values: the scheduler reads them, never changes them. What each knob does is
described in ``docs/scheduler.md`` ("One round").
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from yungu.domain.job import Job, Objective

PRESETS: Mapping[Objective, Mapping[str, float]] = {
    Objective.TIME: {"wait": 1.0, "finish": 1.0, "cost": 0.05, "carbon": 0.05, "latency": 0.1},
    Objective.COST: {"cost": 1.0, "finish": 0.5, "wait": 0.3, "carbon": 0.05, "latency": 0.05, "deadline_risk": 0.1},
    Objective.GREEN: {"carbon": 1.0, "green": 0.2, "wait": 0.3, "latency": 0.05, "deadline_risk": 0.1},
    Objective.BALANCED: {
        "cost": 0.5,
        "carbon": 0.5,
        "green": 0.1,
        "wait": 0.5,
        "finish": 0.25,
        "latency": 0.1,
        "deadline_risk": 0.2,
    },
}


@dataclass(frozen=True)
class TenantPolicy:
    """Fair-share weight and quota (normalised compute units: devices x relative throughput)."""

    weight: float = 1.0
    quota_units: float | None = None  # None: no quota
    borrow_units: float = float("inf")  # how far above the quota idle capacity may be borrowed


@dataclass(frozen=True)
class PolicyConfig:
    """Operator policy. Defaults are what the benchmarks use unless a scenario says otherwise."""

    tenants: Mapping[str, TenantPolicy] = field(default_factory=dict)
    latency_ms: Mapping[tuple[str, str], float] = field(default_factory=dict)  # region pairs
    default_latency_ms: float = 150.0  # between regions absent from the matrix
    weight_limits: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    objective_override: Objective | None = None  # operator: force one objective for all jobs
    weights_override: Mapping[str, float] = field(default_factory=dict)  # operator default weights
    power_load: float = 0.8  # average device load for energy estimates
    default_carbon_g_per_kwh: float = 500.0  # where a site has no forecast
    time_shift: bool = True
    backfill: bool = True
    preemption: bool = True
    deadline_margin_frac: float = 0.1  # safety margin before a deadline, fraction of run time
    deadline_margin_s: float = 1800.0
    urgent_lead_s: float = 3600.0  # a deadline job becomes urgent this long before its last start
    shift_gain: float = 0.05  # a later start must beat starting now by this fraction of the score
    max_shift_hours: int = 48
    preempt_pools: int = 5  # preemption looks for victims on the job's best N pools
    # An urgent deadline job preempts work without a deadline only when no pool frees in time
    # for its deadline (by the running jobs' estimates); otherwise it reserves the pool where it
    # finishes first, like every deadline job that finds no room (False: preempt when urgent,
    # reserve where it starts first).
    preempt_only_if_late: bool = True
    reserve_pools: int = 10  # EASY reservations: the earliest fit among the job's best N pools
    max_wait_frac: float = 0.25  # wait at most this fraction of the run for a clearly better full pool
    # Jobs that weigh waiting lightly (weight < flexible_below: the green and cost presets) may
    # wait longer for a clearly better full pool, and a job without a deadline may be time-shifted
    # up to flex_shift_frac of its run after submission (an implicit window). Both are scored
    # with the wait term, so they happen only when the carbon or cost gain outweighs the wait.
    flexible_below: float = 0.5
    flexible_wait_frac: float = 0.5
    flex_shift_frac: float = 1.0
    flex_min_run_s: float = 7200.0  # shorter jobs without a deadline are never shifted implicitly
    wait_pools: int = 5  # how many of the job's best pools to consider waiting for
    # A job may finish at most this fraction later (its completion time counted from submission)
    # than it would on the fastest pool that has room now, when it chooses a greener or
    # cheaper pool, a wait for a better pool or a later start; the objective's weights decide
    # within that budget (inf: no budget). The evaluation holds the policy to 1.10x the JCT
    # of FIFO+backfill; a budget per job is what keeps that true from loose to tight capacity.
    finish_budget_frac: float = 1.0
    # Rankings read the forecast from the round's time rounded down to this slot, so they stay
    # the same for a slot and an incremental round can keep them (0: from the exact time).
    rank_slot_s: float = 900.0

    def latency(self, a: str | None, b: str) -> float:
        if a is None or a == b:
            return 0.0
        return self.latency_ms.get((a, b), self.latency_ms.get((b, a), self.default_latency_ms))

    def tenant(self, tenant_id: str) -> TenantPolicy:
        return self.tenants.get(tenant_id, _DEFAULT_TENANT)

    def margin(self, run_s: float) -> float:
        """The safety margin a deadline job keeps between its estimated end and the deadline."""
        return self.deadline_margin_s + self.deadline_margin_frac * run_s


_DEFAULT_TENANT = TenantPolicy()


def job_weights(policy: PolicyConfig, job: Job, terms: Collection[str]) -> dict[str, float]:
    """The score weights of ``job``: its objective's preset under the operator's defaults, or its
    own ``objective_weights`` (only terms a score plugin knows), clamped to ``weight_limits``;
    ``objective_override`` forces the preset."""
    obj = policy.objective_override or job.spec.objective
    w = dict(PRESETS[obj])
    w.update(policy.weights_override)
    if job.spec.objective_weights and policy.objective_override is None:
        w = {k: float(v) for k, v in job.spec.objective_weights.items() if k in terms}
    for k, (lo, hi) in policy.weight_limits.items():
        w[k] = min(hi, max(lo, w.get(k, 0.0)))
    return w
