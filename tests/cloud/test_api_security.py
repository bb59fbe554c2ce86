"""The HTTP API as an attacker on the network tries it (issue 13): every route but the two probes
needs the token (checked by walking the OpenAPI schema), a body is read only after the token and
only up to its limit (over a real socket), bad query input is a 4xx naming the parameter, never a
500, and a bundle prefix is matched literally."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session, sessionmaker

from cloud.api import MAX_BODY_BYTES, PROBES, create_app
from cloud.config import AuthLimit, CloudConfig, load_config
from cloud.errors import NotFoundError
from cloud.fleet import add_bundle, find_bundle
from cloud.queries import Paging, Queries
from cloud.store import ApiToken, open_store, sqlite_url
from cloud.tokens import SCOPES, create, revoke
from tests.cloud.live_http import Body, CountingApp, post_streaming, serving

TOKEN = "t0ken-for-the-tests-only"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MB = 1024 * 1024


def client_for(url: str, **kwargs: Any) -> TestClient:
    return TestClient(create_app(open_store(url), TOKEN, **kwargs), raise_server_exceptions=False)


def operations(client: TestClient) -> list[tuple[str, str, dict[str, Any]]]:
    schema = client.get("/openapi.json", headers=AUTH).json()
    return [(path, method, op) for path, item in schema["paths"].items() for method, op in item.items()]


def concrete(path: str) -> str:
    return path.replace("{rollout_id}", "r-1").replace("{device_id}", "fridge-0").replace("{action}", "pause")


def test_every_route_but_the_probes_needs_the_token(api_store: tuple[str, str]) -> None:
    """Walks the OpenAPI schema: a route added later without the token check fails here. (Two wrong
    tokens per route from one address: the guessing limit, ``cloud.auth_limit``, relaxed as documented.)"""
    client = client_for(api_store[0], config=CloudConfig(auth_limit=AuthLimit(failures=1000)))
    ops = operations(client)
    assert len(ops) >= 10 and set(PROBES) <= {path for path, _, _ in ops}
    for path, method, op in ops:  # the routers' dependency too, not only the gate: the schema says so
        assert (op.get("security") == [{"HTTPBearer": []}]) == (path not in PROBES), (method, path)
        url = concrete(path)
        bare = client.request(method, url)
        wrong = client.request(method, url, headers={"Authorization": f"Bearer {TOKEN[:-1]}x"})
        basic = client.request(method, url, headers={"Authorization": f"Basic {TOKEN}"})
        if path in PROBES:
            assert bare.status_code in (200, 503), (method, path, bare.status_code)
        else:
            for response in (bare, wrong, basic):
                assert response.status_code == 401, (method, path, response.status_code, response.text)
                assert response.headers["www-authenticate"] == "Bearer"
            assert client.request(method, url, headers=AUTH).status_code != 401, (method, path)
    for page in ("/openapi.json", "/docs", "/redoc", "/nowhere"):  # outside the schema: the token too
        assert client.get(page).status_code == 401, page


def test_every_route_needs_a_token_of_its_scope(api_store: tuple[str, str]) -> None:
    """Each operation names its scope (x-scope) and is refused (403) to a token of a lower one,
    (401) to a revoked one; tokens are stored hashed. Walks the schema, so no route can forget it."""
    url = api_store[0]
    sessions = open_store(url)
    tokens = {scope: create(sessions, f"t-{scope}", scope, "test") for scope in SCOPES}
    with sessions() as session:
        stored = {t.name: t.digest for t in session.scalars(select(ApiToken)).all()}
    assert all(token not in str(stored) and stored[f"t-{scope}"] == hashlib.sha256(token.encode()).hexdigest()
               for scope, token in tokens.items())
    client = client_for(url)
    rank = {scope: i for i, scope in enumerate(SCOPES)}
    writes = 0
    for path, method, op in operations(client):
        if path in PROBES:
            assert "x-scope" not in op
            continue
        needed = op.get("x-scope")
        assert needed in SCOPES, (method, path, needed)
        assert needed != "read" or method == "get", (method, path)  # a write never needs only read
        for scope, token in tokens.items():
            response = client.request(method, concrete(path), headers={"Authorization": f"Bearer {token}"})
            if rank[scope] < rank[needed]:
                assert response.status_code == 403 and needed in response.json()["detail"], (method, path, scope)
            else:
                assert response.status_code not in (401, 403), (method, path, scope, response.text)
        writes += method != "get"
    audited = Queries(sessions).audit(Paging(limit=500)).items
    exports = [e for e in audited if e.action == "telemetry.export"]  # a read that is audited: personal data
    assert sorted(e.actor for e in exports) == ["token:t-admin", "token:t-operate", "token:t-read"]
    by_operators = [e for e in audited if e.actor.startswith("token:") and e not in exports]
    assert writes >= 2 and len(by_operators) == writes * 3, audited  # every write tried with each token
    assert {e.actor for e in by_operators} == {"token:t-read", "token:t-operate", "token:t-admin"}
    assert all(e.result.startswith("refused: this route needs a token of scope operate")
               for e in by_operators if e.actor == "token:t-read")
    revoke(sessions, "t-operate", "test")
    refused = client.post("/rollouts/r-1/pause", headers={"Authorization": f"Bearer {tokens['operate']}"})
    assert refused.status_code == 401
    assert client.get("/devices", headers={"Authorization": f"Bearer {tokens['read']}"}).status_code == 200
    assert [e.action for e in Queries(sessions).audit(Paging(limit=3)).items][:1] == ["token.revoke"]


def test_probes_expose_no_device_ids(api_store: tuple[str, str], tmp_path: Path) -> None:
    connected = [True]
    client = client_for(api_store[0], broker_connected=lambda: connected[0])
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").status_code == 200
    connected[0] = False
    not_ready = client.get("/ready")
    assert not_ready.status_code == 503 and "broker" in not_ready.text
    metrics = client.get("/metrics", headers=AUTH)
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    assert 'coldchain_devices{online="true"} 4.0' in metrics.text, metrics.text
    assert "fridge" not in metrics.text
    client.get("/devices/fridge-1", headers=AUTH)
    assert 'route="/devices/{device_id}"' in client.get("/metrics", headers=AUTH).text
    assert "fridge" not in client.get("/metrics", headers=AUTH).text
    unreachable = TestClient(create_app(sessionmaker(create_engine(sqlite_url(tmp_path / "no" / "such.db"))), TOKEN))
    down = unreachable.get("/ready")
    assert down.status_code == 503 and "store" in down.text


def test_a_100_mb_body_without_a_token_is_refused_before_it_is_read(api_store: tuple[str, str]) -> None:
    """Over a real socket: the 401 comes after the headers, before the body; the application is
    handed none of it and the client could push only what the socket buffers hold."""
    counting = CountingApp(create_app(open_store(api_store[0]), TOKEN))
    with serving(counting) as port:
        body = Body(total=100 * MB)
        status, answer = post_streaming(port, "/rollouts", body)
        assert status == 401, answer[:300]
        assert counting.received == 0
        assert body.consumed < 32 * MB, body.consumed  # the kernel's buffers, not the 100 MB
        chunked = Body(total=100 * MB, chunked=True)
        assert post_streaming(port, "/rollouts", chunked)[0] == 401 and counting.received == 0
        # with the token: a declared length over the limit is refused unread, a chunked one once past it
        too_long = Body(total=MAX_BODY_BYTES + 1)
        status, answer = post_streaming(port, "/rollouts", too_long, AUTH)
        assert status == 413 and b"1048576" in answer, answer[:300]
        assert counting.received == 0
        streamed = Body(total=100 * MB, chunked=True)
        status, answer = post_streaming(port, "/rollouts", streamed, AUTH)
        assert status == 413, answer[:300]
        assert MAX_BODY_BYTES < counting.received <= MAX_BODY_BYTES + 256 * 1024, counting.received
        assert streamed.consumed < 40 * MB


def test_body_limit_with_the_test_client(api_store: tuple[str, str]) -> None:
    client = client_for(api_store[0])
    big = b'{"bundle": "' + b"a" * MAX_BODY_BYTES + b'"}'
    assert client.post("/rollouts", content=big).status_code == 401
    assert client.post("/rollouts", content=big, headers=AUTH).status_code == 413
    refused = client.post("/rollouts", content=b"{}", headers={**AUTH, "Content-Length": "lots"})
    assert refused.status_code == 400


def test_bad_query_input_is_a_4xx_naming_the_parameter(api_store: tuple[str, str]) -> None:
    client = client_for(api_store[0])
    for group in ("eu'", 'eu"', "eu' OR '1'='1", "a/b", "x" * 65, ""):
        response = client.get("/devices", params={"group": group}, headers=AUTH)
        assert response.status_code == 400, (group, response.status_code, response.text)
        assert "group" in response.json()["message"]
        assert group[:40] not in response.text or not group  # the input is not echoed back
    assert client.get("/devices/eu'x", headers=AUTH).status_code == 400
    assert client.get("/rollouts/r'1", headers=AUTH).status_code == 400
    limit = client.get("/alerts", params={"limit": "10000000000000000000000"}, headers=AUTH)
    assert limit.status_code == 400 and "limit" in limit.json()["message"]
    assert client.get("/devices", params={"group": "us"}, headers=AUTH).json()["items"][0]["id"] == "fridge-3"
    long_url = client.get("/devices", params={"group": "x" * 20000}, headers=AUTH)
    assert long_url.status_code == 414


def test_a_bundle_prefix_is_matched_literally(api_store: tuple[str, str]) -> None:
    url, sha = api_store
    client = client_for(url)
    for prefix in (f"%{sha[-7:]}", f"_{sha[1:9]}", "%", sha[:8] + "%"):
        response = client.post("/rollouts", json={"bundle": prefix, "rollout_id": "r-like"}, headers=AUTH)
        assert response.status_code == 422 and "bundle" in response.json()["message"], (prefix, response.text)
        with open_store(url)() as session, pytest.raises(NotFoundError):
            find_bundle(session, prefix)  # the CLI's path: no LIKE wildcards either
    huge = client.post("/rollouts", json={"bundle": "a" * 100_000}, headers=AUTH)
    assert huge.status_code == 422
    assert client.post("/rollouts", json={"bundle": "a" * 10 * MB}, headers=AUTH).status_code == 413
    with open_store(url)() as session:
        assert find_bundle(session, sha[:8].upper()).sha256 == sha


def test_find_bundle_is_literal_on_both_stores(sessions: sessionmaker[Session], world: dict[str, object]) -> None:
    with sessions.begin() as session:
        sha = add_bundle(session, world["bundles"][5].tarball, world["trust"]).sha256  # type: ignore[index,arg-type]
    with sessions() as session:
        assert find_bundle(session, sha[:6]).sha256 == sha and find_bundle(session, sha).sha256 == sha
        for prefix in (f"%{sha[-7:]}", f"_{sha[1:9]}", sha[:4] + "%", sha + "0", "a" * 10 * MB):
            with pytest.raises(NotFoundError):
                find_bundle(session, prefix)


def test_an_unexpected_error_is_a_generic_500_logged_and_counted(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """A store without the tables (an unexpected failure inside a route): 500 without the details."""
    empty = sessionmaker(create_engine(sqlite_url(tmp_path / "empty.db")))
    client = TestClient(create_app(empty, TOKEN), raise_server_exceptions=False)
    response = client.get("/alerts", headers=AUTH)
    assert response.status_code == 500
    assert response.json() == {"detail": "internal error; the cloud's log has the details"}
    assert "alerts" in caplog.text and "no such table" in caplog.text
    assert 'coldchain_api_unexpected_errors_total{route="/alerts"} 1.0' in client.get("/metrics", headers=AUTH).text


GET_TEXT = st.one_of(st.text(max_size=80), st.sampled_from(["'", '"', "%", "_", "%25", "\\", "\x00", "-1",
                                                              "1e309", "nan", "a" * 5000, "../..", "0x10"]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_get_parameters_never_give_a_500(api_store: tuple[str, str], data: st.DataObject) -> None:
    """Every GET route of the schema with arbitrary text in each of its parameters: never a 5xx."""
    client = client_for(api_store[0])
    for path, method, op in operations(client):
        if method != "get":
            continue
        url, query = path, {}
        for parameter in op.get("parameters", []):
            value = data.draw(GET_TEXT, label=f"{path} {parameter['name']}")
            if parameter["in"] == "path":
                url = url.replace("{" + parameter["name"] + "}", quote(value, safe="") or "x")
            elif parameter["in"] == "query":
                query[parameter["name"]] = value
        response = client.get(url, params=query, headers=AUTH)
        assert response.status_code < 500, (url, query, response.status_code, response.text[:300])


def test_metrics_need_a_read_token_unless_configured_public(api_store: tuple[str, str], tmp_path: Path) -> None:
    """Found by review: ``/metrics`` was served to anyone and named up to 50 groups (devices report
    their own). Now it needs a token (any scope: read is the lowest) unless ``metrics.public: true``."""
    sessions = open_store(api_store[0])
    reader = create(sessions, "prometheus", "read", "test")
    client = client_for(api_store[0])
    for headers in ({}, {"Authorization": "Bearer cct_wrong"}, {"Authorization": f"Basic {reader}"}):
        refused = client.get("/metrics", headers=headers)
        assert refused.status_code == 401 and "coldchain_" not in refused.text, headers
    scrape = client.get("/metrics", headers={"Authorization": f"Bearer {reader}"})
    assert scrape.status_code == 200 and 'coldchain_group_devices{group="eu",online="true"} 3.0' in scrape.text
    assert 'coldchain_auth_refused_total{reason="missing",surface="api"} 1.0' in scrape.text
    revoke(sessions, "prometheus", "test")
    assert client.get("/metrics", headers={"Authorization": f"Bearer {reader}"}).status_code == 401
    config = tmp_path / "cloud.yaml"
    config.write_text("metrics:\n  public: true\n")
    public = client_for(api_store[0], config=load_config(config))
    assert public.get("/metrics").status_code == 200 and "coldchain_devices" in public.get("/metrics").text
    assert public.get("/devices").status_code == 401  # only /metrics is opened
