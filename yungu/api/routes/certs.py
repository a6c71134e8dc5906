"""Green-power certificates: issue (per job, per tenant-month), fetch, verify, export."""

from __future__ import annotations

import json
import secrets
import time
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from fastapi import APIRouter, Body, Depends, Path, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select

from yungu.adapters.certs import CertSigner, to_html, verify
from yungu.adapters.store.telemetry_tables import energy_certificates
from yungu.adapters.telemetry.reports import job_report
from yungu.api.deps import ANY_ROLE, container, require
from yungu.api.routes.energy import check_job_access
from yungu.api.routes.telemetry import telemetry_store
from yungu.api.schemas import MAX_YEAR, MIN_YEAR, PERIOD_PATTERN
from yungu.domain.errors import InvalidInput, NotFound
from yungu.domain.ids import uuid7
from yungu.domain.tenancy import Principal
from yungu.engines.energy.certificate import canonical_json, certificate_body

router = APIRouter(tags=["certificates"])


def signer(c: Any) -> CertSigner:
    s = c.extras.get("cert_signer")
    if s is None:
        s = c.extras["cert_signer"] = CertSigner.load_or_create(c.data_dir)
    return s  # type: ignore[no-any-return]


def _store_cert(c: Any, cert: dict[str, Any]) -> dict[str, Any]:
    b = cert["body"]
    with c.engine.begin() as conn:
        conn.execute(energy_certificates.insert().values(
            id=b["id"], kind=b["kind"], subject=b["subject"], tenant_id=b["tenant_id"], issued_at=c.clock.now(),
            body=canonical_json(b).decode(), signature=cert["signature"]["value"], key_id=cert["signature"]["key_id"]))  # fmt: skip
    return cert


def _new_id() -> str:
    return uuid7(int(time.time() * 1000), secrets.token_bytes(10))


@router.post("/certs/jobs/{job_id}", status_code=201)
def issue_job(request: Request, job_id: str, p: Principal = Depends(require(*ANY_ROLE))) -> dict[str, Any]:
    c = container(request)
    tenant = check_job_access(c, p, job_id) or (p.tenant_id or "")
    _, items = job_report(telemetry_store(c), c.world, job_id)
    cid = _new_id()
    body = certificate_body(cert_id=cid, kind="job", subject=job_id, tenant_id=tenant, platform_id=c.world.platform_id,
                            issued_at=c.clock.now(), items=items)  # fmt: skip
    return _store_cert(c, signer(c).sign(body))


@router.post("/certs/tenants/{tenant_id}/{month}", status_code=201)
def issue_month(
    request: Request, tenant_id: str, month: str = Path(pattern=PERIOD_PATTERN, description="YYYY-MM"),
    p: Principal = Depends(require(*ANY_ROLE)),
) -> dict[str, Any]:
    c = container(request)
    if not p.may_access_tenant(tenant_id):
        raise NotFound(f"no tenant {tenant_id}")
    try:
        start = datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
    except ValueError as exc:
        raise InvalidInput("month must be YYYY-MM / 月份格式应为 YYYY-MM") from exc
    if not MIN_YEAR <= start.year <= MAX_YEAR:
        raise InvalidInput(f"month must lie in the years {MIN_YEAR}..{MAX_YEAR} / 月份超出范围")
    end = (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )
    jobs: list[Any] = []
    after = None
    while True:  # keyset pages over the tenant's jobs
        page = c.store.page(tenant_id, after=after, limit=500)
        jobs.extend(j for j in page if j.started_at and start <= j.started_at < end)
        if len(page) < 500:
            break
        after = page[-1].id
    items = []
    st = telemetry_store(c)
    for j in jobs:
        try:
            items.extend(job_report(st, c.world, j.id)[1])
        except NotFound:
            continue
    if not items:
        raise NotFound(f"no metered jobs for tenant {tenant_id} in {month} / 该月无计量作业")
    body = certificate_body(cert_id=_new_id(), kind="tenant_month", subject=f"{tenant_id}/{month}", tenant_id=tenant_id,
                            platform_id=c.world.platform_id, issued_at=c.clock.now(), items=items)  # fmt: skip
    return _store_cert(c, signer(c).sign(body))


def _load(c: Any, cert_id: str, p: Principal) -> dict[str, Any]:
    with c.engine.connect() as conn:
        r = conn.execute(select(energy_certificates).where(energy_certificates.c.id == cert_id)).first()
    if r is None or not p.may_access_tenant(r.tenant_id):
        raise NotFound(f"no certificate {cert_id} / 证书不存在")
    s = signer(c)
    return {"body": json.loads(r.body), "signature": {"alg": "Ed25519", "key_id": r.key_id,
            "public_key": s.public_key_b64, "value": r.signature}}  # fmt: skip


@router.get("/certs/{cert_id:uuid}")  # a UUID: "/certs/verify" is not a certificate (405 says POST)
def get_cert(request: Request, cert_id: UUID, p: Principal = Depends(require(*ANY_ROLE))) -> dict[str, Any]:
    return _load(container(request), str(cert_id), p)


@router.get("/certs/{cert_id:uuid}/html", response_class=HTMLResponse)
def get_cert_html(request: Request, cert_id: UUID, p: Principal = Depends(require(*ANY_ROLE))) -> HTMLResponse:
    return HTMLResponse(to_html(_load(container(request), str(cert_id), p)))


@router.post("/certs/verify")
def verify_cert(
    request: Request, cert: dict[str, Any] = Body(...), _p: Principal = Depends(require(*ANY_ROLE))
) -> dict[str, Any]:
    ok, reason = verify(cert, signer(container(request)).public_key_b64)
    return {"valid": ok, "reason": reason}


@router.get("/certs-public-key")
def public_key(request: Request) -> dict[str, Any]:
    s = signer(container(request))
    return {"alg": "Ed25519", "key_id": s.key_id, "public_key": s.public_key_b64}
