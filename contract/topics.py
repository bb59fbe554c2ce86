"""MQTT topics: the only place where a coldchain topic is spelled.

Every topic starts with ``coldchain/v1``. Builders validate their components (an id may
not contain ``/``, ``+``, ``#`` or be empty), so a topic built here can always be parsed
back by :func:`parse`. Subscription filters with wildcards and MQTT v5 shared
subscriptions are built here too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from contract.compat import StrEnum
from contract.errors import TopicError

PREFIX = "coldchain/v1"

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class TopicKind(StrEnum):
    STATE = "state"
    TELEMETRY = "telemetry"
    EVENTS = "events"
    COMMANDS = "commands"
    GROUP_CHUNKS = "group_chunks"
    DEVICE_CHUNKS = "device_chunks"
    MISSING = "missing"
    ACKS = "acks"


_DEVICE_LEAVES = {
    "state": TopicKind.STATE,
    "telemetry": TopicKind.TELEMETRY,
    "events": TopicKind.EVENTS,
    "commands": TopicKind.COMMANDS,
    "acks": TopicKind.ACKS,
}


def check_id(value: str, what: str = "id") -> str:
    """Return ``value`` if it can be a device or group id, else raise TopicError."""
    if not isinstance(value, str) or not _ID.match(value):
        raise TopicError(
            f"{what} {value!r} is not valid: use 1-64 characters from letters, digits and '_.:-', "
            "starting with a letter or digit (no '/', '+', '#' or spaces)"
        )
    return value


def check_sha256(value: str) -> str:
    if not isinstance(value, str) or not _SHA256.match(value):
        raise TopicError(f"artifact sha256 {value!r} is not 64 lowercase hex digits")
    return value


def _device(device_id: str, leaf: str) -> str:
    return f"{PREFIX}/devices/{check_id(device_id, 'device id')}/{leaf}"


def state(device_id: str) -> str:
    """Retained reported state of a device (QoS 1, retained; last will marks it offline)."""
    return _device(device_id, "state")


def telemetry(device_id: str) -> str:
    return _device(device_id, "telemetry")


def events(device_id: str) -> str:
    return _device(device_id, "events")


def commands(device_id: str) -> str:
    return _device(device_id, "commands")


def acks(device_id: str) -> str:
    """Where the cloud confirms the telemetry windows it stored (cloud -> device, QoS 1)."""
    return _device(device_id, "acks")


def group_chunks(group: str, sha256: str) -> str:
    """Chunks of one artifact for every device of a group (one publish, broker fan-out)."""
    return f"{PREFIX}/groups/{check_id(group, 'group')}/artifacts/{check_sha256(sha256)}/chunks"


def device_chunks(device_id: str, sha256: str) -> str:
    """Repair chunks for one device."""
    return _device(device_id, f"artifacts/{check_sha256(sha256)}/chunks")


def missing(device_id: str, sha256: str) -> str:
    """Where a device reports the chunks it still lacks."""
    return _device(device_id, f"artifacts/{check_sha256(sha256)}/missing")


# ---- subscription filters -------------------------------------------------------------

def all_devices(kind: TopicKind) -> str:
    """Filter matching ``kind`` for every device, e.g. ``coldchain/v1/devices/+/telemetry``."""
    if kind in _DEVICE_LEAVES.values():
        return f"{PREFIX}/devices/+/{kind.value}"
    if kind is TopicKind.MISSING:
        return f"{PREFIX}/devices/+/artifacts/+/missing"
    if kind is TopicKind.DEVICE_CHUNKS:
        return f"{PREFIX}/devices/+/artifacts/+/chunks"
    raise TopicError(f"no all-devices filter for {kind.value}: group chunks are per group (every_group_artifacts)")


def device_artifacts(device_id: str) -> str:
    """Filter for every repair chunk addressed to one device."""
    return _device(device_id, "artifacts/+/chunks")


def device_missing(device_id: str) -> str:
    """Filter for every missing-chunk report of one device."""
    return _device(device_id, "artifacts/+/missing")


def group_artifacts(group: str) -> str:
    """Filter for every artifact chunk published to a group."""
    return f"{PREFIX}/groups/{check_id(group, 'group')}/artifacts/+/chunks"


def every_group_artifacts() -> str:
    """Filter for the artifact chunks of every group."""
    return f"{PREFIX}/groups/+/artifacts/+/chunks"


def shared(share_group: str, topic_filter: str) -> str:
    """MQTT v5 shared subscription: ``$share/<group>/<filter>`` spreads messages over workers."""
    return f"$share/{check_id(share_group, 'share group')}/{topic_filter}"


def unshared(topic_filter: str) -> str:
    """The filter inside ``$share/<group>/<filter>`` (the filter itself when it is not shared)."""
    if topic_filter.startswith("$share/"):
        parts = topic_filter.split("/", 2)
        return parts[2] if len(parts) == 3 else ""
    return topic_filter


# ---- parsing --------------------------------------------------------------------------

@dataclass(frozen=True)
class Topic:
    kind: TopicKind
    device_id: str | None = None
    group: str | None = None
    sha256: str | None = None


def parse(topic: str) -> Topic:
    """Parse a concrete topic (no wildcards) into its kind and components."""
    if not isinstance(topic, str) or not topic.startswith(PREFIX + "/"):
        raise TopicError(f"topic {topic!r} is not a coldchain topic (it must start with {PREFIX}/)")
    parts = topic[len(PREFIX) + 1 :].split("/")
    try:
        if parts[0] == "devices" and len(parts) == 3 and parts[2] in _DEVICE_LEAVES:
            return Topic(_DEVICE_LEAVES[parts[2]], device_id=check_id(parts[1], "device id"))
        if parts[0] == "devices" and len(parts) == 5 and parts[2] == "artifacts":
            kind = {"chunks": TopicKind.DEVICE_CHUNKS, "missing": TopicKind.MISSING}.get(parts[4])
            if kind is not None:
                return Topic(kind, device_id=check_id(parts[1], "device id"), sha256=check_sha256(parts[3]))
        if parts[0] == "groups" and len(parts) == 5 and parts[2] == "artifacts" and parts[4] == "chunks":
            return Topic(TopicKind.GROUP_CHUNKS, group=check_id(parts[1], "group"), sha256=check_sha256(parts[3]))
    except TopicError as exc:
        raise TopicError(f"topic {topic!r}: {exc}") from exc
    raise TopicError(f"topic {topic!r} is not one of the coldchain/v1 topics (see contract/topics.py)")


# ---- access control -------------------------------------------------------------------
# The one ACL: Mosquitto's acl_file (acl_lines) and the embedded broker (allowed) are both
# generated from the builders above, so the broker's rules cannot drift from the topics in use.

CLOUD_IDENTITY = "coldchain-cloud"
"""The MQTT identity (certificate CN or username) of the cloud; no device may take this id."""

_USER = "acl-user-placeholder"  # a valid id, replaced by Mosquitto's %u in pattern lines


class Action(StrEnum):
    PUBLISH = "publish"
    SUBSCRIBE = "subscribe"  # a topic filter, possibly with wildcards or $share/<group>/
    RECEIVE = "receive"  # a concrete topic delivered to a subscriber


@dataclass(frozen=True)
class Grant:
    """Topic filters an identity may publish to (``write``) and subscribe to / receive (``read``)."""

    write: tuple[str, ...]
    read: tuple[str, ...]


def device_grant(device_id: str) -> Grant:
    """A device publishes only its own state, telemetry, events and missing reports; it reads only its
    own commands, repair chunks and acks, and group chunk topics (a rollout wave streams on a group
    of its own, named in the deploy command, so group topics are not known ahead of time)."""
    if check_id(device_id, "device id") == CLOUD_IDENTITY:
        raise TopicError(f"{CLOUD_IDENTITY!r} is the cloud's identity, not a device id")
    return Grant(write=(state(device_id), telemetry(device_id), events(device_id), device_missing(device_id)),
                 read=(commands(device_id), device_artifacts(device_id), acks(device_id),
                       every_group_artifacts()))


def cloud_grant() -> Grant:
    """The cloud publishes commands, chunks (group and repair) and acks; it reads every device's
    state, telemetry, events and missing reports (and group chunks, which Mosquitto's pattern line
    gives every identity)."""
    return Grant(write=(all_devices(TopicKind.COMMANDS), every_group_artifacts(), all_devices(TopicKind.DEVICE_CHUNKS),
                        all_devices(TopicKind.ACKS)),
                 read=(*(all_devices(k) for k in (TopicKind.STATE, TopicKind.TELEMETRY, TopicKind.EVENTS,
                                                   TopicKind.MISSING)), every_group_artifacts()))


def grant_for(identity: str) -> Grant:
    """The grant of an authenticated identity: the cloud's, or a device's (raises for an invalid id)."""
    return cloud_grant() if identity == CLOUD_IDENTITY else device_grant(identity)


def _covers(allowed: str, requested: str) -> bool:
    """Whether filter ``allowed`` matches everything ``requested`` (a topic or a filter) matches."""
    want, have = requested.split("/"), allowed.split("/")
    for i, level in enumerate(have):
        if level == "#":
            return True
        if i >= len(want) or want[i] == "#" or (level != "+" and (want[i] == "+" or want[i] != level)):
            return False
    return len(want) == len(have)


def allowed(identity: str, action: Action, topic: str) -> bool:
    """Whether ``identity`` (an authenticated device id or :data:`CLOUD_IDENTITY`) may do ``action``
    on ``topic``. Publish and receive take a concrete topic; subscribe a filter that every allowed
    topic must cover (a device's ``#`` is refused, not narrowed)."""
    try:
        grant = grant_for(identity)
    except TopicError:
        return False
    if action is Action.SUBSCRIBE:
        topic = unshared(topic)
    elif "+" in topic or "#" in topic:
        return False
    if not topic or "\0" in topic:
        return False
    filters = grant.write if action is Action.PUBLISH else grant.read
    return any(_covers(f, topic) for f in filters)


def acl_lines() -> list[str]:
    """Mosquitto ``acl_file`` lines: device rules as ``pattern`` lines on ``%u`` (the identity is the
    certificate CN or username, so it is the device id), then the cloud's ``user`` section."""
    device = device_grant(_USER)

    def with_u(topic_filter: str) -> str:
        return topic_filter.replace(f"/devices/{_USER}/", "/devices/%u/")

    return ["# generated by `coldchain broker config mosquitto` from contract/topics.py: do not edit",
            *(f"pattern write {with_u(f)}" for f in device.write),
            *(f"pattern read {with_u(f)}" for f in device.read),
            f"user {CLOUD_IDENTITY}",
            *(f"topic write {f}" for f in cloud_grant().write),
            *(f"topic read {f}" for f in cloud_grant().read)]

