"""A simulated MQTT broker on an injected clock, for the partition row: what a real broker does
for QoS 1 with persistent sessions, plus the faults a harness needs to control exactly.

- Every client has a ``Link`` (the ``transport.client.Transport`` the agent or the cloud uses):
  ``publish`` returns a message id and the broker's PUBACK (``Acked``) follows; ``subscribe`` is
  answered with ``Subscribed``; a client connects with ``Connected``.
- Sessions persist: a message for a client whose link is down waits in its session queue (bounded
  like Mosquitto's ``max_queued_messages``; what overflows is dropped and counted), and the
  messages delivered just before the link went down are delivered again after it heals (their
  PUBACK was lost with the link: MQTT's DUP re-delivery).
- ``cut(client, detect_s)``: the link goes down now; the client notices only after ``detect_s``
  (keepalive): until then its publishes get a message id and go nowhere (they are re-sent when
  the link heals, as paho re-sends unacknowledged QoS 1 messages); when the broker notices, it
  publishes the client's last will (retained). ``heal(client)``: the link is back (``Connected``).
- Chaos: while ``chaotic(client)`` (the harness sets a period after a heal), messages to and from
  that client are duplicated (2-3 copies, with probability ``dup``) and reordered (held back for
  a few deliveries, with probability ``reorder``): old re-sends arrive after newer commands,
  events arrive out of order and twice at the cloud.

Nothing here runs by itself: ``flush()`` delivers what is queued, ``timers()`` applies what is due
on the clock; the harness calls both between the clients' turns."""

from __future__ import annotations

import queue
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from paho.mqtt.client import topic_matches_sub

from transport.client import Acked, Connected, Disconnected, Inbound, Received, Subscribed

MAX_QUEUED = 1000  # Mosquitto's default max_queued_messages per client session


class SimClock:
    """Seconds since the epoch, moved only by ``advance``: the agents' ``time.time``/``monotonic``,
    the publisher's monotonic clock and (as ``datetime``) the controller's."""

    def __init__(self, start: float) -> None:
        self.t = start

    def time(self) -> float:
        return self.t

    def datetime(self) -> datetime:
        return datetime.fromtimestamp(self.t, UTC)

    def advance(self, seconds: float) -> None:
        self.t += seconds


@dataclass
class Message:
    topic: str
    payload: bytes
    sender: str
    hold: int = 0  # deliveries (flushes) to wait before this copy goes out (reordering)


@dataclass
class Link:
    """One client's connection to the simulated broker; a ``Transport``."""

    network: Network
    client_id: str
    will: tuple[str, bytes] | None = None
    inbox: queue.Queue[Inbound] = field(default_factory=queue.Queue)
    connected: bool = False  # what the client believes
    down: bool = False  # the link is cut (the client may not know yet)
    mid: int = 0
    held: list[Message] = field(default_factory=list)  # published while cut, not yet noticed
    filters: set[str] = field(default_factory=set)  # the session's subscriptions (persist while cut)
    recent: list[Message] = field(default_factory=list)  # delivered in the last flush: unacked if cut now

    def start(self) -> None:
        self.network.connect(self)

    def stop(self) -> None:
        pass

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> int | None:
        if not self.connected:
            return None
        self.mid += 1
        if self.down:  # paho keeps it (QoS 1, unacknowledged) and sends it again on reconnect
            self.held.append(Message(topic, payload, self.client_id))
        else:
            self.network.route(Message(topic, payload, self.client_id), retain)
            self.inbox.put(Acked(self.mid))
        return self.mid

    def subscribe(self, topics: list[str]) -> int | None:
        if not self.connected or self.down:
            return None
        self.mid += 1
        self.filters.update(topics)
        self.network.retained_for(self, topics)
        self.inbox.put(Subscribed(self.mid, True))
        return self.mid

    def ack(self, mid: int, qos: int) -> None:
        """The cloud's manual acknowledgement: the simulated broker keeps nothing for it."""


