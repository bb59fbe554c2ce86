"""The HTTP API (FastAPI): read the fleet, rollouts, telemetry aggregates, alerts and dead letters;
start, pause, resume, abort and roll back rollouts. Every route needs ``Authorization: Bearer
<token>`` except the probes ``/health``, ``/ready`` and ``/metrics`` (``cloud.api_probes``): the
gate (``cloud.api_gate``) checks it before a body is read, and the routers' dependency checks it
again, so a route is protected by default. Bodies are at most ``MAX_BODY_BYTES``; parameters are
validated (a bad one is a 400, or 422 in a body, naming it); an unexpected failure is a generic
500, logged and counted. OpenAPI docs at ``/docs`` (with the token too).

(No ``from __future__ import annotations`` here: FastAPI reads the dependency annotations at runtime.)
"""


import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, StringConstraints
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cloud import rollouts
from cloud.api_gate import MAX_BODY_BYTES, Gate, token_matches
from cloud.api_probes import PROBES, ApiMetrics, probes
from cloud.errors import CloudError, NotFoundError, RolloutError
from cloud.fleet import get_device, select_devices
from cloud.monitor import monitor
from cloud.plan import RolloutPlan, Selector
from cloud.store import Alert, BundleRow, DeadLetter, Device
from contract.versions import needs_new_agent

__all__ = ["MAX_BODY_BYTES", "PROBES", "create_app"]
log = logging.getLogger("coldchain.cloud.api")

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"  # contract.topics.check_id: device and group ids
ROLLOUT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,47}$"  # the same alphabet; the store keeps 48
DeviceId = Annotated[str, Path(pattern=ID_PATTERN, description="A device id (contract.topics.check_id)")]
RolloutId = Annotated[str, Path(pattern=ROLLOUT_ID_PATTERN)]
BundlePrefix = Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{4,64}$")]  # a sha256 or 4+ hex digits


class StartRollout(BaseModel):
    bundle: BundlePrefix
    plan: RolloutPlan = RolloutPlan()
    rollout_id: Annotated[str, StringConstraints(pattern=ROLLOUT_ID_PATTERN)] | None = None
    supersede: bool = False  # take over devices an unfinished rollout holds (refused otherwise)


class Reason(BaseModel):
    reason: Annotated[str, StringConstraints(max_length=500)] | None = None


def _device(d: Device) -> dict[str, Any]:
    return {"id": d.id, "online": d.online, "board": d.board, "groups": d.all_groups(), "tags": d.tags,
            "active": d.active, "job_id": d.job_id, "job_state": d.job_state, "last_seen": d.last_seen,
            "agent_version": d.agent_version, "protocol": d.protocol, "needs_new_agent": needs_new_agent(d.protocol)}


def _rollout(view: rollouts.RolloutView) -> dict[str, Any]:
    r = view.rollout
    return {"id": r.id, "bundle": r.bundle_sha256, "status": r.status, "wave": r.wave + 1, "waves": view.waves(),
            "reason": r.reason, "gates": r.gate_results, "counts": view.counts(), "plan": r.plan,
            "failure_reasons": [{"devices": n, "reason": why} for n, why in view.reasons()],
            "devices": [{"device": d.device_id, "wave": d.wave + 1, "state": d.state, "reason": d.reason,
                         "rolled_back": d.rolled_back} for d in view.devices]}


def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    """A 400 for a bad query or path parameter, a 422 for a bad body; each error names its parameter
    and the input is never echoed (it may be megabytes)."""
    errors = [{"loc": list(e["loc"]), "msg": str(e["msg"])[:200], "type": e["type"]} for e in exc.errors()[:10]]
    kinds = {"query": "query parameter", "path": "path parameter", "header": "header", "body": "body field"}
    message = "; ".join(f"{kinds.get(str(e['loc'][0]), str(e['loc'][0]))} "
                        f"{'.'.join(str(part) for part in e['loc'][1:])!r}: {e['msg']}" for e in errors)
    status = 422 if any(e["loc"][0] == "body" for e in errors) else 400
    return JSONResponse({"detail": errors, "message": message}, status_code=status)


