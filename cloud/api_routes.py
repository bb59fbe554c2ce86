"""The API's routes over the query layer (reads) and the operations (writes, audited as the
token that made them). Each router carries the scope its routes need (``read``, ``operate``,
``admin``, see ``cloud.api_auth``); the scope is also in each operation's OpenAPI entry
(``x-scope``), so a test can walk the schema and try every route with every scope.

(No ``from __future__ import annotations`` here: FastAPI reads the annotations at runtime.)
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, StringConstraints

from cloud import tokens
from cloud.config import Exports
from cloud.errors import CloudError, NotFoundError
from cloud.exports import pseudonym_key, to_csv
from cloud.operations import Operations
from cloud.plan import RolloutPlan
from cloud.queries import Queries, SeriesFilter
from cloud.queries.models import (
    ID_PATTERN,
    AlertView,
    AuditView,
    BundleDetail,
    BundleView,
    DeadLetterView,
    DeviceDetail,
    DeviceFilter,
    DeviceView,
    MonitorView,
    Page,
    Paging,
    RollbackStepView,
    RolloutDetail,
    RolloutSummary,
    SeriesPoint,
)
from cloud.tokens import WhoAmI
from contract.errors import ContractError

ROLLOUT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,47}$"  # the same alphabet; the store keeps 48
DeviceId = Annotated[str, Path(pattern=ID_PATTERN, description="A device id (contract.topics.check_id)")]
RolloutId = Annotated[str, Path(pattern=ROLLOUT_ID_PATTERN)]
BundlePrefix = Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{4,64}$")]  # a sha256 or 4+ hex digits
Offset = Annotated[int, Query(ge=0, le=10_000_000)]
Limit = Annotated[int, Query(ge=1, le=500)]


class StartRollout(BaseModel):
    bundle: BundlePrefix
    plan: RolloutPlan = RolloutPlan()
    rollout_id: Annotated[str, StringConstraints(pattern=ROLLOUT_ID_PATTERN)] | None = None
    supersede: bool = False  # take over devices an unfinished rollout holds (refused otherwise)


class Reason(BaseModel):
    reason: Annotated[str, StringConstraints(max_length=500)] | None = None


@contextmanager
def answered() -> Iterator[None]:
    """The project's errors as HTTP answers: 404 for what does not exist, 409 for what is refused."""
    try:
        yield
    except NotFoundError as exc:
        raise HTTPException(404, str(exc)) from exc
    except (CloudError, ContractError, ValueError) as exc:
        raise HTTPException(409, str(exc)) from exc


def scoped(router: APIRouter, scope: str) -> APIRouter:
    """Mark every route of ``router`` with its scope in the OpenAPI schema (``x-scope``)."""
    for route in router.routes:
        extra = getattr(route, "openapi_extra", None) or {}
        route.openapi_extra = {**extra, "x-scope": scope}  # type: ignore[attr-defined]
    return router


