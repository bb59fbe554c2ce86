"""The telemetry ack: inclusive, sorted, disjoint seq ranges of one spool epoch, bounded."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from contract.acks import MAX_ACK_RANGES, TelemetryAck
from contract.base import MAX_INT
from contract.errors import PayloadError
from contract.telemetry import Telemetry


def test_seqs_become_ranges_and_cover_exactly_them() -> None:
    (ack,) = TelemetryAck.of("d1", "e1", [5, 1, 2, 3, 3, 9, 10])
    assert ack.ranges == [(1, 3), (5, 5), (9, 10)]
    assert [s for s in range(12) if ack.covers(s)] == [1, 2, 3, 5, 9, 10]


def test_many_ranges_are_split_over_bounded_acks() -> None:
    seqs = list(range(0, 2 * (MAX_ACK_RANGES + 10), 2))  # every other seq: one range each
    acks = TelemetryAck.of("d1", "e1", seqs)
    assert [len(a.ranges) for a in acks] == [MAX_ACK_RANGES, 10]
    assert [s for a in acks for s in range(seqs[-1] + 1) if a.covers(s)] == seqs
    assert all(len(a.to_json()) < 64 * 1024 for a in acks)


@pytest.mark.parametrize("ranges", [[[3, 2]], [[1, 4], [4, 6]], [[5, 6], [1, 2]], [], [[1, MAX_INT + 1]],
                                    [[-1, 2]]])
def test_bad_ranges_are_refused(ranges: list[list[int]]) -> None:
    payload = json.dumps({"schema_version": 1, "device_id": "d1", "epoch": "e1", "ranges": ranges})
    with pytest.raises(PayloadError, match="ranges"):
        TelemetryAck.from_json(payload)


def test_too_many_ranges_are_refused() -> None:
    ranges = [[2 * i, 2 * i] for i in range(MAX_ACK_RANGES + 1)]
    payload = json.dumps({"schema_version": 1, "device_id": "d1", "epoch": "e1", "ranges": ranges})
    with pytest.raises(PayloadError, match="ranges"):
        TelemetryAck.from_json(payload)


@pytest.mark.parametrize("epoch", ["", "a/b", "x" * 65, "+"])
def test_bad_epochs_are_refused(epoch: str) -> None:
    payload = json.dumps({"schema_version": 1, "device_id": "d1", "epoch": epoch, "ranges": [[1, 1]]})
    with pytest.raises(PayloadError, match="epoch"):
        TelemetryAck.from_json(payload)


def test_telemetry_from_agents_before_epochs_still_decodes() -> None:
    t0 = datetime(2026, 11, 26, tzinfo=UTC)
    old = Telemetry(device_id="d1", seq=4, window_start=t0, window_end=t0).model_dump(mode="json")
    del old["epoch"]
    assert Telemetry.from_json(json.dumps(old)).epoch is None
