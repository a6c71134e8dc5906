"""The ports are the adapters' real surface: every Protocol method exists on the adapter
that implements it, with the same parameters, and the container has every service the API
names. (mypy checks the types as well: ``create_app(container)`` takes a ``Platform``.)"""

from __future__ import annotations

import inspect

import pytest

from yungu.adapters.store.job_store import SqlStore
from yungu.adapters.store.lease_store import SqlLeaseStore
from yungu.adapters.store.record_store import CertificateStore, StatementStore
from yungu.api.deps import Platform
from yungu.app.container import Container
from yungu.ports import records, store
from yungu.ports.executor import Executor
from yungu.testing import FakeExecutor

PAIRS = [
    (store.JobStore, SqlStore),
    (store.TenantStore, SqlStore),
    (store.LeaseStore, SqlLeaseStore),
    (records.CertificateStore, CertificateStore),
    (records.StatementStore, StatementStore),
    (Executor, FakeExecutor),
]


def members(proto: type) -> dict[str, inspect.Signature]:
    out = {}
    for name, value in vars(proto).items():
        if name.startswith("_") or not callable(value):
            continue
        out[name] = inspect.signature(value)
    return out


@pytest.mark.parametrize(("proto", "impl"), PAIRS, ids=lambda x: x.__name__)
def test_the_adapter_implements_every_method_of_its_port(proto: type, impl: type) -> None:
    for name, sig in members(proto).items():
        assert hasattr(impl, name), f"{impl.__name__} lacks {name} of {proto.__name__}"
        got = inspect.signature(getattr(impl, name))
        assert list(got.parameters) == list(sig.parameters), f"{impl.__name__}.{name}{got} vs {proto.__name__}{sig}"


def test_the_container_has_every_service_the_api_names() -> None:
    wanted = {n for n, v in vars(Platform).items() if isinstance(v, property)}
    have = set(Container.__dataclass_fields__) | {n for n, v in vars(Container).items() if not n.startswith("_")}
    assert wanted <= have, wanted - have
