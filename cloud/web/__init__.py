"""The web dashboard, served by the cloud's API process under ``/ui`` (``/`` leads there):
server-rendered pages (Jinja2) over the same query layer and operations as the API, charts drawn
by uPlot from ``/ui/static`` (vendored: nothing comes from a CDN), sign-in with an API token that
makes a server-side session whose id is an HttpOnly, SameSite=Strict cookie (``cloud.web.session``).

The API's gate lets ``/ui`` through without a bearer token: every page depends on
``Sessions.viewer``, which looks the cookie's session up and checks its token with the API's own
authenticator, and sends the browser to the sign-in page otherwise; only the sign-in page and the
static assets are served without a session. Every POST needs a same-site Origin (or Referer).
(No ``from __future__ import annotations`` here: FastAPI reads the annotations at runtime.)
"""

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from cloud.audit import record
from cloud.auth_limit import FailureLimiter, RateLimited
from cloud.config import Dashboard
from cloud.operations import Operations
from cloud.queries import Queries
from cloud.store import now
from cloud.tokens import Authenticator, Identity
from cloud.web.mlflow_link import MlflowLinks
from cloud.web.pages import read_pages
from cloud.web.render import HEADERS, Renderer
from cloud.web.rollout_pages import rollout_pages
from cloud.web.session import (
    COOKIE,
    PREFIX,
    BadForm,
    Forbidden,
    LoginRequired,
    Sessions,
    cross_site,
    form,
    safe_next,
)
from cloud.web.session_store import SessionStore

__all__ = ["OPEN_PATHS", "OPEN_PREFIXES", "mount"]
STATIC = Path(__file__).parent / "static"
OPEN_PREFIXES = (PREFIX + "/",)  # the API's gate lets these through: the dashboard checks its own cookie
ROOT = "/"
OPEN_PATHS = (ROOT, PREFIX)  # redirects to the dashboard


def address(request: Request) -> str:
    """The client's address (the proxy's, unless uvicorn runs with --proxy-headers)."""
    return request.client.host if request.client else ""


def _session_routes(sessions: Sessions, render: Renderer) -> APIRouter:
    app = APIRouter(include_in_schema=False)

    @app.get(ROOT)
    def root() -> RedirectResponse:
        return RedirectResponse(PREFIX + "/", status_code=303, headers=HEADERS)

    @app.get(PREFIX)
    def bare() -> RedirectResponse:
        return RedirectResponse(PREFIX + "/", status_code=303, headers=HEADERS)

    @app.get(PREFIX + "/login", response_class=HTMLResponse)
    def login_form(request: Request) -> Response:
        target = safe_next(request.query_params.get("next"))
        if sessions.identify(request.cookies.get(COOKIE)) is not None:
            return RedirectResponse(target, status_code=303, headers=HEADERS)
        return render.page(request, "login.html", who=None, next=target, problem=None)

    @app.post(PREFIX + "/login", response_class=HTMLResponse)
    async def login(request: Request) -> Response:
        fields = await form(request)
        target = safe_next(fields.get("next"))
        refusal = cross_site(request)  # login CSRF: a hostile page signing the victim in as the attacker
        if refusal is not None:
            sessions.refused(refusal[0])
            return render.page(request, "login.html", status=403, who=None, next=target,
                               problem=f"Refused: {refusal[1]}. Sign in from this site's own form.")
        token = fields.get("token", "").strip()
        try:
            made = await run_in_threadpool(sessions.sign_in, token, request.cookies.get(COOKIE), address(request))
        except RateLimited as limited:
            page = render.page(request, "login.html", status=429, who=None, next=target,
                               problem=f"Too many refused tokens from your address: try again in "
                                       f"{limited.retry_after} s.")
            page.headers["Retry-After"] = str(limited.retry_after)
            return page
        if made is None:
            return render.page(request, "login.html", status=401, who=None, next=target,
                               problem="That token is not valid (unknown, revoked or mistyped).")
        answer = RedirectResponse(target, status_code=303, headers=HEADERS)
        answer.set_cookie(value=made, max_age=sessions.max_age, **sessions.cookie_args(request))  # type: ignore[arg-type]
        return answer

    @app.post(PREFIX + "/logout")
    async def logout(request: Request) -> Response:
        fields = await form(request)
        viewer = await run_in_threadpool(sessions.viewer, request)
        sessions.check_write(request, viewer, fields, "dashboard.logout", None, scope="read")
        await run_in_threadpool(sessions.sign_out, viewer, address(request))
        answer = RedirectResponse(PREFIX + "/login", status_code=303, headers=HEADERS)
        args = sessions.cookie_args(request)
        answer.delete_cookie(COOKIE, path=PREFIX, secure=bool(args["secure"]), httponly=True, samesite="strict")
        return answer

    return app


def mount(app: FastAPI, queries: Queries, sessions_factory: sessionmaker[Session], authenticator: Authenticator,
          settings: Dashboard | None = None, limiter: FailureLimiter | None = None,
          refused: Callable[[str], None] = lambda reason: None, clock: Callable[[], datetime] = now) -> None:
    """Add the dashboard to ``app`` (the API: its gate must let ``OPEN_PREFIXES`` through);
    ``authenticator`` is the API's token check, ``limiter`` its token-guessing limit (shared: one
    count per address), ``refused(reason)`` is told of each failed sign-in (unknown, revoked,
    rate_limited), session (session_unknown, session_expired, session_revoked), POST from
    another site (no_origin, cross_origin), bad CSRF token (csrf) and write refused for its scope."""
    settings = settings or Dashboard()
    render = Renderer()
    idle, absolute = timedelta(minutes=settings.session_idle_minutes), timedelta(hours=settings.session_hours)
    store = SessionStore(sessions_factory, authenticator.verify_digest, idle, absolute, clock)
    sessions = Sessions(authenticator, store, limiter or FailureLimiter(clock=clock), refused=refused)
    mlflow = MlflowLinks(settings.mlflow_tracking_uri,
                         None if settings.mlflow_ui_url is None else str(settings.mlflow_ui_url))

    def operations(identity: Identity) -> Operations:
        return Operations(sessions_factory, identity.actor)

    async def login_required(request: Request, exc: LoginRequired) -> Response:
        return RedirectResponse(sessions.login_url(exc.next_path), status_code=303, headers=HEADERS)

    async def forbidden(request: Request, exc: Forbidden) -> Response:
        viewer = await run_in_threadpool(sessions.viewer, request)
        await run_in_threadpool(record, sessions_factory, viewer.identity.actor, exc.action, exc.target,
                                f"refused: {exc.why}")
        return render.page(request, "error.html", status=403, who=viewer, title="Refused", message=exc.why)

    async def bad_form(request: Request, exc: BadForm) -> Response:
        return render.page(request, "error.html", status=400, who=None, title="Bad form", message=str(exc))

    app.add_exception_handler(LoginRequired, login_required)  # type: ignore[arg-type]
    app.add_exception_handler(BadForm, bad_form)  # type: ignore[arg-type]
    app.add_exception_handler(Forbidden, forbidden)  # type: ignore[arg-type]
    app.mount(PREFIX + "/static", StaticFiles(directory=STATIC), name="dashboard-static")
    app.include_router(_session_routes(sessions, render))
    app.include_router(read_pages(queries, render, sessions.viewer, mlflow))
    app.include_router(rollout_pages(queries, render, sessions, sessions.viewer, operations))
