"""The dashboard's doors (tests/integration/test_dashboard_browser.py drives it in Chromium): every
page needs a session, the session is one HttpOnly SameSite=Strict cookie holding a session id
(tests/cloud/test_web_sessions.py: its storage, expiry and the Origin check), a revoked token is
signed out at its next page, and a write needs the session's CSRF token, a same-site origin and
scope operate; each refused write is audited."""

from __future__ import annotations

import re
from collections.abc import Iterator
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker
from starlette.routing import Mount

from cloud import tokens
from cloud.api import create_app
from cloud.config import CloudConfig, Dashboard
from cloud.fleet import add_bundle
from cloud.queries import Paging, Queries
from cloud.store import open_store, sqlite_url

SAMPLES = {"device_id": "fridge-1", "rollout_id": "r-web", "sha256": "0" * 12, "action": "pause"}
ORIGIN = {"Origin": "http://testserver"}  # what a browser sends with the site's own forms


def browser(app: Any) -> TestClient:
    return TestClient(app, headers=ORIGIN)


def flat(routes: list[Any]) -> Iterator[Any]:
    """Every route, also those of included routers (FastAPI keeps them apart)."""
    for route in routes:
        if hasattr(route, "original_router"):
            yield from flat(route.original_router.routes)
        else:
            yield route


def signed_in(client: TestClient, token: str) -> str:
    """Sign in through the form; return the CSRF token the rollout page's forms carry."""
    answer = client.post("/ui/login", data={"token": token, "next": "/ui/rollouts/r-web"}, follow_redirects=False)
    assert answer.status_code == 303, answer.text
    page = client.get("/ui/rollouts/r-web")
    assert page.status_code == 200
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
    assert found, "the page has no CSRF field"
    return found.group(1)


def test_every_dashboard_page_needs_a_valid_session(web_store: tuple[sessionmaker[Session], dict[str, str]]) -> None:
    sessions, made = web_store
    app = create_app(sessions)
    client = browser(app)
    signed_in(client, made["read"])
    session = client.cookies["coldchain_session"]
    paths = [(sorted(getattr(r, "methods", None) or ["GET"])[0], r.path) for r in flat(app.routes)
             if not isinstance(r, Mount) and r.path.startswith("/ui/") and r.path != "/ui/login"]
    assert len(paths) >= 10 and any(m == "POST" for m, _ in paths)
    assert any(isinstance(r, Mount) and r.path == "/ui/static" for r in app.routes)
    for cookie in (None, "not-a-session", made["operate"], session):
        if cookie == session:
            tokens.revoke(sessions, "t-read", "test")  # revoked: signed out at its next page
        client.cookies.clear()
        if cookie:
            client.cookies.set("coldchain_session", cookie, path="/ui")
        for method, template in paths:
            path = template.format(**SAMPLES)
            answer = client.request(method, path, follow_redirects=False)
            assert answer.status_code == 303, (method, path, answer.status_code)
            assert answer.headers["location"].startswith("/ui/login?next=/ui/"), answer.headers["location"]
    assert rollouts_status(sessions) == "RUNNING"
    assert client.get("/ui/static/uPlot.iife.min.js").status_code == 200  # assets need no session
    assert client.get("/", follow_redirects=False).headers["location"] == "/ui/"


