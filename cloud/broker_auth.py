"""Credentials and the ACL for the embedded broker (amqtt plugins).

Who may connect is an :class:`Identities` store: username -> Mosquitto ``$7$`` password hash,
held in memory (generated passwords, for the demo and tests) or read from the fleet's
``passwd`` file, re-read whenever it changes (``coldchain fleet provision/revoke``). What a
connected identity may do is ``contract.topics.allowed``, the same rules Mosquitto gets as an
``acl_file``. A device must connect with its own id as client id (so it cannot take over another
device's session); the cloud with its own or any client id that is not another identity's.

amqtt builds its plugins from a dotted path and a config mapping, so a plugin finds its store in
``_REGISTRY`` by a token the broker puts in that mapping.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amqtt.contexts import Action as AmqttAction
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session

from cloud.pki import check_password, hash_password, read_password_file
from contract import topics

log = logging.getLogger("coldchain.broker")
_REGISTRY: dict[str, Identities] = {}
_ACTIONS = {AmqttAction.PUBLISH: topics.Action.PUBLISH, AmqttAction.SUBSCRIBE: topics.Action.SUBSCRIBE,
            AmqttAction.RECEIVE: topics.Action.RECEIVE}


class Identities:
    """Usernames and their password hashes; ``password_file`` makes it follow a Mosquitto password
    file (re-read when its modification time or size changes)."""

    def __init__(self, password_file: Path | None = None) -> None:
        self.password_file = password_file
        self._lock = threading.Lock()
        self._users: dict[str, str] = {}
        self._seen: tuple[int, int] | None = None
        self.refused = 0  # connections refused (bad or unknown credentials, wrong client id)

    def add(self, name: str, password: str) -> None:
        """Allow ``name`` (the cloud's identity or a valid device id) with ``password``."""
        topics.grant_for(name)  # raises TopicError for a name no rule could apply to
        with self._lock:
            self._users[name] = hash_password(password)

    def remove(self, name: str) -> None:
        with self._lock:
            self._users.pop(name, None)

    def _current(self) -> dict[str, str]:
        if self.password_file is None:
            return self._users
        try:
            stat = self.password_file.stat()
            seen: tuple[int, int] | None = (stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            seen = None
        if seen != self._seen:
            self._users, self._seen = (read_password_file(self.password_file) if seen else {}), seen
        return self._users

    def authenticate(self, username: str | None, password: str | None, client_id: str | None) -> bool:
        with self._lock:
            users = self._current()
            hashed = users.get(username or "")
            ok = (hashed is not None and password is not None and check_password(password, hashed)
                  and client_id is not None
                  and (client_id == username or (username == topics.CLOUD_IDENTITY and client_id not in users)))
            if not ok:
                self.refused += 1
        if not ok:
            log.warning("refused an MQTT connection: user %r, client id %r", username, client_id)
        return ok


def register(identities: Identities) -> str:
    token = f"identities-{id(identities):x}"
    _REGISTRY[token] = identities
    return token


def unregister(token: str) -> None:
    _REGISTRY.pop(token, None)


class CredentialsPlugin(BaseAuthPlugin):  # type: ignore[misc]  # amqtt ships no type information
    """amqtt authentication: a known username, its password, and a client id it may use."""

    @dataclass
    class Config:
        identities: str = ""

    async def authenticate(self, *, session: Session) -> bool | None:
        identities = _REGISTRY.get(self.config.identities)
        return identities is not None and identities.authenticate(session.username, session.password,
                                                                  session.client_id)


class AclPlugin(BaseTopicPlugin):  # type: ignore[misc]
    """amqtt topic checks: ``contract.topics.allowed`` for the session's authenticated username."""

    @dataclass
    class Config:
        identities: str = ""

    async def topic_filtering(self, *, session: Session | None = None, topic: str | None = None,
                              action: Any = None) -> bool | None:
        if session is None or not session.username or topic is None or action not in _ACTIONS:
            return False
        permitted = topics.allowed(session.username, _ACTIONS[action], topic)
        if not permitted and action != AmqttAction.RECEIVE:
            log.info("refused %s on %s for %s", action, topic, session.username)
        return permitted


def plugins(identities: Identities | None) -> tuple[dict[str, Any], str | None]:
    """amqtt's ``plugins`` section and the registry token (None: anonymous, no ACL)."""
    if identities is None:
        return {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}}, None
    token = register(identities)
    return {f"{__name__}.CredentialsPlugin": {"identities": token},
            f"{__name__}.AclPlugin": {"identities": token}}, token
