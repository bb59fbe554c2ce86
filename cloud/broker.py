"""The embedded broker: amqtt started in-process on 127.0.0.1 (never 0.0.0.0), in its own thread
with its own event loop. At scale it is replaced by Mosquitto or an EMQX/HiveMQ cluster.

Safe by default: a client needs credentials (cloud/broker_auth.py: a username and password from
the broker's :class:`Identities`) and may use only the topics ``contract.topics.allowed`` gives
its identity, the ACL Mosquitto gets from ``coldchain broker config mosquitto``.
``allow_anonymous=True`` (``coldchain broker --insecure``) turns both off for a throwaway demo."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from cloud.errors import BrokerError
from contract import topics
from transport.config import BrokerConfig

if TYPE_CHECKING:
    from cloud.broker_auth import Identities
    from cloud.pki import FleetAuthority


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedBroker:
    """``with EmbeddedBroker() as broker: broker.url`` -> ``mqtt://127.0.0.1:<port>`` (MQTT 3.1.1).

    Clients connect with ``broker.cloud_credentials()`` or ``broker.device_credentials(id)``
    (BrokerConfigs holding a generated password). ``identities`` may be a store backed by the
    fleet's password file instead; ``allow_anonymous=True`` lets anyone do anything."""

    def __init__(self, port: int | None = None, host: str = "127.0.0.1", identities: Identities | None = None,
                 allow_anonymous: bool = False) -> None:
        from cloud.broker_auth import Identities  # amqtt only where a broker runs

        self.host, self.port = host, port or free_port()
        self.allow_anonymous = allow_anonymous
        self.identities = None if allow_anonymous else identities or Identities()
        self._passwords: dict[str, str] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="amqtt", daemon=True)
        self._broker: Any = None
        self._token: str | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def credentials(self, identity: str, **settings: Any) -> BrokerConfig:
        """A BrokerConfig (MQTT 3.1.1, ``settings`` added) for ``identity``, allowed on first use
        with a generated password (in memory only)."""
        import secrets

        password = None
        if self.identities is not None:
            password = self._passwords.get(identity)
            if password is None:
                password = self._passwords[identity] = secrets.token_urlsafe(24)
                self.identities.add(identity, password)
        return BrokerConfig(url=self.url, protocol="3.1.1", username=identity, password=password, **settings)

    def cloud_credentials(self, **settings: Any) -> BrokerConfig:
        return self.credentials(topics.CLOUD_IDENTITY, **settings)

    def device_credentials(self, device_id: str, **settings: Any) -> BrokerConfig:
        topics.device_grant(device_id)  # a valid device id, not the cloud's identity
        return self.credentials(device_id, **settings)

    def start(self) -> EmbeddedBroker:
        from amqtt.broker import Broker

        logging.getLogger("amqtt").setLevel(logging.WARNING)
        from cloud.broker_auth import plugins

        section, self._token = plugins(self.identities)
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}", "max_connections": 0}},
            "plugins": section,
        }
        self._thread.start()
        self._broker = Broker(config, loop=self._loop)

        async def _start() -> None:
            await self._broker.start()

        try:
            asyncio.run_coroutine_threadsafe(_start(), self._loop).result(timeout=15)
        except Exception as exc:
            raise BrokerError(f"the embedded broker could not start on {self.host}:{self.port}: {exc}") from exc
        return self

    def stop(self) -> None:
        logging.getLogger("amqtt").setLevel(logging.CRITICAL)  # amqtt reports its own slow shutdown as errors
        if self._broker is not None:
            async def _stop() -> None:
                await self._broker.shutdown()

            try:
                asyncio.run_coroutine_threadsafe(_stop(), self._loop).result(timeout=15)
            except Exception:  # shutting down anyway
                logging.getLogger("coldchain.broker").warning("amqtt did not shut down cleanly")

        async def _cancel_rest() -> None:  # amqtt leaves its broadcast task behind
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self._thread.is_alive():
            with contextlib.suppress(Exception):  # shutting down anyway
                asyncio.run_coroutine_threadsafe(_cancel_rest(), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if self._token is not None:
            from cloud.broker_auth import unregister

            unregister(self._token)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def mosquitto_access(authority: FleetAuthority, acl_file: Path, tls: bool = True,
                     hosts: tuple[str, ...] = ("localhost", "127.0.0.1")) -> list[str]:
    """Writes ``acl_file`` (contract.topics.acl_lines) and returns the access settings: with TLS the
    listener's CA, server certificate (made for ``hosts``), CRL and client certificates required,
    the certificate's CN as username; without TLS the fleet's password file."""
    acl_file.parent.mkdir(parents=True, exist_ok=True)
    acl_file.write_text("\n".join(topics.acl_lines()) + "\n")
    settings = ["# access: a client certificate (TLS) or a password per device, the cloud's own identity,",
                "# and the ACL generated from contract/topics.py (docs/security.md)",
                "allow_anonymous false", f"acl_file {acl_file}"]
    if not tls:
        authority.cloud_password()  # the cloud's own password is in the password file
        return [*settings, f"password_file {authority.passwd_file}"]
    cert, key = authority.broker_identity(list(hosts))
    return [*settings, f"cafile {authority.ca_file}", f"certfile {cert}", f"keyfile {key}",
            f"crlfile {authority.crl_file}", "require_certificate true", "use_identity_as_username true",
            "tls_version tlsv1.2"]


def mosquitto_conf(port: int = 1883, persistence_dir: str = "/var/lib/mosquitto/", access: list[str] | None = None,
                   bind: str | None = None) -> str:
    """A Mosquitto configuration for a coldchain fleet: the limits that decide whether messages are
    dropped, and ``access`` (from :func:`mosquitto_access`). End-to-end telemetry acks make even stock
    settings lossless (a dropped window is sent again), but at stock limits a burst costs re-sends;
    these keep re-sends rare and sessions alive."""
    return "\n".join([
        "per_listener_settings false",
        f"listener {port}" + (f" {bind}" if bind else ""),
        *(access or ["# access: per-device credentials and the ACL (docs/security.md), never anonymous",
                     "allow_anonymous false"]),
        "# per client: queued QoS 1 messages beyond those in flight (stock 1000; the ingestion worker's",
        "# persistent session takes the whole fleet's telemetry while it is down or behind)",
        "max_queued_messages 100000",
        "max_queued_bytes 268435456",
        "# unacknowledged QoS 1 messages per client in flight (stock 20)",
        "max_inflight_messages 100",
        "# keep sessions and their queues across a broker restart (stock: off)",
        "persistence true",
        f"persistence_location {persistence_dir}",
        "autosave_interval 60",
        "# MQTT 3.1.1 persistent sessions of clients that never return expire (stock: never); v5 clients",
        "# set their own expiry (the agent and the cloud: 24 h)",
        "persistent_client_expiration 7d",
        "",
    ])
