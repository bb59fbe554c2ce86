"""coldchain's wire contract: topics, versioned messages, the bundle manifest, signing.

The only vocabulary shared by the compiler, the agent and the cloud. Imports nothing of
coldchain's own; depends on the standard library, pydantic and cryptography only.
"""

SCHEMA_VERSION = 1
"""Version of every message model in this package; a payload of another version is refused."""

COMMAND_SCHEMA_VERSION = 2
"""Version of the commands (``contract.commands``): 2 since every command is signed by an operator
key over bytes that bind the device, job id, issue and expiry times and content (1: unsigned)."""

EVENT_SCHEMA_VERSION = 2
"""Version of the device events (``contract.events``): 2 since a job may report ``READY`` (a verified
candidate waiting for the firmware's release or the activation window, issue 14)."""
EVENT_VERSIONS = (1, EVENT_SCHEMA_VERSION)
"""Versions of the events the cloud reads (1: agents before issue 14)."""

__all__ = ["COMMAND_SCHEMA_VERSION", "EVENT_SCHEMA_VERSION", "EVENT_VERSIONS", "SCHEMA_VERSION"]
