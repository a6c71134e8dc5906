"""Expected outcomes as values (kube-scheduler's ``Status``/``Code``).

Retries and back-off depend on the code: ``UNSCHEDULABLE`` may succeed when capacity
changes; ``UNSCHEDULABLE_AND_UNRESOLVABLE`` never will for this spec.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Code(StrEnum):
    SUCCESS = "success"
    UNSCHEDULABLE = "unschedulable"  # wait: may fit when capacity frees
    UNSCHEDULABLE_AND_UNRESOLVABLE = "unresolvable"  # infeasible: never fits as specified
    WAIT = "wait"  # deliberately deferred (time shifting, reservations)
    SKIP = "skip"  # plugin does not apply
    ERROR = "error"


@dataclass(frozen=True)
class Status:
    code: Code
    reasons: tuple[str, ...] = field(default=())
    plugin: str = ""

    @property
    def ok(self) -> bool:
        return self.code in (Code.SUCCESS, Code.SKIP)

    @staticmethod
    def success(plugin: str = "") -> Status:
        return Status(Code.SUCCESS, (), plugin)
