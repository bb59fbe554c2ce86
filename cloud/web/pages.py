"""The dashboard's read pages: fleet (filtered and paged in the store), device (state, slots, job
timeline, telemetry time series, inventory), bundles (the compile report from the manifest),
alerts, dead letters and the audit log. Each reads ``cloud.queries.Queries``, as the API does.

Query parameters are read leniently: a bad filter is said on the page, never a JSON error.
(No ``from __future__ import annotations`` here: FastAPI reads the annotations at runtime.)
"""

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from pydantic import ValidationError

from cloud.errors import NotFoundError
from cloud.queries import DeviceFilter, Page, Paging, Queries
from cloud.web.mlflow_link import MlflowLinks
from cloud.web.render import Renderer
from cloud.web.report import compile_report
from cloud.web.session import Viewer

PAGE_SIZES = (25, 50, 100, 200)
FILTERS = ("group", "board", "bundle", "online", "faulty", "text", "limit")
SERIES_HOURS = {"15m": 0.25, "1h": 1.0, "6h": 6.0, "24h": 24.0, "7d": 168.0}
DEFAULT_SPAN = "1h"


def number(value: str | None, default: int, low: int, high: int) -> int:
    try:
        return min(max(int(value or default), low), high)
    except ValueError:
        return default


def paging_of(request: Request, default: int = 50) -> Paging:
    q = request.query_params
    return Paging(offset=number(q.get("offset"), 0, 0, 10_000_000), limit=number(q.get("limit"), default, 1,
                                                                                 max(PAGE_SIZES)))


def pager(page: Page[Any], request: Request) -> dict[str, Any]:
    """What the paging bar shows and links to: the same filters, another offset."""
    params = {k: v for k, v in request.query_params.items() if k != "offset" and v != ""}
    last = min(page.offset + len(page.items), page.total)
    previous = max(page.offset - page.limit, 0) if page.offset > 0 else None
    following = page.offset + page.limit if page.offset + page.limit < page.total else None
    final = (page.total - 1) // page.limit * page.limit if page.total else 0
    base = {k: v for k, v in params.items() if k != "limit"}
    return {"first": page.offset + 1 if page.items else 0, "last": last, "total": page.total, "params": params,
            "base": base,
            "previous": previous, "next": following, "final": final if following is not None else None,
            "limit": page.limit, "sizes": PAGE_SIZES}


def read_pages(queries: Queries, render: Renderer, viewer: Callable[..., Viewer], mlflow: MlflowLinks) -> APIRouter:
    app = APIRouter(include_in_schema=False)
    Reader = Annotated[Viewer, Depends(viewer)]

    @app.get("/ui/", response_class=HTMLResponse)
    def fleet(request: Request, who: Reader) -> HTMLResponse:
        q = request.query_params
        online, faulty = ({"yes": True, "no": False}.get(q.get(name, "")) for name in ("online", "faulty"))
        problem, page = None, None
        try:
            where = DeviceFilter(group=q.get("group") or None, board=q.get("board") or None,
                                 bundle=q.get("bundle") or None, online=online, text=q.get("text") or None,
                                 faulty=faulty, offset=number(q.get("offset"), 0, 0, 10_000_000),
                                 limit=number(q.get("limit"), 50, 1, max(PAGE_SIZES)))
            page = queries.devices(where)
        except ValidationError as exc:
            problem = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return render.page(request, "fleet.html", status=400 if problem else 200, who=who, page=page,
                           paging=pager(page, request) if page else None, problem=problem,
                           overview=queries.overview(), filters=dict(q.items()),
                           kept={k: v for k, v in q.items() if k in FILTERS and v})  # facet links keep the rest

    @app.get("/ui/devices/{device_id}", response_class=HTMLResponse)
    def device(request: Request, device_id: str, who: Reader) -> HTMLResponse:
        span = request.query_params.get("range", DEFAULT_SPAN)
        span = span if span in SERIES_HOURS else DEFAULT_SPAN
        try:
            detail = queries.device(device_id[:64])
            series = queries.device_series(device_id[:64], SERIES_HOURS[span])
        except NotFoundError as exc:
            return render.page(request, "error.html", status=404, who=who, title="No such device", message=str(exc))
        return render.page(request, "device.html", who=who, detail=detail, d=detail.device, series=series,
                           span=span, spans=list(SERIES_HOURS), has_data=any(series.windows))

    @app.get("/ui/bundles", response_class=HTMLResponse)
    def bundles(request: Request, who: Reader) -> HTMLResponse:
        page = queries.bundles(paging_of(request))
        return render.page(request, "bundles.html", who=who, page=page, paging=pager(page, request))

    @app.get("/ui/bundles/{sha256}", response_class=HTMLResponse)
    def bundle(request: Request, sha256: str, who: Reader) -> HTMLResponse:
        try:
            detail = queries.bundle(sha256[:64])
        except NotFoundError as exc:
            return render.page(request, "error.html", status=404, who=who, title="No such bundle", message=str(exc))
        run = mlflow.run(detail.bundle.sha256)
        return render.page(request, "bundle.html", who=who, b=detail.bundle, m=detail.manifest, run=run,
                           report=compile_report(detail.manifest, run.per_step if run else None))

    @app.get("/ui/alerts", response_class=HTMLResponse)
    def alerts(request: Request, who: Reader) -> HTMLResponse:
        q = request.query_params
        kind = q.get("kind") or None
        page = queries.alerts(paging_of(request), kind[:48] if kind else None)
        return render.page(request, "alerts.html", who=who, page=page, paging=pager(page, request), kind=kind or "")

    @app.get("/ui/dead-letters", response_class=HTMLResponse)
    def dead_letters(request: Request, who: Reader) -> HTMLResponse:
        page = queries.dead_letters(paging_of(request))
        return render.page(request, "dead_letters.html", who=who, page=page, paging=pager(page, request))

    @app.get("/ui/audit", response_class=HTMLResponse)
    def audit(request: Request, who: Reader) -> HTMLResponse:
        q = request.query_params
        action = q.get("action") or None
        page = queries.audit(paging_of(request), action[:64] if action else None)
        return render.page(request, "audit.html", who=who, page=page, paging=pager(page, request),
                           action=action or "")

    return app
