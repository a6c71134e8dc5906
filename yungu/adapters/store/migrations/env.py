"""Alembic environment: runs against the engine handed in by ``db.migrate``."""

from alembic import context

from yungu.adapters.store.db import metadata

config = context.config
engine = config.attributes["engine"]

with engine.begin() as connection:
    if connection.dialect.name == "postgresql":
        # Several servers may start at once on one database: one migrates, the others wait
        # here (the lock ends with this transaction) and then find the schema up to date.
        connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7710001)")
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    context.run_migrations()
