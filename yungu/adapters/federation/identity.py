"""This platform's federation identity: an Ed25519 key pair in the data dir, rotatable.

Files (mode 0600) under ``<data dir>/federation/``: ``identity-ed25519.pem`` (the current
key) and ``identity-ed25519.previous.pem`` (the key before the last rotation, still accepted
by peers until they have learnt the new one). A key id is ``"<platform>#<fingerprint>"`` with
the fingerprint the first 16 hex digits of SHA-256 of the raw public key, so a peer can tell
which of our keys signed a message.
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from yungu.domain.errors import InvalidInput
from yungu.engines.federation.messages import canonical

CURRENT = "identity-ed25519.pem"
PREVIOUS = "identity-ed25519.previous.pem"


def raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_b64(key: Ed25519PublicKey) -> str:
    return base64.b64encode(raw_public(key)).decode()


def load_public(b64: str) -> Ed25519PublicKey:
    try:
        raw = base64.b64decode(b64, validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, TypeError) as exc:
        raise InvalidInput("public key must be 32 bytes of Ed25519, base64-encoded") from exc


def fingerprint(key: Ed25519PublicKey) -> str:
    return hashlib.sha256(raw_public(key)).hexdigest()[:16]


def key_id(platform: str, key: Ed25519PublicKey) -> str:
    return f"{platform}#{fingerprint(key)}"


def _write_key(path: Path, key: Ed25519PrivateKey) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _read_key(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise InvalidInput(f"{path} is not an Ed25519 private key")
    return key


class Identity:
    def __init__(self, data_dir: Path, platform_id: str, platform_name: str = "") -> None:
        self.platform_id = platform_id
        self.platform_name = platform_name or platform_id
        self.dir = data_dir / "federation"
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        self._lock = threading.Lock()
        cur = self.dir / CURRENT
        if not cur.exists():
            _write_key(cur, Ed25519PrivateKey.generate())
        self._key = _read_key(cur)
        prev = self.dir / PREVIOUS
        self._previous = _read_key(prev) if prev.exists() else None

    @property
    def key(self) -> Ed25519PrivateKey:
        return self._key

    @property
    def key_id(self) -> str:
        return key_id(self.platform_id, self._key.public_key())

    @property
    def public_key_b64(self) -> str:
        return public_b64(self._key.public_key())

    def private_for(self, kid: str) -> Ed25519PrivateKey | None:
        if kid == self.key_id:
            return self._key
        if self._previous is not None and kid == key_id(self.platform_id, self._previous.public_key()):
            return self._previous
        return None

    def public_keys(self) -> list[dict[str, Any]]:
        out = [{"keyid": self.key_id, "public_key": self.public_key_b64, "status": "current"}]
        if self._previous is not None:
            pub = self._previous.public_key()
            out.append({"keyid": key_id(self.platform_id, pub), "public_key": public_b64(pub), "status": "previous"})
        return out

    def rotate(self) -> tuple[str, str]:
        """A new current key; the old one becomes ``previous``. Returns (old key id, new key id)."""
        with self._lock:
            old = self._key
            _write_key(self.dir / PREVIOUS, old)
            new = Ed25519PrivateKey.generate()
            _write_key(self.dir / CURRENT, new)
            self._previous, self._key = old, new
            return key_id(self.platform_id, old.public_key()), self.key_id

    # ---- detached signatures over canonical JSON (receipts, positions, statements) ----
    def sign_body(self, body: dict[str, Any]) -> str:
        return base64.b64encode(self._key.sign(canonical(body))).decode()


def verify_body(body: dict[str, Any], signature: str, public_keys: list[str]) -> bool:
    """True when any of ``public_keys`` (base64) signed ``canonical(body)``."""
    try:
        sig = base64.b64decode(signature, validate=True)
    except (ValueError, TypeError):
        return False
    data = canonical(body)
    for pk in public_keys:
        try:
            load_public(pk).verify(sig, data)
            return True
        except (InvalidSignature, InvalidInput):
            continue
    return False
