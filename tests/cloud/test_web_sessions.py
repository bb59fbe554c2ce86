"""The dashboard as an attacker with a browser or curl tries it (found by review): a sign-in posted
from another site (login CSRF: the victim signed in with the attacker's token), a cookie that was
the API token itself, forms with too many fields (a 500), redirects without ``no-store``. Now:
every POST needs a same-site Origin (or Referer), the cookie is a random session id of which the
store keeps the sha256, bound to its token, with an idle and an absolute expiry."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta
from http.cookies import SimpleCookie

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import inspect, text
from sqlalchemy.orm import Session, sessionmaker

from cloud import tokens
from cloud.api import create_app
from cloud.config import CloudConfig, Dashboard
from cloud.queries import Paging, Queries
from cloud.store import open_store

ORIGIN = {"Origin": "http://testserver"}  # what a browser sends with a form of this site
Store = tuple[sessionmaker[Session], dict[str, str]]


class Clock:
    def __init__(self) -> None:
        self.at = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.at

    def advance(self, minutes: float) -> None:
        self.at += timedelta(minutes=minutes)


def sign_in(client: TestClient, token: str, **headers: str) -> str:
    """Sign in through the form; the session cookie's value."""
    answer = client.post("/ui/login", data={"token": token, "next": "/ui/"}, headers={**ORIGIN, **headers},
                         follow_redirects=False)
    assert answer.status_code == 303, answer.text
    return SimpleCookie(answer.headers["set-cookie"])["coldchain_session"].value


def csrf_of(client: TestClient) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', client.get("/ui/rollouts/r-web").text)
    assert found, "the page has no CSRF field"
    return found.group(1)


def refused(client: TestClient, token: str) -> dict[str, float]:
    """coldchain_auth_refused_total of the dashboard, by reason (scraped with a read token)."""
    scrape = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert scrape.status_code == 200, scrape.text
    return {s.labels["reason"]: s.value for f in text_string_to_metric_families(scrape.text)
            if f.name == "coldchain_auth_refused" for s in f.samples
            if s.name.endswith("_total") and s.labels["surface"] == "dashboard"}


def session_rows(sessions: sessionmaker[Session]) -> list[tuple[str, ...]]:
    with sessions() as session:
        return [tuple(str(v) for v in row) for row in session.execute(text("SELECT * FROM web_sessions")).all()]


def signed_out(client: TestClient) -> bool:
    answer = client.get("/ui/", follow_redirects=False)
    return answer.status_code == 303 and answer.headers["location"].startswith("/ui/login")


def test_every_dashboard_post_needs_a_same_site_origin(web_store: Store) -> None:
    """Login CSRF: a hostile page posts the sign-in form with the attacker's token. Each POST (sign-in,
    sign-out, rollout actions) without a same-site Origin or Referer is refused and counted."""
    sessions, made = web_store
    client = TestClient(create_app(sessions))
    hostile = [({}, "no_origin"), ({"Origin": "http://evil.example"}, "cross_origin"),
               ({"Origin": "null"}, "cross_origin"), ({"Referer": "http://evil.example/ui/login"}, "cross_origin"),
               ({"Origin": "http://testserver.evil.example"}, "cross_origin")]
    for headers, _ in hostile:
        answer = client.post("/ui/login", data={"token": made["operate"], "next": "/ui/"}, headers=headers,
                             follow_redirects=False)
        assert answer.status_code == 403 and "set-cookie" not in answer.headers, (headers, answer.status_code)
        assert "another site" in answer.text or "Origin" in answer.text
    assert session_rows(sessions) == []
    by_referer = client.post("/ui/login", data={"token": made["operate"], "next": "/ui/"},
                             headers={"Referer": "http://testserver/ui/login"}, follow_redirects=False)
    assert by_referer.status_code == 303  # a browser that sends only a same-site Referer
    csrf = csrf_of(client)
    for path in ("/ui/rollouts/r-web/pause", "/ui/logout"):
        for headers, _ in hostile[:2]:
            answer = client.post(path, data={"csrf": csrf}, headers=headers, follow_redirects=False)
            assert answer.status_code == 403, (path, headers, answer.status_code)
    assert Queries(sessions).rollout("r-web").status == "RUNNING"
    assert not signed_out(client)  # the refused sign-out left the session as it was
    counts = refused(client, made["read"])
    assert counts.get("no_origin") == 3 and counts.get("cross_origin") == 6, counts


