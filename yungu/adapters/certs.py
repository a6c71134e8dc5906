"""Ed25519 signing of green-power certificates, and their JSON/HTML export.

The platform's key lives in ``<data_dir>/cert-signing.key`` (PKCS#8 PEM, mode 0600),
created on first use; its public half is embedded in every signed certificate together
with a key id (first 16 hex digits of SHA-256 of the raw public key). ``verify`` checks the
signature over the canonical JSON of the body, so changing any field, even a digit of one
hour's kWh, makes verification fail. Verification against a *trusted* public key (the
platform's published key) is what proves origin; the embedded key only proves integrity.
"""

from __future__ import annotations

import base64
import hashlib
import html
import os
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from yungu.domain.errors import InvalidInput
from yungu.engines.energy.certificate import canonical_json


class CertSigner:
    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.public_key_b64 = base64.b64encode(raw).decode()
        self.key_id = hashlib.sha256(raw).hexdigest()[:16]

    @classmethod
    def load_or_create(cls, data_dir: Path) -> CertSigner:
        path = data_dir / "cert-signing.key"
        if path.exists():
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if not isinstance(key, Ed25519PrivateKey):
                raise InvalidInput(f"{path} is not an Ed25519 key")
            return cls(key)
        key = Ed25519PrivateKey.generate()
        data_dir.mkdir(parents=True, exist_ok=True)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        return cls(key)

    def sign(self, body: dict[str, Any]) -> dict[str, Any]:
        sig = self._key.sign(canonical_json(body))
        return {
            "body": body,
            "signature": {
                "alg": "Ed25519",
                "key_id": self.key_id,
                "public_key": self.public_key_b64,
                "value": base64.b64encode(sig).decode(),
            },
        }


def verify(cert: dict[str, Any], trusted_public_key_b64: str | None = None) -> tuple[bool, str]:
    """(valid, reason). With ``trusted_public_key_b64`` the embedded key must equal it."""
    try:
        sig = cert["signature"]
        body = cert["body"]
        if sig.get("alg") != "Ed25519":
            return False, f"unsupported algorithm {sig.get('alg')!r}"
        pub_b64 = sig["public_key"]
        if trusted_public_key_b64 is not None and pub_b64 != trusted_public_key_b64:
            return False, "signed by a key other than the platform's / 签名密钥不是平台密钥"
        raw = base64.b64decode(pub_b64)
        if hashlib.sha256(raw).hexdigest()[:16] != sig.get("key_id"):
            return False, "key id does not match the public key"
        Ed25519PublicKey.from_public_bytes(raw).verify(base64.b64decode(sig["value"]), canonical_json(body))
    except InvalidSignature:
        return False, "signature does not match the content (tampered?) / 签名与内容不符（可能被篡改）"
    except (KeyError, TypeError, ValueError, AttributeError):
        return False, ("malformed certificate: it needs 'body' and 'signature' {alg, public_key, key_id, value} "
                       "/ 证书格式错误")
    return True, "valid / 验证通过"


def to_html(cert: dict[str, Any]) -> str:
    """A printable, self-contained HTML rendering (print to PDF from any browser)."""
    b = cert["body"]
    e = html.escape
    t = b["totals"]
    rows = "".join(
        f"<tr><td>{e(h['site_id'])}</td><td>{e(h['hour'])}</td><td>{e(h['facility_kwh'])}</td>"
        f"<td>{e(h['contracted_green_kwh'])}</td><td>{e(h['matched_kwh'])}</td><td>{e(h['grid_green_kwh'])}</td></tr>"
        for h in b["hours"]
    )
    jobs = "".join(
        f"<tr><td>{e(j['job_id'])}</td><td>{e(j['site_id'])}</td><td>{e(j['facility_kwh'])}</td><td>{e(j['energy'])}</td>"
        f"<td>{e(j['location']['carbon_g'])}</td><td>{e(j['market']['carbon_g'])}</td><td>{e(j['market']['signals'])}</td></tr>"
        for j in b["jobs"]
    )
    method = "".join(f"<li><b>{e(k)}</b>: {e(v)}</li>" for k, v in b["method"].items())
    return f"""<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">
<title>绿电溯源证书 Green-power certificate {e(b["id"])}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #999;padding:2px 6px;font-size:12px}}
.flag{{color:#a60}}@media print{{.noprint{{display:none}}}}</style></head><body>
<h1>绿电溯源证书 · Green-power traceability certificate</h1>
<p>ID <code>{e(b["id"])}</code> · {e(b["kind"])} <b>{e(b["subject"])}</b> · tenant {e(b["tenant_id"])} · platform {e(b["platform_id"])} · issued {e(b["issued_at"])}</p>
<p>能耗 Energy: <b>{e(t["facility_kwh"])} kWh</b> (facility) · 小时匹配绿电 Hourly-matched green: <b>{e(t["matched_green_kwh"])} kWh</b> ({e(t["matched_share"])})
· 碳排放 location-based {e(t["location_carbon_g"])} g · market-based {e(t["market_carbon_g"])} g</p>
<p class="flag">数据标记 Flags: energy <b>{e(b["flags"]["energy"])}</b>, signals <b>{e(b["flags"]["signals"])}</b></p>
<h2>方法 Method</h2><ul>{method}</ul>
<h2>作业 Jobs</h2><table><tr><th>job</th><th>site</th><th>kWh</th><th>energy</th><th>gCO₂e location</th><th>gCO₂e market</th><th>signals</th></tr>{jobs}</table>
<h2>逐小时 Hourly matching</h2><table><tr><th>site</th><th>hour (UTC)</th><th>kWh</th><th>contracted green kWh</th><th>matched kWh</th><th>grid green kWh</th></tr>{rows}</table>
<h2>签名 Signature</h2><p>Ed25519 key id <code>{e(cert["signature"]["key_id"])}</code><br>public key <code>{e(cert["signature"]["public_key"])}</code><br>
signature <code style="word-break:break-all">{e(cert["signature"]["value"])}</code></p>
<p>Verify: <code>yungu cert verify FILE.json</code></p></body></html>"""
