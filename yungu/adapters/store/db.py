"""Database engine and schema migration (SQLAlchemy 2 + Alembic).

SQLite is the embedded default: WAL journal, ``synchronous=NORMAL`` (a committed
transaction survives a process crash, kill -9 included; the last transactions before an OS
crash or power loss may be lost — set ``YUNGU_SQLITE_SYNC=FULL`` for power-loss
durability), foreign keys on, a busy timeout so concurrent writers wait instead of failing.
PostgreSQL is used when the URL says so.
"""

from __future__ import annotations

import os
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import MetaData, event
from sqlalchemy import create_engine as _sa_create_engine
from sqlalchemy.engine import Engine

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

MIGRATIONS = Path(__file__).parent / "migrations"


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'yungu.db'}"


def create_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = _sa_create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        sync = os.environ.get("YUNGU_SQLITE_SYNC", "NORMAL").upper()

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA synchronous={sync}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()
            # Let SQLAlchemy's BEGIN drive transactions (pysqlite's legacy mode does not).
            dbapi_conn.isolation_level = None

        @event.listens_for(engine, "begin")
        def _begin(conn):  # type: ignore[no-untyped-def]
            # Writers take the write lock up front (no lock upgrade that can fail mid-way);
            # readers (see reader()) open a deferred transaction, which in WAL mode neither
            # waits for the writer nor holds it up.
            conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get("yungu_read") else "BEGIN IMMEDIATE")

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    # No pre-ping: it doubles round trips on every checkout; stale connections are recycled.
    return _sa_create_engine(url, pool_size=20, max_overflow=20, pool_recycle=1800)


def reader(engine: Engine) -> Engine:
    """The same pool, for single-statement reads: on PostgreSQL in autocommit (one round trip
    instead of BEGIN, SELECT, ROLLBACK); on SQLite a deferred transaction instead of the
    writers' BEGIN IMMEDIATE (so a status read never queues behind the control loop's writes)."""
    if engine.dialect.name == "sqlite":
        return engine.execution_options(yungu_read=True)
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision. Safe to run at every start."""
    command.upgrade(alembic_config(engine), "head")
