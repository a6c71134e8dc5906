"""The billing ports (``yungu/ports/billing.py``) are what the adapters implement: every method
of each Protocol exists on its adapter with the same parameters (names, kinds, defaults)."""

from __future__ import annotations

import inspect

import pytest

from yungu.adapters.ledger.alerts import TableAlerts
from yungu.adapters.ledger.billing_store import BillingStore
from yungu.adapters.ledger.store import LedgerStore
from yungu.adapters.store.job_store import SqlStore
from yungu.control.budgets import LoopJobs
from yungu.ports import billing as ports

CASES = [
    (ports.LedgerPort, LedgerStore),
    (ports.UsagePort, BillingStore),
    (ports.AlertPort, TableAlerts),
    (ports.MeteringPort, SqlStore),
    (ports.JobControlPort, SqlStore),
    (ports.BudgetJobsPort, LoopJobs),
]


def _methods(proto: type) -> list[str]:
    return [n for n, v in vars(proto).items() if callable(v) and not n.startswith("_")]


@pytest.mark.parametrize(("port", "adapter"), CASES, ids=[f"{a.__name__}-{p.__name__}" for p, a in CASES])
def test_the_adapter_implements_every_method_of_its_port(port: type, adapter: type) -> None:
    assert _methods(port), port
    for name in _methods(port):
        assert hasattr(adapter, name), f"{adapter.__name__} lacks {port.__name__}.{name}"
        want = inspect.signature(getattr(port, name))
        got = inspect.signature(getattr(adapter, name))
        shape = [(p.name, p.kind, p.default) for p in want.parameters.values()]
        assert [(p.name, p.kind, p.default) for p in got.parameters.values()] == shape, (adapter, name)
