"""Telemetry from the spool to the cloud, end to end: a window leaves the spool only when the
cloud's ack (``TelemetryAck`` on the device's acks topic, sent after the cloud committed it)
covers it. The broker's PUBACK says nothing here: a broker drops what overflows its queues
(stock Mosquitto keeps 1,000 messages per client), and a burst of 20,000 windows lost 64 %.

Windows go out oldest first, with a bounded number unconfirmed at a time, so a backlog does not
flood the broker: the bound starts at ``START_IN_FLIGHT``, grows by one with every ack that
confirms a window in flight, up to ``max_in_flight``, and halves when a window goes unconfirmed
for ``resend_after_s`` (the broker dropped it, or its ack: a fleet's burst has met a full queue),
as TCP's congestion window does. Such a window, and every unconfirmed window after a reconnect,
is sent again. The cloud stores
each (device, epoch, seq) once and acknowledges re-sent windows again, so a re-send costs a
duplicate delivery, never a duplicate row.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from agent.spool import Spool
from contract import topics
from contract.acks import TelemetryAck
from contract.errors import ContractError
from transport.client import Transport

START_IN_FLIGHT = 4


class Uplink:
    def __init__(self, spool: Spool, transport: Transport, device_id: str, max_in_flight: int = 50,
                 resend_after_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.spool, self.transport, self.device_id = spool, transport, device_id
        self.max_in_flight, self.resend_after_s, self.clock = max_in_flight, resend_after_s, clock
        self.topic = topics.telemetry(device_id)
        self.in_flight: dict[int, float] = {}  # seq -> when it was last sent, until the cloud's ack covers it
        self.window = min(START_IN_FLIGHT, max_in_flight)  # how many may be in flight now
        self.connected = False
        self.confirmed = self.resent = 0

    @property
    def subscription(self) -> str:
        return topics.acks(self.device_id)

    def on_connected(self) -> None:
        """A new connection: what was sent and not confirmed may be lost with the old one; send again."""
        self.connected = True
        self.in_flight.clear()

    def on_disconnected(self) -> None:
        self.connected = False

    def on_ack(self, payload: bytes) -> int:
        """Delete the windows the cloud stored; returns how many. Raises ContractError for a bad ack."""
        ack = TelemetryAck.from_json(payload)
        if ack.device_id != self.device_id:
            raise ContractError(f"an ack for another device ({ack.device_id!r}) on {self.device_id}'s acks topic")
        deleted = self.spool.confirm(ack.epoch, ack.ranges)
        covered = [s for s in self.in_flight if ack.covers(s)] if ack.epoch == self.spool.epoch else []
        for seq in covered:
            del self.in_flight[seq]
        if covered:
            self.window = min(self.max_in_flight, self.window + 1)
        self.confirmed += deleted
        return deleted

    def pump(self) -> None:
        """Send the oldest unconfirmed windows while fewer than ``max_in_flight`` wait for an ack."""
        if not self.connected:
            return
        now = self.clock()
        expired = [seq for seq, at in self.in_flight.items() if now - at >= self.resend_after_s]
        for seq in expired:  # dropped on the way, or its ack was: send it again (if it is still spooled)
            del self.in_flight[seq]
        if expired:
            self.window = max(1, self.window // 2)
        room = self.window - len(self.in_flight)
        if room <= 0:
            return
        for pending in self.spool.pending(limit=room + len(self.in_flight)):
            if pending.seq in self.in_flight:
                continue
            if self.transport.publish(self.topic, pending.payload) is None:
                return  # offline now: the next connection starts over
            self.in_flight[pending.seq] = now
            self.resent += pending.seq in expired
            room -= 1
            if room == 0:
                return
