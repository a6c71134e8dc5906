"""Budgets hold end to end: a prepaid tenant's jobs reserve their estimated cost at admission,
jobs beyond the budget wait (held) until the wallet is topped up, and finished jobs are
metered and booked by the platform's billing runner — each exactly once."""

from __future__ import annotations

import time

from tests.api.conftest import Platform

# horinger-cpu: 0.12 CNY per CPU-hour; the estimate uses the dearest eligible pool (0.12).
JOB = {"name": "b", "command": "sleep 0.2", "estimated_duration_s": 3600, "resources": {"cpus": 10, "memory_gb": 1}}
EST = "1.20"  # 10 CPUs x 1 h x 0.12


def wallet(p: Platform, tid: str) -> dict:
    return p.http.get(f"/api/v1/ledger/accounts/tenant:{tid}:wallet", headers=p.admin).json()


def test_prepaid_budget_holds_jobs_until_topped_up_and_books_usage_once(sqlite_platform: Platform) -> None:
    p = sqlite_platform
    t = p.http.post("/api/v1/admin/tenants", json={"name": "prepaid-lab", "prepaid": True}, headers=p.admin).json()
    assert t["prepaid"] is True
    tid = t["id"]
    first = p.http.post("/api/v1/jobs", json={**JOB, "tenant_id": tid}, headers=p.admin).json()["id"]
    time.sleep(1.0)
    held = p.http.get(f"/api/v1/jobs/{first}", headers=p.admin).json()
    assert held["state"] == "pending" and "top" in held["reason"], held  # no wallet yet

    r = p.http.post(f"/api/v1/ledger/tenants/{tid}/topup", json={"id": "topup-1", "amount": "2.50", "reason": "bank transfer"}, headers=p.admin)
    assert r.status_code == 201, r.text
    second = p.http.post("/api/v1/jobs", json={**JOB, "tenant_id": tid}, headers=p.admin).json()["id"]
    third = p.http.post("/api/v1/jobs", json={**JOB, "tenant_id": tid}, headers=p.admin).json()["id"]
    states = {}
    for _ in range(100):
        states = {j: p.http.get(f"/api/v1/jobs/{j}", headers=p.admin).json() for j in (first, second, third)}
        if sum(s["state"] == "succeeded" for s in states.values()) == 2:
            break
        time.sleep(0.1)
    # 2.50 covers two reservations of 1.20, never three: one job is still held.
    assert sorted(s["state"] for s in states.values()) == ["pending", "succeeded", "succeeded"], states
    assert float(wallet(p, tid)["available"]) >= 0

    p.c.extras["billing_runner"].run_once()  # what the runner does every few seconds
    p.c.extras["billing_runner"].run_once()  # and again: nothing is booked twice
    usage = p.http.get("/api/v1/billing/usage", params={"tenant_id": tid}, headers=p.admin).json()
    items = usage["items"] if isinstance(usage, dict) else usage
    assert len([u for u in items if u["job_id"] in (first, second, third)]) == 2
    w = wallet(p, tid)
    # Two 0.2 s jobs cost well under a fen: nothing charged, and both reservations released.
    assert (w["balance"], w["available"], w["pending_debits"]) == ("2.50", "2.50", "0.00"), w
