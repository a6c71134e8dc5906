"""Leases with fencing tokens in the ``control_lease`` table (SQLite or PostgreSQL).

A lease is a row: holder, token, expiry. Taking a free or expired lease bumps the token by
one in the same statement; renewing keeps it. Expiry is measured on the *database's* clock
(``clock_timestamp()`` on PostgreSQL, ``julianday('now')`` on SQLite), so servers on
machines whose clocks disagree still agree on when a lease ran out.

Every statement is a single conditional ``UPDATE`` (or the first ``INSERT``), so two
processes racing for an expired lease cannot both win: the one whose update matched the
old token holds it; the other's matched no row. On PostgreSQL no lease statement waits
more than 1 s for a row lock, and a transaction idle for 1 s (its process paused) is ended
by the server, so a paused holder can never block its successor.
"""

from __future__ import annotations

from sqlalchemy import and_, insert, literal_column, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import ColumnElement

from yungu.adapters.store import tables as t
from yungu.ports.store import Lease

L = t.control_lease


def _db_now(engine: Engine) -> ColumnElement[float]:
    if engine.dialect.name == "postgresql":
        return literal_column("extract(epoch from clock_timestamp())::float8")
    return literal_column("((julianday('now') - 2440587.5) * 86400.0)")


class SqlLeaseStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._now = _db_now(engine)
        self._pg = engine.dialect.name == "postgresql"

    def _bounded(self, c: Connection) -> None:
        """A lease statement never waits long for a row lock (a paused holder may keep one),
        and a lease transaction whose process pauses inside it is ended by the server."""
        if self._pg:
            c.exec_driver_sql("SET LOCAL lock_timeout = '1s'")
            c.exec_driver_sql("SET LOCAL idle_in_transaction_session_timeout = '1s'")

    def _read(self, name: str) -> Lease | None:
        with self.engine.begin() as c:
            r = c.execute(select(L.c.holder, L.c.token, L.c.address, (L.c.expires_at - self._now).label("left"))
                          .where(L.c.name == name)).first()
        if r is None:
            return None
        return Lease(name, r.holder, int(r.token), float(r.left), r.address)

    def current(self, name: str) -> Lease | None:
        return self._read(name)

    def acquire(self, name: str, holder: str, ttl_s: float, address: str = "") -> Lease | None:
        with self.engine.begin() as c:
            self._bounded(c)
            n = c.execute(update(L).where(and_(L.c.name == name, L.c.holder == holder))
                          .values(expires_at=self._now + ttl_s, address=address)).rowcount
            if not n:  # not ours: take it if it ran out (a new token)
                n = c.execute(update(L).where(and_(L.c.name == name, L.c.expires_at < self._now))
                              .values(holder=holder, token=L.c.token + 1, expires_at=self._now + ttl_s,
                                      address=address)).rowcount
        if not n and self._read(name) is None:  # no row yet: the first server creates it
            try:
                with self.engine.begin() as c:
                    c.execute(insert(L).values(name=name, holder=holder, token=1, expires_at=self._now + ttl_s,
                                               address=address))
            except IntegrityError:
                return None  # someone else created it first and holds it
        got = self._read(name)
        return got if got is not None and got.holder == holder else None

    def renew(self, lease: Lease, ttl_s: float) -> Lease | None:
        with self.engine.begin() as c:
            self._bounded(c)
            n = c.execute(update(L).where(and_(L.c.name == lease.name, L.c.holder == lease.holder,
                                               L.c.token == lease.token))
                          .values(expires_at=self._now + ttl_s)).rowcount
        if not n:
            return None
        return Lease(lease.name, lease.holder, lease.token, ttl_s, lease.address)

    def release(self, lease: Lease) -> None:
        """Expire it now; the token stays, so the next holder's is still larger."""
        with self.engine.begin() as c:
            self._bounded(c)
            c.execute(update(L).where(and_(L.c.name == lease.name, L.c.holder == lease.holder,
                                           L.c.token == lease.token))
                      .values(expires_at=self._now - 1.0, holder=""))
