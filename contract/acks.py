"""The cloud's confirmation of stored telemetry: "windows ``ranges`` of spool ``epoch`` are stored".

A device keeps every telemetry window in its spool until an ack covers it (the broker's PUBACK
only says the broker has it, and a broker drops what overflows its queues). ``seq`` is unique per
(device, spool epoch): a spool rebuilt after damage starts a new epoch and counts from 1 again,
so its windows never collide with stored ones. Ranges are inclusive ``[first, last]``, sorted and
disjoint; "stored up to N" is the range ``[k, N]``, and windows stored out of order are ranges of
their own. A window that is stored again (a re-send) is acknowledged again.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from contract.base import Count, Epoch, Identifier, Message

MAX_ACK_RANGES = 1024
"""Ranges one ack may carry; more stored windows go into further acks."""

SeqRange = tuple[Count, Count]  # [first, last], inclusive


class TelemetryAck(Message):
    device_id: Identifier
    epoch: Epoch | None  # None: windows sent by agents that predate epochs (their seq counter only)
    ranges: Annotated[list[SeqRange], Field(min_length=1, max_length=MAX_ACK_RANGES)]

    @model_validator(mode="after")
    def _ranges(self) -> TelemetryAck:
        previous = -1
        for first, last in self.ranges:
            if not previous < first <= last:
                raise ValueError(f"ranges: [{first}, {last}] is empty, overlapping or unsorted")
            previous = last
        return self

    def covers(self, seq: int) -> bool:
        return any(first <= seq <= last for first, last in self.ranges)

    @classmethod
    def of(cls, device_id: str, epoch: str | None, seqs: list[int]) -> list[TelemetryAck]:
        """The acks (as few as the range limit allows) that confirm exactly ``seqs``."""
        ranges: list[SeqRange] = []
        for seq in sorted(set(seqs)):
            if ranges and ranges[-1][1] == seq - 1:
                ranges[-1] = (ranges[-1][0], seq)
            else:
                ranges.append((seq, seq))
        return [cls(device_id=device_id, epoch=epoch, ranges=ranges[i:i + MAX_ACK_RANGES])
                for i in range(0, len(ranges), MAX_ACK_RANGES)]
