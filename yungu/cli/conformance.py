"""A conformance suite for the federation protocol: does the platform at a URL speak Yungu?

It acts as a peer platform ("the tester"), with its own Ed25519 identity, and checks what
another region's implementation must do: signatures (unsigned, tampered, replayed, wrongly
keyed and stale requests refused; responses signed and bound to the request), offers,
delegation (idempotent, refusals with a reason, fencing of lower attempts), leases, status in
batches, cancellation, reconciliation, signed receipts within the offered price, and that one
platform cannot see another's jobs. Run::

    yungu peer conformance http://HOST:PORT [--admin-key KEY]

With ``--admin-key`` (a Yungu admin key of the target) the tester registers itself as a peer;
otherwise register the printed id and key with the target's operator first.
"""

from __future__ import annotations

import base64
import json
import secrets
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from yungu.adapters.federation.httpsig import Message, SignatureRefused, Signer
from yungu.adapters.federation.identity import Identity, fingerprint, key_id, load_public, verify_body
from yungu.engines.federation.messages import UsageReceipt, iso
from yungu.engines.federation.receipts import max_amount_fen

V1 = "/federation/v1"


@dataclass
class Tester:
    url: str
    identity: Identity
    target_keys: list[str] = field(default_factory=list)
    target_id: str = ""
    clock_offset: timedelta = timedelta(0)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.clock_offset

    def signer(self, private: Ed25519PrivateKey | None = None) -> Signer:
        key = private or self.identity.key
        kid = key_id(self.identity.platform_id, key.public_key())

        def public(k: str) -> Any:
            for b64 in self.target_keys:
                pub = load_public(b64)
                if k == f"{self.target_id}#{fingerprint(pub)}":
                    return pub
            return None

        return Signer(lambda: kid, lambda k: key if k == kid else None, public, self.now, 60.0, 0.0)

    def raw(self, method: str, path: str, body: dict[str, Any] | None = None, *, signer: Signer | None = None,
            mutate: Callable[[bytes, dict[str, str]], tuple[bytes, dict[str, str]]] | None = None,
            sign: bool = True) -> tuple[httpx.Response, Message]:
        url = self.url + path
        data = b"" if body is None else json.dumps(body).encode()
        s = signer or self.signer()
        headers = s.sign_request(method, url, data) if sign else {"Content-Type": "application/json"}
        if mutate:
            data, headers = mutate(data, headers)
        r = httpx.request(method, url, content=data, headers=headers, timeout=10, trust_env=False)
        return r, Message(method, url, dict(headers))

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        r, req = self.raw(method, path, body)
        s = self.signer()
        s.verify_response(r.status_code, dict(r.headers), r.content, req, lambda k: k.startswith(self.target_id + "#"))
        if r.status_code >= 400:
            raise AssertionError(f"{method} {path}: HTTP {r.status_code}: {r.text[:300]}")
        doc = r.json()
        assert isinstance(doc, dict)
        return doc


