"""Billing API: run metering/booking, close periods, invoices (JSON and printable HTML), usage."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field

from yungu.api.deps import ANY_ROLE, container, require
from yungu.api.routes.ledger import STAFF, Reason, audit, money, services
from yungu.api.schemas import PERIOD_PATTERN, Money
from yungu.control.billing import UsageRow
from yungu.domain.errors import Conflict, Forbidden
from yungu.domain.job import JobState
from yungu.domain.tenancy import Principal
from yungu.engines.ledger.invoice import Invoice, InvoiceLine, Party, render_html

router = APIRouter(tags=["billing"])


def usage_json(r: UsageRow) -> dict[str, Any]:
    u = r.usage
    return {"id": u.id, "tenant_id": u.tenant_id, "job_id": u.job_id, "pool_id": u.pool_id, "provider": u.provider,
            "started_at": u.started_at.isoformat(), "ended_at": u.ended_at.isoformat(),
            "device_seconds": u.device_seconds, "compute_units": str(u.compute_units),
            "facility_kwh": str(u.facility_kwh), "tokens_in": u.tokens_in, "tokens_out": u.tokens_out,
            "amount": money(r.gross), "usage_period": r.usage_period, "booked_period": r.booked_period,
            "late_from": r.late_from or None, "booked": r.booked, "transfer_id": f"{u.id}:charge",
            "invoice": r.invoice_id}


class BudgetIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    job_id: str = Field(min_length=1, max_length=64)
    estimated: Money
    reason: Reason


PeriodPath = Path(pattern=PERIOD_PATTERN, description="YYYY-MM (UTC+8)")
PeriodQuery = Query(None, pattern=PERIOD_PATTERN, description="YYYY-MM (UTC+8)")
TenantQuery = Query(None, max_length=64)


@router.post("/billing/run")
def run(request: Request, p: Principal = Depends(require(*STAFF))) -> dict[str, int]:
    """One metering -> rating -> booking pass over finished jobs (also run by the billing loop)."""
    c = container(request)
    jobs = c.store.in_states([JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED])
    metered, booked, expired = services(c).loop.run_once(jobs)
    return {"metered": metered, "booked": booked, "expired": expired}


@router.post("/billing/periods/{period}/close")
def close_period(request: Request, period: str = PeriodPath, p: Principal = Depends(require(*STAFF))
                 ) -> dict[str, Any]:
    """Close a month and invoice it. A month that has not begun cannot be closed (409); the current
    month can, and usage booked after that goes to the next open month (``late_from``)."""
    from yungu.engines.ledger.rating import period_of

    c = container(request)
    current = period_of(c.clock.now())
    if period > current:
        raise Conflict(f"period {period} has not begun (now {current}); it cannot be closed / 账期尚未开始，不能结账")
    s = services(c)
    invoices = s.loop.close_period(period)
    return {"period": period, "invoices": [i.number for i in invoices]}


@router.get("/billing/invoices")
def invoices(request: Request, tenant: str | None = TenantQuery, period: str | None = PeriodQuery,
             p: Principal = Depends(require(*ANY_ROLE))) -> list[dict[str, Any]]:
    if not p.role.can_see_all_tenants():
        tenant = p.tenant_id or "\0"
    return services(container(request)).billing.invoices(tenant, period)


def _invoice(request: Request, number: str, p: Principal) -> dict[str, Any]:
    inv = services(container(request)).billing.invoice(number)
    if not p.may_access_tenant(str(inv["tenant_id"])):
        raise Forbidden("this invoice belongs to another tenant / 无权查看该发票")
    return inv


@router.get("/billing/invoices/{number}")
def invoice(request: Request, number: str, p: Principal = Depends(require(*ANY_ROLE))) -> dict[str, Any]:
    return _invoice(request, number, p)


@router.get("/billing/invoices/{number}/html", response_class=HTMLResponse)
def invoice_html(request: Request, number: str, p: Principal = Depends(require(*ANY_ROLE))) -> HTMLResponse:
    return HTMLResponse(render_html(invoice_from_json(_invoice(request, number, p))))


def invoice_from_json(d: dict[str, Any]) -> Invoice:
    from datetime import datetime
    from decimal import Decimal

    from yungu.engines.ledger.rating import to_minor

    lines = tuple(InvoiceLine(x["usage_id"], x["transfer_id"], x["item"], x["spec"], x["unit"], Decimal(x["quantity"]),
                              to_minor(Decimal(x["gross"])), to_minor(Decimal(x["net"])), to_minor(Decimal(x["tax"])),
                              Decimal(x["tax_rate"]), x["booked_period"], x.get("late_from", ""))
                  for x in d["lines"])
    return Invoice(d["number"], d["period"], datetime.fromisoformat(d["issued_at"]), Party(**d["buyer"]),
                   Party(**d["seller"]), lines, d["currency"])


@router.get("/billing/usage")
def usage(request: Request, tenant: str | None = TenantQuery, period: str | None = PeriodQuery,
          limit: int = Query(1000, ge=1, le=10_000),
          p: Principal = Depends(require(*ANY_ROLE))) -> list[dict[str, Any]]:
    if not p.role.can_see_all_tenants():
        tenant = p.tenant_id or "\0"
    return [usage_json(r) for r in services(container(request)).billing.usage(tenant, period, min(limit, 10_000))]


@router.post("/billing/tenants/{tenant_id}/reserve")
def reserve(request: Request, tenant_id: str, body: BudgetIn, p: Principal = Depends(require(*STAFF))
            ) -> dict[str, Any]:
    """Reserve a job's estimated cost against the tenant's wallet (what admission calls)."""
    from yungu.api.routes.ledger import minor

    c = container(request)
    c.store.tenant(tenant_id)  # 404 for an unknown tenant
    amount = minor(body.estimated, "CNY")
    st = audit(request, p, "billing.reserve", f"{tenant_id}:{body.job_id}", body.reason,
               lambda: services(c).budgets.reserve(tenant_id, body.job_id, amount))
    return {"ok": st.ok, "code": st.code.value, "reasons": list(st.reasons)}
