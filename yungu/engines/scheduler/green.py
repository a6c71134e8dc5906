"""Yungu's scheduler: green-power- and price-aware placement across every region's pools.

One round (``schedule(snapshot) -> Plan``), pure and deterministic:

1. **Order** the queue: deadline-urgent jobs first, then priority, then tenants within their
   quota before borrowers, then weighted fair share (usage / weight), then submission time.
2. **Filter** pools per job with the registered filter plugins (declared fit, reachable,
   max price, ...). A job no pool can ever take is *infeasible* with every pool's reason.
3. **Score** the job's start-now option on each feasible pool with the score plugins and the
   job's objective weights (``time``/``cost``/``green``/``balanced`` or explicit weights,
   clamped to operator limits); pools that can no longer meet its deadline drop out.
4. **Decide** with the decision hooks (:mod:`~yungu.engines.scheduler.decide`): wait for a
   clearly better full pool, shift to a forecast-better hour, start on the best pool with
   room (gangs all-or-nothing, best fit on nodes), or, when nothing has room, preempt
   lower-priority work (least lost work) or reserve the earliest pool (EASY backfill: later
   jobs may use the hole only if they end before the reservation or fit beside it).

Time shifting uses forecasts only (``Snapshot.signals``), and never defers a job past the
last start that still meets its deadline with a safety margin; once that point nears, the
job is *urgent*: it goes first and may preempt work that has no deadline.

The pieces: :mod:`policy` (knobs, presets), :mod:`round` (what a round knows), :mod:`steps`
(order, filter, score), :mod:`estimate` (one option's estimates), :mod:`ranking`,
:mod:`decide` (the hooks), :mod:`explain`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from yungu.domain.catalogue import Catalogue
from yungu.domain.job import Job
from yungu.domain.status import Code, Status
from yungu.domain.world import Site
from yungu.engines.scheduler.carry import Carry
from yungu.engines.scheduler.decide import (
    DEFAULT_STEPS,
    Choice,
    Decision,
    DecisionStep,
    Preempting,
    find_room,
    wait_frac,
    wait_key,
)
from yungu.engines.scheduler.explain import Alternative, Explanation, explain_job
from yungu.engines.scheduler.outlook import SiteOutlook, outlook_from_signal
from yungu.engines.scheduler.plugins import Registry, default_registry
from yungu.engines.scheduler.policy import PRESETS, PolicyConfig, TenantPolicy
from yungu.engines.scheduler.ranking import Ranking
from yungu.engines.scheduler.round import Round
from yungu.engines.scheduler.steps import filter_pools, meeting_deadline, queue_order, rank_now
from yungu.engines.scheduler.types import Defer, Infeasible, Plan, Preempt, Snapshot, Start

__all__ = [
    "PRESETS",
    "Alternative",
    "Carry",
    "Explanation",
    "GreenScheduler",
    "PolicyConfig",
    "TenantPolicy",
    "explain",
]


class GreenScheduler:
    """The Yungu scheduler (implements ``Scheduler``): ``GreenScheduler(catalogue, policy)``.

    ``steps``: the decision hooks, in order (default :data:`~yungu.engines.scheduler.decide.DEFAULT_STEPS`).
    """

    name = "yungu-green"

    def __init__(
        self,
        catalogue: Catalogue,
        policy: PolicyConfig | None = None,
        registry: Registry | None = None,
        steps: Sequence[DecisionStep] = DEFAULT_STEPS,
    ) -> None:
        self.catalogue = catalogue
        self.policy = policy or PolicyConfig()
        self.registry = registry or default_registry()
        self.steps = tuple(steps)
        self.keyed_filters = self.registry.keyed_filters()  # filters whose memo key reads more of the job
        self._settles = self.steps == tuple(DEFAULT_STEPS)  # the "settled" shortcut knows the default hooks only
        self._outlooks: dict[tuple[str, int], tuple[object, SiteOutlook]] = {}
        self._no_room = Status(Code.UNSCHEDULABLE, ("no feasible pool has room now",), self.name)

    def new_carry(self) -> Carry:
        """An empty carry for :meth:`schedule`: the caller keeps it between rounds."""
        return Carry()

    def schedule(self, snapshot: Snapshot, carry: Carry | None = None) -> Plan:
        """One round. With ``carry`` (from :meth:`new_carry`, passed back every round) the round
        reuses what earlier rounds derived from inputs that have not changed: the same plan as
        without it, sooner."""
        rd = Round(self, snapshot, carry)
        plan = _PlanBuilder()
        for job in queue_order(rd, snapshot.pending):
            plan.add(self.decide(rd, job))
        return plan.build()

    def decide(self, rd: Round, job: Job) -> Decision:
        """One job: its window, the filters, the scored pools, then the first hook that decides."""
        if job.spec.earliest_start and job.spec.earliest_start > rd.now:
            return Defer(job.id, job.spec.earliest_start, Status(Code.WAIT, ("window opens later",), self.name))
        pools, rejected = filter_pools(rd, job)
        if not pools:
            return self.unplaceable(job, rejected)
        ref_s = rd.facts(job).ref_s
        ranked = meeting_deadline(rd, job, rank_now(rd, job, pools, ref_s), ref_s)
        urgent = rd.urgent(job)
        settle = self._settles and not urgent and (job.spec.priority <= 0 or not rd.policy.preemption)
        if settle and self.settled(rd, job, ranked, ref_s):
            return Defer(job.id, None, self._no_room)
        c = find_room(rd, Choice(job, ref_s, ranked, urgent, rd.policy.tenant(job.tenant_id)))
        for step in self.steps:
            d = step.decide(rd, c)
            if d is not None:
                return d
        if settle and not c.room and (id(ranked) in rd.memo.reserve_full or not rd.policy.backfill):
            rd.memo.settled.add(wait_key(rd, c, wait_frac(rd, job)))
        return Defer(job.id, None, self._no_room)

    def settled(self, rd: Round, job: Job, ranked: Ranking, ref_s: float) -> bool:
        """A job like an earlier one of this round that found no room, no better pool to wait
        for (for runs up to this long) and nothing to reserve: it finds none either (capacity
        only shrinks and holds only grow within a round), so the hooks need not look."""
        key = (id(ranked), rd.facts(job).shape_id, wait_frac(rd, job))
        return key in rd.memo.settled and ref_s <= rd.memo.no_wait.get(key, -1.0)

    def unplaceable(self, job: Job, rejected: dict[str, Status]) -> Decision:
        """No pool passes the filters: infeasible if none ever can, else a wait (e.g. unreachable)."""
        reasons = tuple(f"{pid}: {'; '.join(st.reasons)}" for pid, st in rejected.items())
        if all(st.code is Code.UNSCHEDULABLE_AND_UNRESOLVABLE for st in rejected.values()):
            return Infeasible(job.id, Status(Code.UNSCHEDULABLE_AND_UNRESOLVABLE, reasons, self.name))
        return Defer(job.id, None, Status(Code.UNSCHEDULABLE, reasons, self.name))

    def outlook(self, site: Site, signal: object, now: datetime) -> SiteOutlook:
        # Memoised per (site, signal object): the simulator hands the same forecast object to
        # every round of an hour, so prefix sums are built once per hour, not once per round.
        key = (site.id, id(signal))
        hit = self._outlooks.get(key)
        if hit is not None and hit[0] is signal and signal is not None:
            return hit[1]
        ol = outlook_from_signal(
            site.id,
            signal,
            now,
            default_carbon=self.policy.default_carbon_g_per_kwh,
            default_price=float(site.electricity_price_cny_per_kwh),
        )
        if len(self._outlooks) > 4096:
            self._outlooks.clear()
        self._outlooks[key] = (signal, ol)
        return ol

    def explain(self, snapshot: Snapshot, job_id: str) -> Explanation:
        """Why the job goes where it goes: the chosen option and the best alternatives.

        Computed against the snapshot alone (as if the job were first in the queue).
        """
        return explain_job(self, snapshot, job_id)


class _PlanBuilder:
    """Collects the round's decisions into the four lists of a :class:`Plan`."""

    __slots__ = ("defers", "infeasible", "preempts", "starts")

    def __init__(self) -> None:
        self.starts: list[Start] = []
        self.defers: list[Defer] = []
        self.preempts: list[Preempt] = []
        self.infeasible: list[Infeasible] = []

    def add(self, d: Decision) -> None:
        if isinstance(d, Start):
            self.starts.append(d)
        elif isinstance(d, Defer):
            self.defers.append(d)
        elif isinstance(d, Preempting):
            self.preempts.extend(d.preempts)
            self.defers.append(d.defer)
        else:
            self.infeasible.append(d)

    def build(self) -> Plan:
        return Plan(tuple(self.starts), tuple(self.defers), tuple(self.preempts), tuple(self.infeasible))


def explain(scheduler: GreenScheduler, snapshot: Snapshot, job_id: str) -> Explanation:
    """Pure: the explanation of ``job_id`` in ``snapshot`` (what the API stores per job)."""
    return scheduler.explain(snapshot, job_id)