class Suite:
    def __init__(self, tester: Tester, other: Tester | None, out: Callable[[str], None]) -> None:
        self.t, self.other, self.out = tester, other, out
        self.passed = self.failed = 0

    def check(self, name: str, fn: Callable[[], None]) -> None:
        try:
            fn()
            self.passed += 1
            self.out(f"PASS  {name}")
        except (AssertionError, httpx.HTTPError, SignatureRefused, KeyError, ValueError) as exc:
            self.failed += 1
            self.out(f"FAIL  {name}: {type(exc).__name__}: {str(exc)[:300]}")

    # ---- helpers
    def delegation(self, job: str, attempt: int, pool: str, command: str, gpus: int = 0,
                   lease_s: float | None = None, origin: str | None = None) -> dict[str, Any]:
        offer = self.offers[pool]
        lease_s = self.ttl if lease_s is None else lease_s
        return {"origin": origin or self.t.identity.platform_id, "origin_job_id": job, "attempt": attempt,
                "pool_id": pool, "tenant_ref": "conformance",
                "spec": {"name": f"conformance {job}", "command": command, "replicas": 1, "cpus": 1, "memory_gb": 1,
                         "accelerators": gpus, "env": {}, "time_limit_s": None, "estimated_duration_s": 5},
                "lease_expires_at": iso(self.t.now() + timedelta(seconds=lease_s)), "offer_id": offer["offer_id"],
                "price_cny_per_device_hour": offer["price_cny_per_device_hour"],
                "price_cny_per_cpu_hour": offer["price_cny_per_cpu_hour"]}

    def wait_status(self, rid: str, phases: set[str], timeout: float = 60.0, renew: bool = True) -> dict[str, Any]:
        """Poll (renewing the lease, as an origin does) until the job reaches one of ``phases``."""
        deadline = time.monotonic() + timeout
        while True:
            if renew:
                exp = iso(self.t.now() + timedelta(seconds=self.ttl))
                self.t.call("POST", V1 + "/leases", {"expires_at": exp, "ids": [rid]})
            st = self.t.call("POST", V1 + "/status", {"ids": [rid]})["statuses"][0]
            if st["phase"] in phases or time.monotonic() > deadline:
                return st  # type: ignore[no-any-return]
            time.sleep(0.3)

    # ---- the checks
    def run(self) -> bool:
        t = self.t
        self.offers: dict[str, dict[str, Any]] = {}
        job = "conf-" + secrets.token_hex(6)

        def discovery() -> None:
            doc = httpx.get(t.url + V1 + "/platform", timeout=10, trust_env=False).json()
            assert doc.get("protocol", "").startswith("yungu-federation/"), doc
            assert doc.get("platform_id") and doc.get("keys"), doc
            t.target_id = doc["platform_id"]
            lease = doc.get("lease") or {}
            self.ttl = float(lease.get("ttl_s", 30))
            self.short_lease = float(lease.get("max_clock_skew_s", 5)) + float(lease.get("stop_budget_s", 7)) + 3
            t.target_keys = [k["public_key"] for k in doc["keys"]]
            if self.other:
                self.other.target_id, self.other.target_keys = t.target_id, t.target_keys

        def refused(mutate: Callable[[bytes, dict[str, str]], tuple[bytes, dict[str, str]]] | None = None,
                    sign: bool = True, signer: Signer | None = None) -> Callable[[], None]:
            def run() -> None:
                r, _ = t.raw("POST", V1 + "/status", {"ids": [f"{job}-probe.0"]}, mutate=mutate, sign=sign,
                             signer=signer)
                assert r.status_code == 401, f"HTTP {r.status_code}: {r.text[:200]}"
            return run

        def tamper(data: bytes, h: dict[str, str]) -> tuple[bytes, dict[str, str]]:
            return data.replace(b".0", b".1"), h

        def replay() -> None:
            r1, req = t.raw("POST", V1 + "/status", {"ids": [f"{job}-probe.0"]})
            assert r1.status_code == 200, r1.text[:200]
            r2 = httpx.post(req.url, content=json.dumps({"ids": [f"{job}-probe.0"]}).encode(), headers=req.headers,
                            timeout=10, trust_env=False)
            assert r2.status_code == 401, f"replay answered HTTP {r2.status_code}"

        def stale() -> None:
            old = Tester(t.url, t.identity, t.target_keys, t.target_id, timedelta(minutes=-10))
            r, _ = old.raw("POST", V1 + "/status", {"ids": [f"{job}-probe.0"]})
            assert r.status_code == 401, f"HTTP {r.status_code}"

        def offers() -> None:
            doc = t.call("GET", V1 + "/offers")
            sig = doc.pop("signature", "")
            assert verify_body(doc, sig, t.target_keys), "offer set not signed by the platform's key"
            for o in doc["offers"]:
                assert o["platform_id"] == t.target_id and o["expires_at"] > o["issued_at"]
                self.offers[o["pool_id"]] = o
            assert any(o["cpus_free"] > 0 for o in self.offers.values()), "no free capacity offered"

        def cpu_pool() -> str:
            return next(p for p, o in self.offers.items() if o["cpus_free"] > 0)

        def refusal() -> None:
            d = self.delegation(job + "-x", 0, cpu_pool(), "true")
            d["pool_id"] = "no-such-pool"
            res = t.call("POST", V1 + "/delegations", {"delegations": [d]})["results"][0]
            assert res["accepted"] is False and res["reason"], res

        def delegate_idempotent() -> None:
            d = self.delegation(job, 0, cpu_pool(), "sleep 2; echo conformance")
            a = t.call("POST", V1 + "/delegations", {"delegations": [d]})["results"][0]
            b = t.call("POST", V1 + "/delegations", {"delegations": [d]})["results"][0]
            assert a["accepted"] and a == b, (a, b)

        def fencing() -> None:
            j2 = job + "-f"
            hi = t.call("POST", V1 + "/delegations", {"delegations": [self.delegation(j2, 1, cpu_pool(), "sleep 1")]})
            lo = t.call("POST", V1 + "/delegations", {"delegations": [self.delegation(j2, 0, cpu_pool(), "sleep 1")]})
            assert hi["results"][0]["accepted"] and not lo["results"][0]["accepted"], (hi, lo)
            assert "fenced" in lo["results"][0]["reason"]

        def leases() -> None:
            exp = iso(t.now() + timedelta(seconds=self.ttl))
            res = t.call("POST", V1 + "/leases", {"expires_at": exp, "ids": [f"{job}.0", f"{job}-nope.0"]})["results"]
            assert res[f"{job}.0"] in ("ok", "done") and res[f"{job}-nope.0"] == "unknown", res

        def receipt() -> None:
            st = self.wait_status(f"{job}.0", {"succeeded", "failed", "cancelled", "lost"})
            assert st["phase"] == "succeeded", st
            env = st["receipt"]
            assert env and verify_body(env["body"], env["signature"], t.target_keys), "receipt not signed"
            r = UsageReceipt.from_dict(env["body"])
            price = self.offers[cpu_pool()]["price_cny_per_cpu_hour"]
            from decimal import Decimal

            assert r.origin == t.identity.platform_id and r.issuer == t.target_id and r.request_id == f"{job}.0"
            assert r.amount_fen <= max_amount_fen(r.device_seconds, Decimal(price)), r
            assert t.call("POST", V1 + "/receipts/ack", {"ids": [r.receipt_id]})["acked"] == 1

        def isolation() -> None:
            assert self.other is not None
            j = job + "-i"
            t.call("POST", V1 + "/delegations", {"delegations": [self.delegation(j, 0, cpu_pool(), "sleep 3")]})
            st = self.other.call("POST", V1 + "/status", {"ids": [f"{j}.0"]})["statuses"][0]
            assert st["phase"] == "unknown", f"another platform sees our job: {st}"
            self.other.call("POST", V1 + "/cancel", {"ids": [f"{j}.0"]})
            assert self.other.call("POST", V1 + "/reconcile", {"live": []})["stopped"] == []
            st = self.wait_status(f"{j}.0", {"succeeded", "cancelled", "failed", "lost"}, 30)
            assert st["phase"] == "succeeded", st
            res = self.other.call("POST", V1 + "/receipts/ack", {"ids": [f"rc:{t.target_id}:{job}.0"]})
            assert res["acked"] == 0

        def cancel() -> None:
            j = job + "-c"
            t.call("POST", V1 + "/delegations", {"delegations": [self.delegation(j, 0, cpu_pool(), "sleep 60")]})
            self.wait_status(f"{j}.0", {"running"}, 30)
            t.call("POST", V1 + "/cancel", {"ids": [f"{j}.0"]})
            st = self.wait_status(f"{j}.0", {"cancelled", "failed", "lost"}, 30)
            assert st["phase"] in ("cancelled", "lost"), st

        def reconcile() -> None:
            j = job + "-r"
            t.call("POST", V1 + "/delegations", {"delegations": [self.delegation(j, 0, cpu_pool(), "sleep 60")]})
            doc = t.call("POST", V1 + "/reconcile", {"live": []})
            assert f"{j}.0" in doc["stopped"], doc
            st = self.wait_status(f"{j}.0", {"cancelled", "failed", "lost"}, 30)
            assert st["phase"] != "running", st

        def lease_expiry() -> None:
            j = job + "-e"
            t.call("POST", V1 + "/delegations", {"delegations": [self.delegation(j, 0, cpu_pool(), "sleep 120",
                                                                                 lease_s=self.short_lease)]})
            st = self.wait_status(f"{j}.0", {"cancelled", "failed", "lost", "succeeded"}, self.short_lease + 30,
                                  renew=False)
            assert st["phase"] in ("lost", "cancelled"), f"a job past its lease is still {st['phase']}"

        self.check("discovery: GET /platform names the platform, its keys and protocol", discovery)
        self.check("an unsigned request is refused (401)", refused(sign=False))
        self.check("a tampered body is refused (401)", refused(mutate=tamper))
        wrong = self.t.signer(Ed25519PrivateKey.generate())
        self.check("a request signed with the wrong key is refused (401)", refused(signer=wrong))
        self.check("a replayed request is refused (401)", replay)
        self.check("a stale signature is refused (401)", stale)
        self.check("offers are signed, expiring, and parse", offers)
        self.check("a delegation to an unknown pool is refused at once with a reason", refusal)
        self.check("delegation is idempotent on (origin, job, attempt)", delegate_idempotent)
        self.check("a lower attempt of a job is fenced by a higher one", fencing)
        self.check("leases renew; an unknown delegation answers 'unknown'", leases)
        self.check("a finished job carries a signed receipt within the offered price; ack", receipt)
        if self.other is not None:
            self.check("another platform cannot read, cancel or ack our jobs", isolation)
        self.check("cancel stops a running delegated job", cancel)
        self.check("reconcile stops attempts the origin does not name as live", reconcile)
        self.check("a job whose lease is not renewed is stopped", lease_expiry)
        self.out(f"{self.passed} passed, {self.failed} failed")
        return self.failed == 0

    short_lease = 12.0
    ttl = 30.0


