"""The optimum as a bound: a time-indexed LP relaxation (HiGHS) of min carbon or min cost.

Relaxation (documented in docs/scheduler.md):

- time is cut into steps of ``step_hours``; pools keep their device capacity per step;
- jobs are *fluid*: work (reference device-hours) may be split across pools, steps and
  sites, paused and migrated at will; gangs are ignored; a job's devices per step are capped
  at its GPU count (it cannot run faster than its gang);
- job ``j`` may run in steps ``[floor(submit_j), ceil(bound_j))`` where ``bound_j`` is its
  deadline, or, when it has none, the completion bound the caller gives (the benchmark uses
  1.10 x its FIFO+backfill completion time, the same JCT budget our policy is held to);
- a job runs only on the pools its gang could ever use (accelerator types, devices per node,
  gang size: the scheduler's declared-fit filter); a job no pool can take is left out;
- jobs with the same (release step, end step, usable pools) are aggregated into one class
  (their work and GPU caps add up), a further relaxation that keeps the LP small;
- carbon and price use the *truth* series (the bound knows the future; policies do not).

At ``step_hours = 1`` this is a true lower bound of any schedule of the fluid model; with
coarser steps the per-step mean intensity is used, so it is a close approximation rather
than a strict bound (the report says which step was used).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import highspy
import numpy as np

from yungu.domain.errors import InvalidInput
from yungu.engines.energy.signals import SignalType
from yungu.engines.scheduler.capacity import device_power_w, throughput
from yungu.engines.scheduler.firstfit import fits_declared
from yungu.engines.scheduler.outlook import Curve
from yungu.engines.sim.core import to_job
from yungu.engines.sim.model import Scenario


@dataclass(frozen=True)
class LpBound:
    objective: str  # "carbon" | "cost"
    value: float  # kgCO2e or CNY
    carbon_kg: float
    cost_cny: float
    energy_kwh: float
    classes: int
    variables: int
    step_hours: float
    status: str


def lp_bound(
    sc: Scenario,
    bounds: Mapping[str, datetime],
    objective: str = "carbon",
    step_hours: float = 1.0,
    time_limit_s: float = 600.0,
) -> LpBound:
    if objective not in ("carbon", "cost"):
        raise InvalidInput("LP objective must be 'carbon' or 'cost'")
    step = step_hours * 3600.0
    pools = list(sc.world.pools)
    sites = {s.id: s for s in sc.world.sites}
    tau = np.array([throughput(sc.catalogue, p) for p in pools])
    kw = np.array(
        [device_power_w(sc.catalogue, p, sc.power_load) / 1000 * sites[p.site_id].pue for p in pools]
    )
    cap = np.array([p.total_devices * step_hours for p in pools], dtype=float)

    # (release step, end step, pools the job may use) -> [reference device-hours, GPU cap]
    classes: dict[tuple[int, int, tuple[int, ...]], list[float]] = {}
    allowed_of: dict[tuple[tuple[str, ...], int, int], tuple[int, ...]] = {}
    for j in sc.jobs:
        # The pools its gang could ever run on (accelerator types, devices per node, gang size),
        # as the scheduler's declared-fit filter says; a job no pool can take fails under every
        # policy and is left out.
        job = to_job(j, sc.start, sc.gpus_per_node)
        shape = (j.gpu_types, job.spec.resources.accelerators, job.spec.replicas)
        allowed = allowed_of.get(shape)
        if allowed is None:
            allowed = allowed_of[shape] = tuple(i for i, p in enumerate(pools) if not fits_declared(job, p))
        if not allowed:
            continue
        r = int(j.submit_s // step)
        if j.deadline_s is not None:
            end_s = j.submit_s + j.deadline_s
        elif j.id in bounds:
            end_s = (bounds[j.id] - sc.start).total_seconds()
        else:
            raise InvalidInput(f"no completion bound for job {j.id}")
        e = max(r + 1, math.ceil(end_s / step))
        c = classes.setdefault((r, e, allowed), [0.0, 0.0])
        c[0] += j.duration_s / 3600 * j.num_gpus  # reference device-hours
        c[1] += j.num_gpus
    K = max(e for _, e, _ in classes)

    def coef_curve(site_id: str, kind: SignalType, default: float) -> np.ndarray:
        sig = sc.truth.get(site_id)
        s = sig.get(kind) if sig else None
        curve = Curve(s.start, s.values, default) if s is not None else Curve(sc.start, (), default)
        return np.array([curve.mean(sc.start + timedelta(seconds=k * step), step) for k in range(K)])

    ci = {sid: coef_curve(sid, SignalType.CARBON_INTENSITY, 0.0) for sid in sites}
    price = {
        sid: coef_curve(sid, SignalType.PRICE, float(sites[sid].electricity_price_cny_per_kwh)) for sid in sites
    }
    # per device-hour coefficients [pool, step]
    carbon_c = np.stack([kw[i] * ci[p.site_id] for i, p in enumerate(pools)])  # g
    cost_c = np.stack(
        [float(p.price_cny_per_device_hour) + kw[i] * price[p.site_id] for i, p in enumerate(pools)]
    )
    obj_c = carbon_c / 1000 if objective == "carbon" else cost_c

    P = len(pools)
    keys = sorted(classes)
    n_cls = len(keys)
    # rows: [work rows (n_cls)] [rate rows (sum of window lengths)] [cap rows (P*K)]
    cols_cls: list[np.ndarray] = []
    cols_p: list[np.ndarray] = []
    cols_k: list[np.ndarray] = []
    rate_row_of: list[np.ndarray] = []
    row = n_cls
    rate_upper: list[np.ndarray] = []
    for ci_, (r, e, allowed) in enumerate(keys):
        ks = np.arange(r, e)
        L = len(ks)
        A = len(allowed)
        cols_cls.append(np.full(L * A, ci_))
        cols_p.append(np.repeat(np.array(allowed), L))
        cols_k.append(np.tile(ks, A))
        rate_row_of.append(np.tile(np.arange(row, row + L), A))
        rate_upper.append(np.full(L, classes[(r, e, allowed)][1] * step_hours))
        row += L
    cc = np.concatenate(cols_cls)
    cp = np.concatenate(cols_p)
    ck = np.concatenate(cols_k)
    rr = np.concatenate(rate_row_of)
    cap_row0 = row
    n_rows = cap_row0 + P * K
    n = len(cc)
    index = np.empty(3 * n, dtype=np.int32)
    value = np.empty(3 * n)
    index[0::3] = cc
    index[1::3] = rr
    index[2::3] = cap_row0 + cp * K + ck
    value[0::3] = tau[cp]
    value[1::3] = 1.0
    value[2::3] = 1.0
    work = np.array([classes[k][0] for k in keys])
    lower = np.concatenate([work, np.zeros(n_rows - n_cls)])
    upper = np.concatenate([work, np.concatenate(rate_upper), np.repeat(cap, K)])

    lp = highspy.HighsLp()
    lp.num_col_ = n
    lp.num_row_ = n_rows
    lp.col_cost_ = obj_c[cp, ck]
    lp.col_lower_ = np.zeros(n)
    lp.col_upper_ = np.full(n, highspy.kHighsInf)
    lp.row_lower_ = lower
    lp.row_upper_ = upper
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = np.arange(0, 3 * n + 1, 3, dtype=np.int32)
    lp.a_matrix_.index_ = index
    lp.a_matrix_.value_ = value
    h = highspy.Highs()  # type: ignore[no-untyped-call]
    h.setOptionValue("output_flag", False)
    h.setOptionValue("time_limit", float(time_limit_s))
    h.setOptionValue("solver", "ipm")
    h.passModel(lp)
    h.run()
    status = h.modelStatusToString(h.getModelStatus())
    if status != "Optimal":
        return LpBound(objective, math.nan, math.nan, math.nan, math.nan, n_cls, n, step_hours, status)
    x = np.array(h.getSolution().col_value)
    carbon = float((carbon_c[cp, ck] * x).sum()) / 1000
    cost = float((cost_c[cp, ck] * x).sum())
    energy = float((kw[cp] * x).sum())
    return LpBound(
        objective, carbon if objective == "carbon" else cost, carbon, cost, energy, n_cls, n, step_hours, status
    )