def test_the_cookie_is_a_random_session_id_stored_hashed(web_store: Store) -> None:
    sessions, made = web_store
    app = create_app(sessions)
    client = TestClient(app)
    first, second = sign_in(client, made["read"]), sign_in(client, made["read"])
    for value in (first, second):
        assert made["read"] not in value and made["read"][4:16] not in value and len(value) >= 40
    assert first != second
    rows = session_rows(sessions)
    assert len(rows) == 1, rows  # signing in again replaced the browser's session (no fixation)
    assert hashlib.sha256(second.encode()).hexdigest() in rows[0]
    assert not any(second in v or made["read"] in v for v in rows[0])
    replayed = TestClient(app)
    replayed.cookies.set("coldchain_session", first, path="/ui")
    assert signed_out(replayed)  # the replaced session is gone
    raw = TestClient(app)
    raw.cookies.set("coldchain_session", made["read"], path="/ui")
    assert signed_out(raw)  # the token itself is no session
    assert not signed_out(client) and "t-read" in client.get("/ui/").text
    secure = TestClient(app, base_url="https://testserver")
    answer = secure.post("/ui/login", data={"token": made["read"], "next": "/ui/"},
                         headers={"Origin": "https://testserver"}, follow_redirects=False)
    cookie = SimpleCookie(answer.headers["set-cookie"])["coldchain_session"]
    assert cookie["secure"] and cookie["httponly"] and cookie["samesite"].lower() == "strict"
    assert cookie["path"] == "/ui"


def test_revoking_the_token_ends_its_sessions_at_once(web_store: Store) -> None:
    sessions, made = web_store
    app = create_app(sessions)
    readers, operator = [TestClient(app), TestClient(app)], TestClient(app)
    for client in readers:
        sign_in(client, made["read"])
    sign_in(operator, made["operate"])
    assert len(session_rows(sessions)) == 3
    tokens.revoke(sessions, "t-read", "test")
    assert len(session_rows(sessions)) == 1  # deleted with the revocation, not at their next page
    assert Queries(sessions).audit(Paging(limit=1), "token.revoke").items[0].detail == {"sessions_ended": 2}
    assert all(signed_out(client) for client in readers)
    assert not signed_out(operator)
    with sessions.begin() as session:  # revoked without deleting its sessions (another process, by hand)
        session.execute(text("UPDATE api_tokens SET revoked_at = created_at WHERE name = 't-operate'"))
    assert signed_out(operator)  # each page checks the session's token again
    assert session_rows(sessions) == []


def test_sessions_expire_when_idle_and_at_their_absolute_limit(web_store: Store) -> None:
    sessions, made = web_store
    clock = Clock()
    settings = Dashboard(session_hours=2, session_idle_minutes=30)
    app = create_app(sessions, config=CloudConfig(dashboard=settings), clock=clock)
    busy, idle = TestClient(app), TestClient(app)
    sign_in(busy, made["read"])
    sign_in(idle, made["operate"])
    for _ in range(4):  # 116 minutes, a page every 29
        clock.advance(29)
        assert not signed_out(busy)
    assert signed_out(idle)  # 30 minutes without a page
    clock.advance(5)  # 121 minutes after the sign-in
    assert signed_out(busy)
    assert session_rows(sessions) == []  # expired sessions are deleted
    again = busy.post("/ui/login", data={"token": made["read"]}, headers=ORIGIN, follow_redirects=False)
    assert SimpleCookie(again.headers["set-cookie"])["coldchain_session"]["max-age"] == "7200"  # the absolute limit


