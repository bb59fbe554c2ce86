"""The artifact publisher with an in-memory transport: every chunk once on the group topic,
repairs only of what a device lacks, never twice within the hold-off, never ahead of the stream."""

from __future__ import annotations

import os
import queue
import time
from pathlib import Path

from cloud.publisher import Artifact, Publisher
from contract import topics
from contract.transfer import MissingChunks, decode_chunk


class Recorder:
    def __init__(self) -> None:
        self.inbox: queue.Queue[object] = queue.Queue()
        self.sent: list[tuple[str, bytes]] = []

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def subscribe(self, topics: list[str]) -> None: ...

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> int:
        self.sent.append((topic, payload))
        return len(self.sent)


def test_group_stream_and_repairs(tmp_path: Path) -> None:
    tarball = tmp_path / "b.tar.gz"
    tarball.write_bytes(os.urandom(10 * 1024 + 5))
    transport = Recorder()
    notes: list[str] = []
    publisher = Publisher(transport, lambda sha: tarball, chunk_size=1024, notify=notes.append)  # type: ignore[arg-type]
    artifact = publisher.artifact(Artifact.load(tarball, 1024).sha256)
    assert len(artifact.frames) == 11 and artifact.ref("w1").chunk_count == 11
    assert publisher.streaming(artifact.sha256) is None
    publisher.announce(artifact, "w1")
    assert publisher.streaming(artifact.sha256) == 0
    report = MissingChunks.from_indices("d1", artifact.sha256, 11, [0, 3, 7])
    assert publisher.repair(report) == 0  # the group stream has not passed those chunks yet
    publisher.publish_group(artifact, "w1")
    group = [p for t, p in transport.sent if t == topics.group_chunks("w1", artifact.sha256)]
    assert [decode_chunk(p).header.index for p in group] == list(range(11))
    assert b"".join(decode_chunk(p).data for p in group) == tarball.read_bytes()
    assert notes and "11/11" in notes[-1]
    assert publisher.repair(report) == 3
    assert publisher.repair(report) == 0  # hold-off: not the same chunks again at once
    repaired = [decode_chunk(p).header.index for t, p in transport.sent if t == topics.device_chunks("d1",
                                                                                                    artifact.sha256)]
    assert repaired == [0, 3, 7]
    assert publisher.egress_bytes == sum(len(p) for _, p in transport.sent)
    assert publisher.repair_bytes == sum(len(artifact.frames[i]) for i in (0, 3, 7))
    wrong = MissingChunks.from_indices("d1", artifact.sha256, 12, [0])
    assert publisher.repair(wrong) == 0  # a report about another chunking is ignored


def test_rate_limit(tmp_path: Path) -> None:
    tarball = tmp_path / "b.tar.gz"
    tarball.write_bytes(os.urandom(8 * 1024))
    publisher = Publisher(Recorder(), lambda sha: tarball, bytes_per_s=16 * 1024, chunk_size=1024)  # type: ignore[arg-type]
    artifact = publisher.artifact(Artifact.load(tarball, 1024).sha256)
    started = time.monotonic()
    publisher.publish_group(artifact, "w1")
    assert time.monotonic() - started >= 0.45  # ~8.6 KB at 16 KB/s
