"""The three routes served without a token: ``/health`` (the process answers), ``/ready`` (the store
answers and, when the API runs inside the cloud, the broker is connected) and ``/metrics``
(Prometheus text exposition of counts: devices by online state, rollouts by status, dead letters,
and the API's own requests, refusals and unexpected errors; never a device id)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from cloud.store import DeadLetter, Device, Rollout

PROBES = ("/health", "/ready", "/metrics")


class FleetCounts(Collector):
    """Read at each scrape; a store that does not answer gives ``coldchain_store_up 0`` only."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("coldchain_store_up", "1 if the store answered this scrape")
        try:
            with self.sessions() as session:
                devices = session.execute(select(Device.online, func.count()).group_by(Device.online)).all()
                states = session.execute(select(Rollout.status, func.count()).group_by(Rollout.status)).all()
                dead = session.scalar(select(func.count()).select_from(DeadLetter)) or 0
        except SQLAlchemyError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        online = GaugeMetricFamily("coldchain_devices", "Devices known to the cloud", labels=["online"])
        for is_online, n in devices:
            online.add_metric(["true" if is_online else "false"], n)
        yield online
        rollouts = GaugeMetricFamily("coldchain_rollouts", "Rollouts by status", labels=["status"])
        for status, n in states:
            rollouts.add_metric([status], n)
        yield rollouts
        yield GaugeMetricFamily("coldchain_dead_letters", "Payloads ingestion refused (stored)", value=dead)


class ApiMetrics:
    """One registry per app (tests build many apps in one process)."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("coldchain_api_requests", "HTTP responses by method, route template and status",
                                ["method", "route", "status"], registry=self.registry)
        self.refused = Counter("coldchain_api_refused", "Requests refused before routing (no token, too large...)",
                               ["reason"], registry=self.registry)
        self.unexpected = Counter("coldchain_api_unexpected_errors", "Routes that failed unexpectedly (500)",
                                  ["route"], registry=self.registry)
        self.registry.register(FleetCounts(sessions))

    def answered(self, method: str, route: str, status: int) -> None:
        self.requests.labels(method, route, str(status)).inc()

    def refuse(self, reason: str) -> None:
        self.refused.labels(reason).inc()


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

    @router.get("/metrics", response_class=Response)
    def exposition() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return router
