"""The FastAPI application: routers under /api/v1, problem+json errors, body-size limit."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from yungu.api import problems
from yungu.api.deps import Platform
from yungu.api.routes import admin, jobs, world
from yungu.api.routes import alerts as alerts_routes
from yungu.api.routes import billing as billing_routes  # issue 5
from yungu.api.routes import certs as certs_routes
from yungu.api.routes import energy as energy_routes
from yungu.api.routes import explain as explain_routes  # issue 3
from yungu.api.routes import ledger as ledger_routes  # issue 5
from yungu.api.routes import market as market_routes  # issue 5
from yungu.api.routes import telemetry as telemetry_routes

MAX_BODY_BYTES = 1 << 20


class BodyLimit:
    """Refuse oversized bodies before they are read (pure ASGI: no per-request task overhead)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"content-length" and value.isdigit() and int(value) > MAX_BODY_BYTES:
                    resp = problems.problem(413, "Request body too large",
                                            f"bodies are limited to {MAX_BODY_BYTES} bytes; got {int(value)}",
                                            "body_too_large")
                    await resp(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def create_app(container: Platform) -> FastAPI:
    app = FastAPI(title="Yungu 云谷 API", version="0.1.0",
                  description="Federated compute-power network: monitor, schedule and trade capacity.",
                  openapi_url="/api/v1/openapi.json", docs_url="/api/v1/docs", redoc_url=None)
    app.state.container = container
    app.state.key_cache = {}
    problems.install(app)
    app.add_middleware(BodyLimit)

    @app.get("/api/v1/health", tags=["meta"])
    async def health() -> JSONResponse:
        c = app.state.container
        return JSONResponse({"status": "ok", "platform_id": c.world.platform_id,
                             "platform_name": c.world.platform_name, "reconciler_rounds": c.reconciler.rounds, "role": c.role})

    for module in (jobs, world, admin, explain_routes):
        app.include_router(module.router, prefix="/api/v1")
    for module in (telemetry_routes, energy_routes, certs_routes, alerts_routes):  # issue 4
        app.include_router(module.router, prefix="/api/v1")
    for module in (ledger_routes, billing_routes, market_routes):  # issue 5
        app.include_router(module.router, prefix="/api/v1")

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Any:
        from fastapi.responses import Response
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(telemetry_routes.render_metrics(app.state.container), media_type=CONTENT_TYPE_LATEST)
    # Area routers (ledger, market, billing, telemetry, energy, certs, alerts, explain) are
    # included below as they land; each exports ``router``.
    return app
