"""RFC 9421 HTTP Message Signatures (Ed25519) for every request and response between platforms.

Built on the maintained ``http-message-signatures`` library; this module fixes the profile:

- **requests** cover ``@method``, ``@target-uri``, ``content-type`` and ``content-digest``
  (RFC 9530, SHA-256 of the body), with ``created``, ``keyid`` (``"<platform>#<fp>"``),
  ``alg="ed25519"``, a random ``nonce`` and ``tag="yungu-fed/1"``; label ``yf``;
- **responses** cover ``@status`` and ``content-digest`` plus the request's ``@method``,
  ``@target-uri`` and its ``signature`` (``;req``), so a response answers exactly one request
  and cannot be replayed for another;
- **replay protection**: ``created`` must be within ``window_s`` of our clock (either side,
  so a skewed but honest peer still talks), each (key id, nonce) is accepted once, and after a
  restart nothing created before ``start + window_s`` slips by: nonces live in memory for the
  window, and messages created before our start (plus the clock-skew bound) are refused; the
  sender re-signs on retry, so an honest peer loses a few seconds at most.

Failures raise :class:`SignatureRefused` with a reason that is safe to return (401).
"""

from __future__ import annotations

import base64
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from http_message_signatures import (
    HTTPMessageSigner,
    HTTPMessageVerifier,
    HTTPSignatureKeyResolver,
    algorithms,
)
from http_message_signatures.exceptions import HTTPMessageSignaturesException

from yungu.domain.errors import Unauthorized

TAG = "yungu-fed/1"
LABEL = "yf"
REQUEST_COMPONENTS = ("@method", "@target-uri", "content-type", "content-digest")
RESPONSE_COMPONENTS = ("@status", "content-digest", '"@method";req', '"@target-uri";req',
                       f'"signature";req;key="{LABEL}"')


class SignatureRefused(Unauthorized):
    pass


@dataclass
class Message:
    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class ResponseMessage:
    status_code: int
    headers: dict[str, str]
    request: Message


class _Keys(HTTPSignatureKeyResolver):  # type: ignore[misc]
    def __init__(self, private: Callable[[str], Ed25519PrivateKey | None] | None = None,
                 public: Callable[[str], Ed25519PublicKey | None] | None = None) -> None:
        self._private, self._public = private, public

    def resolve_private_key(self, key_id: str) -> Ed25519PrivateKey:
        key = self._private(key_id) if self._private else None
        if key is None:
            raise HTTPMessageSignaturesException(f"no private key {key_id}")
        return key

    def resolve_public_key(self, key_id: str) -> Ed25519PublicKey | None:
        return self._public(key_id) if self._public else None


class _LenientVerifier(HTTPMessageVerifier):  # type: ignore[misc]
    # Our own window check (against the injected clock) follows the library's; this only keeps
    # the library from refusing on the machine's clock before we look.
    max_clock_skew = timedelta(days=3650)


class NonceCache:
    """Seen (key id, nonce) pairs for the replay window; bounded."""

    def __init__(self, window_s: float, max_entries: int = 500_000) -> None:
        self.window_s, self.max_entries = window_s, max_entries
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._lock = threading.Lock()

    def first_time(self, kid: str, nonce: str) -> bool:
        now = time.monotonic()
        with self._lock:
            while self._seen:
                _k, t = next(iter(self._seen.items()))
                if now - t <= 2 * self.window_s and len(self._seen) < self.max_entries:
                    break
                self._seen.popitem(last=False)
            if (kid, nonce) in self._seen:
                return False
            self._seen[(kid, nonce)] = now
            return True


