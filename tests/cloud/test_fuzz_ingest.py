"""Property-based fuzzing of ingestion, on SQLite and PostgreSQL: arbitrary bytes and hostile
mutations of the golden states, telemetry windows, events and missing-chunk reports
(tests/hostile.py), on every topic ingestion reads and on hostile topic strings, drained by an
:class:`IngestWorker` in batches of one to four. The worker never raises; every message is
counted once; every one it refuses is a dead letter (the rows in ``dead_letters`` are exactly the
``dead`` count); and a valid window sent after the fuzzing is still stored and acknowledged."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from benchmarks.faults.device import MemoryTransport
from cloud.ingest import IngestWorker
from cloud.store import DeadLetter, TelemetryRow
from contract import topics
from contract.errors import ContractError
from contract.events import decode_event
from contract.state import DeviceState
from contract.telemetry import Telemetry
from contract.transfer import MissingChunks
from tests.hostile import FUZZ, GOLDEN, STRINGS, golden, mutated, payloads, raw, render
from transport.client import Received

DEVICE = "fridge-0001"
SHA = "14638bffd70afcdbaf4b1b1a4181da0ed069b67ea13a9bb99fb3f9b7666da234"
HOSTILE_TOPICS = [
    "", "#", "coldchain/v1/devices/+/state", "coldchain/v1/devices//telemetry", f"coldchain/v1/devices/{DEVICE}/",
    f"coldchain/v1/devices/{'d' * 70_000}/state", "coldchain/v1/devices/fr\u00efdge/events",
    "coldchain/v1/devices/\ud800/state", "coldchain/v1/devices/a\x00b/telemetry", "a\x00b",
    f"coldchain/v1/devices/{DEVICE}/artifacts/{'A' * 64}/missing", f"coldchain/v1/devices/{DEVICE}/commands",
    f"coldchain/v1/devices/{DEVICE}/acks", "$share/g/coldchain/v1/devices/fridge-0001/state",
]
KINDS = {
    "state": (topics.state(DEVICE), DeviceState.from_json),
    "telemetry": (topics.telemetry(DEVICE), Telemetry.from_json),
    "event": (topics.events(DEVICE), decode_event),
    "missing": (topics.missing(DEVICE, SHA), MissingChunks.from_json),
}
EXAMPLE_NAMES = sorted(p.name for p in GOLDEN.glob("*.json") if p.name.split("_")[0].removesuffix(".json") in KINDS)


def _kind(name: str) -> str:
    return name.removesuffix(".json").split("_")[0]


def _message(name: str, gentle: bool) -> st.SearchStrategy[tuple[str, bytes]]:
    example: Any = golden(name)
    if _kind(name) == "missing":
        example = {**example, "sha256": SHA}
    payload = mutated(example, gentle=True) if gentle else payloads(example)
    return st.tuples(st.just(KINDS[_kind(name)][0]), payload)


def _hostile_topic() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(HOSTILE_TOPICS), st.text(max_size=60),
                     st.sampled_from(STRINGS).map(lambda s: f"coldchain/v1/devices/{s}/telemetry"))


MESSAGES = st.one_of(
    st.sampled_from(EXAMPLE_NAMES).flatmap(lambda n: _message(n, gentle=False)),
    st.sampled_from(EXAMPLE_NAMES).flatmap(lambda n: _message(n, gentle=True)),
    st.tuples(_hostile_topic(), st.sampled_from(EXAMPLE_NAMES).flatmap(lambda n: payloads(golden(n)))),
)


def _refused(topic: str, payload: bytes) -> bool:
    """A message ingestion must refuse: not one of its topics' payloads, or from another device."""
    for kind_topic, decoder in KINDS.values():
        if topic == kind_topic:
            try:
                return getattr(decoder(payload), "device_id", DEVICE) != DEVICE
            except ContractError:
                return True
    try:
        topics.parse(topic)
    except ContractError:
        return True
    return False  # another coldchain topic (commands, acks, another device's): ignored or checked by kind


def _count(sessions: sessionmaker[Session], table: type) -> int:
    with sessions() as session:
        return int(session.scalar(select(func.count()).select_from(table)) or 0)


def _poison(sessions: sessionmaker[Session]) -> list[str]:
    with sessions() as session:
        return [r.reason[:300] for r in session.scalars(select(DeadLetter)) if "while storing" in r.reason]


