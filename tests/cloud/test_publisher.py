"""The artifact publisher with an in-memory transport: every chunk once on the group topic,
repairs only of what a device lacks, never twice within the hold-off, never ahead of the stream."""

from __future__ import annotations

import os
import queue
import threading
from pathlib import Path

import pytest

from cloud.publisher import BURST_S, REPAIR_HOLDOFF_S, Artifact, Publisher, TokenBucket
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


class FakeClock:
    """An injected monotonic clock: ``sleep`` advances it (thread-safe), nothing really waits."""

    def __init__(self) -> None:
        self.t = 0.0
        self.lock = threading.Lock()

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.t += seconds


def test_rate_limit_holds_after_an_idle_period(tmp_path: Path) -> None:
    """The old limiter averaged since its construction: after 100 s idle, 64 KiB at 16 KiB/s went
    out at once. A token bucket lets at most its burst (a quarter second's worth) through."""
    tarball = tmp_path / "b.tar.gz"
    tarball.write_bytes(os.urandom(64 * 1024))
    clock = FakeClock()
    publisher = Publisher(Recorder(), lambda sha: tarball, bytes_per_s=16 * 1024, chunk_size=1024,  # type: ignore[arg-type]
                          clock=clock.now, sleep=clock.sleep)
    artifact = publisher.artifact(Artifact.load(tarball, 1024).sha256)
    clock.sleep(100)  # idle
    started = clock.now()
    publisher.publish_group(artifact, "w1")
    sent = sum(len(f) for f in artifact.frames)
    assert clock.now() - started == pytest.approx((sent - 16 * 1024 * BURST_S) / (16 * 1024))


def test_token_bucket_counts_every_caller_once(tmp_path: Path) -> None:
    """Eight threads take 1,000 bytes 500 times each from a 100 kB/s bucket: the clock must have
    moved by exactly what those bytes cost beyond the burst (no reservation lost in a race)."""
    clock = FakeClock()
    bucket = TokenBucket(100_000, burst=10_000, clock=clock.now, sleep=clock.sleep)
    waited: list[float] = []

    def work() -> None:
        waited.extend(bucket.take(1000) for _ in range(500))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(waited) == 4000
    assert clock.now() >= (4_000_000 - 10_000) / 100_000 - 1e-6  # 39.9 s of bytes, never less
    with pytest.raises(ValueError, match="positive"):
        TokenBucket(0)


def test_the_artifact_cache_and_the_repair_log_are_bounded(tmp_path: Path) -> None:
    tarballs = {}
    for i in range(5):
        path = tmp_path / f"{i}.tar.gz"
        path.write_bytes(os.urandom(8 * 1024))
        tarballs[Artifact.load(path).sha256] = path
    clock = FakeClock()
    publisher = Publisher(Recorder(), tarballs.get, chunk_size=1024, clock=clock.now, sleep=clock.sleep,  # type: ignore[arg-type]
                          cache_bytes=20 * 1024, cache_count=3, repair_log=50)
    shas = list(tarballs)
    first = publisher.artifact(shas[0])
    publisher.announce(first, "w1")  # a stream that has not finished: its artifact is never evicted
    for sha in shas[1:]:
        publisher.artifact(sha)
        assert publisher.cached_bytes() <= 20 * 1024 + first.memory
    cached = {key[0] for key in publisher._artifacts}
    assert shas[0] in cached and shas[-1] in cached and len(cached) <= 3
    assert publisher.artifact(shas[1]).frames == Artifact.load(tarballs[shas[1]], 1024).frames  # read again
    publisher.publish_group(first, "w1")  # finished: no longer pinned, repairs go out
    for device in range(40):
        report = MissingChunks.from_indices(f"d{device}", shas[0], 8, list(range(8)))
        assert publisher.repair(report) == 8
        assert publisher.repair_log_size() <= 50
        clock.sleep(1)
    clock.sleep(REPAIR_HOLDOFF_S)
    publisher.repair(MissingChunks.from_indices("late", shas[0], 8, [0]))
    assert publisher.repair_log_size() == 1  # every expired hold-off was forgotten


def test_an_artifact_is_chunked_as_asked_and_repaired_in_that_chunking(tmp_path: Path) -> None:
    tarball = tmp_path / "b.tar.gz"
    tarball.write_bytes(os.urandom(10 * 1024))
    transport = Recorder()
    publisher = Publisher(transport, lambda sha: tarball, chunk_size=1024)  # type: ignore[arg-type]
    sha = Artifact.load(tarball).sha256
    assert len(publisher.artifact(sha, 4096).frames) == 3 and len(publisher.artifact(sha).frames) == 3
    assert publisher.repair(MissingChunks.from_indices("d1", sha, 3, [2])) == 1
    assert len(decode_chunk(transport.sent[-1][1]).data) == 10 * 1024 - 2 * 4096
    restarted = Publisher(Recorder(), lambda sha: tarball, chunk_size=1024)  # type: ignore[arg-type]
    assert restarted.repair(MissingChunks.from_indices("d1", sha, 3, [2])) == 0  # another chunking: ignored
    restarted.chunking(sha, 4096)  # what the controller says of a running rollout at each step
    assert restarted.repair(MissingChunks.from_indices("d1", sha, 3, [2])) == 1
