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
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from cloud.api_gate import MAX_BODY_BYTES, Gate, token_matches
from cloud.api_probes import PROBES, ApiMetrics, probes
from cloud.api_routes import operate_routes, read_routes
from cloud.errors import CloudError
from cloud.operations import Operations
from cloud.queries import Queries

__all__ = ["MAX_BODY_BYTES", "PROBES", "create_app"]
log = logging.getLogger("coldchain.cloud.api")

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
    queries = Queries(sessions)

    def operations(request: Request) -> Operations:
        return Operations(sessions, "token:COLDCHAIN_API_TOKEN")

    for router in (read_routes(queries), operate_routes(queries, operations)):
        app.include_router(router, dependencies=[Depends(authenticated)])
    app.add_middleware(Gate, token=token, open_paths=PROBES, count=metrics.refuse,
                       answered=metrics.answered)
    return app
