"""Ed25519-signed clearing statements between peer platforms.

A statement is canonical JSON (sorted keys, no spaces, UTF-8) of the period, currency, net
positions and the settlement transfers; each platform signs those exact bytes with its
Ed25519 key (``cryptography``). Verification rebuilds the bytes and checks every signature
against the peer's published public key; any change to the body breaks all of them.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from yungu.domain.errors import InvalidInput
from yungu.engines.ledger.clearing import Settlement, minimal_settlements


def canonical(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def statement_body(period: str, currency: str, positions: Mapping[str, int]) -> dict[str, Any]:
    transfers: list[Settlement] = minimal_settlements(positions)
    assert sum(positions.values()) == 0
    return {"period": period, "currency": currency, "positions": dict(sorted(positions.items())),
            "transfers": [asdict(t) for t in transfers], "sum": 0}


def new_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def public_b64(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def sign(body: Mapping[str, Any], key: Ed25519PrivateKey) -> str:
    return base64.b64encode(key.sign(canonical(body))).decode()


def verify(body: Mapping[str, Any], signatures: Mapping[str, str], public_keys: Mapping[str, str]) -> None:
    """Raise ``InvalidInput`` unless every party in the statement signed exactly this body.

    Anything malformed (no ``positions``, keys or signatures that are not base64 Ed25519) is
    ``InvalidInput`` too: a statement from outside is input, never a reason for a 500."""
    positions = body.get("positions")
    if not isinstance(positions, Mapping) or not positions:
        raise InvalidInput("statement body needs 'positions': an object of party -> net amount / 缺少 positions")
    parties = set(positions)
    missing = parties - set(signatures)
    if missing:
        raise InvalidInput(f"statement not signed by {sorted(missing)[:20]}")
    try:
        data = canonical(body)
    except (TypeError, ValueError) as exc:
        raise InvalidInput("statement body is not canonical JSON") from exc
    for party, sig in signatures.items():
        if party not in public_keys:
            raise InvalidInput(f"no public key for {party[:100]!r}")
        try:
            pub = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_keys[party], validate=True))
            raw = base64.b64decode(sig, validate=True)
        except (ValueError, binascii.Error) as exc:
            raise InvalidInput(f"public key or signature of {party[:100]!r} is not base64 Ed25519") from exc
        try:
            pub.verify(raw, data)
        except InvalidSignature as exc:
            raise InvalidInput(f"signature of {party[:100]!r} does not match the statement") from exc
