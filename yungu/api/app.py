"""The FastAPI application: routers under /api/v1, problem+json errors, and the guards in front
of every route (rate limits, body size and NUL bytes, security headers; ``guards``, ``ratelimit``)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from yungu.api import openapi, problems
from yungu.api.guards import MAX_BODY_BYTES, RequestGuard, SecurityHeaders
from yungu.api.ratelimit import Limiter, RateLimit, RateLimits
from yungu.api.routes import admin, jobs, world
from yungu.api.routes import alerts as alerts_routes
from yungu.api.routes import billing as billing_routes  # issue 5
from yungu.api.routes import certs as certs_routes
from yungu.api.routes import console as console_routes  # issue 13
from yungu.api.routes import energy as energy_routes
from yungu.api.routes import explain as explain_routes  # issue 3
from yungu.api.routes import ledger as ledger_routes  # issue 5
from yungu.api.routes import market as market_routes  # issue 5
from yungu.api.routes import openai as openai_routes  # issue 14: /v1 (OpenAI shape)
from yungu.api.routes import overview as overview_routes  # issue 13
from yungu.api.routes import session as session_routes  # issue 13
from yungu.api.routes import telemetry as telemetry_routes
from yungu.api.routes import tokens as tokens_routes  # issue 14: /api/v1/tokens

__all__ = ["MAX_BODY_BYTES", "create_app"]


def _token_gateway(container: Any) -> Any:
    tokens = getattr(container, "extras", {}).get("tokens")
    return None if tokens is None else tokens.gateway


def create_app(container: Any, limits: RateLimits | None = None) -> FastAPI:
    """The API over ``container``; ``limits`` are the rate limits (defaults: ``RateLimits()``)."""
    app = FastAPI(title="Yungu 云谷 API", version="0.1.0",
                  description="Federated compute-power network: monitor, schedule and trade capacity.",
                  openapi_url="/api/v1/openapi.json", docs_url="/api/v1/docs", redoc_url=None)
    app.state.container = container
    app.state.key_cache = {}
    app.state.limiter = limiter = Limiter(limits)
    problems.install(app)
    # outermost last: security headers on every answer, then rate limits, then body/NUL guards
    app.add_middleware(RequestGuard)
    app.add_middleware(RateLimit, limiter=limiter)
    # issue 14: /v1/... is the OpenAI-compatible token API (pure ASGI in front of FastAPI), inside the
    # security headers but outside /api/v1's rate limits and problem+json guards: it has its own keys,
    # limits (RPM/TPM with Retry-After), body limit and OpenAI's error shape (docs/tokens.md).
    app.add_middleware(openai_routes.OpenAIRoutes, service=lambda: _token_gateway(container))
    app.add_middleware(SecurityHeaders)

    @app.get("/api/v1/health", tags=["meta"])
    async def health() -> JSONResponse:
        c = app.state.container
        return JSONResponse({"status": "ok", "platform_id": c.world.platform_id,
                             "platform_name": c.world.platform_name, "reconciler_rounds": c.reconciler.rounds})

    for module in (jobs, world, admin, explain_routes):
        app.include_router(module.router, prefix="/api/v1")
    for module in (telemetry_routes, energy_routes, certs_routes, alerts_routes):  # issue 4
        app.include_router(module.router, prefix="/api/v1")
    for module in (ledger_routes, billing_routes, market_routes):  # issue 5
        app.include_router(module.router, prefix="/api/v1")
    app.include_router(tokens_routes.router, prefix="/api/v1")  # issue 14
    for module in (session_routes, console_routes, overview_routes):  # issue 13: web console, big screen
        app.include_router(module.router, prefix="/api/v1")

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Any:
        from fastapi.responses import Response
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(telemetry_routes.render_metrics(app.state.container), media_type=CONTENT_TYPE_LATEST)
    openapi.install(app)
    return app
