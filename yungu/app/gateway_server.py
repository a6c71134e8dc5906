"""``yungu gateway``: the token gateway (``/v1``) as its own process, over the platform's
database (the same keys, prices, replicas and usage tables).

Why a separate process can help: the API process also runs the control loop, billing and
the FastAPI routes on its one event loop and its share of the GIL; a gateway process has a
core to itself. Budgets are kept in the gateway's memory (reserve before, settle after), so
point all token clients at one gateway: either the platform's own ``/v1`` or this process.
The platform's billing runner books the usage rows this process writes.
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path

import uvicorn

from yungu.adapters.config import load_catalogue, load_config
from yungu.adapters.gateway.http1 import raise_open_files_limit
from yungu.adapters.gateway.service import TokenService
from yungu.adapters.gateway.store import TokenStore
from yungu.adapters.store import tables as _tables  # noqa: F401  (registers core tables)
from yungu.adapters.store.db import create_engine, migrate, sqlite_url
from yungu.adapters.store.job_store import SqlStore
from yungu.adapters.system import Ids, SystemClock
from yungu.api.routes.openai import standalone


def serve_gateway(host: str, port: int, data_dir: Path, config: Path | None, db_url: str | None) -> None:
    """Only the gateway's pieces: no executors (the platform's process owns them), no loops."""
    import os

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    world = load_config(config, load_catalogue()).world
    engine = create_engine(db_url or os.environ.get("YUNGU_DB_URL") or sqlite_url(data_dir))
    migrate(engine)
    store = SqlStore(engine, world.platform_id)
    raise_open_files_limit()  # two sockets per call in flight
    gateway = TokenService(TokenStore(engine), store.principal, SystemClock(), Ids().new, world.platform_id)
    print(f"Yungu token gateway on http://{host}:{port}/v1 (platform {world.platform_id}, data {data_dir})",
          flush=True)

    def _term(*_: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _term)
    try:
        uvicorn.run(standalone(gateway), host=host, port=port, log_level="warning", access_log=False,
                    loop="uvloop", http="httptools", lifespan="on")
    finally:
        gateway.close()
        engine.dispose()
