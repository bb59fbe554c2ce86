"""Broker access control as an attacker on the network meets it, with the default set-up: real
Mosquitto configured by `coldchain broker config mosquitto` (TLS, client certificates from
`coldchain fleet provision`, MQTT v5), and the embedded broker as it starts by default (amqtt,
MQTT 3.1.1, passwords). A device cannot act as another device or as the cloud, cannot read another
device's commands or repairs; anonymous and untrusted clients are refused; the cloud works.

"Nothing arrived" is always checked up to a positive marker sent after the attempt (the broker
delivers one publisher's messages in order)."""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion
from typer.testing import CliRunner

from cloud.broker import EmbeddedBroker, free_port
from cloud.pki import FleetAuthority
from coldchain.cli import app
from contract import topics
from tests.integration import mosquitto
from transport.config import BrokerConfig

pytestmark = pytest.mark.integration
SHA = "cd" * 32
A, B = "fridge-a", "fridge-b"


class Probe:
    """A paho client whose callbacks only enqueue: connects, acks, SUBACKs and messages, in order."""

    def __init__(self, config: BrokerConfig, client_id: str) -> None:
        self.events: queue.Queue[tuple[Any, ...]] = queue.Queue()
        put = self.events.put
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv5 if config.protocol == "5" else mqtt.MQTTv311)
        if config.tls:
            self.client.tls_set(ca_certs=str(config.ca_file), certfile=config.cert_file and str(config.cert_file),
                                keyfile=config.key_file and str(config.key_file))
        if config.username:
            self.client.username_pw_set(config.username, config.password)
        self.client.on_connect = lambda c, u, flags, reason, props=None: put(("connect", reason))
        self.client.on_disconnect = lambda c, u, flags, reason, props=None: put(("gone", reason))
        self.client.on_connect_fail = lambda c, u: put(("gone", "connect failed"))
        self.client.on_message = lambda c, u, m: put(("message", m.topic, bytes(m.payload)))
        self.client.on_publish = lambda c, u, mid, reason, props=None: put(("puback", mid, reason))
        self.client.on_subscribe = lambda c, u, mid, reasons, props=None: put(("suback", mid, reasons))
        try:
            self.client.connect(config.host, config.port)
        except OSError as exc:  # TLS refused during the handshake
            put(("gone", str(exc)))
        self.client.loop_start()

    def until(self, match: Callable[[tuple[Any, ...]], bool], timeout: float = 20) -> list[tuple[Any, ...]]:
        """Every event up to and including the first that ``match`` accepts (fails without it)."""
        seen: list[tuple[Any, ...]] = []
        while True:
            try:
                item = self.events.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no matching event within {timeout} s; saw {seen}") from None
            seen.append(item)
            if match(item):
                return seen

    def admitted(self) -> bool:
        first = self.until(lambda e: e[0] in ("connect", "gone"))[-1]
        return first[0] == "connect" and not first[1].is_failure

    def publish(self, topic: str, payload: bytes = b"x") -> tuple[Any, ...]:
        mid = self.client.publish(topic, payload, qos=1).mid
        return self.until(lambda e: e[0] == "puback" and e[1] == mid)[-1]

    def subscribe(self, topic_filter: str) -> bool:
        _, mid = self.client.subscribe(topic_filter, 1)
        reasons = self.until(lambda e: e[0] == "suback" and e[1] == mid)[-1][2]
        return not reasons[0].is_failure

    def messages_until(self, topic: str, payload: bytes) -> list[tuple[str, bytes]]:
        seen = self.until(lambda e: e[0] == "message" and e[1:] == (topic, payload))
        return [(e[1], e[2]) for e in seen if e[0] == "message"]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@dataclass
class Fleet:
    v5: bool
    cloud: BrokerConfig
    devices: dict[str, BrokerConfig]
    intruders: dict[str, BrokerConfig]  # must not get in: anonymous, untrusted certificate, wrong password


