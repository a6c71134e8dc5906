"""Budgets hold end to end, through the live loop and the embedded default world.

- A prepaid tenant's jobs reserve their estimated cost at admission; jobs beyond the budget
  wait (held) until the wallet is topped up; finished jobs are metered and booked by the
  platform's billing runner — each exactly once.
- Whatever the estimate — honest, understated or missing — and with or without a credit line,
  a prepaid tenant never spends more than its balance plus its credit limit: a running job's
  reservation is extended from the wallet while funds remain, then the job is stopped with a
  clear reason. Even a job that ignores SIGTERM (it runs on to its grace period) leaves the
  tenant within budget: the platform writes off what the stop took beyond its margin.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

from tests.api.conftest import Platform
from yungu.domain.job import PLATFORM_STOP
from yungu.engines.ledger.rating import to_minor

# horinger-cpu: 0.12 CNY per CPU-hour; the estimate uses the dearest eligible pool (0.12).
JOB = {"name": "b", "command": "sleep 0.2", "estimated_duration_s": 3600, "resources": {"cpus": 10, "memory_gb": 1}}
EST = "1.20"  # 10 CPUs x 1 h x 0.12 (+ a few seconds' margin, under a fen)


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

    p.c.billing_runner.run_once()  # what the runner does every few seconds
    p.c.billing_runner.run_once()  # and again: nothing is booked twice
    usage = p.http.get("/api/v1/billing/usage", params={"tenant_id": tid}, headers=p.admin).json()
    items = usage["items"] if isinstance(usage, dict) else usage
    assert len([u for u in items if u["job_id"] in (first, second, third)]) == 2
    w = wallet(p, tid)
    # Two 0.2 s jobs cost well under a fen: nothing charged, and both reservations released.
    assert (w["balance"], w["available"], w["pending_debits"]) == ("2.50", "2.50", "0.00"), w


# horinger-h800 at 9.80 CNY per device-hour: one replica with 8 accelerators costs about
# 2.18 fen a second, so a few tens of fen run out within a test's patience.
GPU = {"pool": "horinger-h800", "resources": {"cpus": 1, "memory_gb": 1, "accelerators": 8}}
SCENARIOS = {  # name: (balance, credit line, jobs: [(estimate s or None, command)])
    "honest": ("0.50", "0", [(4, "sleep 3")] * 10),
    "understated": ("0.40", "0", [(1, "sleep 60")]),
    "understated+credit": ("0.20", "0.20", [(1, "sleep 60")]),
    "missing": ("0.40", "0", [(None, "sleep 60")]),
    "ignores SIGTERM": ("0.40", "0", [(1, "trap '' TERM; sleep 60")]),
}


def fen(amount: str) -> int:
    return to_minor(Decimal(amount))


def _tenant(p: Platform, name: str, balance: str, credit: str) -> str:
    tid = p.http.post("/api/v1/admin/tenants", json={"name": f"budget-{name}", "prepaid": True},
                      headers=p.admin).json()["id"]
    r = p.http.post("/api/v1/ledger/accounts", json={"id": f"tenant:{tid}:wallet", "kind": "tenant_wallet",
                                                     "credit_limit": credit, "owner": tid, "name": "wallet"},
                    headers=p.admin)
    assert r.status_code == 201, r.text
    r = p.http.post(f"/api/v1/ledger/tenants/{tid}/topup",
                    json={"id": f"bank-{name}", "amount": balance, "reason": "bank transfer"}, headers=p.admin)
    assert r.status_code == 201, r.text
    return tid


def _run(p: Platform, name: str) -> dict[str, object]:
    balance, credit, jobs = SCENARIOS[name]
    tid = _tenant(p, name.replace(" ", "-").replace("+", "-"), balance, credit)
    ids = []
    for est, command in jobs:
        body = {"name": name, "command": command, "tenant_id": tid, **GPU}
        if est is not None:
            body["estimated_duration_s"] = est
        r = p.http.post("/api/v1/jobs", json=body, headers=p.admin)
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    deadline = time.monotonic() + 150
    settled = 0
    while True:  # until nothing runs and, with every finished job booked, the rest wait for money
        js = [p.http.get(f"/api/v1/jobs/{j}", headers=p.admin).json() for j in ids]
        active = [j for j in js if j["state"] in ("queued", "scheduled", "dispatched", "running")]
        waiting = [j for j in js if j["state"] == "pending"]
        if active or not all("budget" in j["reason"] or "预算" in j["reason"] for j in waiting):
            settled = 0
        else:
            settled += 1
            if settled == 3 or not waiting:
                break
            p.c.billing_runner.run_once()  # booking settles holds: admission may go on
            time.sleep(1.5)  # held jobs are retried every round
        assert time.monotonic() < deadline, js
        time.sleep(0.3)
    p.c.billing_runner.run_once()
    usage = [u for u in p.http.get("/api/v1/billing/usage", params={"tenant": tid}, headers=p.admin).json()
             if u["job_id"] in ids]
    ran = [j for j in js if j["state"] in ("succeeded", "failed", "cancelled")]
    assert sorted(u["job_id"] for u in usage) == sorted(j["id"] for j in ran)  # metered, once each
    assert all(u["booked"] for u in usage), usage
    w = wallet(p, tid)
    arrears = p.http.get(f"/api/v1/ledger/accounts/tenant:{tid}:arrears", headers=p.admin).json()
    return {"tenant": tid, "jobs": js, "usage": usage, "wallet": w, "arrears": arrears,
            "budget": fen(balance) + fen(credit), "spent": sum(fen(u["amount"]) for u in usage),
            "written_off": sum(fen(u["written_off"]) for u in usage)}


def test_prepaid_spend_never_exceeds_balance_plus_credit_whatever_the_estimate(sqlite_platform: Platform) -> None:
    p = sqlite_platform
    with ThreadPoolExecutor(len(SCENARIOS)) as pool:  # all at once: the tenants share nothing
        results = dict(zip(SCENARIOS, pool.map(lambda n: _run(p, n), SCENARIOS), strict=True))
    print("\nscenario            budget  spent  overspend  written off  jobs ran/stopped/held")
    for name, r in results.items():
        js = r["jobs"]
        stopped = [j for j in js if j["state"] == "cancelled"]  # type: ignore[union-attr]
        held = [j for j in js if j["state"] == "pending"]  # type: ignore[union-attr]
        print(f"{name:<19} {r['budget']:>6} {r['spent']:>6} {r['spent'] - r['budget']:>10} "  # type: ignore[operator]
              f"{r['written_off']:>12}  {len(js) - len(held)}/{len(stopped)}/{len(held)}")  # type: ignore[arg-type]
        assert r["spent"] <= r["budget"], (name, r)  # type: ignore[operator]  # the cap holds
        w = r["wallet"]
        assert fen(w["balance"]) >= -fen(SCENARIOS[name][1]), w  # type: ignore[index]  # within the credit line
        assert fen(w["pending_debits"]) == 0, w  # type: ignore[index]  # every reservation settled
        assert fen(r["arrears"]["balance"]) == 0  # type: ignore[index]  # a prepaid tenant owes nothing
        for j in stopped:
            assert j["reason"].startswith(PLATFORM_STOP) and "budget exhausted" in j["reason"], j
    honest = results["honest"]["jobs"]
    assert {j["state"] for j in honest} <= {"succeeded", "pending"}  # type: ignore[union-attr]  # never cut short
    assert any(j["state"] == "pending" for j in honest)  # type: ignore[union-attr]  # the rest wait for money
    for name in ("understated", "understated+credit", "missing", "ignores SIGTERM"):
        [job] = results[name]["jobs"]  # type: ignore[misc]
        assert job["state"] == "cancelled", (name, job)  # stopped long before its 60 s
        # used most of the budget before the stop (not stopped at the first extension)
        assert results[name]["spent"] >= results[name]["budget"] * 0.6, (name, results[name])  # type: ignore[operator]
    assert results["ignores SIGTERM"]["written_off"] > 0  # its grace period ran on the platform's money
