"""Rollouts in the dashboard: the list, and one rollout wave by wave (device states, each gate's
value against its limit, live for the wave still running: ``Queries.gates``, which the API's
``GET /rollouts/{id}/gates`` answers with too), its timeline, and the operator's actions. Pause,
resume, abort and roll back are forms behind a confirmation step; they go through
``cloud.operations`` as the API's do (audited under the token's name) and need a token of scope
``operate``, a same-site origin and the session's CSRF token: a refused one is audited too.
(No ``from __future__ import annotations`` here: FastAPI reads the annotations at runtime.)
"""

from collections import Counter
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from cloud import rollouts
from cloud.errors import CloudError, NotFoundError
from cloud.operations import Action, Operations
from cloud.queries import Queries
from cloud.queries.models import RolloutDetail, RolloutDeviceView
from cloud.tokens import Identity
from cloud.web.pages import pager, paging_of
from cloud.web.render import HEADERS, Renderer
from cloud.web.session import Forbidden, Sessions, Viewer, form
from contract.errors import ContractError

ACTIONS: tuple[Action, ...] = ("pause", "resume", "abort", "rollback")
MINIMUM_GATES = frozenset({"job_success", "evidence", "shadow_agreement"})  # pass at or above their limit
DEVICES_SHOWN = 100  # per wave; failures first
STATUSES = ("RUNNING", "PAUSED", "ROLLING_BACK", "ABORTING", "SUCCEEDED", "ROLLED_BACK", "ABORTED", "FAILED",
            "SUPERSEDED")
FIRST = {"FAILED": 0, "TIMED_OUT": 0, "ROLLED_BACK": 1}


def wave_devices(detail: RolloutDetail) -> dict[int, tuple[list[RolloutDeviceView], int]]:
    """Per wave: the devices shown (failed and rolled back first) and how many there are in all."""
    out: dict[int, list[RolloutDeviceView]] = {}
    for d in detail.devices:
        out.setdefault(d.wave, []).append(d)
    return {wave: (sorted(devices, key=lambda d: (FIRST.get(d.state, 2), d.device))[:DEVICES_SHOWN], len(devices))
            for wave, devices in out.items()}


def rollout_pages(queries: Queries, render: Renderer, sessions: Sessions, viewer: Callable[..., Viewer],
                  operations: Callable[[Identity], Operations]) -> APIRouter:
    app = APIRouter(include_in_schema=False)
    Reader = Annotated[Viewer, Depends(viewer)]

    @app.get("/ui/rollouts", response_class=HTMLResponse)
    def listing(request: Request, who: Reader) -> HTMLResponse:
        q = request.query_params
        status = q.get("status") if q.get("status") in STATUSES else None
        page = queries.rollouts(paging_of(request, 25), status)
        return render.page(request, "rollouts.html", who=who, page=page, paging=pager(page, request),
                           chosen=status or "", statuses=STATUSES)

    def detail_page(request: Request, who: Viewer, rollout_id: str, status: int = 200,
                    problem: str | None = None) -> HTMLResponse:
        try:
            detail = queries.rollout(rollout_id[:48])
        except NotFoundError as exc:
            return render.page(request, "error.html", status=404, who=who, title="No such rollout", message=str(exc))
        gates = queries.gates(detail.id)
        allowed = {a: detail.status in rollouts.ALLOWED[a] for a in ACTIONS}
        plan: dict[str, Any] = {}
        if allowed["rollback"]:
            plan = dict(Counter(step.action for step in queries.rollback_plan(detail.id)))
        done = request.query_params.get("done")
        return render.page(request, "rollout.html", status=status, who=who, r=detail,
                           by_wave={w.wave: w for w in gates.waves},
                           timeline=queries.timeline(detail.id)[:60], allowed=allowed, actions=ACTIONS,
                           rollback_plan=plan, minimum=MINIMUM_GATES, devices=wave_devices(detail),
                           done=done if done in ACTIONS else None, problem=problem)

    @app.get("/ui/rollouts/{rollout_id}", response_class=HTMLResponse)
    def detail(request: Request, rollout_id: str, who: Reader) -> HTMLResponse:
        return detail_page(request, who, rollout_id)

    @app.post("/ui/rollouts/{rollout_id}/{action}")
    async def act(request: Request, rollout_id: str, action: str, who: Reader) -> Response:
        fields = await form(request)
        rollout_id = rollout_id[:48]
        if action not in ACTIONS:
            raise Forbidden(f"{action[:24]!r} is not an action on rollouts", "rollout.unknown", rollout_id)
        sessions.check_write(request, who, fields, f"rollout.{action}", rollout_id)
        reason = fields.get("reason", "").strip()[:500] or None
        operator = operations(who.identity)
        try:
            await run_in_threadpool(operator.rollout, action, rollout_id, reason)
        except NotFoundError as exc:
            return render.page(request, "error.html", status=404, who=who, title="No such rollout", message=str(exc))
        except (CloudError, ContractError, ValueError) as exc:  # refused (and audited) by the operation
            return await run_in_threadpool(detail_page, request, who, rollout_id, 409, str(exc))
        return RedirectResponse(f"/ui/rollouts/{rollout_id}?done={action}", status_code=303, headers=HEADERS)

    return app
