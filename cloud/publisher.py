"""The artifact publisher: a bundle tarball travels as chunk frames, each published once on a
wave's group topic (the broker fans it out to every device of the wave); chunks a device reports
missing are answered on that device's own topic. Egress is counted and can be rate-limited, for
the whole publisher and per rollout (token buckets); what it keeps in memory is bounded.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cloud.errors import NotFoundError
from contract import topics
from contract.commands import ArtifactRef
from contract.transfer import DEFAULT_CHUNK_SIZE, MissingChunks, encode_chunk
from transport.client import Transport

log = logging.getLogger("coldchain.publisher")
REPAIR_HOLDOFF_S = 10.0  # a chunk repaired for a device is not sent to it again this soon
BURST_S = 0.25  # a rate limit lets at most this many seconds' worth of bytes through at once
CACHE_BYTES = 512 * 1024 * 1024  # chunked artifacts kept in memory (frames), least recently used go first
CACHE_COUNT = 8
REPAIR_LOG = 100_000  # (device, artifact, chunk) repairs remembered for the hold-off
LIMITS = 64  # rollouts whose rate limit is kept


@dataclass(frozen=True)
class Artifact:
    sha256: str
    frames: list[bytes]
    size: int
    chunk_size: int

    @classmethod
    def load(cls, tarball: Path, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Artifact:
        try:
            data = tarball.read_bytes()
        except OSError as exc:
            raise NotFoundError(f"bundle tarball {tarball} cannot be read: {exc.strerror}") from exc
        sha = hashlib.sha256(data).hexdigest()
        count = -(-len(data) // chunk_size)
        frames = [encode_chunk(sha, i, count, data[i * chunk_size:(i + 1) * chunk_size]) for i in range(count)]
        return cls(sha, frames, len(data), chunk_size)

    @property
    def memory(self) -> int:
        """What its frames hold in memory."""
        return sum(len(f) for f in self.frames)

    def ref(self, group: str | None) -> ArtifactRef:
        return ArtifactRef(sha256=self.sha256, size=self.size, chunk_size=self.chunk_size,
                           chunk_count=len(self.frames), group=group)


class TokenBucket:
    """At most ``bytes_per_s`` on average, in bursts of at most ``burst`` bytes (default: a quarter
    second's worth) however long it was idle. Thread-safe: each caller reserves its bytes under the
    lock (the bucket may go into debt for a frame bigger than the burst) and sleeps, outside the
    lock, until they are covered; callers are served in the order they reserved."""

    def __init__(self, bytes_per_s: float, burst: float | None = None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        if bytes_per_s <= 0:
            raise ValueError(f"a rate limit must be positive, got {bytes_per_s} bytes/s")
        self.rate, self.burst = bytes_per_s, max(1.0, burst if burst is not None else bytes_per_s * BURST_S)
        self.clock, self.sleep = clock, sleep
        self._lock = threading.Lock()
        self._tokens, self._at = self.burst, clock()

    def take(self, size: int) -> float:
        """Wait until ``size`` bytes may go; returns the seconds waited."""
        with self._lock:
            now = self.clock()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate) - size
            self._at = now
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            self.sleep(wait)
        return wait


class Publisher:
    """Publishes artifacts through ``transport``; ``resolve(sha)`` finds an artifact's tarball.

    Bounded: chunked artifacts are cached up to ``cache_bytes`` / ``cache_count`` (least recently
    used first, never one a group stream is still sending: an evicted one is read again from its
    tarball when needed); the repair log forgets hold-offs that expired and keeps at most
    ``repair_log`` entries; per-rollout rate limits are kept for the ``LIMITS`` latest rollouts.
    ``bytes_per_s`` limits the whole publisher; a rollout's plan may limit its streams further."""

    def __init__(self, transport: Transport, resolve: Callable[[str], Path | None],
                 bytes_per_s: float | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE,
                 notify: Callable[[str], None] | None = None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, cache_bytes: int = CACHE_BYTES,
                 cache_count: int = CACHE_COUNT, repair_log: int = REPAIR_LOG,
                 supervise: Callable[..., threading.Thread] | None = None) -> None:
        self.transport, self.resolve, self.chunk_size = transport, resolve, chunk_size
        self.supervise = supervise  # runs a stream, counts its crashes and runs it again (cloud.supervise)
        self.notify = notify or log.info
        self.clock, self.sleep = clock, sleep
        self.limit = TokenBucket(bytes_per_s, clock=clock, sleep=sleep) if bytes_per_s else None
        self.limits: OrderedDict[str, TokenBucket] = OrderedDict()  # rollout id -> its plan's limit
        self.cache_bytes, self.cache_count, self.repair_log = cache_bytes, cache_count, repair_log
        self.egress_bytes = self.repair_bytes = 0
        self.progress: dict[tuple[str, str], int] = {}  # (sha, group) -> chunks published so far
        self._counts: dict[tuple[str, str], int] = {}  # (sha, group) -> chunks that stream sends
        self._artifacts: OrderedDict[tuple[str, int], Artifact] = OrderedDict()  # (sha, chunk size), LRU last
        self._chunkings: OrderedDict[str, int] = OrderedDict()  # sha -> the chunk size it was last asked in
        self._repaired: OrderedDict[tuple[str, str, int], float] = OrderedDict()  # oldest first
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def rollout_limit(self, rollout: str, bytes_per_s: float | None) -> TokenBucket | None:
        """The rate limit a rollout's plan sets (one bucket for all its waves' streams)."""
        if bytes_per_s is None:
            return None
        with self._lock:
            bucket = self.limits.get(rollout)
            if bucket is None or bucket.rate != bytes_per_s:
                bucket = self.limits[rollout] = TokenBucket(bytes_per_s, clock=self.clock, sleep=self.sleep)
            self.limits.move_to_end(rollout)
            while len(self.limits) > LIMITS:
                self.limits.popitem(last=False)
            return bucket

    def artifact(self, sha256: str, chunk_size: int | None = None) -> Artifact:
        """The artifact chunked in ``chunk_size`` (default: the chunk size it was last asked in, or
        the publisher's), from the cache or read from its tarball."""
        size = self.chunking(sha256, chunk_size)
        with self._lock:
            found = self._artifacts.get((sha256, size))
            if found is not None:
                self._artifacts.move_to_end((sha256, size))
                return found
        path = self.resolve(sha256)
        if path is None:
            raise NotFoundError(f"no bundle tarball with artifact sha256 {sha256[:12]} is known to the cloud")
        found = Artifact.load(path, size)
        with self._lock:
            self._artifacts[(sha256, size)] = found
            self._evict()
        return found

    def chunking(self, sha256: str, chunk_size: int | None = None) -> int:
        """The chunk size repairs of ``sha256`` use: ``chunk_size`` from now on if given (a rollout
        streaming it says so), else the last one given, else the publisher's default."""
        with self._lock:
            size = chunk_size or self._chunkings.get(sha256, self.chunk_size)
            self._chunkings[sha256] = size
            self._chunkings.move_to_end(sha256)
            while len(self._chunkings) > LIMITS:
                self._chunkings.popitem(last=False)
            return size

    def cached_bytes(self) -> int:
        with self._lock:
            return sum(a.memory for a in self._artifacts.values())

    def _evict(self) -> None:
        """Least recently used first, over the byte or count budget; never an artifact a stream sends."""
        busy = {key[0] for key, n in self.progress.items() if n < self._counts.get(key, 0)}
        total = sum(a.memory for a in self._artifacts.values())
        for key in list(self._artifacts):
            if total <= self.cache_bytes and len(self._artifacts) <= self.cache_count:
                return
            if key[0] not in busy:
                total -= self._artifacts.pop(key).memory

    def _send(self, topic: str, frame: bytes, stop: threading.Event | None,
              limits: tuple[TokenBucket, ...] = ()) -> bool:
        while self.transport.publish(topic, frame) is None:  # not connected: wait for the connection
            if stop is not None and stop.wait(0.2):
                return False
            if stop is None:
                self.sleep(0.2)
        for bucket in limits:
            bucket.take(len(frame))
        with self._lock:
            self.egress_bytes += len(frame)
        return True

    def publish_group(self, artifact: Artifact, group: str, stop: threading.Event | None = None,
                      on_chunk: Callable[[int, int], None] | None = None, limit: TokenBucket | None = None,
                      first: int = 0) -> None:
        """Every chunk (from ``first`` on) once on the group topic, in order, within ``limit`` (a
        rollout's) and the publisher's."""
        topic = topics.group_chunks(group, artifact.sha256)
        key = (artifact.sha256, group)
        started, count = self.clock(), len(artifact.frames)
        limits = tuple(b for b in (limit, self.limit) if b is not None)
        with self._lock:
            self._counts[key] = count
            self.progress.setdefault(key, 0)
        try:
            for index, frame in enumerate(artifact.frames[first:], start=first):
                if not self._send(topic, frame, stop, limits):
                    return
                self.progress[key] = index + 1
                if on_chunk is not None:
                    on_chunk(index + 1, count)
                if (index + 1) % max(1, count // 4) == 0 or index + 1 == count:
                    self.notify(f"published {index + 1}/{count} chunks of {artifact.sha256[:12]} to group {group} "
                                f"({artifact.size * (index + 1) / count / 2**20:.2f} MiB, "
                                f"{self.clock() - started:.1f} s)")
        finally:  # done or stopped: the stream holds back no repairs and pins nothing any more
            with self._lock:
                self.progress.pop(key, None)
                self._counts.pop(key, None)

    def announce(self, artifact: Artifact, group: str) -> None:
        """A group stream of ``artifact`` is about to start: hold repairs of it until the stream
        has passed the chunks asked for (devices ask for everything before the first chunk)."""
        with self._lock:
            self._counts.setdefault((artifact.sha256, group), len(artifact.frames))
            self.progress.setdefault((artifact.sha256, group), 0)

    def start_group(self, artifact: Artifact, group: str, stop: threading.Event | None = None,
                    limit: TokenBucket | None = None) -> threading.Thread:
        """``publish_group`` in a background thread (the controller keeps watching meanwhile); a
        supervised stream that crashes resumes at the first chunk it had not published."""
        key = (artifact.sha256, group)
        with self._lock:
            self.progress[key] = 0
            self._counts[key] = len(artifact.frames)

        sent = [0]  # chunks published so far: where a crashed stream resumes

        def progress(done: int, count: int) -> None:
            sent[0] = done

        def stream() -> None:
            self.publish_group(artifact, group, stop, progress, limit, first=sent[0])

        if self.supervise is not None:
            thread = self.supervise("publisher", stream, lambda: sent[0] >= len(artifact.frames)
                                    or (stop is not None and stop.is_set()), name=f"publish-{group}")
        else:
            thread = threading.Thread(target=stream, daemon=True, name=f"publish-{group}")
            thread.start()
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        return thread

    def streaming(self, sha256: str) -> int | None:
        """The lowest chunk index not yet published by a group stream still in progress, if any."""
        with self._lock:
            cursors = [n for key, n in self.progress.items() if key[0] == sha256 and n < self._counts.get(key, 0)]
        return min(cursors) if cursors else None

    def repair(self, report: MissingChunks) -> int:
        """Send a device the chunks it lacks (not those a group stream has yet to reach); return how many."""
        try:
            artifact = self.artifact(report.sha256)
        except NotFoundError as exc:
            log.warning("cannot repair for %s: %s", report.device_id, exc)
            return 0
        if report.chunk_count != len(artifact.frames):
            log.warning("%s reports %d chunks for %s, the cloud has %d", report.device_id, report.chunk_count,
                        report.sha256[:12], len(artifact.frames))
            return 0
        cursor = self.streaming(report.sha256)
        topic = topics.device_chunks(report.device_id, report.sha256)
        sent, clock = 0, self.clock()
        for index in report.indices():
            if cursor is not None and index >= cursor:
                break
            key = (report.device_id, report.sha256, index)
            with self._lock:
                if clock - self._repaired.get(key, clock - REPAIR_HOLDOFF_S) < REPAIR_HOLDOFF_S:
                    continue
                self._remember_repair(key, clock)
            if self._send(topic, artifact.frames[index], None, (self.limit,) if self.limit else ()):
                with self._lock:
                    self.repair_bytes += len(artifact.frames[index])
                sent += 1
        return sent

    def _remember_repair(self, key: tuple[str, str, int], clock: float) -> None:
        """Record a repair's time; forget the hold-offs that expired (oldest first), and the oldest
        beyond ``repair_log`` entries."""
        self._repaired.pop(key, None)
        self._repaired[key] = clock
        while self._repaired:
            oldest_key, at = next(iter(self._repaired.items()))
            if clock - at < REPAIR_HOLDOFF_S and len(self._repaired) <= self.repair_log:
                break
            del self._repaired[oldest_key]

    def repair_log_size(self) -> int:
        return len(self._repaired)

    def idle(self) -> bool:
        return all(not t.is_alive() for t in self._threads)
