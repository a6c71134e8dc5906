"""Browser sessions: an API key exchanged once for a session cookie (the web console).

The key never reaches browser storage: the sign-in form posts it once, the platform checks
it and answers with a random session id in a cookie that scripts cannot read (``HttpOnly``),
that no other site can make the browser send (``SameSite=Strict``), and, on HTTPS, only over
TLS (``Secure``). Every unsafe request (POST, PUT, PATCH, DELETE) that authenticates by the
cookie must also carry the session's CSRF token in ``X-CSRF-Token`` (synchronizer token,
obtained from ``GET /api/v1/session`` by same-origin script only).

Sessions live in memory (a restart signs everyone out): ids are stored hashed, expire after
``IDLE_S`` without use and ``MAX_AGE_S`` after sign-in, and end when their key is revoked.
Kiosk tickets (``POST /api/v1/session/tickets``) are single-use, short-lived sign-in links
for the big screen, so a wall display never needs a keyboard.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field

from fastapi import Request

from yungu.domain.errors import Forbidden
from yungu.domain.tenancy import Principal

COOKIE = "yungu_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
IDLE_S = 8 * 3600
MAX_AGE_S = 24 * 3600
TICKET_TTL_S = 600
MAX_SESSIONS = 10_000


class CsrfRefused(Forbidden):
    """An unsafe request authenticated by the session cookie without its CSRF token (403)."""

    code = "csrf_refused"


def _h(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class Session:
    principal: Principal
    csrf: str
    created: float
    seen: float


@dataclass
class SessionStore:
    """In-memory sessions and kiosk tickets (thread-safe). ``now`` is monotonic seconds."""

    clock: object = field(default=time.monotonic)
    _sessions: dict[str, Session] = field(default_factory=dict)
    _tickets: dict[str, tuple[Principal, float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _now(self) -> float:
        return self.clock()  # type: ignore[operator,no-any-return]

    def create(self, p: Principal) -> tuple[str, Session]:
        sid, now = secrets.token_urlsafe(32), self._now()
        s = Session(p, secrets.token_urlsafe(32), now, now)
        with self._lock:
            if len(self._sessions) >= MAX_SESSIONS:
                self._expire(now)
                if len(self._sessions) >= MAX_SESSIONS:  # still full: drop the oldest
                    oldest = min(self._sessions, key=lambda k: self._sessions[k].seen)
                    del self._sessions[oldest]
            self._sessions[_h(sid)] = s
        return sid, s

    def get(self, sid: str) -> Session | None:
        now = self._now()
        with self._lock:
            s = self._sessions.get(_h(sid))
            if s is None:
                return None
            if now - s.seen > IDLE_S or now - s.created > MAX_AGE_S:
                del self._sessions[_h(sid)]
                return None
            s.seen = now
            return s

    def drop(self, sid: str) -> None:
        with self._lock:
            self._sessions.pop(_h(sid), None)

    def drop_key(self, key_id: str) -> int:
        """End every session signed in with ``key_id`` (the key was revoked)."""
        with self._lock:
            gone = [k for k, s in self._sessions.items() if s.principal.key_id == key_id]
            for k in gone:
                del self._sessions[k]
            self._tickets = {k: v for k, v in self._tickets.items() if v[0].key_id != key_id}
        return len(gone)

    def ticket(self, p: Principal) -> str:
        t = secrets.token_urlsafe(24)
        with self._lock:
            now = self._now()
            self._tickets = {k: v for k, v in self._tickets.items() if v[1] > now}
            self._tickets[_h(t)] = (p, now + TICKET_TTL_S)
        return t

    def redeem(self, ticket: str) -> Principal | None:
        with self._lock:
            entry = self._tickets.pop(_h(ticket), None)
        if entry is None or entry[1] < self._now():
            return None
        return entry[0]

    def _expire(self, now: float) -> None:
        for k in [k for k, s in self._sessions.items() if now - s.seen > IDLE_S or now - s.created > MAX_AGE_S]:
            del self._sessions[k]


def sessions(app: object) -> SessionStore:
    """The app's session store (created on first use)."""
    state = app.state  # type: ignore[attr-defined]
    store = getattr(state, "sessions", None)
    if store is None:
        store = state.sessions = SessionStore()
    return store


def session_of(request: Request) -> tuple[str, Session] | None:
    sid = request.cookies.get(COOKIE)
    if not sid:
        return None
    s = sessions(request.app).get(sid)
    return None if s is None else (sid, s)


def session_principal(request: Request) -> Principal | None:
    """The principal of the request's session cookie, or None; unsafe methods need the CSRF token."""
    found = session_of(request)
    if found is None:
        return None
    _, s = found
    if request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        if not sent or not hmac.compare_digest(sent, s.csrf):
            raise CsrfRefused("missing or wrong CSRF token: send the session's X-CSRF-Token header / "
                              "缺少或错误的 CSRF 令牌")
    return s.principal