class Network:
    def __init__(self, clock: SimClock, rng: random.Random, dup: float = 0.3, reorder: float = 0.3) -> None:
        self.clock, self.rng, self.dup, self.reorder = clock, rng, dup, reorder
        self.links: dict[str, Link] = {}
        self.queues: dict[str, list[Message]] = {}  # per client session: waiting for delivery
        self.retained: dict[str, Message] = {}
        self.chaos_until: dict[str, float] = {}  # client -> clock time until which its traffic is chaotic
        self.timers_due: list[tuple[float, str, Callable[[], None]]] = []
        self.counts: Counter[str] = Counter()  # delivered, duplicated, reordered, dropped, redelivered ...
        self.delivered: Counter[tuple[str, str]] = Counter()  # (client, topic) -> deliveries
        self.commands: Counter[tuple[str, bytes]] = Counter()  # (client, command payload) -> deliveries
        self.watch: Callable[[str, Message], None] = lambda client, message: None  # after each delivery

    def link(self, client_id: str, will: tuple[str, bytes] | None = None) -> Link:
        found = self.links[client_id] = Link(self, client_id, will)
        self.queues.setdefault(client_id, [])
        return found

    def connect(self, link: Link) -> None:
        link.connected, link.down = True, False
        link.inbox.put(Connected())

    def chaotic(self, client: str) -> bool:
        return self.clock.time() < self.chaos_until.get(client, 0.0)

    # ---- the broker ---------------------------------------------------------------------
    def route(self, message: Message, retain: bool = False) -> None:
        """The broker took a message: a copy into every matching session's queue."""
        if retain:
            self.retained[message.topic] = message
        for client, link in self.links.items():
            if any(topic_matches_sub(f, message.topic) for f in link.filters):
                waiting = self.queues[client]
                if len(waiting) >= MAX_QUEUED:
                    self.counts["dropped (session queue full)"] += 1
                    continue
                copies = 1
                if self.chaotic(message.sender) or self.chaotic(client):
                    copies += self.rng.choice((1, 2)) if self.rng.random() < self.dup else 0
                for _ in range(copies):
                    hold = self.rng.randint(1, 4) if (copies > 1 or self.chaotic(client)) and \
                        self.rng.random() < self.reorder else 0
                    waiting.append(Message(message.topic, message.payload, message.sender, hold))
                self.counts["duplicated"] += copies - 1

    def retained_for(self, link: Link, filters: list[str]) -> None:
        for topic, message in self.retained.items():
            if any(topic_matches_sub(f, topic) for f in filters):
                self.queues[link.client_id].append(Message(topic, message.payload, message.sender))

    def flush(self) -> int:
        """Deliver what each connected client's session holds (held-back copies wait their turn)."""
        delivered = 0
        for client, link in self.links.items():
            if link.down:
                continue
            waiting, later = self.queues[client], []
            self.queues[client] = later
            link.recent = []
            for message in waiting:
                if link.down:  # cut by the watch during this very delivery: the rest stays queued
                    later.append(message)
                elif message.hold > 0:
                    message.hold -= 1
                    later.append(message)
                    self.counts["reordered"] += 1
                else:
                    link.inbox.put(Received(message.topic, message.payload, 0, 1))
                    link.recent.append(message)
                    self.delivered[(client, message.topic)] += 1
                    if message.topic.endswith("/commands"):
                        self.commands[(client, message.payload)] += 1
                    delivered += 1
                    self.watch(client, message)
            self.counts["delivered"] += delivered
        return delivered

    # ---- faults -------------------------------------------------------------------------
    def cut(self, client: str, detect_s: float) -> None:
        """The link goes down now; client and broker notice after ``detect_s``."""
        link = self.links[client]
        link.down = True
        redeliver = [Message(m.topic, m.payload, m.sender) for m in link.recent]  # unacked by the client
        self.queues[client][:0] = redeliver
        self.counts["redelivered after the cut"] += len(redeliver)
        self.at(self.clock.time() + detect_s, f"{client} notices", lambda: self._noticed(link))

    def _noticed(self, link: Link) -> None:
        if not link.down:
            return
        link.connected = False
        link.inbox.put(Disconnected("keepalive timeout"))
        if link.will is not None:  # the broker notices too: the last will, retained
            self.route(Message(link.will[0], link.will[1], link.client_id), retain=True)

    def heal(self, client: str, chaos_s: float) -> None:
        """The link is back: the client reconnects, re-sends what it held; chaos for ``chaos_s``."""
        link = self.links[client]
        self.chaos_until[client] = self.clock.time() + chaos_s
        link.down = False
        held, link.held = link.held, []
        for message in held:
            self.route(message)
        self.counts["re-sent by the client after the cut"] += len(held)
        if not link.connected:
            self.connect(link)

    def at(self, when: float, what: str, action: Callable[[], None]) -> None:
        self.timers_due.append((when, what, action))

    def timers(self) -> None:
        now = self.clock.time()
        due = [t for t in self.timers_due if t[0] <= now]
        self.timers_due = [t for t in self.timers_due if t[0] > now]
        for _, _, action in sorted(due, key=lambda t: t[0]):
            action()

    def idle(self) -> bool:
        return not any(self.queues[c] for c, link in self.links.items() if not link.down)
