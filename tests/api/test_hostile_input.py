"""Hostile input gets a clear 4xx, a problem+json body, and changes nothing (issue 10).

Every case runs against a real ``yungu server`` process with the embedded default world (the
one users get), over real HTTP (so ``Transfer-Encoding: chunked`` really is chunked), and
counts the rows of every table of its SQLite database before and after: a refused request
writes nothing anywhere.
"""

from __future__ import annotations

import sqlite3
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.server import ServerProcess

FUTURE = "2030-01-01T00:00:00Z"
PRODUCT = {"region": "beijing", "accelerator_class": "intelligent", "window_start": FUTURE,
           "window_end": "2030-01-01T08:00:00Z", "reserve_price": "1.00"}


@dataclass
class World:
    srv: ServerProcess
    http: httpx.Client
    admin: dict[str, str]
    tenant: dict[str, str]
    tenant_id: str
    provider: dict[str, str]  # acts for "Beijing Cloud" (pools beijing-a800, beijing-cpu)
    node_key: str  # node "n-bj" in beijing-cpu

    def counts(self) -> dict[str, int]:
        db = sqlite3.connect(f"file:{self.srv.data_dir / 'yungu.db'}?mode=ro", uri=True)
        try:
            names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            return {n: int(db.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0]) for n in names}
        finally:
            db.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    data = tmp_path_factory.mktemp("hostile") / "data"
    srv = ServerProcess(data).start()
    http = httpx.Client(base_url=srv.url + "/api/v1", timeout=30)
    admin = {"Authorization": f"Bearer {srv.admin_key}"}
    t = http.post("/admin/tenants", json={"name": "hostile-lab"}, headers=admin).json()
    tk = http.post("/admin/keys", json={"role": "tenant", "tenant_id": t["id"]}, headers=admin).json()["secret"]
    pk = http.post("/admin/keys", json={"role": "provider", "provider": "Beijing Cloud"}, headers=admin).json()
    provider = {"Authorization": f"Bearer {pk['secret']}"}
    node = http.post("/telemetry/nodes", json={"node_id": "n-bj", "pool_id": "beijing-cpu"}, headers=provider)
    assert node.status_code == 201, node.text
    top = http.post(f"/ledger/tenants/{t['id']}/topup", headers=admin,
                    json={"id": "bank-1", "amount": "100.00", "reason": "bank transfer 1"})
    assert top.status_code == 201, top.text
    try:
        yield World(srv, http, admin, {"Authorization": f"Bearer {tk}"}, t["id"], provider, node.json()["node_key"])
    finally:
        http.close()
        srv.stop()


def job(**fields: Any) -> dict[str, Any]:
    return {"name": "x", "command": "true", **fields}


def chunked(prefix: bytes, filler: int, suffix: bytes) -> Callable[[], Iterator[bytes]]:
    def gen() -> Iterator[bytes]:
        yield prefix
        for _ in range(filler):
            yield b"a" * (1 << 20)
        yield suffix
    return gen


SAMPLE = {"seq": 1, "ts": 1_700_000_000, "cpu_utilisation": 0.5, "cpu_power_w": 100.0}
BAD_MONEY = [True, " 1.00 ", "１.００", "1e400", "NaN", "Infinity", "-Infinity", "1.001", 1.5, 1000.0, "", "+1",
             "1,00", "0x10", "1_000", 10**20, None, [], {}]

