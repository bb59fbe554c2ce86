"""Token guessing (found by review): refused API tokens and dashboard sign-ins were counted but
not slowed, so a client could guess as fast as the server answered, and sign-ins were not audited.
Now one limiter per cloud (``cloud.auth_limit``), keyed by the client's address, shared by the
API's bearer check and the dashboard's sign-in: after ``failures`` refusals within ``window_s``
that address gets 429 with Retry-After for a backoff doubling up to ``backoff_max_s``."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker

from cloud.api import create_app
from cloud.auth_limit import FailureLimiter
from cloud.config import AuthLimit, CloudConfig
from cloud.queries import Paging, Queries
from tests.cloud.test_web_sessions import Clock

ORIGIN = {"Origin": "http://testserver"}
ATTACKER, OTHER = ("203.0.113.9", 40000), ("198.51.100.7", 40000)
WRONG = {"Authorization": "Bearer cct_not-a-token-anyone-has"}
Store = tuple[sessionmaker[Session], dict[str, str]]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def rate_limited(client: TestClient, token: str) -> dict[str, float]:
    """coldchain_auth_refused_total{reason="rate_limited"} by surface."""
    scrape = client.get("/metrics", headers=bearer(token))
    assert scrape.status_code == 200, scrape.text
    return {s.labels["surface"]: s.value for f in text_string_to_metric_families(scrape.text)
            if f.name == "coldchain_auth_refused" for s in f.samples
            if s.name.endswith("_total") and s.labels["reason"] == "rate_limited"}


def sign_in(client: TestClient, token: str) -> int:
    return client.post("/ui/login", data={"token": token, "next": "/ui/"}, headers=ORIGIN,
                       follow_redirects=False).status_code


def test_the_eleventh_wrong_token_from_one_address_is_429_and_other_addresses_are_not(web_store: Store) -> None:
    sessions, made = web_store
    app = create_app(sessions, clock=Clock())
    attacker, other = TestClient(app, client=ATTACKER), TestClient(app, client=OTHER)
    assert [attacker.get("/devices", headers=WRONG).status_code for _ in range(10)] == [401] * 10
    limited = attacker.get("/devices", headers=WRONG)
    assert limited.status_code == 429, limited.text
    assert limited.headers["retry-after"] == "60"
    assert other.get("/devices", headers=WRONG).status_code == 401  # counted apart
    assert other.get("/devices", headers=bearer(made["read"])).status_code == 200
    assert sign_in(other, made["read"]) == 303
    assert rate_limited(other, made["read"]) == {"api": 1.0}


def test_a_correct_token_from_a_limited_address_is_refused_until_the_backoff_ends(web_store: Store) -> None:
    """Else a guess that happens to be right would still be told so: guessing would go on."""
    sessions, made = web_store
    clock = Clock()
    attacker = TestClient(create_app(sessions, clock=clock), client=ATTACKER)
    for _ in range(10):
        attacker.get("/devices", headers=WRONG)
    right = attacker.get("/devices", headers=bearer(made["read"]))
    assert right.status_code == 429 and right.headers["retry-after"] == "60"
    assert sign_in(attacker, made["read"]) == 429  # the dashboard shares the limit
    clock.at += timedelta(seconds=59)
    assert attacker.get("/devices", headers=bearer(made["read"])).status_code == 429
    clock.at += timedelta(seconds=1)
    assert attacker.get("/devices", headers=bearer(made["read"])).status_code == 200
    assert rate_limited(attacker, made["read"]) == {"api": 2.0, "dashboard": 1.0}


def test_the_backoff_doubles_up_to_its_cap_and_lifts(web_store: Store) -> None:
    sessions, made = web_store
    clock = Clock()
    config = CloudConfig(auth_limit=AuthLimit(backoff_s=60, backoff_max_s=200))
    attacker = TestClient(create_app(sessions, config=config, clock=clock), client=ATTACKER)
    waits = []
    for _ in range(4):
        statuses = [attacker.get("/devices", headers=WRONG).status_code for _ in range(10)]
        assert statuses == [401] * 10
        limited = attacker.get("/devices", headers=WRONG)
        assert limited.status_code == 429
        waits.append(int(limited.headers["retry-after"]))
        clock.at += timedelta(seconds=waits[-1])
    assert waits == [60, 120, 200, 200]
    assert attacker.get("/devices", headers=bearer(made["read"])).status_code == 200


def test_dashboard_sign_ins_are_limited_too(web_store: Store) -> None:
    sessions, made = web_store
    app = create_app(sessions, clock=Clock())
    attacker, other = TestClient(app, client=ATTACKER), TestClient(app, client=OTHER)
    assert [sign_in(attacker, "cct_guess") for _ in range(5)] == [401] * 5
    assert [attacker.get("/devices", headers=WRONG).status_code for _ in range(5)] == [401] * 5  # one count
    answer = attacker.post("/ui/login", data={"token": made["read"], "next": "/ui/"}, headers=ORIGIN,
                           follow_redirects=False)
    assert answer.status_code == 429 and answer.headers["retry-after"] == "60"
    assert "Too many" in answer.text
    assert sign_in(other, made["read"]) == 303


def test_the_limiter_tracks_at_most_max_clients_addresses() -> None:
    clock = Clock()
    limiter = FailureLimiter(AuthLimit(failures=2, max_clients=3), clock)
    for address in ("a", "b", "c", "d"):
        limiter.failed(address)
    assert limiter.tracked() == 3  # "a", the oldest, was evicted
    limiter.failed("a")
    assert limiter.blocked("a") is None  # its first failure again, not its second
    limiter.failed("d")
    assert limiter.blocked("d") == 60


def test_the_limit_is_configured_within_bounds() -> None:
    with pytest.raises(ValidationError):
        AuthLimit(failures=0)
    with pytest.raises(ValidationError):
        AuthLimit(backoff_s=600, backoff_max_s=60)
    relaxed = CloudConfig.model_validate({"auth_limit": {"failures": 1000, "window_s": 1}}).auth_limit
    assert (relaxed.failures, relaxed.window_s, relaxed.backoff_s) == (1000, 1, 60)


def test_sign_ins_and_sign_outs_are_audited_without_the_token(web_store: Store) -> None:
    sessions, made = web_store
    client = TestClient(create_app(sessions, clock=Clock()), client=OTHER)
    assert sign_in(client, "cct_a-wrong-guess") == 401
    assert sign_in(client, made["read"]) == 303
    page = client.get("/ui/rollouts/r-web").text
    csrf = page.split('name="csrf" value="')[1].split('"')[0]
    assert client.post("/ui/logout", data={"csrf": csrf}, headers=ORIGIN, follow_redirects=False).status_code == 303
    rows = Queries(sessions).audit(Paging(limit=50)).items
    ours = [(r.actor, r.action, r.result, r.target) for r in rows if r.action.startswith("dashboard.")]
    assert sorted(ours) == sorted([
        ("address:198.51.100.7", "dashboard.sign_in", "refused: unknown", None),
        ("token:t-read", "dashboard.sign_in", "ok", None),
        ("token:t-read", "dashboard.sign_out", "ok", None)])
    text = repr([r.model_dump() for r in rows])
    assert "cct_a-wrong-guess" not in text and made["read"] not in text
    assert all(r.detail == {"address": "198.51.100.7"} for r in rows if r.action.startswith("dashboard."))


def test_the_backoff_starts_over_after_a_quiet_backoff_max_s() -> None:
    clock = Clock()
    limiter = FailureLimiter(AuthLimit(failures=1, backoff_s=10, backoff_max_s=100), clock)
    limiter.failed("a")
    assert limiter.blocked("a") == 10
    clock.at += timedelta(seconds=10)
    limiter.failed("a")
    assert limiter.blocked("a") == 20  # doubled
    clock.at += timedelta(seconds=101)
    assert limiter.blocked("a") is None
    limiter.failed("a")
    assert limiter.blocked("a") == 10  # quiet for longer than the cap: from the start
