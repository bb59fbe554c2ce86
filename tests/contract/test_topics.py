from __future__ import annotations

import pytest

from contract import topics
from contract.errors import TopicError
from contract.topics import TopicKind

SHA = "a" * 64


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        (topics.state("fridge-1"), topics.Topic(TopicKind.STATE, device_id="fridge-1")),
        (topics.telemetry("fridge-1"), topics.Topic(TopicKind.TELEMETRY, device_id="fridge-1")),
        (topics.events("fridge-1"), topics.Topic(TopicKind.EVENTS, device_id="fridge-1")),
        (topics.commands("fridge-1"), topics.Topic(TopicKind.COMMANDS, device_id="fridge-1")),
        (topics.group_chunks("eu", SHA), topics.Topic(TopicKind.GROUP_CHUNKS, group="eu", sha256=SHA)),
        (
            topics.device_chunks("fridge-1", SHA),
            topics.Topic(TopicKind.DEVICE_CHUNKS, device_id="fridge-1", sha256=SHA),
        ),
        (topics.missing("fridge-1", SHA), topics.Topic(TopicKind.MISSING, device_id="fridge-1", sha256=SHA)),
        (topics.acks("fridge-1"), topics.Topic(TopicKind.ACKS, device_id="fridge-1")),
    ],
)
def test_build_then_parse(topic: str, expected: topics.Topic) -> None:
    assert topic.startswith("coldchain/v1/")
    assert topics.parse(topic) == expected


def test_spelling() -> None:
    assert topics.telemetry("d1") == "coldchain/v1/devices/d1/telemetry"
    assert topics.acks("d1") == "coldchain/v1/devices/d1/acks"
    assert topics.group_chunks("g", SHA) == f"coldchain/v1/groups/g/artifacts/{SHA}/chunks"
    assert topics.all_devices(TopicKind.STATE) == "coldchain/v1/devices/+/state"
    assert topics.all_devices(TopicKind.MISSING) == "coldchain/v1/devices/+/artifacts/+/missing"
    assert topics.shared("ingest", topics.all_devices(TopicKind.TELEMETRY)) == (
        "$share/ingest/coldchain/v1/devices/+/telemetry"
    )
    assert topics.device_artifacts("d1") == "coldchain/v1/devices/d1/artifacts/+/chunks"
    assert topics.group_artifacts("g") == "coldchain/v1/groups/g/artifacts/+/chunks"


@pytest.mark.parametrize("bad", ["", "a/b", "+", "#", "a b", "-lead", "x" * 65, "dev+1"])
def test_bad_ids_are_refused(bad: str) -> None:
    with pytest.raises(TopicError, match="not valid"):
        topics.state(bad)


@pytest.mark.parametrize(
    "bad",
    [
        "other/v1/devices/d/state",
        "coldchain/v1/devices/d/unknown",
        "coldchain/v1/devices/d/state/extra",
        "coldchain/v1/devices/+/state",
        "coldchain/v1/groups/g/artifacts/notasha/chunks",
        "coldchain/v2/devices/d/state",
    ],
)
def test_foreign_topics_are_refused(bad: str) -> None:
    with pytest.raises(TopicError):
        topics.parse(bad)


def test_group_chunks_have_no_all_devices_filter() -> None:
    with pytest.raises(TopicError):
        topics.all_devices(TopicKind.GROUP_CHUNKS)
