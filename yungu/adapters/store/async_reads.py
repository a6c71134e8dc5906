"""Status reads on the API's event loop, on connections of their own (issue 15).

``GET /api/v1/jobs/{id}`` is the API's hottest read. Through the shared SQLAlchemy pool each
read checks a connection out and back in, and on PostgreSQL it also crossed to a worker
thread (a blocking driver must not hold up the event loop), so 32 concurrent reads were 32
threads fighting for the GIL with the submit batcher and, on a leader, the control loop.
Here reads never leave the event loop and never touch the writers' pool:

- **SQLite**: one read-only connection (``mode=ro``, autocommit), used only from the event
  loop's thread. In WAL mode a read neither waits for the writer nor holds it up, and one
  indexed lookup costs tens of microseconds: cheaper than any hop.
- **PostgreSQL**: a small pool of psycopg ``AsyncConnection``\\ s in autocommit (one round trip
  per read, a prepared statement after a few), awaited on the event loop. A connection that
  breaks is dropped and the read retried once on a fresh one.

Rows become ``Job``\\ s through ``SqlStore._job`` with the columns' own SQLAlchemy result
processors, so a value reads exactly as through the store (aware UTC datetimes, booleans).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine

from yungu.adapters.store import tables as t
from yungu.domain.errors import NotFound
from yungu.domain.job import Job

if TYPE_CHECKING:
    import psycopg

    from yungu.adapters.store.job_store import SqlStore

COLUMNS = ("id", "platform_id", "tenant_id", "spec", "state", "submitted_at", "updated_at", "attempt",
           "allocation", "started_at", "finished_at", "exit_code", "reason", "cancel_requested")
PG_POOL = 16  # reads in flight at once: each waits one round trip, so fewer would queue at c=32


class _Row:
    """Attribute access to one fetched row, values already through the columns' processors."""

    __slots__ = COLUMNS

    def __init__(self, values: Sequence[Any], procs: Sequence[Callable[[Any], Any] | None]) -> None:
        for name, v, p in zip(COLUMNS, values, procs, strict=True):
            setattr(self, name, v if p is None or v is None else p(v))


class AsyncJobReads:
    def __init__(self, engine: Engine, store: SqlStore) -> None:
        self.engine, self.store = engine, store
        dialect = engine.dialect
        self._procs = [t.jobs.c[n].type.dialect_impl(dialect).result_processor(dialect, None) for n in COLUMNS]
        cols = ", ".join(COLUMNS)
        self._sqlite = dialect.name == "sqlite"
        self._sql = f"SELECT {cols} FROM jobs WHERE id = {'?' if self._sqlite else '%s'}"
        self._lite: sqlite3.Connection | None = None
        self._pg_idle: list[psycopg.AsyncConnection[Any]] = []
        self._pg_open = 0
        self._pg_free: asyncio.Condition | None = None

    async def get(self, job_id: str) -> Job:
        if self._sqlite and self.engine.url.database in (None, "", ":memory:"):
            return self.store.get(job_id)  # an in-memory database has no second connection
        values = self._sqlite_row(job_id) if self._sqlite else await self._pg_row(job_id)
        if values is None:
            raise NotFound(f"no job {job_id}")
        return self.store._job(_Row(values, self._procs))  # type: ignore[arg-type]

    # ---- SQLite ----------------------------------------------------------------------------
    def _sqlite_row(self, job_id: str) -> Sequence[Any] | None:
        if self._lite is None:
            path = self.engine.url.database
            # Only ever used from the event loop's thread; check_same_thread would refuse the
            # close() at shutdown, which runs on another.
            self._lite = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None,
                                         check_same_thread=False, timeout=30)
        return self._lite.execute(self._sql, (job_id,)).fetchone()  # type: ignore[no-any-return]

    # ---- PostgreSQL ------------------------------------------------------------------------
    async def _pg_row(self, job_id: str) -> Sequence[Any] | None:
        import psycopg

        for attempt in (0, 1):
            conn = await self._pg_take()
            try:
                cur = await conn.execute(self._sql, (job_id,))
                row = await cur.fetchone()
            except psycopg.OperationalError:
                await self._pg_give(conn, broken=True)
                if attempt:
                    raise
                continue
            await self._pg_give(conn, broken=False)
            return row  # type: ignore[no-any-return]
        return None  # pragma: no cover - the loop returns or raises

    async def _pg_take(self) -> psycopg.AsyncConnection[Any]:
        import psycopg

        if self._pg_free is None:
            self._pg_free = asyncio.Condition()
        async with self._pg_free:
            while not self._pg_idle and self._pg_open >= PG_POOL:
                await self._pg_free.wait()
            if self._pg_idle:
                return self._pg_idle.pop()
            self._pg_open += 1
        try:
            url = self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
            return await psycopg.AsyncConnection.connect(url, autocommit=True)
        except BaseException:
            async with self._pg_free:
                self._pg_open -= 1
                self._pg_free.notify()
            raise

    async def _pg_give(self, conn: psycopg.AsyncConnection[Any], broken: bool) -> None:
        assert self._pg_free is not None
        if broken or conn.closed:
            try:
                await conn.close()
            finally:
                async with self._pg_free:
                    self._pg_open -= 1
                    self._pg_free.notify()
            return
        async with self._pg_free:
            self._pg_idle.append(conn)
            self._pg_free.notify()

    def close(self) -> None:
        """Let go of the connections (the process is ending or the store is disposed)."""
        if self._lite is not None:
            self._lite.close()
            self._lite = None
        self._pg_idle.clear()  # an AsyncConnection closes its socket when collected
