"""The HTTP API (FastAPI): read the fleet, rollouts, telemetry aggregates, alerts and dead letters;
start, pause, resume, abort and roll back rollouts. Every write needs ``Authorization: Bearer
<token>``. OpenAPI docs at ``/docs``.

(No ``from __future__ import annotations`` here: FastAPI reads the dependency annotations at runtime.)
"""


import hmac
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Header, HTTPException, Query
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cloud import rollouts
from cloud.errors import CloudError, NotFoundError, RolloutError
from cloud.fleet import get_device, select_devices
from cloud.monitor import monitor
from cloud.plan import RolloutPlan, Selector
from cloud.store import Alert, BundleRow, DeadLetter, Device


class StartRollout(BaseModel):
    bundle: str
    plan: RolloutPlan = RolloutPlan()
    rollout_id: str | None = None
    supersede: bool = False  # take over devices an unfinished rollout holds (refused otherwise)


class Reason(BaseModel):
    reason: str | None = None


def _device(d: Device) -> dict[str, Any]:
    return {"id": d.id, "online": d.online, "board": d.board, "groups": d.all_groups(), "tags": d.tags,
            "active": d.active, "job_id": d.job_id, "job_state": d.job_state, "last_seen": d.last_seen}


def _rollout(view: rollouts.RolloutView) -> dict[str, Any]:
    r = view.rollout
    return {"id": r.id, "bundle": r.bundle_sha256, "status": r.status, "wave": r.wave + 1, "waves": view.waves(),
            "reason": r.reason, "gates": r.gate_results, "counts": view.counts(), "plan": r.plan,
            "failure_reasons": [{"devices": n, "reason": why} for n, why in view.reasons()],
            "devices": [{"device": d.device_id, "wave": d.wave + 1, "state": d.state, "reason": d.reason,
                         "rolled_back": d.rolled_back} for d in view.devices]}


def create_app(sessions: sessionmaker[Session], token: str) -> FastAPI:
    if len(token) < 16:
        raise CloudError("the API token must be at least 16 characters")
    app = FastAPI(title="coldchain cloud", version="1",
                  description="Fleet, rollouts, telemetry and alerts of a coldchain cloud.")

    def db() -> Any:
        with sessions() as session:
            yield session

    def writer(authorization: Annotated[str | None, Header()] = None) -> None:
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(401, "a write needs 'Authorization: Bearer <token>'",
                                headers={"WWW-Authenticate": "Bearer"})

    Db = Annotated[Session, Depends(db)]

    def guarded(action: Any, *args: Any) -> Any:
        try:
            return action(*args)
        except NotFoundError as exc:
            raise HTTPException(404, str(exc)) from exc
        except (RolloutError, CloudError, ValueError) as exc:
            raise HTTPException(409, str(exc)) from exc

    @app.get("/devices")
    def devices(session: Db, group: str | None = None) -> list[dict[str, Any]]:
        return [_device(d) for d in select_devices(session, Selector(groups=[group] if group else []))]

    @app.get("/devices/{device_id}")
    def device(device_id: str, session: Db) -> dict[str, Any]:
        return _device(guarded(get_device, session, device_id))

    @app.get("/bundles")
    def bundles(session: Db) -> list[dict[str, Any]]:
        return [{"sha256": b.sha256, "model": b.model_name, "version": b.model_version, "target": b.target,
                 "sequence": b.sequence, "size": b.size} for b in session.scalars(select(BundleRow)).all()]

    @app.get("/rollouts")
    def rollout_list(session: Db) -> list[dict[str, Any]]:
        return [_rollout(rollouts.view(session, r.id)) for r in rollouts.recent(session)]

    @app.get("/rollouts/{rollout_id}")
    def rollout(rollout_id: str, session: Db) -> dict[str, Any]:
        return _rollout(guarded(rollouts.view, session, rollout_id))

    @app.post("/rollouts", status_code=201, dependencies=[Depends(writer)])
    def start(body: StartRollout, session: Db) -> dict[str, Any]:
        new_id = guarded(rollouts.start, sessions, body.bundle, body.plan, body.rollout_id, None,
                         body.supersede)
        return _rollout(rollouts.view(session, new_id))

    @app.post("/rollouts/{rollout_id}/{action}", dependencies=[Depends(writer)])
    def act(rollout_id: str, action: Literal["pause", "resume", "abort", "rollback"], session: Db,
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