def _public_key(path: Path) -> Path:
    path.write_bytes(Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


def _cli(*args: str) -> None:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output


@pytest.fixture
def mosquitto_fleet(tmp_path: Path) -> Iterator[Fleet]:
    mosquitto.binary()
    port, keys, db = free_port(), tmp_path / "fleet-keys", f"sqlite:///{tmp_path / 'cloud.db'}"
    url = f"mqtts://127.0.0.1:{port}"
    key = _public_key(tmp_path / "ops.pub")
    devices = {}
    for device in (A, B):
        _cli("fleet", "provision", device, "--group", "eu", "--board", "rpi4", "--trusted-key", str(key), "--broker",
             url, "--fleet", str(keys), "--db", db, "--out", str(tmp_path / device))
        tls = tmp_path / device / "tls"
        devices[device] = BrokerConfig(url=url, ca_file=tls / "ca.pem", cert_file=tls / "device.pem",
                                       key_file=tls / "device.key")
    _cli("broker", "config", "mosquitto", "--fleet", str(keys), "--out", str(tmp_path / "mq"), "--port", str(port),
         "--bind", "127.0.0.1", "--host", "127.0.0.1", "--persistence-dir", f"{tmp_path}/")
    conf = tmp_path / "mq" / "mosquitto.conf"
    conf.write_text(conf.read_text() + "user root\n")  # the test runs as root: do not drop to `mosquitto`
    assert (tmp_path / "mq" / "acl").read_text().splitlines() == topics.acl_lines()  # generated, not written
    stranger = FleetAuthority(tmp_path / "other-ca")  # a CA the broker does not trust
    stranger.identity(A, tmp_path / "stranger.pem", tmp_path / "stranger.key")
    intruders = {"anonymous": BrokerConfig(url=url, ca_file=devices[A].ca_file),
                 "untrusted certificate": BrokerConfig(url=url, ca_file=devices[A].ca_file,
                                                       cert_file=tmp_path / "stranger.pem",
                                                       key_file=tmp_path / "stranger.key")}
    with mosquitto.running(conf, port):
        yield Fleet(True, FleetAuthority(keys).cloud_login(url), devices, intruders)


@pytest.fixture
def embedded_fleet() -> Iterator[Fleet]:
    with EmbeddedBroker() as broker:  # its default configuration
        devices = {d: broker.device_credentials(d) for d in (A, B)}
        intruders = {"anonymous": BrokerConfig(url=broker.url, protocol="3.1.1"),
                     "wrong password": devices[A].model_copy(update={"password": "guessed"}),
                     "unknown user": BrokerConfig(url=broker.url, protocol="3.1.1", username="fridge-z",
                                                  password="x")}
        yield Fleet(False, broker.cloud_credentials(), devices, intruders)


@pytest.fixture(params=["mosquitto", "embedded"])
def fleet(request: pytest.FixtureRequest) -> Fleet:
    return request.getfixturevalue(f"{request.param}_fleet")  # type: ignore[no-any-return]


def _refused(ack: tuple[Any, ...], v5: bool) -> None:
    """v5 says why (PUBACK reason); 3.1.1 cannot, the broker drops the message silently."""
    if v5:
        assert ack[2].is_failure and "not authorized" in str(ack[2]).lower(), ack


def test_a_device_cannot_publish_as_another_device_nor_send_commands(fleet: Fleet) -> None:
    cloud = Probe(fleet.cloud, topics.CLOUD_IDENTITY)  # the cloud's default client id
    a, b = Probe(fleet.devices[A], A), Probe(fleet.devices[B], B)
    try:
        assert cloud.admitted() and a.admitted() and b.admitted()
        for kind in (topics.TopicKind.STATE, topics.TopicKind.TELEMETRY, topics.TopicKind.EVENTS):
            assert cloud.subscribe(topics.all_devices(kind))
        assert b.subscribe(topics.commands(B))
        for forged in (topics.state(B), topics.telemetry(B), topics.events(B), topics.commands(B),
                       topics.commands(A), topics.acks(B), topics.group_chunks("eu", SHA)):
            _refused(a.publish(forged, b"forged"), fleet.v5)
        assert not a.publish(topics.telemetry(A), b"marker")[2].is_failure
        received = cloud.messages_until(topics.telemetry(A), b"marker")  # the cloud reads telemetry
        assert not [m for m in received if m[1] == b"forged"], received
        # the cloud may command B, and B receives exactly that: no forged command before it
        assert not cloud.publish(topics.commands(B), b"from the cloud")[2].is_failure
        assert b.messages_until(topics.commands(B), b"from the cloud") == [(topics.commands(B), b"from the cloud")]
    finally:
        for probe in (cloud, a, b):
            probe.close()


def test_a_device_cannot_read_another_devices_commands_repairs_or_everything(fleet: Fleet) -> None:
    cloud, a = Probe(fleet.cloud, "cloud-probe"), Probe(fleet.devices[A], A)
    try:
        assert cloud.admitted() and a.admitted()
        for stolen in (topics.commands(B), topics.device_artifacts(B), "#", topics.all_devices(topics.TopicKind.STATE)):
            granted = a.subscribe(stolen)  # Mosquitto 2.0 grants it and checks each message on delivery
            assert fleet.v5 or not granted, f"{A} may subscribe to {stolen}"
        assert a.subscribe(topics.commands(A)) and a.subscribe(topics.device_artifacts(A))
        for topic in (topics.commands(B), topics.device_chunks(B, SHA), topics.acks(B)):
            assert not cloud.publish(topic, b"for b only")[2].is_failure
        assert not cloud.publish(topics.commands(A), b"marker")[2].is_failure
        assert a.messages_until(topics.commands(A), b"marker") == [(topics.commands(A), b"marker")]
    finally:
        cloud.close()
        a.close()


def test_anonymous_untrusted_and_impersonating_clients_are_refused(fleet: Fleet) -> None:
    for what, config in fleet.intruders.items():
        intruder = Probe(config, f"intruder-{len(what)}")
        try:
            assert not intruder.admitted(), f"{what}: let in"
        finally:
            intruder.close()
    if not fleet.v5:  # the embedded broker also binds a device's identity to its client id
        impostor = Probe(fleet.devices[A], B)
        try:
            assert not impostor.admitted(), "a device took another device's client id (its session)"
        finally:
            impostor.close()


def test_a_revoked_device_is_refused_after_a_restart(tmp_path: Path) -> None:
    mosquitto.binary()
    port, keys, db = free_port(), tmp_path / "fleet-keys", f"sqlite:///{tmp_path / 'cloud.db'}"
    url = f"mqtts://127.0.0.1:{port}"
    key = _public_key(tmp_path / "ops.pub")
    for device in (A, B):
        _cli("fleet", "provision", device, "--group", "eu", "--board", "rpi4", "--trusted-key", str(key), "--broker",
             url, "--fleet", str(keys), "--db", db, "--out", str(tmp_path / device))
    _cli("broker", "config", "mosquitto", "--fleet", str(keys), "--out", str(tmp_path / "mq"), "--port", str(port),
         "--bind", "127.0.0.1", "--host", "127.0.0.1", "--persistence-dir", f"{tmp_path}/")
    conf = tmp_path / "mq" / "mosquitto.conf"
    conf.write_text(conf.read_text() + "user root\n")
    _cli("fleet", "revoke", B, "--fleet", str(keys), "--db", db)

    def login(device: str) -> BrokerConfig:
        tls = tmp_path / device / "tls"
        return BrokerConfig(url=url, ca_file=tls / "ca.pem", cert_file=tls / "device.pem", key_file=tls / "device.key")

    with mosquitto.running(conf, port):
        a, b = Probe(login(A), A), Probe(login(B), B)
        try:
            assert a.admitted(), "a device that was not revoked was refused"
            assert not b.admitted(), "a revoked certificate was let in"
        finally:
            a.close()
            b.close()


def test_without_tls_mosquitto_takes_the_fleets_password_file(tmp_path: Path) -> None:
    mosquitto.binary()
    port, keys, db = free_port(), tmp_path / "fleet-keys", f"sqlite:///{tmp_path / 'cloud.db'}"
    url = f"mqtt://127.0.0.1:{port}"
    _cli("fleet", "provision", A, "--group", "eu", "--board", "rpi4", "--trusted-key",
         str(_public_key(tmp_path / "ops.pub")), "--broker", url, "--fleet", str(keys), "--db", db, "--out",
         str(tmp_path / A), "--install-dir", str(tmp_path / A))  # installed where it was made
    _cli("broker", "config", "mosquitto", "--no-tls", "--fleet", str(keys), "--out", str(tmp_path / "mq"), "--port",
         str(port), "--bind", "127.0.0.1", "--persistence-dir", f"{tmp_path}/")
    conf = tmp_path / "mq" / "mosquitto.conf"
    conf.write_text(conf.read_text() + "user root\n")
    from agent.config import load_config

    login = load_config(tmp_path / A / "agent.yaml", environ={}).broker  # the password the factory installs
    assert login.username == A and login.password and login.password not in (keys / "passwd").read_text()
    with mosquitto.running(conf, port):
        a, cloud = Probe(login, A), Probe(FleetAuthority(keys).cloud_login(url), "cloud-probe")
        guesser = Probe(login.model_copy(update={"password": "guess"}), "guesser")
        try:
            assert a.admitted() and cloud.admitted() and not guesser.admitted()
            _refused(a.publish(topics.state(B)), v5=True)
            assert not a.publish(topics.state(A))[2].is_failure
        finally:
            for probe in (a, cloud, guesser):
                probe.close()


def test_the_embedded_broker_follows_the_fleets_password_file(tmp_path: Path) -> None:
    from cloud.broker_auth import Identities

    keys, db = tmp_path / "fleet-keys", f"sqlite:///{tmp_path / 'cloud.db'}"
    authority = FleetAuthority(keys)
    with EmbeddedBroker(identities=Identities(authority.passwd_file)) as broker:
        _cli("fleet", "provision", A, "--group", "eu", "--board", "rpi4", "--trusted-key",
             str(_public_key(tmp_path / "ops.pub")), "--broker", broker.url, "--fleet", str(keys), "--db", db,
             "--out", str(tmp_path / A), "--install-dir", str(tmp_path / A))
        from agent.config import load_config

        login = load_config(tmp_path / A / "agent.yaml", environ={}).broker.model_copy(update={"protocol": "3.1.1"})
        first = Probe(login, A)
        try:
            assert first.admitted(), "a provisioned device was refused"
        finally:
            first.close()
        _cli("fleet", "revoke", A, "--fleet", str(keys), "--db", db)
        again = Probe(login, A)
        try:
            assert not again.admitted(), "a revoked device was let in"
        finally:
            again.close()


def test_the_embedded_broker_command_does_not_run_open_unless_told() -> None:
    result = CliRunner().invoke(app, ["broker", "--seconds", "1"])
    assert result.exit_code == 1 and "--insecure" in result.output
