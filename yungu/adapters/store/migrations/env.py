"""Alembic environment: runs against the engine handed in by ``db.migrate``."""

from alembic import context

from yungu.adapters.store.db import metadata

config = context.config
engine = config.attributes["engine"]

with engine.begin() as connection:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    context.run_migrations()
