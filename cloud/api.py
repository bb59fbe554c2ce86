"""The HTTP API (FastAPI): read the fleet, rollouts, telemetry aggregates, alerts and dead letters;
start, pause, resume, abort and roll back rollouts. Every route needs ``Authorization: Bearer
<token>`` except the probes ``/health`` and ``/ready`` (``cloud.api_probes``; ``/metrics`` too when
configured ``metrics.public``) and the web dashboard under ``/ui`` (``cloud.web``, which
authenticates its own session cookie): the
gate (``cloud.api_gate``) authenticates it before a body is read, and each router's dependency
checks the identity again together with the scope its routes need (``read`` < ``operate`` <
``admin``, ``cloud.tokens``), so a route is protected by default; writes are audited under the
token's name (``cloud.operations``). Bodies are at most ``MAX_BODY_BYTES``; parameters are
validated (a bad one is a 400, or 422 in a body, naming it); an unexpected failure is a generic
500, logged and counted. OpenAPI docs at ``/docs`` (with the token too), served offline
(``cloud.api_docs``).

(No ``from __future__ import annotations`` here: FastAPI reads the dependency annotations at runtime.)
"""


import logging
from collections.abc import Callable
from datetime import datetime
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from cloud import web
from cloud.api_devices import device_routes
from cloud.api_docs import docs_routes
from cloud.api_gate import MAX_BODY_BYTES, Gate
from cloud.api_live import live_routes
from cloud.api_probes import METRICS, PROBES, ApiMetrics, metrics_route, probes
from cloud.api_routes import export_routes, operate_routes, read_routes, scoped
from cloud.api_upload import upload_routes
from cloud.audit import record
from cloud.auth_limit import FailureLimiter
from cloud.config import CloudConfig
from cloud.metrics import Runtime
from cloud.operations import Operations
from cloud.queries import Queries
from cloud.store import now
from cloud.tokens import Authenticator, Identity, ScopeName

__all__ = ["MAX_BODY_BYTES", "METRICS", "PROBES", "create_app"]
log = logging.getLogger("coldchain.cloud.api")

def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    """A 400 for a bad query or path parameter, a 422 for a bad body; each error names its parameter
    and the input is never echoed (it may be megabytes). A refused write is audited."""
    errors = [{"loc": list(e["loc"]), "msg": str(e["msg"])[:200], "type": e["type"]} for e in exc.errors()[:10]]
    kinds = {"query": "query parameter", "path": "path parameter", "header": "header", "body": "body field"}
    message = "; ".join(f"{kinds.get(str(e['loc'][0]), str(e['loc'][0]))} "
                        f"{'.'.join(str(part) for part in e['loc'][1:])!r}: {e['msg']}" for e in errors)
    status = 422 if any(e["loc"][0] == "body" for e in errors) else 400
    refused_write(request, f"invalid request: {message}")
    return JSONResponse({"detail": errors, "message": message}, status_code=status)


def refused_write(request: Request, why: str) -> None:
    """Audit a write the API refused before it reached the operations (wrong scope, invalid body)."""
    identity = getattr(request.state, "identity", None)
    sessions = getattr(request.app.state, "sessions", None)
    if request.method in ("GET", "HEAD", "OPTIONS") or not isinstance(identity, Identity) or sessions is None:
        return
    route = getattr(request.scope.get("route"), "path", request.url.path)
    record(sessions, identity.actor, f"{request.method} {route}"[:64], request.url.path[:160], f"refused: {why}")