def test_the_sign_in_sets_one_session_cookie(web_store: tuple[sessionmaker[Session], dict[str, str]]) -> None:
    sessions, made = web_store
    client = browser(create_app(sessions))
    refused = client.post("/ui/login", data={"token": "cct_wrong", "next": "/ui/"}, follow_redirects=False)
    assert refused.status_code == 401 and "not valid" in refused.text and "set-cookie" not in refused.headers
    answer = client.post("/ui/login", data={"token": made["read"], "next": "//evil.example/x"}, follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/ui/"  # never another site
    raw = answer.headers.get_list("set-cookie")
    assert len(raw) == 1
    cookie = SimpleCookie(raw[0])["coldchain_session"]
    assert cookie.value != made["read"]  # a session id, never the token
    assert cookie["httponly"] and cookie["samesite"].lower() == "strict" and cookie["path"] == "/ui"
    assert not cookie["secure"]  # plain http on 127.0.0.1; set under https
    page = client.get("/ui/")
    assert page.status_code == 200 and "t-read" in page.text
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert page.headers["cache-control"] == "no-store"
    assert "<script>" not in page.text  # no inline script: the CSP would block it
    assert client.get("/devices", follow_redirects=False).status_code == 401  # the cookie is not an API token


def test_a_write_needs_csrf_same_origin_and_scope_operate(
        web_store: tuple[sessionmaker[Session], dict[str, str]]) -> None:
    sessions, made = web_store
    reader, operator = browser(create_app(sessions)), browser(create_app(sessions))
    read_csrf, csrf = signed_in(reader, made["read"]), signed_in(operator, made["operate"])
    assert 'id="read-only"' in reader.get("/ui/rollouts/r-web").text
    tries = [(operator, {}, {}, "CSRF"), (operator, {"csrf": read_csrf}, {}, "CSRF"),
             (operator, {"csrf": csrf}, {"Origin": "http://evil.example"}, "another site"),
             (reader, {"csrf": read_csrf}, {}, "scope operate")]
    for client, fields, headers, why in tries:
        answer = client.post("/ui/rollouts/r-web/pause", data=fields, headers=headers, follow_redirects=False)
        assert answer.status_code == 403 and why in answer.text, (fields, headers, answer.text[:300])
    assert rollouts_status(sessions) == "RUNNING"
    refusals = Queries(sessions).audit(Paging(limit=50), "rollout.pause").items
    assert len(refusals) == 4 and all(a.result.startswith("refused") for a in refusals)
    assert {a.actor for a in refusals} == {"token:t-operate", "token:t-read"}
    done = operator.post("/ui/rollouts/r-web/pause", data={"csrf": csrf}, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == "/ui/rollouts/r-web?done=pause"
    assert rollouts_status(sessions) == "PAUSED"
    again = operator.post("/ui/rollouts/r-web/pause", data={"csrf": csrf}, follow_redirects=False)
    assert again.status_code == 409 and "this needs it to be RUNNING" in again.text  # said on the page
    latest = Queries(sessions).audit(Paging(limit=2), "rollout.pause").items
    assert [a.result[:7] for a in latest] == ["refused", "ok"] and latest[1].actor == "token:t-operate"
    logout = operator.post("/ui/logout", data={"csrf": csrf}, follow_redirects=False)
    assert logout.status_code == 303 and 'coldchain_session=""' in logout.headers["set-cookie"]


def rollouts_status(sessions: sessionmaker[Session]) -> str:
    return Queries(sessions).rollout("r-web").status


def test_a_bundle_page_links_its_compile_run_with_each_step_measured(
        tmp_path: Path, world: dict[str, object]) -> None:
    """The compile recorded in MLflow as ``coldchain compile --mlflow-uri`` records it: the bundle page
    links the run in MLflow's UI and fills the steps between the float model and the bundle from
    the run's per-step metrics; without a tracking server it says the run is not recorded."""
    from compiler.registry import record_compile

    sessions = open_store(sqlite_url(tmp_path / "cloud.db"))
    bundle = world["bundles"][5]  # type: ignore[index]
    with sessions.begin() as session:
        sha = add_bundle(session, bundle.tarball, world["trust"]).sha256  # type: ignore[arg-type]
    token = tokens.create(sessions, "t-read", "read", "test")
    steps = [{"size_bytes": 1172241.0, "fidelity": 1.0, "latency_p50_ms": 0.5, "latency_p95_ms": 0.6},
             {"size_bytes": 1171000.0, "fidelity": 1.0, "latency_p50_ms": 0.48, "latency_p95_ms": 0.58},
             {"size_bytes": 309750.0, "fidelity": 0.998, "latency_p50_ms": 0.29, "latency_p95_ms": 0.35}]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    record_compile(uri, "fridge", "arm64-cortex-a72-ort", steps, {"target": "t"},
                   bundle.tarball, "fridge-bundles", {"coldchain.manifest_sha256": sha})  # type: ignore[attr-defined]
    plain = browser(create_app(sessions))
    signed_in_as(plain, token)
    assert "not recorded" in plain.get(f"/ui/bundles/{sha}").text
    dashboard = Dashboard(mlflow_tracking_uri=uri, mlflow_ui_url="http://mlflow.example:5000")
    linked = browser(create_app(sessions, config=CloudConfig(dashboard=dashboard)))
    signed_in_as(linked, token)
    page = linked.get(f"/ui/bundles/{sha}").text
    found = re.search(r'href="(http://mlflow\.example:5000/#/experiments/\d+/runs/[0-9a-f]{32})"', page)
    assert found, page[page.find('id="mlflow"'):][:400]
    cleanup = page[page.find(">cleanup<"):page.find(">quantize.static<")]
    assert "1.1 MiB" in cleanup and "0.48 ms" in cleanup and "0.58 ms" in cleanup  # step 1, from the run


def signed_in_as(client: TestClient, token: str) -> None:
    answer = client.post("/ui/login", data={"token": token, "next": "/ui/"}, follow_redirects=False)
    assert answer.status_code == 303, answer.text
