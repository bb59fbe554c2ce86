"""The MQTT connection (paho-mqtt 2, MQTT v5): callbacks only put events on a queue; the agent's
loop decides what to do with them. A retained offline state is the last will; reconnection
uses exponential backoff with jitter; QoS 1 publishes report their broker acknowledgement."""

from __future__ import annotations

import queue
import random
import ssl
import sys
from dataclasses import dataclass
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from transport.config import BrokerConfig
from transport.loop import SharedLoop


@dataclass(frozen=True)
class Connected:
    pass


@dataclass(frozen=True)
class Disconnected:
    reason: str
    retry_in_s: float | None = None  # when the transport tries again (None: not known)


@dataclass(frozen=True)
class ConnectFailed:
    """An attempt to connect failed: ``cause`` as the socket or the broker gave it, and how long
    until the next attempt (the consumer logs it: a callback only enqueues)."""

    cause: str
    retry_in_s: float


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    mid: int = 0
    qos: int = 0
    dup: bool = False  # the broker delivers it again: handed out before and never acknowledged


@dataclass(frozen=True)
class Acked:
    mid: int


@dataclass(frozen=True)
class Subscribed:
    """The broker's SUBACK: the subscription ``mid`` is in place (``granted``) or was refused."""

    mid: int
    granted: bool


@dataclass(frozen=True)
class Wake:
    """Not from the broker: another thread of this process queued work for the loop that drains
    this inbox (the agent's local API), so the loop turns now instead of at its next timeout."""



Inbound = Connected | Disconnected | ConnectFailed | Received | Acked | Subscribed | Wake


class Transport(Protocol):
    inbox: queue.Queue[Inbound]

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> int | None: ...

    def subscribe(self, topics: list[str]) -> int | None: ...


class MqttTransport:
    def __init__(self, client_id: str, broker: BrokerConfig, will_topic: str | None = None,
                 will_payload: bytes = b"", manual_ack: bool = False, loop: SharedLoop | None = None) -> None:
        self.inbox: queue.Queue[Inbound] = queue.Queue()
        self.broker = broker
        self.loop = loop  # None: paho's own network thread for this client
        self.v5 = broker.protocol == "5"
        if self.v5:
            self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        else:  # a persistent session too, so QoS 1 commands queued while offline are delivered
            self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311,
                                      clean_session=False)
        if manual_ack:  # the receiver acknowledges a QoS 1 message only once it is stored (see ack)
            self.client.manual_ack_set(True)
        if will_topic is not None:
            self.client.will_set(will_topic, will_payload, qos=1, retain=True)
        if broker.username:
            self.client.username_pw_set(broker.username, broker.password)
        if broker.tls:
            self.client.tls_set(ca_certs=str(broker.ca_file) if broker.ca_file else None,
                                certfile=str(broker.cert_file) if broker.cert_file else None,
                                keyfile=str(broker.key_file) if broker.key_file else None,
                                cert_reqs=ssl.CERT_REQUIRED)
        # paho doubles the delay up to the maximum; the jitter spreads a fleet's reconnects
        low = broker.reconnect_min_s * random.uniform(1.0, 1.5)
        self._delays = (max(1, int(low)), max(int(low) + 1, int(broker.reconnect_max_s)))
        self._delay: float | None = None  # paho's reconnect delay, mirrored (it doubles after each wait)
        self._first_attempt = True  # paho's loop waits twice after a failed first connect (see _on_connect_fail)
        self._up = False  # a CONNACK accepted this connection: a disconnect now loses it
        self._refusal: str | None = None  # the broker's CONNACK refused the attempt: why (said at the disconnect)
        self.client.reconnect_delay_set(*self._delays)
        self.client.on_connect = self._on_connect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe

    def _next_delay(self) -> float:
        """The wait paho's loop is about to make: the minimum, doubled after each wait up to the maximum."""
        low, high = self._delays
        self._delay = float(low) if self._delay is None else min(self._delay * 2, float(high))
        return self._delay

    # callbacks: enqueue only
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any = None) -> None:
        self._first_attempt = False
        if not reason.is_failure:
            self._delay, self._up = None, True
            self.inbox.put(Connected())
        else:  # the broker answered and refused (credentials, protocol version, ...): it closes next
            self._refusal = f"the broker refused the connection: {reason}"
            if self.loop is not None:  # the shared loop's disconnect does not know the next attempt: say it now
                self.inbox.put(ConnectFailed(self._refusal, float(self._delays[0])))

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        # paho calls this inside its ``except OSError``: the exception is the cause
        exc = sys.exc_info()[1]
        cause = f"{type(exc).__name__}: {exc}" if exc is not None else "the connection attempt failed"
        if self._first_attempt:  # after connect_async's attempt paho's loop waits the minimum, then twice it
            self._first_attempt = False
            retry = self._next_delay() + self._next_delay()
        else:
            retry = self._next_delay()
        self.connect_failed(f"{cause} ({self.broker.host}:{self.broker.port})", retry)

    def connect_failed(self, cause: str, retry_in_s: float) -> None:
        self.inbox.put(ConnectFailed(cause, retry_in_s))

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any = None) -> None:
        self._first_attempt = False
        retry = None if self.loop is not None else self._next_delay()
        if not self._up and retry is not None:  # an attempt that failed after the TCP connection came
            version = "5" if self.v5 else "3.1.1"
            refusal, self._refusal = self._refusal, None
            self.inbox.put(ConnectFailed(refusal or (
                f"the broker took the connection but never answered the MQTT {version} CONNECT ({reason}; "
                f"{self.broker.host}:{self.broker.port}): a broker of another protocol version stays silent"), retry))
            return
        self._up = False
        self.inbox.put(Disconnected(str(reason), retry))

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self.inbox.put(Received(message.topic, bytes(message.payload), message.mid, message.qos, bool(message.dup)))

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any = None, properties: Any = None) -> None:
        self.inbox.put(Acked(mid))

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reasons: Any, properties: Any = None) -> None:
        self.inbox.put(Subscribed(mid, not any(r.is_failure for r in reasons)))

    def start(self) -> None:
        if self.v5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = 24 * 3600  # queued QoS 1 commands survive a short outage
            self.client.connect_async(self.broker.host, self.broker.port, self.broker.keepalive_s,
                                      clean_start=False, properties=properties)
        else:
            self.client.connect_async(self.broker.host, self.broker.port, self.broker.keepalive_s)
        if self.loop is not None:
            self.loop.add(self.client, self.broker.reconnect_min_s, self.broker.reconnect_max_s,
                          on_fail=self.connect_failed)
        else:
            self.client.loop_start()

    def stop(self) -> None:
        if self.loop is not None:
            self.loop.remove(self.client)
            self.client.disconnect()
            return
        self.client.disconnect()
        self.client.loop_stop()

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> int | None:
        if not self.client.is_connected():
            return None
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        return info.mid if info.rc == mqtt.MQTT_ERR_SUCCESS else None

    def ack(self, mid: int, qos: int) -> None:
        """With ``manual_ack``: tell the broker a message is safely handled (it redelivers otherwise)."""
        if qos > 0:
            self.client.ack(mid, qos)

    def subscribe(self, topics: list[str]) -> int | None:
        """Subscribe at QoS 1; the broker's answer comes later as ``Subscribed(mid)`` in the inbox."""
        if not topics:
            return None
        result, mid = self.client.subscribe([(t, 1) for t in topics])
        return mid if result == mqtt.MQTT_ERR_SUCCESS else None