def register(url: str, admin_key: str, ident: Identity) -> None:
    r = httpx.post(url + "/api/v1/federation/peers", headers={"Authorization": f"Bearer {admin_key}"},
                   json={"id": ident.platform_id, "base_url": "http://127.0.0.1:9", "public_key": ident.public_key_b64,
                         "name": "conformance tester"}, timeout=10, trust_env=False)
    r.raise_for_status()


def run(url: str, admin_key: str | None, out: Callable[[str], None], tester_dir: Path | None = None) -> bool:
    root = tester_dir or Path(tempfile.mkdtemp(prefix="yungu-conformance-"))
    tag = secrets.token_hex(3)
    t = Tester(url.rstrip("/"), Identity(root / "a", f"conformance-{tag}-a"))
    other = Tester(url.rstrip("/"), Identity(root / "b", f"conformance-{tag}-b")) if admin_key else None
    if admin_key:
        register(t.url, admin_key, t.identity)
        assert other is not None
        register(t.url, admin_key, other.identity)
        time.sleep(0.2)
    else:
        out(f"register this tester with the target's operator: id {t.identity.platform_id}, "
            f"key {t.identity.public_key_b64}")
    try:
        return Suite(t, other, out).run()
    finally:
        if admin_key:  # leave the target as we found it
            for ident in (t.identity, *([other.identity] if other else [])):
                httpx.delete(f"{t.url}/api/v1/federation/peers/{ident.platform_id}",
                             headers={"Authorization": f"Bearer {admin_key}"}, timeout=10, trust_env=False)


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()
