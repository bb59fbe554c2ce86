"""coldchain's wire contract: topics, versioned messages, the bundle manifest, signing.

The only vocabulary shared by the compiler, the agent and the cloud. Imports nothing of
coldchain's own; depends on the standard library, pydantic and cryptography only.
"""

SCHEMA_VERSION = 1
"""Version of every message model in this package; a payload of another version is refused."""

__all__ = ["SCHEMA_VERSION"]
