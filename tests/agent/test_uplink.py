"""Telemetry leaves the spool only on the cloud's ack: sent in order with a bounded number in
flight, re-sent when unconfirmed after a timeout and after a reconnect (injected clock, memory
transport)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.spool import Spool
from agent.uplink import Uplink
from benchmarks.faults.device import MemoryTransport
from contract import topics
from contract.acks import TelemetryAck
from contract.errors import ContractError
from contract.telemetry import Telemetry

DEVICE = "fridge-u"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def setup(tmp_path: Path, windows: int, in_flight: int = 4,
          resend_s: float = 30.0) -> tuple[Uplink, Spool, MemoryTransport, Clock]:
    spool = Spool(tmp_path / "spool.db", max_windows=100)
    for _ in range(windows):
        spool.append(lambda seq: f"window {seq}".encode())
    transport, clock = MemoryTransport(), Clock()
    uplink = Uplink(spool, transport, DEVICE, max_in_flight=in_flight, resend_after_s=resend_s, clock=clock)
    uplink.on_connected()
    return uplink, spool, transport, clock


def sent(transport: MemoryTransport) -> list[int]:
    return [int(p.decode().split()[1]) for p in transport.on(topics.telemetry(DEVICE))]


def ack(spool: Spool, *seqs: int, device: str = DEVICE) -> bytes:
    return TelemetryAck.of(device, spool.epoch, list(seqs))[0].to_json()


def test_in_flight_is_bounded_and_acks_make_room(tmp_path: Path) -> None:
    uplink, spool, transport, _ = setup(tmp_path, 10)
    uplink.pump()
    uplink.pump()
    assert sent(transport) == [1, 2, 3, 4]  # a burst does not flood the broker's queues
    assert uplink.on_ack(ack(spool, 1, 2, 4)) == 3
    uplink.pump()
    assert sent(transport) == [1, 2, 3, 4, 5, 6, 7]
    assert [p.seq for p in spool.pending()] == [3, 5, 6, 7, 8, 9, 10]


def test_unconfirmed_windows_are_sent_again_after_the_timeout(tmp_path: Path) -> None:
    uplink, spool, transport, clock = setup(tmp_path, 3, resend_s=30)
    uplink.pump()
    uplink.on_ack(ack(spool, 2))
    clock.now += 29
    uplink.pump()
    assert sent(transport) == [1, 2, 3]
    clock.now += 2  # the broker dropped 1 and 3 (its queue overflowed), or their acks were lost
    uplink.pump()
    assert sent(transport) == [1, 2, 3, 1, 3]
    assert uplink.resent == 2 and spool.size == 2


def test_the_window_grows_with_acks_and_halves_when_windows_go_unconfirmed(tmp_path: Path) -> None:
    uplink, spool, transport, clock = setup(tmp_path, 40, in_flight=8, resend_s=30)
    uplink.pump()
    assert sent(transport) == [1, 2, 3, 4]  # it starts small
    for seq in (1, 2, 3, 4):
        uplink.on_ack(ack(spool, seq))
    uplink.pump()
    assert sent(transport)[4:] == [5, 6, 7, 8, 9, 10, 11, 12]  # grown by one per ack, up to the bound
    clock.now += 30  # all eight went unconfirmed: the broker's queue is full
    uplink.pump()
    assert sent(transport)[12:] == [5, 6, 7, 8] and uplink.window == 4


def test_a_reconnect_sends_everything_unconfirmed_again(tmp_path: Path) -> None:
    uplink, _, transport, _ = setup(tmp_path, 3)
    uplink.pump()
    uplink.on_disconnected()
    uplink.pump()
    assert sent(transport) == [1, 2, 3]  # nothing while offline
    uplink.on_connected()
    uplink.pump()
    assert sent(transport) == [1, 2, 3, 1, 2, 3]


def test_nothing_is_counted_as_sent_when_the_publish_fails(tmp_path: Path) -> None:
    uplink, _, transport, _ = setup(tmp_path, 3)
    transport.publish = lambda *a, **k: None  # type: ignore[method-assign]  # the connection just dropped
    uplink.pump()
    assert uplink.in_flight == {}


def test_an_ack_for_another_device_is_refused(tmp_path: Path) -> None:
    uplink, spool, _, _ = setup(tmp_path, 2)
    uplink.pump()
    with pytest.raises(ContractError, match="another device"):
        uplink.on_ack(ack(spool, 1, 2, device="fridge-other"))
    with pytest.raises(ContractError):
        uplink.on_ack(b'{"schema_version": 1, "device_id": "fridge-u", "ranges": [[2, 1]]}')
    assert spool.size == 2


def test_windows_carry_the_spool_epoch_and_its_drops(tmp_path: Path) -> None:
    from agent.telemetry import Window

    spool = Spool(tmp_path / "spool.db", max_windows=2)
    for _ in range(4):  # as the agent closes its windows
        spool.append(lambda seq: Window().close(DEVICE, seq, spool.epoch, None, spool.size, spool.evicted).to_json())
    (first, second) = [Telemetry.from_json(p.payload) for p in spool.pending()]
    assert first.epoch == second.epoch == spool.epoch
    # window 1 was evicted when window 3 was stored: the next window closed says so
    assert (first.seq, first.spool.evicted) == (3, 0) and (second.seq, second.spool.evicted) == (4, 1)