def read_routes(queries: Queries) -> APIRouter:
    app = APIRouter()

    @app.get("/devices")
    def devices(group: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
                board: Annotated[str | None, Query(max_length=128)] = None,
                bundle: Annotated[str | None, Query(pattern=r"^[0-9a-fA-F]{1,64}$")] = None,
                online: bool | None = None, text: Annotated[str | None, Query(max_length=64)] = None,
                faulty: bool | None = None, offset: Offset = 0, limit: Limit = 100) -> Page[DeviceView]:
        """Devices, online first; ``faulty``: only those whose last state reports a fault (or none)."""
        return queries.devices(DeviceFilter(group=group, board=board, bundle=bundle, online=online, text=text,
                                            faulty=faulty, offset=offset, limit=limit))

    @app.get("/devices/{device_id}")
    def device(device_id: DeviceId) -> DeviceDetail:
        with answered():
            return queries.device(device_id)

    Minutes = Annotated[float, Query(gt=0, le=90 * 24 * 60)]
    Step = Annotated[int, Query(ge=1, le=24 * 60)]

    @app.get("/devices/{device_id}/series")
    def device_series(device_id: DeviceId, minutes: Minutes = 24 * 60, step: Step = 5) -> list[SeriesPoint]:
        """The device's telemetry over time: one point per step and bundle (gaps where it sent nothing)."""
        with answered():
            queries.device(device_id)  # 404 for a device the store does not know
            return queries.series(SeriesFilter(device=device_id), minutes, step)

    @app.get("/bundles/{sha256}/series")
    def bundle_series(sha256: Annotated[str, Path(pattern=r"^[0-9a-fA-F]{4,64}$")], minutes: Minutes = 24 * 60,
                      step: Step = 5) -> list[SeriesPoint]:
        with answered():
            full = queries.bundle(sha256).bundle.sha256
            return queries.series(SeriesFilter(bundle=full), minutes, step)

    @app.get("/bundles")
    def bundles(offset: Offset = 0, limit: Limit = 100) -> Page[BundleView]:
        return queries.bundles(Paging(offset=offset, limit=limit))

    @app.get("/bundles/{sha256}")
    def bundle(sha256: Annotated[str, Path(pattern=r"^[0-9a-fA-F]{4,64}$")]) -> BundleDetail:
        with answered():
            return queries.bundle(sha256)

    @app.get("/rollouts")
    def rollout_list(offset: Offset = 0, limit: Limit = 20,
                     status: Annotated[str | None, Query(pattern=r"^[A-Z_]{1,24}$")] = None) -> Page[RolloutSummary]:
        return queries.rollouts(Paging(offset=offset, limit=limit), status)

    @app.get("/rollouts/{rollout_id}")
    def rollout(rollout_id: RolloutId) -> RolloutDetail:
        with answered():
            return queries.rollout(rollout_id)

    @app.get("/rollouts/{rollout_id}/rollback-plan")
    def rollback_plan(rollout_id: RolloutId) -> list[RollbackStepView]:
        with answered():
            return queries.rollback_plan(rollout_id)

    @app.get("/telemetry/summary")
    def summary(by: Literal["device", "group", "bundle"] = "group",
                minutes: Annotated[float, Query(gt=0, le=7 * 24 * 60)] = 60) -> list[MonitorView]:
        return queries.telemetry(by, minutes)

    @app.get("/alerts")
    def alerts(offset: Offset = 0, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
               kind: Annotated[str | None, Query(pattern=r"^[a-z_]{1,48}$")] = None) -> Page[AlertView]:
        return queries.alerts(Paging(offset=offset, limit=min(limit, 500)), kind)

    @app.get("/dead-letters")
    def dead_letters(offset: Offset = 0, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Page[DeadLetterView]:
        return queries.dead_letters(Paging(offset=offset, limit=min(limit, 500)))

    @app.get("/whoami")
    def whoami(request: Request) -> WhoAmI:
        """The token this request carries: its name, scope, creation and last use (never the token)."""
        return tokens.whoami(queries.sessions, request.state.identity)

    @app.get("/audit")
    def audit(offset: Offset = 0, limit: Limit = 100,
              action: Annotated[str | None, Query(pattern=r"^[a-z_.]{1,64}$")] = None) -> Page[AuditView]:
        return queries.audit(Paging(offset=offset, limit=limit), action)

    return scoped(app, "read")


def operate_routes(queries: Queries, operations: Callable[[Request], Operations]) -> APIRouter:
    app = APIRouter()
    Operator = Annotated[Operations, Depends(operations)]

    @app.post("/rollouts", status_code=201)
    def start(body: StartRollout, operator: Operator) -> RolloutDetail:
        with answered():
            new_id = operator.start_rollout(body.bundle, body.plan, body.rollout_id, body.supersede)
            return queries.rollout(new_id)

    @app.post("/rollouts/{rollout_id}/{action}")
    def act(rollout_id: RolloutId, action: Literal["pause", "resume", "abort", "rollback"], operator: Operator,
            body: Reason | None = None) -> RolloutDetail:
        with answered():
            operator.rollout(action, rollout_id, body.reason if body is not None else None)
            return queries.rollout(rollout_id)

    return scoped(app, "operate")


def export_routes(queries: Queries, config: Exports, operations: Callable[[Request], Operations]) -> APIRouter:
    app = APIRouter()

    @app.get("/telemetry/export", response_class=PlainTextResponse,
             responses={200: {"content": {"text/csv": {}}, "description": "One CSV row per subject"}})
    def export(request: Request, operator: Annotated[Operations, Depends(operations)],
               by: Literal["device", "group", "bundle"] = "device",
               minutes: Annotated[float, Query(gt=0, le=90 * 24 * 60)] = 60,
               ids: Literal["pseudonyms", "raw"] = "pseudonyms") -> PlainTextResponse:
        """Telemetry summaries as CSV; device ids are keyed pseudonyms unless an admin token asks
        for ``ids=raw``. Each export is audited."""
        identity = request.state.identity
        detail = {"by": by, "minutes": minutes, "ids": ids}
        if ids == "raw" and not identity.allows("admin"):
            operator.refused("telemetry.export", by, "raw device ids need an admin token", detail)
            raise HTTPException(403, "raw device ids need a token of scope admin; without ids=raw the export "
                                     "has keyed pseudonyms")
        with answered():
            text = operator.audited("telemetry.export", by, detail, lambda: to_csv(
                queries.telemetry(by, minutes), None if ids == "raw" else pseudonym_key(queries.sessions, config)))
        return PlainTextResponse(text, media_type="text/csv",
                                 headers={"Content-Disposition": f'attachment; filename="telemetry-{by}.csv"'})

    return scoped(app, "read")
