"""coldchain's wire contract: topics, versioned messages, the bundle manifest, signing.

The only vocabulary shared by the compiler, the agent and the cloud. Imports nothing of
coldchain's own; depends on the standard library, pydantic and cryptography only.
"""

SCHEMA_VERSION = 1
"""Version of every message model in this package; a payload of another version is refused."""

COMMAND_SCHEMA_VERSION = 2
"""Version of the commands (``contract.commands``): 2 since every command is signed by an operator
key over bytes that bind the device, job id, issue and expiry times and content (1: unsigned)."""

__all__ = ["COMMAND_SCHEMA_VERSION", "SCHEMA_VERSION"]