class Signer:
    """Signs what this platform sends and verifies what peers send, on an injected clock."""

    def __init__(self, key_id: Callable[[], str], private: Callable[[str], Ed25519PrivateKey | None],
                 public: Callable[[str], Ed25519PublicKey | None], now: Callable[[], datetime],
                 window_s: float = 60.0, restart_guard_s: float = 5.0) -> None:
        self._key_id, self._now, self.window_s = key_id, now, window_s
        self.restart_guard_s = restart_guard_s
        keys = _Keys(private, public)
        self._signer = HTTPMessageSigner(signature_algorithm=algorithms.ED25519, key_resolver=keys)
        self._verifier = _LenientVerifier(signature_algorithm=algorithms.ED25519, key_resolver=keys)
        self.nonces = NonceCache(window_s)
        self.started_at = now()

    def _created(self) -> datetime:
        return self._now()

    def sign_request(self, method: str, url: str, body: bytes,
                     content_type: str = "application/json") -> dict[str, str]:
        msg = Message(method.upper(), url, {"Content-Type": content_type})
        self._signer.sign(msg, key_id=self._key_id(), created=self._created(), nonce=_nonce(), tag=TAG, label=LABEL,
                          covered_component_ids=REQUEST_COMPONENTS, body=body)
        return msg.headers

    def verify_request(self, method: str, url: str, headers: Mapping[str, str], body: bytes) -> str:
        """The signer's key id, or ``SignatureRefused``."""
        msg = Message(method.upper(), url, _pick(headers, ("content-type", "content-digest", "signature-input",
                                                           "signature")))
        if "Signature" not in msg.headers or "Signature-Input" not in msg.headers:
            raise SignatureRefused("unsigned request: send RFC 9421 Signature and Signature-Input headers")
        params = self._verify(msg, REQUEST_COMPONENTS, body)
        self._check_fresh(params)
        kid = str(params.get("keyid", ""))
        nonce = params.get("nonce")
        if not isinstance(nonce, str) or len(nonce) < 16:
            raise SignatureRefused("signature has no nonce (replay protection needs one)")
        if not self.nonces.first_time(kid, nonce):
            raise SignatureRefused("replayed request: this nonce was already used")
        return kid

    def sign_response(self, status: int, body: bytes, request: Message,
                      content_type: str = "application/json") -> dict[str, str]:
        resp = ResponseMessage(status, {"Content-Type": content_type}, request)
        self._signer.sign(resp, key_id=self._key_id(), created=self._created(), nonce=_nonce(), tag=TAG,
                          label=LABEL, covered_component_ids=RESPONSE_COMPONENTS, body=body)
        return resp.headers

    def verify_response(self, status: int, headers: Mapping[str, str], body: bytes, request: Message,
                        expect_keys: Callable[[str], bool]) -> str:
        resp = ResponseMessage(status, _pick(headers, ("content-type", "content-digest", "signature-input",
                                                       "signature")), request)
        if "Signature" not in resp.headers:
            raise SignatureRefused(f"unsigned response (HTTP {status})")
        params = self._verify(resp, ("@status", "content-digest"), body)
        self._check_fresh(params, replay=False)
        kid = str(params.get("keyid", ""))
        if not expect_keys(kid):
            raise SignatureRefused(f"response signed by {kid}, not by the peer we called")
        return kid

    def _verify(self, msg: Message | ResponseMessage, required: tuple[str, ...], body: bytes) -> Mapping[str, object]:
        try:
            res = self._verifier.verify(msg, max_age=None, expect_tag=TAG, expect_label=LABEL,
                                        require_components=required, body=body)
        except HTTPMessageSignaturesException as exc:
            raise SignatureRefused(f"signature refused: {_safe(exc)}") from None
        return res[0].parameters  # type: ignore[no-any-return]

    def _check_fresh(self, params: Mapping[str, object], *, replay: bool = True) -> None:
        created = params.get("created")
        if not isinstance(created, int):
            raise SignatureRefused("signature has no created time")
        t = datetime.fromtimestamp(created, UTC)
        now = self._now()
        w = timedelta(seconds=self.window_s)
        if t > now + w:
            raise SignatureRefused("signature created in the future (clock skew beyond the window?)")
        if t < now - w:
            raise SignatureRefused(f"signature too old (created {t.isoformat()}, window {self.window_s:.0f} s)")
        if replay and t < self.started_at + timedelta(seconds=self.restart_guard_s):
            raise SignatureRefused("signature created before this platform started: re-sign and retry")


def _nonce() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(18)).decode()


def _pick(headers: Mapping[str, str], names: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    lower = {k.lower(): v for k, v in headers.items()}
    for n in names:
        if n in lower:
            out["-".join(p.capitalize() for p in n.split("-"))] = lower[n]
    return out


def _safe(exc: Exception) -> str:
    text = str(exc).replace("\n", " ")
    return text[:200] or type(exc).__name__