def create_app(sessions: sessionmaker[Session], token: str,
               broker_connected: Callable[[], bool] | None = None) -> FastAPI:
    """The API over ``sessions``; ``broker_connected`` (the cloud's MQTT client) feeds ``/ready``."""
    if len(token) < 16:
        raise CloudError("the API token must be at least 16 characters")
    app = FastAPI(title="coldchain cloud", version="1",
                  description="Fleet, rollouts, telemetry and alerts of a coldchain cloud. Every route but "
                              f"{', '.join(PROBES)} needs 'Authorization: Bearer <token>'; request bodies are at "
                              f"most {MAX_BODY_BYTES} bytes.")
    metrics = ApiMetrics(sessions)
    bearer = HTTPBearer(auto_error=False, description="The API token (COLDCHAIN_API_TOKEN)")

    def authenticated(request: Request,
                      _: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        """The routers' own check (the gate already refused a request without the token)."""
        if not token_matches(request.headers.get("authorization"), token):
            raise HTTPException(401, "this route needs 'Authorization: Bearer <token>'",
                                headers={"WWW-Authenticate": "Bearer"})

    def unexpected(request: Request, exc: Exception) -> JSONResponse:
        route = getattr(request.scope.get("route"), "path", "unmatched")
        log.error("unexpected error in %s %s", request.method, route, exc_info=exc)
        metrics.unexpected.labels(route).inc()
        return JSONResponse({"detail": "internal error; the cloud's log has the details"}, status_code=500)

    app.add_exception_handler(RequestValidationError, _invalid)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, unexpected)
    app.include_router(probes(sessions, metrics, broker_connected))
    app.include_router(_routes(sessions), dependencies=[Depends(authenticated)])
    app.add_middleware(Gate, token=token, open_paths=PROBES, count=metrics.refuse,
                       answered=metrics.answered)
    return app


def _routes(sessions: sessionmaker[Session]) -> APIRouter:
    app = APIRouter()

    def db() -> Any:
        with sessions() as session:
            yield session

    Db = Annotated[Session, Depends(db)]

    def guarded(action: Any, *args: Any) -> Any:
        try:
            return action(*args)
        except NotFoundError as exc:
            raise HTTPException(404, str(exc)) from exc
        except (RolloutError, CloudError, ValueError) as exc:
            raise HTTPException(409, str(exc)) from exc

    @app.get("/devices")
    def devices(session: Db, group: Annotated[str | None, Query(pattern=ID_PATTERN)] = None) -> list[dict[str, Any]]:
        return [_device(d) for d in select_devices(session, Selector(groups=[group] if group else []))]

    @app.get("/devices/{device_id}")
    def device(device_id: DeviceId, session: Db) -> dict[str, Any]:
        return _device(guarded(get_device, session, device_id))

    @app.get("/bundles")
    def bundles(session: Db) -> list[dict[str, Any]]:
        return [{"sha256": b.sha256, "model": b.model_name, "version": b.model_version, "target": b.target,
                 "sequence": b.sequence, "size": b.size} for b in session.scalars(select(BundleRow)).all()]

    @app.get("/rollouts")
    def rollout_list(session: Db) -> list[dict[str, Any]]:
        return [_rollout(rollouts.view(session, r.id)) for r in rollouts.recent(session)]

    @app.get("/rollouts/{rollout_id}")
    def rollout(rollout_id: RolloutId, session: Db) -> dict[str, Any]:
        return _rollout(guarded(rollouts.view, session, rollout_id))

    @app.post("/rollouts", status_code=201)
    def start(body: StartRollout, session: Db) -> dict[str, Any]:
        new_id = guarded(rollouts.start, sessions, body.bundle, body.plan, body.rollout_id, None,
                         body.supersede)
        return _rollout(rollouts.view(session, new_id))

    @app.post("/rollouts/{rollout_id}/{action}")
    def act(rollout_id: RolloutId, action: Literal["pause", "resume", "abort", "rollback"], session: Db,
            body: Reason | None = None) -> dict[str, Any]:
        function = getattr(rollouts, action)
        if body is not None and body.reason and action in ("abort", "rollback"):
            guarded(function, sessions, rollout_id, body.reason)
        else:
            guarded(function, sessions, rollout_id)
        return _rollout(rollouts.view(session, rollout_id))

    @app.get("/telemetry/summary")
    def summary(session: Db, by: Literal["device", "group", "bundle"] = "group",
                minutes: Annotated[float, Query(gt=0, le=7 * 24 * 60)] = 60) -> list[dict[str, Any]]:
        since = datetime.now(UTC) - timedelta(minutes=minutes)
        return [{"subject": r.subject, "devices": len(r.summary.devices), "windows": r.summary.windows,
                 "inferences": r.summary.inferences, "error_rate": r.summary.error_rate,
                 "latency_p50_ms": r.summary.latency_p50, "latency_p95_ms": r.summary.latency_p95,
                 "prediction_drift_js": r.reference_drift, "input_drift_psi": r.input_psi,
                 "inventory": r.summary.inventory, "bundles": list(r.bundles)} for r in monitor(session, by, since)]

    @app.get("/alerts")
    def alerts(session: Db, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict[str, Any]]:
        rows = session.scalars(select(Alert).order_by(Alert.id.desc()).limit(limit)).all()
        return [{"kind": a.kind, "scope": a.scope, "subject": a.subject, "message": a.message, "value": a.value,
                 "created_at": a.created_at} for a in rows]

    @app.get("/dead-letters")
    def dead_letters(session: Db, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict[str, Any]]:
        rows = session.scalars(select(DeadLetter).order_by(DeadLetter.id.desc()).limit(limit)).all()
        return [{"topic": d.topic, "reason": d.reason, "bytes": len(d.payload), "received_at": d.received_at}
                for d in rows]

    return app
