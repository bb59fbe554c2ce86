"""The fleet page's counts (devices and online ones per group, board and bundle) are SQL
aggregates: on 2,000 devices they equal a count made row by row in Python, and neither the
overview nor the whole fleet page reads every device's columns (each statement over ``devices``
is grouped, counted or limited), on SQLite and PostgreSQL."""

from __future__ import annotations

import random
import re
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import event, insert
from sqlalchemy.orm import Session, sessionmaker

from cloud import tokens
from cloud.api import create_app
from cloud.fleet import add_bundle
from cloud.queries import Queries
from cloud.store import Device

DEVICES = 2000
SEEN = datetime(2026, 3, 1, tzinfo=UTC)


@contextmanager
def statements(sessions: sessionmaker[Session]) -> Iterator[list[str]]:
    """Every SQL statement the store's engine executes inside the block."""
    engine = sessions.kw["bind"]
    seen: list[str] = []

    def before(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", before)


def whole_fleet_reads(seen: list[str]) -> list[str]:
    """SELECTs over ``devices`` that are neither grouped, counted nor limited: each device's row."""
    return [s for s in seen if s.lstrip().upper().startswith("SELECT") and re.search(r"\bdevices\b", s)
            and not re.search(r"GROUP BY|count\(|LIMIT", s, re.IGNORECASE)]


def seed(sessions: sessionmaker[Session], sha: str) -> list[dict[str, Any]]:
    """2,000 devices: assigned and reported groups that overlap (a device counts once per group),
    some in none; three boards and none; the known bundle, an unknown one, or none."""
    rng = random.Random(16)
    rows = []
    for i in range(DEVICES):
        rows.append({"id": f"dev-{i:04d}", "online": rng.random() < 0.6, "board": rng.choice(["rpi4", "rpi5", "jetson",
                                                                                               None]),
                     "groups": sorted(rng.sample(["eu", "us", "pilots"], rng.randint(0, 2))),
                     "reported_groups": rng.sample(["eu", "lab"], rng.randint(0, 1)),
                     "tags": {}, "active_sha256": rng.choice([sha, "f" * 64, None]), "first_seen": SEEN,
                     "last_seen": SEEN})
    with sessions.begin() as session:
        session.execute(insert(Device), rows)
    return rows


def expected(rows: list[dict[str, Any]]) -> dict[str, dict[str, tuple[int, int]]]:
    counts: dict[str, dict[str, list[int]]] = {k: defaultdict(lambda: [0, 0]) for k in ("group", "board", "bundle")}
    for row in rows:
        keys = {"group": sorted({*row["groups"], *row["reported_groups"]}) or [""], "board": [row["board"] or ""],
                "bundle": [row["active_sha256"] or ""]}
        for kind, values in keys.items():
            for value in values:
                counts[kind][value][0] += 1
                counts[kind][value][1] += row["online"]
    return {kind: {v: (n, up) for v, (n, up) in by.items()} for kind, by in counts.items()}


def test_fleet_counts_are_sql_aggregates_on_2000_devices(sessions: sessionmaker[Session],
                                                          world: dict[str, object]) -> None:
    with sessions.begin() as session:
        sha = add_bundle(session, world["bundles"][5].tarball, world["trust"]).sha256  # type: ignore[index,arg-type]
    rows = seed(sessions, sha)
    with statements(sessions) as seen:
        started = time.perf_counter()
        view = Queries(sessions).overview()
        took = time.perf_counter() - started
    assert whole_fleet_reads(seen) == [], seen
    assert len(seen) <= 5, seen
    want = expected(rows)
    assert view.devices == DEVICES and view.online == sum(r["online"] for r in rows)
    for kind, facets in (("group", view.groups), ("board", view.boards), ("bundle", view.bundles)):
        assert {f.value: (f.devices, f.online) for f in facets} == want[kind], kind
        assert [f.devices for f in facets] == sorted((f.devices for f in facets), reverse=True)
    labels = {f.value: f.label for f in view.bundles}
    assert labels[sha].endswith("#5") and labels["f" * 64] == "f" * 12 and labels[""] == "(none)"
    assert {f.value: f.label for f in view.groups}[""] == "(none)"
    assert took < 5.0, took  # a few aggregates; the store does the counting


def test_the_fleet_page_reads_no_whole_fleet(sessions: sessionmaker[Session], world: dict[str, object]) -> None:
    with sessions.begin() as session:
        sha = add_bundle(session, world["bundles"][5].tarball, world["trust"]).sha256  # type: ignore[index,arg-type]
    rows = seed(sessions, sha)
    token = tokens.create(sessions, "t-read", "read", "test")
    client = TestClient(create_app(sessions), headers={"Origin": "http://testserver"})  # as a browser posts forms
    assert client.post("/ui/login", data={"token": token, "next": "/ui/"}, follow_redirects=False).status_code == 303
    for query in ("", "?group=eu&online=yes", f"?offset={DEVICES - 50}"):
        with statements(sessions) as seen:
            page = client.get("/ui/" + query)
        assert page.status_code == 200
        assert whole_fleet_reads(seen) == [], seen
        assert len(seen) <= 12, seen  # sign-in check, the page of devices and its count, the overview
    eu = expected(rows)["group"]["eu"]
    assert re.search(rf">eu<.*?{eu[0]}\b", client.get("/ui/").text, re.DOTALL)
