"""The ACL in contract/topics.py: what a device and the cloud may publish and read, and the
Mosquitto acl_file lines generated from the same topic builders, which must say the same."""

from __future__ import annotations

import itertools

import pytest

from contract import topics
from contract.topics import Action, TopicKind

SHA = "ab" * 32
A, B, CLOUD = "fridge-a", "fridge-b", topics.CLOUD_IDENTITY


def own_writes(device: str) -> list[str]:
    return [topics.state(device), topics.telemetry(device), topics.events(device), topics.missing(device, SHA)]


def own_reads(device: str) -> list[str]:
    return [topics.commands(device), topics.device_chunks(device, SHA), topics.acks(device)]


def test_a_device_publishes_only_its_own_state_telemetry_events_and_missing_reports() -> None:
    assert all(topics.allowed(A, Action.PUBLISH, t) for t in own_writes(A))
    assert not any(topics.allowed(A, Action.PUBLISH, t) for t in own_writes(B))
    cloud_only = [topics.commands(A), topics.commands(B), topics.acks(A), topics.device_chunks(A, SHA),
                  topics.group_chunks("eu", SHA)]
    assert not any(topics.allowed(A, Action.PUBLISH, t) for t in cloud_only)


def test_a_device_reads_only_its_own_commands_repairs_acks_and_group_chunks() -> None:
    for topic in [*own_reads(A), topics.group_chunks("rollout-1.w0", SHA)]:
        assert topics.allowed(A, Action.RECEIVE, topic), topic
    for topic_filter in [topics.commands(A), topics.device_artifacts(A), topics.acks(A), topics.group_artifacts("eu")]:
        assert topics.allowed(A, Action.SUBSCRIBE, topic_filter), topic_filter
    assert not any(topics.allowed(A, Action.RECEIVE, t) for t in own_reads(B))
    for wide in ["#", "coldchain/#", topics.all_devices(TopicKind.COMMANDS), topics.device_artifacts(B),
                 topics.all_devices(TopicKind.TELEMETRY), topics.state(A), f"coldchain/v1/devices/{A}/#",
                 topics.shared("x", topics.commands(B))]:
        assert not topics.allowed(A, Action.SUBSCRIBE, wide), wide


def test_the_cloud_sends_commands_chunks_and_acks_and_reads_what_devices_send() -> None:
    for topic in [topics.commands(A), topics.group_chunks("eu", SHA), topics.device_chunks(B, SHA), topics.acks(A)]:
        assert topics.allowed(CLOUD, Action.PUBLISH, topic), topic
    assert not any(topics.allowed(CLOUD, Action.PUBLISH, t) for t in own_writes(A))  # no forged device state
    for kind in (TopicKind.STATE, TopicKind.TELEMETRY, TopicKind.EVENTS, TopicKind.MISSING):
        assert topics.allowed(CLOUD, Action.SUBSCRIBE, topics.shared("ingest", topics.all_devices(kind)))
    assert not topics.allowed(CLOUD, Action.SUBSCRIBE, "#")


@pytest.mark.parametrize("identity", ["", "a/b", "+", "#", "x" * 65, "%u"])
def test_no_rule_applies_to_an_invalid_identity(identity: str) -> None:
    assert not topics.allowed(identity, Action.PUBLISH, "coldchain/v1/devices/%u/state")
    assert not topics.allowed(identity, Action.SUBSCRIBE, "#")


def test_wildcards_are_not_topics_and_the_cloud_id_is_not_a_device() -> None:
    assert not topics.allowed(A, Action.PUBLISH, "coldchain/v1/devices/+/state")
    assert not topics.allowed(A, Action.RECEIVE, "coldchain/v1/devices/fridge-a/#")
    with pytest.raises(topics.TopicError):
        topics.device_grant(CLOUD)


def _mosquitto_allows(lines: list[str], user: str, action: Action, topic: str) -> bool:
    """Mosquitto's acl_file semantics (pattern lines for everyone with %u = username, topic lines
    after `user NAME` for that user; read covers subscribe and receive)."""
    current, rules = None, []
    for line in lines:
        if line.startswith("#"):
            continue
        word, *rest = line.split(" ")
        if word == "user":
            current = rest[0]
        elif word == "pattern":
            rules.append((rest[0], rest[1].replace("%u", user)))
        elif word == "topic":
            if current == user:
                rules.append((rest[0], rest[1]))
        else:
            raise AssertionError(f"unexpected acl line {line!r}")
    need = "write" if action is Action.PUBLISH else "read"
    return any(access in (need, "readwrite") and topics._covers(f, topics.unshared(topic)) for access, f in rules)


def test_the_mosquitto_acl_lines_say_what_allowed_says() -> None:
    lines = topics.acl_lines()
    assert lines[0].startswith("# generated") and f"user {CLOUD}" in lines
    assert not any("fridge" in line for line in lines)  # %u patterns, no hand-written device names
    candidates = [*own_writes(A), *own_writes(B), *own_reads(A), *own_reads(B), topics.group_chunks("eu", SHA),
                  *(topics.all_devices(k) for k in TopicKind if k is not TopicKind.GROUP_CHUNKS),
                  topics.every_group_artifacts(), topics.device_artifacts(B), "#"]
    checked = 0
    for user, action, topic in itertools.product([A, B, CLOUD], Action, candidates):
        if action is not Action.SUBSCRIBE and ("+" in topic or "#" in topic):
            continue
        if user == CLOUD and topic.startswith(f"coldchain/v1/devices/{CLOUD}/"):
            continue  # Mosquitto applies %u patterns to the cloud's name too; no device may take it
        assert _mosquitto_allows(lines, user, action, topic) == topics.allowed(user, action, topic), \
            (user, action, topic)
        checked += 1
    assert checked > 150