# (case id, method, path, who, json body or raw bytes or a generator, expected status, text in the problem)
CASES: list[tuple[str, str, str, str, Any, int, str]] = [
    # size: the 1 MiB limit holds for chunked bodies too (counted as they stream)
    ("chunked-8MiB-label", "POST", "/jobs", "tenant", chunked(b'{"name":"x","command":"true","labels":{"a":"', 8,
                                                              b'"}}'), 413, "limited to"),
    ("chunked-30MiB", "POST", "/jobs", "tenant", chunked(b'{"name":"', 30, b'"}'), 413, "limited to"),
    # telemetry: no valid node key -> 401, stored nowhere
    ("ingest-no-key", "POST", "/telemetry/ingest", "nobody", {"node_id": "n-bj", "samples": [SAMPLE] * 50}, 401,
     "node key"),
    ("ingest-wrong-key", "POST", "/telemetry/ingest", "badnode", {"node_id": "n-bj", "samples": [SAMPLE]}, 401,
     "node key"),
    ("ingest-unknown-node", "POST", "/telemetry/ingest", "node", {"node_id": "ghost", "samples": [SAMPLE]}, 401,
     "node key"),
    # the four 500s of the issue
    ("verify-empty", "POST", "/clearing/verify", "admin", {"body": {}, "signatures": {}, "public_keys": {}}, 422,
     "positions"),
    ("verify-bad-base64", "POST", "/clearing/verify", "admin",
     {"body": {"positions": {"a": 0}}, "signatures": {"a": "!!"}, "public_keys": {"a": "%%"}}, 422, "base64"),
    ("rollup-nan", "POST", "/telemetry/rollup?raw_days=nan", "admin", None, 422, "raw_days"),
    ("rollup-1e55", "POST", "/telemetry/rollup?raw_days=1e55", "admin", None, 422, "raw_days"),
    ("rollup-inf", "POST", "/telemetry/rollup?raw_days=inf", "admin", None, 422, "raw_days"),
    ("rollup-negative", "POST", "/telemetry/rollup?raw_days=-1", "admin", None, 422, "raw_days"),
    ("alerts-inf", "GET", "/alerts?silent_after_s=inf", "admin", None, 422, "silent_after_s"),
    ("sla-target-abc", "POST", "/market/sla-credits", "admin",
     {"id": "s1", "tenant_id": "T", "provider": "Beijing Cloud", "period": "2026-01", "up_seconds": 1,
      "total_seconds": 2, "charge": "1.00", "target": "abc", "reason": "outage"}, 422, "ratio"),
    ("transfer-huge-timeout", "POST", "/ledger/transfers", "admin",
     {"id": "p1", "debit_account": "sys:cny:external", "credit_account": "W", "amount": "1.00", "kind": "pending",
      "timeout_s": 10**18, "reason": "hold"}, 422, "timeout_s"),
    # job validation at submission
    ("nul-command", "POST", "/jobs", "tenant", job(command="echo \u0000 hi"), 422, "NUL"),
    ("nul-name", "POST", "/jobs", "tenant", job(name="a\u0000b"), 422, "NUL"),
    ("nul-label", "POST", "/jobs", "tenant", job(labels={"team": "a\u0000"}), 422, "NUL"),
    ("nul-env-value", "POST", "/jobs", "tenant", job(env={"A": "\u0000"}), 422, "NUL"),
    ("nul-raw-byte", "POST", "/jobs", "tenant", b'{"name":"x","command":"true\x00"}', 422, ""),
    ("nul-path", "GET", "/jobs/%00", "tenant", None, 422, "NUL"),
    ("nul-query", "GET", "/jobs?tenant_id=a%00", "admin", None, 422, "NUL"),
    ("env-space", "POST", "/jobs", "tenant", job(env={"A B": "1"}), 422, "POSIX"),
    ("env-digit-first", "POST", "/jobs", "tenant", job(env={"1A": "1"}), 422, "POSIX"),
    ("env-equals", "POST", "/jobs", "tenant", job(env={"A=B": "1"}), 422, "POSIX"),
    ("env-empty", "POST", "/jobs", "tenant", job(env={"": "1"}), 422, "POSIX"),
    ("env-unicode", "POST", "/jobs", "tenant", job(env={"ÄB": "1"}), 422, "POSIX"),
    ("env-reserved", "POST", "/jobs", "tenant", job(env={"YUNGU_TENANT": "x"}), 422, "YUNGU_"),
    ("env-too-many", "POST", "/jobs", "tenant", job(env={f"V{i}": "1" for i in range(257)}), 422, "env"),
    ("env-too-big", "POST", "/jobs", "tenant", job(env={f"V{i}": "x" * 30_000 for i in range(5)}), 422,
     "environment"),
    ("label-key-bad", "POST", "/jobs", "tenant", job(labels={"a b": "1"}), 422, "label key"),
    ("label-key-long", "POST", "/jobs", "tenant", job(labels={"k" * 64: "1"}), 422, "label key"),
    ("label-value-long", "POST", "/jobs", "tenant", job(labels={"k": "v" * 257}), 422, "labels"),
    ("labels-too-many", "POST", "/jobs", "tenant", job(labels={f"k{i}": "v" for i in range(65)}), 422, "labels"),
    ("command-too-long", "POST", "/jobs", "tenant", job(command="x" * 70_000), 422, "command"),
    ("replicas-over-executor", "POST", "/jobs", "tenant", job(replicas=300), 422, "executor's limit of 256"),
    ("replicas-over-max", "POST", "/jobs", "tenant", job(replicas=5000), 422, "replicas"),
    ("gang-no-pool-holds", "POST", "/jobs", "tenant", job(resources={"cpus": 4, "accelerators": 8,
                                                                    "accelerator_types": ["H100"]}, replicas=25),
     422, "no pool can ever run"),
    ("deadline-past", "POST", "/jobs", "tenant", job(deadline="2020-01-01T00:00:00Z"), 422, "not in the future"),
    ("deadline-naive", "POST", "/jobs", "tenant", job(deadline="2030-01-01T00:00:00"), 422, "time zone"),
    ("deadline-epoch-int", "POST", "/jobs", "tenant", job(deadline=0), 422, "ISO 8601"),
    ("earliest-start-far", "POST", "/jobs", "tenant", job(earliest_start="8999-12-31T00:00:00Z"), 422,
     "more than 100 years"),
    ("time-year-9999", "POST", "/jobs", "tenant", job(earliest_start="9999-12-31T23:00:00-14:00"), 422, "years"),
    ("window-year-9999", "POST", "/market/orders", "tenant", {**PRODUCT, "id": "w1", "side": "bid", "quantity": 1,
                                                           "price": "2.00", "window_start": "9999-12-31T00:00:00Z",
                                                           "window_end": "9999-12-31T08:00:00Z"}, 422, "years"),
    ("series-year-1", "GET", "/telemetry/series?scope=site&id=beijing-dc1&end=0001-01-01T00:00:00Z", "admin", None, 422,
     "years"),
    ("cert-month-9999", "POST", "/certs/tenants/TENANT/9999-12", "admin", None, 422, "years"),
    ("weight-nan-text", "POST", "/jobs", "tenant", b'{"name":"x","command":"true","objective_weights":{"cost":NaN}}',
     422, "objective weight"),
    ("priority-bool", "POST", "/jobs", "tenant", job(priority=True), 422, "priority"),
    ("unknown-field", "POST", "/jobs", "tenant", job(evil=1), 422, "evil"),
    ("bad-json", "POST", "/jobs", "tenant", b"{not json", 422, "JSON"),
    ("deep-json", "POST", "/jobs", "tenant", b"[" * 100_000 + b"]" * 100_000, 400, "parsing"),
    # money: overdraft is 402, never 429; periods validated
    ("overdraft", "POST", "/ledger/transfers", "admin",
     {"id": "od-1", "debit_account": "WALLET", "credit_account": "sys:cny:revenue", "amount": "100.01",
      "reason": "correction"}, 402, "exceeds_limit"),
    ("topup-no-reason", "POST", "/ledger/tenants/TENANT/topup", "admin", {"id": "bank-2", "amount": "1.00"}, 422,
     "reason"),
    ("topup-blank-reason", "POST", "/ledger/tenants/TENANT/topup", "admin",
     {"id": "bank-2", "amount": "1.00", "reason": "   "}, 422, "reason"),
    ("topup-unknown-tenant", "POST", "/ledger/tenants/nobody/topup", "admin",
     {"id": "bank-3", "amount": "1.00", "reason": "bank"}, 404, "tenant"),
    ("period-13", "POST", "/billing/periods/2026-13/close", "admin", None, 422, "period"),
    ("period-short", "POST", "/billing/periods/2026-1/close", "admin", None, 422, "period"),
    ("period-future", "POST", "/billing/periods/2099-01/close", "admin", None, 409, "has not begun"),
    ("usage-period-bad", "GET", "/billing/usage?period=2026-00", "admin", None, 422, "period"),
    ("statement-period-bad", "POST", "/clearing/statements", "admin", {"period": "2026-13", "obligations": []}, 422,
     "period"),
    # provider keys act only for their own provider and pools
    ("provider-bids", "POST", "/market/orders", "provider", {**PRODUCT, "id": "o1", "side": "bid",
                                                             "party": "TENANT", "quantity": 1, "price": "2.00"},
     403, "providers ask"),
    ("provider-asks-other-pool", "POST", "/market/orders", "provider",
     {**PRODUCT, "id": "o2", "side": "ask", "quantity": 1, "price": "2.00", "pool_id": "suzhou-h100"}, 403,
     "not one of this provider's pools"),
    ("provider-asks-as-other", "POST", "/market/orders", "provider",
     {**PRODUCT, "id": "o3", "side": "ask", "party": "Suzhou Cloud", "quantity": 1, "price": "2.00",
      "pool_id": "beijing-a800"}, 403, "own provider"),
    ("provider-node-other-pool", "POST", "/telemetry/nodes", "provider", {"node_id": "n-x", "pool_id": "suzhou-cpu"},
     403, "not one of this provider's pools"),
    ("tenant-bids-as-other", "POST", "/market/orders", "tenant",
     {**PRODUCT, "id": "o4", "side": "bid", "party": "someone-else", "quantity": 1, "price": "2.00"}, 403,
     "own name"),
    ("tenant-transfer", "POST", "/ledger/transfers", "tenant",
     {"id": "t1", "debit_account": "sys:cny:external", "credit_account": "WALLET", "amount": "1.00",
      "reason": "free money"}, 403, "role"),
    # authentication
    ("no-key", "GET", "/jobs", "nobody", None, 401, "missing API key"),
    ("bad-key", "GET", "/jobs", "badkey", None, 401, "invalid"),
    ("huge-key", "GET", "/jobs", "hugekey", None, 401, "invalid"),
    # odd ids answer 404, not 500
    ("long-job-id", "GET", "/jobs/" + "x" * 5000, "tenant", None, 404, "no job"),
    ("unicode-invoice", "GET", "/billing/invoices/%E2%98%83", "admin", None, 404, ""),
]
for _i, _v in enumerate(BAD_MONEY):
    CASES += [
        (f"money-topup-{_i}", "POST", "/ledger/tenants/TENANT/topup", "admin",
         {"id": f"bank-m{_i}", "amount": _v, "reason": "bank transfer"}, 422, "amount"),
        *([(f"money-job-{_i}", "POST", "/jobs", "tenant", job(max_price_cny_per_hour=_v), 422, "max_price")]
          if _v is not None else []),  # an absent price is no limit
        (f"money-order-{_i}", "POST", "/market/orders", "tenant",
         {**PRODUCT, "id": f"b-m{_i}", "side": "bid", "quantity": 1, "price": _v}, 422, "price"),
        (f"money-statement-{_i}", "POST", "/clearing/statements", "admin",
         {"period": "2026-01", "obligations": [{"debtor": "a", "creditor": "b", "amount": _v}]}, 422, "amount"),
    ]


