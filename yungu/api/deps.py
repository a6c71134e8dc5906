"""Request-scoped dependencies: the platform's services and the authenticated principal."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from fastapi import Request

from yungu.domain.errors import Forbidden, Unauthorized
from yungu.domain.tenancy import Principal, Role

if TYPE_CHECKING:
    from pathlib import Path

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from yungu.adapters.certs import CertSigner
    from yungu.adapters.config import PlatformConfig
    from yungu.adapters.telemetry.store import TelemetryStore
    from yungu.control.reconciler import Reconciler
    from yungu.domain.catalogue import Catalogue
    from yungu.domain.clock import Clock
    from yungu.domain.world import World
    from yungu.ports.executor import Executor
    from yungu.ports.records import CertificateStore, IdSource, StatementStore, Submitter
    from yungu.ports.store import PlatformStore


class Platform(Protocol):
    """What the API needs from the composition root (``yungu.app.container.Container``
    implements it; the api layer sits below ``app``, so it names the services, not the class).
    Every service is built by ``yungu.app.container.build``; no route builds one."""

    @property
    def data_dir(self) -> Path: ...

    @property
    def config(self) -> PlatformConfig: ...

    @property
    def catalogue(self) -> Catalogue: ...

    @property
    def store(self) -> PlatformStore: ...

    @property
    def executors(self) -> Mapping[str, Executor]: ...

    @property
    def reconciler(self) -> Reconciler: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def ids(self) -> IdSource: ...

    @property
    def ledger(self) -> Any: ...  # LedgerServices (ledger, billing, market, budgets, loop): ports to come

    @property
    def telemetry(self) -> TelemetryStore: ...

    @property
    def certificates(self) -> CertificateStore: ...

    @property
    def statements(self) -> StatementStore: ...

    @property
    def submit_batcher(self) -> Submitter: ...

    @property
    def world(self) -> World: ...

    @property
    def signer(self) -> CertSigner: ...

    @property
    def statement_key(self) -> Ed25519PrivateKey: ...

    @property
    def role(self) -> str: ...


def container(request: Request) -> Platform:
    """The platform's services (the composition root's ``Container``, seen as a :class:`Platform`)."""
    return request.app.state.container  # type: ignore[no-any-return]


def principal(request: Request) -> Principal:
    header = request.headers.get("authorization", "")
    secret = header[7:].strip() if header.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
    if not secret:
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>' / 缺少 API 密钥")
    cache: dict[str, Principal] = request.app.state.key_cache
    p = cache.get(secret)
    if p is None:
        p = container(request).store.principal(secret)
        if p is None:
            raise Unauthorized("invalid or revoked API key / API 密钥无效或已吊销")
        cache[secret] = p
    return p


def require(*roles: Role) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency that admits only the given roles (admin is always admitted).

    ``async`` on purpose: a sync dependency costs a thread-pool round trip per request, and
    the key lookup is a dictionary hit after the first request with a key."""
    allowed = set(roles) | {Role.ADMIN}

    async def _dep(request: Request) -> Principal:
        p = principal(request)
        if p.role not in allowed:
            raise Forbidden(f"role {p.role.value!r} may not do this; needs one of {sorted(r.value for r in allowed)}")
        return p

    return _dep


ANY_ROLE = (Role.ADMIN, Role.OPERATOR, Role.PROVIDER, Role.TENANT)