def test_hostile_messages_become_dead_letters_and_ingestion_goes_on(sessions: sessionmaker[Session]) -> None:
    transport = MemoryTransport()
    worker = IngestWorker(transport, sessions)
    seen = {"refused": 0}

    @FUZZ
    @given(batch=st.lists(MESSAGES, min_size=1, max_size=4))
    def fuzz(batch: list[tuple[str, bytes]]) -> None:
        before = sum(v for k, v in worker.counts.items() if k not in ("acks", "poison"))
        dead = worker.counts["dead"]
        for mid, (topic, payload) in enumerate(batch, start=1):
            transport.inbox.put(Received(topic, payload, mid=mid, qos=1))
        assert worker.drain(timeout=0) == len(batch)  # never raises
        assert sum(v for k, v in worker.counts.items() if k not in ("acks", "poison")) == before + len(batch)
        refused = sum(_refused(t, p) for t, p in batch)
        assert worker.counts["dead"] - dead >= refused, batch
        assert _count(sessions, DeadLetter) == worker.counts["dead"]
        seen["refused"] += refused

    fuzz()
    assert worker.counts["poison"] == 0, _poison(sessions)  # every refusal is the contract's, with its reason
    assert seen["refused"] > 0
    stored = _count(sessions, TelemetryRow)
    window = Telemetry.model_validate({**golden("telemetry.json"), "seq": 10**9}).to_json()
    transport.inbox.put(Received(topics.telemetry(DEVICE), window, mid=1, qos=1))
    assert worker.drain(timeout=0) == 1
    assert _count(sessions, TelemetryRow) == stored + 1
    assert any(topic == topics.acks(DEVICE) for topic, _, _ in transport.published)


def test_nul_and_non_finite_numbers_are_refused_by_the_contract_on_every_store(
        sessions: sessionmaker[Session]) -> None:
    """Found by the fuzzing above: on PostgreSQL a NUL in any string (text and JSONB refuse it) and
    a NaN or an overflowing number (``1e309``: infinity; JSONB refuses both) failed the insert, so
    the message became a "DataError while storing" dead letter there and was stored on SQLite.
    JSON has no NaN, and no coldchain message needs a NUL: the contract refuses both, by name."""
    state = golden("state.json")
    window = golden("telemetry.json")
    cases = [
        (topics.state(DEVICE), render({**state, "board": "rpi4\x00"}), "NUL"),
        (topics.events(DEVICE), render({**golden("event_error.json"), "message": "a\x00b"}), "NUL"),
        *[(topics.telemetry(DEVICE), render({**window, "resources": {"cpu_percent": raw(number), "rss_bytes": 1}}),
           number) for number in ("NaN", "1e309")],
    ]
    transport = MemoryTransport()
    worker = IngestWorker(transport, sessions)
    for mid, (topic, payload, _) in enumerate(cases, start=1):
        transport.inbox.put(Received(topic, payload, mid=mid, qos=1))
    assert worker.drain(timeout=0) == len(cases)
    assert worker.counts["dead"] == len(cases) and worker.counts["poison"] == 0, _poison(sessions)
    with sessions() as session:
        reasons = [r.reason for r in session.scalars(select(DeadLetter).order_by(DeadLetter.id))]
    for reason, (_, _, named) in zip(reasons, cases, strict=True):
        assert reason.startswith("PayloadError") and named in reason, reason


def test_times_without_a_zone_or_past_the_calendar_are_stored_or_refused_by_the_contract(
        sessions: sessionmaker[Session]) -> None:
    """Found by the fuzzing above: a window or an event whose times had no zone was refused by the
    store ("naive datetime given to the store", a poison dead letter), and one at year 1 with a
    +14:00 offset (before year 1 in UTC) failed PostgreSQL's insert (timestamp too small). Times
    without a zone are UTC (as ingestion already read a state's), and a time that has no UTC
    equivalent in the calendar is refused by the contract, naming the field."""
    transport = MemoryTransport()
    worker = IngestWorker(transport, sessions)
    cases = []
    for seq, ts in enumerate(["2026-11-26T12:00:00", "0001-01-01T00:00:00+14:00"], start=1):
        cases += [(topics.events(DEVICE), render({**golden("event_job.json"), "ts": ts})),
                  (topics.telemetry(DEVICE), render({**golden("telemetry.json"), "seq": seq, "window_start": ts,
                                                     "window_end": ts}))]
    for mid, (topic, payload) in enumerate(cases, start=1):
        transport.inbox.put(Received(topic, payload, mid=mid, qos=1))
    assert worker.drain(timeout=0) == len(cases)
    assert worker.counts["poison"] == 0, _poison(sessions)
    assert worker.counts["stored"] == 2 and worker.counts["dead"] == 2
    with sessions() as session:
        reasons = [r.reason for r in session.scalars(select(DeadLetter))]
    assert all("PayloadError" in r and "UTC" in r for r in reasons), reasons