def test_sign_out_deletes_the_session(web_store: Store) -> None:
    sessions, made = web_store
    app = create_app(sessions)
    client = TestClient(app)
    value = sign_in(client, made["operate"])
    answer = client.post("/ui/logout", data={"csrf": csrf_of(client)}, headers=ORIGIN, follow_redirects=False)
    assert answer.status_code == 303 and 'coldchain_session=""' in answer.headers["set-cookie"]
    assert session_rows(sessions) == []
    stolen = TestClient(app)
    stolen.cookies.set("coldchain_session", value, path="/ui")
    assert signed_out(stolen)  # a copy of the cookie is worth nothing after sign-out


def test_hostile_forms_and_redirects(web_store: Store) -> None:
    """A form with more fields than allowed was a 500; redirects (one sets the cookie) were cacheable."""
    sessions, made = web_store
    client = TestClient(create_app(sessions), raise_server_exceptions=False)
    many = client.post("/ui/login", data={f"f{i}": "x" for i in range(25)}, headers=ORIGIN)
    assert many.status_code == 400 and "fields" in many.text, (many.status_code, many.text[:200])
    answers = [client.get("/", follow_redirects=False), client.get("/ui/alerts", follow_redirects=False),
               client.post("/ui/login", data={"token": made["operate"], "next": "//evil.example/"}, headers=ORIGIN,
                           follow_redirects=False)]
    assert answers[-1].headers["location"] == "/ui/"
    answers.append(client.post("/ui/rollouts/r-web/pause", data={"csrf": csrf_of(client)}, headers=ORIGIN,
                               follow_redirects=False))
    answers.append(client.post("/ui/logout", data={"csrf": csrf_of(client)}, headers=ORIGIN, follow_redirects=False))
    for answer in answers:
        assert answer.status_code == 303, answer.text[:200]
        assert answer.headers.get("cache-control") == "no-store", (answer.request.url, answer.headers)
    for hostile in ("https://evil.example/", "/\\evil.example", "//evil.example/ui/", "/ui/..\\x"):
        page = client.get("/ui/login", params={"next": hostile})  # signed out: the form keeps only /ui paths
        assert page.status_code == 200 and 'name="next" value="/ui/"' in page.text, hostile

def test_the_sessions_table_is_added_to_an_older_store(sessions: sessionmaker[Session]) -> None:
    """SQLite and PostgreSQL: a store from before server-side sessions gets the table when opened."""
    engine = sessions.kw["bind"]
    with engine.begin() as db:
        db.exec_driver_sql("DROP TABLE IF EXISTS web_sessions")
    assert "web_sessions" not in inspect(engine).get_table_names()
    reopened = open_store(engine.url.render_as_string(hide_password=False))
    assert "web_sessions" in inspect(reopened.kw["bind"]).get_table_names()
    token = tokens.create(reopened, "t-web", "read", "test")
    client = TestClient(create_app(reopened))
    value = sign_in(client, token)
    assert not signed_out(client)
    assert len(session_rows(reopened)) == 1 and value not in str(session_rows(reopened))
    tokens.revoke(reopened, "t-web", "test")
    assert signed_out(client) and session_rows(reopened) == []
    reopened.kw["bind"].dispose()


def test_a_token_keeps_at_most_its_newest_sessions(web_store: Store) -> None:
    """Signing in again and again (a script with a valid token) cannot grow the table without bound."""
    from cloud.web.session_store import MAX_PER_TOKEN

    sessions, made = web_store
    app = create_app(sessions)
    browsers = [TestClient(app) for _ in range(MAX_PER_TOKEN + 5)]
    for client in browsers:
        sign_in(client, made["read"])
    assert len(session_rows(sessions)) == MAX_PER_TOKEN
    assert [signed_out(client) for client in browsers] == [True] * 5 + [False] * MAX_PER_TOKEN
