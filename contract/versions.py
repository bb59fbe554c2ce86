"""Fleets across versions: which agents the cloud can still command, and which older device
messages it still reads.

**Agent protocol.** What the cloud *sends* a device (commands, the manifests of the bundles it
deploys, trust documents) changes as a whole; :data:`AGENT_PROTOCOL` numbers it. An agent reports
the protocol it speaks in its state (``DeviceState.protocol``); a state without one (version 1) is
from an agent of protocol 1. The cloud commands with :data:`AGENT_PROTOCOL` and cannot command an
agent below :data:`MIN_AGENT_PROTOCOL`: such a device stays in the fleet, its telemetry is stored,
the fleet view says it needs a new agent, and a rollout skips it, naming why (``cloud.rollouts``).

**Reading older devices.** A device updates its agent later than the cloud, so the cloud reads a
window of versions of what devices send: :data:`STATE_VERSIONS` for the retained state,
``contract.EVENT_VERSIONS`` for events; telemetry, missing-chunk reports and acks are still version 1
(``contract.SCHEMA_VERSION``).

Every change to the bytes on the wire or the bytes signed bumps a version (the message's
``schema_version``, the manifest's or trust document's ``schema``, and this protocol when an older
agent cannot follow it); ``tests/contract/test_versions.py`` pins each message's shape per version.
"""

from __future__ import annotations

from typing import Final

AGENT_PROTOCOL: Final = 3
"""The protocol this coldchain's agent speaks and its cloud commands with."""
MIN_AGENT_PROTOCOL: Final = 2
"""The oldest agent protocol the cloud can command (deploy, roll back, cancel, configure)."""
LEGACY_AGENT_PROTOCOL: Final = 1
"""The protocol of an agent whose state does not report one (state version 1)."""
PROTOCOLS: Final = {
    1: "unsigned commands (version 1), manifests coldchain.manifest/v1-v2",
    2: "commands signed by an operator key and bound to the device (version 2), manifests "
       "coldchain.manifest/v3 (boards), root-signed trust documents (trust_update)",
    3: "manifests coldchain.manifest/v4 (short-side resize, centre crop, interpolation; issue 15)",
}
"""What each protocol consists of, for the messages that name it."""

STATE_SCHEMA_VERSION: Final = 5
"""Version of ``DeviceState``: 2 adds ``protocol``; 3 lets ``job.state`` be ``READY`` (issue 14); 4 is
sent by agents of protocol 3 (the same fields; its ``protocol`` defaults to 3); 5 adds ``faults``."""
STATE_VERSIONS: Final = (1, 2, 3, 4, STATE_SCHEMA_VERSION)
"""Versions of a device's state the cloud reads (1: agents before issue 13, 2: before issue 14, 3: before
manifest v4, 4: before faults)."""


MANIFEST_PROTOCOLS: Final = {"coldchain.manifest/v4": 3}
"""The agent protocol a bundle's manifest schema needs, where it is above :data:`MIN_AGENT_PROTOCOL`
(the compiler writes v4 only for bundles whose preprocessing needs it)."""


def needs_new_agent(protocol: int | None, manifest_schema: str | None = None) -> str | None:
    """Why the cloud cannot command a device of ``protocol`` (or deploy a bundle whose manifest is of
    ``manifest_schema`` to it), or None (also when it is not known: a device that never reported an
    online state)."""
    needed = max(MIN_AGENT_PROTOCOL, MANIFEST_PROTOCOLS.get(manifest_schema or "", 0))
    if protocol is None or protocol >= needed:
        return None
    if needed > MIN_AGENT_PROTOCOL:
        return (f"needs a new agent: it reports protocol {protocol}, a {manifest_schema} bundle needs protocol "
                f"{needed} ({PROTOCOLS[needed]})")
    return (f"needs a new agent: it reports protocol {protocol}, the cloud commands with protocol "
            f"{AGENT_PROTOCOL} ({PROTOCOLS[AGENT_PROTOCOL]})")