def create_app(sessions: sessionmaker[Session], token: str | None = None,
               broker_connected: Callable[[], bool] | None = None, runtime: Runtime | None = None,
               config: CloudConfig | None = None, clock: Callable[[], datetime] = now) -> FastAPI:
    """The API over ``sessions``: tokens from the store (``coldchain token create``) and, if given,
    the bootstrap ``token`` (scope admin); ``broker_connected`` (the cloud's MQTT client) feeds ``/ready``,
    ``runtime`` (the running cloud's counters) ``/metrics``; ``config`` says where uploads go and holds the
    web dashboard's (``cloud.web``, under ``/ui``) settings; ``clock`` is the dashboard sessions' and the
    token-guessing limiter's (``cloud.auth_limit``; tests)."""
    config = config or CloudConfig()
    authenticator = Authenticator(sessions, token)  # a short bootstrap token is refused here
    app = FastAPI(title="coldchain cloud", version="1", docs_url=None, redoc_url=None,
                  description="Fleet, rollouts, telemetry and alerts of a coldchain cloud. Every route but "
                              f"{', '.join(PROBES)} (and {METRICS} if configured public) needs "
                              "'Authorization: Bearer <token>' of the scope its operation names (x-scope: read < "
                              f"operate < admin); request bodies are at most {MAX_BODY_BYTES} bytes.")
    app.state.sessions = sessions  # for audit records made outside the routes
    metrics = ApiMetrics(sessions, runtime)
    limiter = FailureLimiter(config.auth_limit, clock)  # shared with the dashboard's sign-in

    def authenticate(authorization: str | None, address: str) -> Identity | None:
        """The gate's check; a refused token is counted by reason (never its text) and as a failure
        of its address; a locked-out address is refused unchecked (RateLimited, a 429)."""
        found = limiter.verify(address, lambda: authenticator.verify(authorization),
                               lambda reason: metrics.auth_refused("api", reason))
        return found if isinstance(found, Identity) else None

    bearer = HTTPBearer(auto_error=False, description="An API token (`coldchain token create`)")

    def needs(scope: ScopeName) -> Callable[..., Identity]:
        def check(request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Identity:
            """The routers' own check: the gate authenticated the request, the route's scope is checked here."""
            identity = getattr(request.state, "identity", None)
            if not isinstance(identity, Identity):
                raise HTTPException(401, "this route needs 'Authorization: Bearer <token>'",
                                    headers={"WWW-Authenticate": "Bearer"})
            if not identity.allows(scope):
                why = f"this route needs a token of scope {scope}; token {identity.name!r} has scope {identity.scope}"
                refused_write(request, why)
                metrics.auth_refused("api", "scope")
                raise HTTPException(403, why)
            return identity

        return check

    def unexpected(request: Request, exc: Exception) -> JSONResponse:
        route = getattr(request.scope.get("route"), "path", "unmatched")
        log.error("unexpected error in %s %s", request.method, route, exc_info=exc)
        metrics.unexpected.labels(route).inc()
        return JSONResponse({"detail": "internal error; the cloud's log has the details"}, status_code=500)

    def operations(request: Request) -> Operations:
        return Operations(sessions, request.state.identity.actor)

    app.add_exception_handler(RequestValidationError, _invalid)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, unexpected)
    app.include_router(probes(sessions, metrics, broker_connected))
    if config.metrics.public:  # configured so: served to whoever reaches the port
        app.include_router(metrics_route(metrics))
    else:
        app.include_router(scoped(metrics_route(metrics), "read"), dependencies=[Depends(needs("read"))])
    open_paths = (*PROBES, METRICS) if config.metrics.public else PROBES
    queries = Queries(sessions)
    app.include_router(read_routes(queries), dependencies=[Depends(needs("read"))])
    app.include_router(export_routes(queries, config.exports, operations), dependencies=[Depends(needs("read"))])
    app.include_router(live_routes(queries), dependencies=[Depends(needs("read"))])
    app.include_router(operate_routes(queries, operations), dependencies=[Depends(needs("operate"))])
    app.include_router(device_routes(operations), dependencies=[Depends(needs("operate"))])
    app.include_router(scoped(upload_routes(config.bundles, operations), "operate"),
                       dependencies=[Depends(needs("operate"))])
    app.include_router(docs_routes())  # the gate lets only authenticated requests reach it
    web.mount(app, queries, sessions, authenticator, config.dashboard, limiter,
              refused=lambda reason: metrics.auth_refused("dashboard", reason), clock=clock)
    app.add_middleware(Gate, authenticate=authenticate, open_paths=(*open_paths, *web.OPEN_PATHS), count=metrics.refuse,
                       answered=metrics.answered, open_prefixes=web.OPEN_PREFIXES,
                       max_bodies={"/bundles": config.bundles.max_upload_bytes})
    return app
