"""The one exception tree of Yungu.

Expected outcomes ("does not fit", "budget exhausted") are values (``Status``), not
exceptions. Exceptions are for invalid input and for bugs. Foreign errors (SQLAlchemy,
httpx, subprocess) are mapped to this tree at the boundary with ``raise ... from exc``.

    YunguError
    ├── InvalidInput          bad user input; HTTP 400/422, CLI exit 2
    │   └── InvalidTransition a state-machine event that is not allowed from the current state (409)
    ├── NotFound              unknown id, or an id the caller may not see (404)
    ├── Conflict              id reuse with a different body, stale compare-and-set (409)
    ├── Unauthorized          missing or bad credentials (401)
    ├── Forbidden             authenticated but the role does not allow it (403)
    ├── LimitExceeded         a quota or size limit the request would pass (422)
    │   └── InsufficientFunds an account would pass its credit limit: an overdraft (402, never
    │                         429: a client must not retry it as if it were a rate limit)
    └── Unavailable           a dependency (engine, database, peer) cannot be reached (503)
"""

from __future__ import annotations


class YunguError(Exception):
    """Base of all Yungu errors. ``code`` is a stable machine-readable slug."""

    code = "yungu_error"
    http_status = 500

    def __init__(self, message: str, *, detail: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail or {}


class InvalidInput(YunguError):
    code = "invalid_input"
    http_status = 422


class InvalidTransition(InvalidInput):
    code = "invalid_transition"
    http_status = 409


class NotFound(YunguError):
    code = "not_found"
    http_status = 404


class Conflict(YunguError):
    code = "conflict"
    http_status = 409


class Unauthorized(YunguError):
    code = "unauthorized"
    http_status = 401


class Forbidden(YunguError):
    code = "forbidden"
    http_status = 403


class LimitExceeded(YunguError):
    code = "limit_exceeded"
    http_status = 422


class InsufficientFunds(LimitExceeded):
    code = "insufficient_funds"
    http_status = 402


class Unavailable(YunguError):
    code = "unavailable"
    http_status = 503