def _who(w: World, who: str) -> dict[str, str]:
    return {"admin": w.admin, "tenant": w.tenant, "provider": w.provider, "nobody": {},
            "badkey": {"Authorization": "Bearer yg_not-a-key"}, "hugekey": {"Authorization": "Bearer " + "k" * 10_000},
            "node": {"X-Node-Key": w.node_key}, "badnode": {"X-Node-Key": "ygn_wrong"}}[who]


def _fill(v: Any, w: World) -> Any:
    if isinstance(v, str):
        return (v.replace("WALLET", f"tenant:{w.tenant_id}:wallet").replace("TENANT", w.tenant_id))
    if isinstance(v, dict):
        return {k: _fill(x, w) for k, x in v.items()}
    if isinstance(v, list):
        return [_fill(x, w) for x in v]
    return v


@pytest.mark.parametrize(("method", "path", "who", "body", "status", "needle"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_input_is_refused_with_a_problem_and_changes_nothing(
        world: World, method: str, path: str, who: str, body: Any, status: int, needle: str) -> None:
    before = world.counts()
    headers = dict(_who(world, who))
    kwargs: dict[str, Any] = {}
    if callable(body):
        kwargs["content"] = body()
        headers["content-type"] = "application/json"
    elif isinstance(body, bytes):
        kwargs["content"] = body
        headers["content-type"] = "application/json"
    elif body is not None:
        kwargs["json"] = _fill(body, world)
    r = world.http.request(method, _fill(path, world), headers=headers, **kwargs)
    assert r.status_code == status, r.text[:500]
    assert r.headers["content-type"] == "application/problem+json"
    p = r.json()
    assert {"type", "title", "status", "detail", "code"} <= p.keys() and p["status"] == status
    assert needle.lower() in r.text.lower(), r.text[:500]
    assert "Traceback" not in r.text and "Error(" not in r.text
    assert world.counts() == before, "a refused request wrote to the database"


def test_ingest_naming_a_job_its_executor_does_not_run_is_refused(world: World) -> None:
    """A node reports energy only for jobs its executor runs: a job not placed anywhere (it
    waits for tomorrow) cannot be charged energy by any node. (In the embedded world one local
    executor runs every site's jobs, so its nodes meter jobs of every pool.)"""
    from datetime import UTC, datetime, timedelta

    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    jid = world.http.post("/jobs", json=job(command="sleep 30", earliest_start=later),
                          headers=world.tenant).json()["id"]
    before = world.counts()
    s = {**SAMPLE, "jobs": [{"job_id": jid, "cpu_seconds": 1.0, "cores": 1}]}
    r = world.http.post("/telemetry/ingest", json={"node_id": "n-bj", "samples": [s]},
                        headers={"X-Node-Key": world.node_key})
    assert r.status_code == 403 and "does not run on this node's executor" in r.json()["detail"], r.text
    after = world.counts()
    assert {k: v for k, v in after.items() if k.startswith("telemetry")} == {
        k: v for k, v in before.items() if k.startswith("telemetry")}
    world.http.post(f"/jobs/{jid}/cancel", headers=world.tenant)


def test_money_movements_need_a_reason_and_are_audited(world: World) -> None:
    r = world.http.post(f"/ledger/tenants/{world.tenant_id}/topup", headers=world.admin,
                        json={"id": "bank-audit", "amount": "5.00", "reason": "bank transfer 88120"})
    assert r.status_code == 201, r.text
    items = world.http.get("/admin/audit", headers=world.admin).json()["items"]
    mine = [e for e in items if e["subject"].endswith(":bank-audit")]
    assert len(mine) == 1 and mine[0]["reason"] == "bank transfer 88120" and mine[0]["action"] == "ledger.topup"
    assert mine[0]["role"] == "admin" and mine[0]["outcome"] == "ok" and mine[0]["key_id"]
    assert world.http.get("/admin/audit", headers=world.tenant).status_code == 403


def test_data_dir_files_are_private(world: World) -> None:
    d = world.srv.data_dir
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    for name in ("yungu.db", "admin.key"):
        assert stat.S_IMODE((d / name).stat().st_mode) == 0o600, name
    for p in Path(d).rglob("*"):
        mode = stat.S_IMODE(p.stat().st_mode)
        if p.is_dir():
            assert mode & 0o077 == 0, f"{p} is {oct(mode)}"
        elif p.suffix in (".db", ".key", ".pem") or p.name.startswith("yungu.db"):
            assert mode == 0o600, f"{p} is {oct(mode)}"


def test_html_answers_carry_security_headers(world: World) -> None:
    r = world.http.get("/docs")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY" and r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"
    j = world.http.get("/health")
    assert j.headers["x-content-type-options"] == "nosniff"


def test_wrong_method_is_405_with_allow(world: World) -> None:
    r = world.http.delete("/regions", headers=world.admin)
    assert r.status_code == 405 and r.headers["content-type"] == "application/problem+json"
    assert "GET" in r.headers["allow"]
