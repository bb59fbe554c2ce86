"""The agent over mqtts:// against Mosquitto with TLS, client certificates and the per-device ACL
generated from contract/topics.py: a device publishes only under its own id (MQTT v5 shows the refusal)."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.config import AgentConfig
from agent.loop import Agent
from cloud.broker import free_port
from contract import topics
from contract.state import DeviceState, offline
from tests.integration import mosquitto
from tests.integration.tls import CertificateAuthority
from transport.client import MqttTransport
from transport.config import BrokerConfig

pytestmark = pytest.mark.integration



@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[str, CertificateAuthority]]:
    mosquitto.binary()
    ca = CertificateAuthority(tmp_path / "pki")
    cert, key = ca.issue_files("broker", server=True)
    port = free_port()
    (tmp_path / "acl").write_text("\n".join(topics.acl_lines()) + "\n")
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"user root\nper_listener_settings false\nallow_anonymous false\nacl_file {tmp_path / 'acl'}\n"
                    f"persistence false\nlistener {port} 127.0.0.1\ncafile {ca.ca_file}\ncertfile {cert}\n"
                    f"keyfile {key}\nrequire_certificate true\nuse_identity_as_username true\n")
    with mosquitto.running(conf, port):
        yield f"mqtts://127.0.0.1:{port}", ca

def _client(url: str, ca: CertificateAuthority, name: str) -> tuple[mqtt.Client, queue.Queue[Any]]:
    cert, key = ca.issue_files(name)
    inbox: queue.Queue[Any] = queue.Queue()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv5)
    client.tls_set(ca_certs=str(ca.ca_file), certfile=str(cert), keyfile=str(key))
    client.on_message = lambda c, u, m: inbox.put((m.topic, bytes(m.payload)))
    client.on_publish = lambda c, u, mid, reason, props: inbox.put(("puback", mid, reason))
    connected = threading.Event()
    client.on_connect = lambda c, u, flags, reason, props=None: connected.set()
    client.connect("127.0.0.1", int(url.rsplit(":", 1)[1]))
    client.loop_start()
    assert connected.wait(30), f"{name} got no CONNACK"
    return client, inbox


def _wait(inbox: queue.Queue[Any], match: Any, timeout: float = 15) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            item = inbox.get(timeout=0.2)
        except queue.Empty:
            continue
        if match(item):
            return item
    return None


def test_agent_over_tls_with_client_certificate_and_acl(tls_broker: tuple[str, CertificateAuthority],
                                                        tmp_path: Path, world: dict[str, object]) -> None:
    url, ca = tls_broker
    cert, key = ca.issue_files("fridge-tls")
    root: Path = world["root"]  # type: ignore[assignment]
    broker = BrokerConfig(url=url, protocol="5", ca_file=ca.ca_file, cert_file=cert, key_file=key)
    assert broker.tls and broker.port == int(url.rsplit(":", 1)[1])
    config = AgentConfig(device_id="fridge-tls", groups=["eu"], data_dir=tmp_path / "data",
                         trusted_keys=[root / "keys" / "ops.pub"], broker=broker, telemetry_window_s=1)
    cloud, inbox = _client(url, ca, topics.CLOUD_IDENTITY)
    cloud.subscribe("coldchain/v1/devices/+/state", 1)  # the agent's state is retained: no race with it
    agent = Agent(config, MqttTransport("fridge-tls", broker, topics.state("fridge-tls"),
                                        offline("fridge-tls").to_json()), None)
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, kwargs={"stop": stop}, daemon=True)
    thread.start()
    try:
        state = _wait(inbox, lambda i: i[0] == topics.state("fridge-tls") and DeviceState.from_json(i[1]).online)
        assert state is not None, "the agent's state never arrived over TLS"
        # the device's own identity may not publish as another device (v5: the broker says so)
        device, device_inbox = _client(url, ca, "fridge-tls-2")
        info = device.publish(topics.state("fridge-other"), b"{}", qos=1)
        refused = _wait(device_inbox, lambda i: i[0] == "puback" and i[1] == info.mid)
        assert refused is not None and refused[2].is_failure and "authorized" in str(refused[2]).lower()
        allowed = device.publish(topics.state("fridge-tls-2"), offline("fridge-tls-2").to_json(), qos=1)
        ok = _wait(device_inbox, lambda i: i[0] == "puback" and i[1] == allowed.mid)
        assert ok is not None and not ok[2].is_failure
        device.disconnect()
    finally:
        stop.set()
        thread.join(timeout=15)
        cloud.disconnect()
        cloud.loop_stop()
    # an untrusted certificate cannot connect at all
    other = CertificateAuthority(tmp_path / "other-pki")
    bad_cert, bad_key = other.issue_files("intruder")
    intruder = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="intruder", protocol=mqtt.MQTTv5)
    intruder.tls_set(ca_certs=str(ca.ca_file), certfile=str(bad_cert), keyfile=str(bad_key))
    outcome: queue.Queue[str] = queue.Queue()
    intruder.on_connect = lambda c, u, flags, reason, props=None: outcome.put(
        "refused" if reason.is_failure else "connected")
    intruder.on_disconnect = lambda c, u, flags, reason, props=None: outcome.put("dropped")
    intruder.on_connect_fail = lambda c, u: outcome.put("dropped")
    try:  # TLS 1.3 checks the client certificate after the handshake: refused at connect or just after
        intruder.connect("127.0.0.1", int(url.rsplit(":", 1)[1]))
        intruder.loop_start()
        first = outcome.get(timeout=30)  # a positive signal that the broker ended it, not a quiet wait
        assert first in ("refused", "dropped"), "an untrusted certificate was let in"
    except OSError:
        pass
    finally:
        intruder.loop_stop()
