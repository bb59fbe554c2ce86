"""The probes, served without a token: ``/health`` (the process answers) and ``/ready`` (the store
answers and, when the API runs inside the cloud, the broker is connected); and ``/metrics``
(Prometheus text exposition, ``cloud.metrics``, plus the API's own requests, refusals and
unexpected errors; never a device id), which needs a token of scope read unless the configuration
says ``metrics.public: true`` (it names groups, which devices report themselves)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from cloud.metrics import Runtime, RuntimeMetrics, StoreMetrics

PROBES = ("/health", "/ready")
METRICS = "/metrics"


class ApiMetrics:
    """One registry per app (tests build many apps in one process)."""

    def __init__(self, sessions: sessionmaker[Session], runtime: Runtime | None = None) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("coldchain_api_requests", "HTTP responses by method, route template and status",
                                ["method", "route", "status"], registry=self.registry)
        self.refused = Counter("coldchain_api_refused", "Requests refused before routing (no token, too large...)",
                               ["reason"], registry=self.registry)
        self.unexpected = Counter("coldchain_api_unexpected_errors", "Routes that failed unexpectedly (500)",
                                  ["route"], registry=self.registry)
        self.auth = Counter("coldchain_auth_refused", "Tokens refused, by surface (api, dashboard sign-in and "
                            "writes) and reason (missing, unknown, revoked, scope, rate_limited...)",
                            ["surface", "reason"], registry=self.registry)
        self.registry.register(StoreMetrics(sessions))
        if runtime is not None:  # inside the running cloud: ingestion, egress, deliveries
            self.registry.register(RuntimeMetrics(runtime))

    def answered(self, method: str, route: str, status: int) -> None:
        self.requests.labels(method, route, str(status)).inc()

    def refuse(self, reason: str) -> None:
        self.refused.labels(reason).inc()

    def auth_refused(self, surface: str, reason: str) -> None:
        self.auth.labels(surface, reason).inc()


def probes(sessions: sessionmaker[Session], metrics: ApiMetrics,
           broker_connected: Callable[[], bool] | None) -> APIRouter:
    router = APIRouter(tags=["probes"])

    @router.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/ready", responses={503: {"description": "Not ready: the store or the broker is away"}})
    def ready() -> Any:
        checks = {"store": "ok", "broker": "ok" if broker_connected is None or broker_connected() else
                  "not connected"}
        try:
            with sessions() as session:
                session.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            checks["store"] = f"unreachable ({exc.__class__.__name__})"
        ok = all(v == "ok" for v in checks.values())
        return JSONResponse({"status": "ready" if ok else "not ready", **checks}, status_code=200 if ok else 503)

    return router


def metrics_route(metrics: ApiMetrics) -> APIRouter:
    """``/metrics``, for the API to include behind a token or, configured public, without."""
    router = APIRouter(tags=["probes"])

    @router.get(METRICS, response_class=Response)
    def exposition() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return router
