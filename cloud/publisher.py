"""The artifact publisher: a bundle tarball travels as chunk frames, each published once on a
wave's group topic (the broker fans it out to every device of the wave); chunks a device reports
missing are answered on that device's own topic. Egress is counted and can be rate-limited.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
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

    def ref(self, group: str | None) -> ArtifactRef:
        return ArtifactRef(sha256=self.sha256, size=self.size, chunk_size=self.chunk_size,
                           chunk_count=len(self.frames), group=group)


class RateLimit:
    """At most ``bytes_per_s`` on average since the first send (None: unlimited)."""

    def __init__(self, bytes_per_s: float | None) -> None:
        self.bytes_per_s, self.sent, self.started = bytes_per_s, 0, time.monotonic()

    def wait(self, size: int) -> None:
        self.sent += size
        if self.bytes_per_s:
            ahead = self.sent / self.bytes_per_s - (time.monotonic() - self.started)
            if ahead > 0:
                time.sleep(ahead)


class Publisher:
    """Publishes artifacts through ``transport``; ``resolve(sha)`` finds an artifact's tarball."""

    def __init__(self, transport: Transport, resolve: Callable[[str], Path | None],
                 bytes_per_s: float | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE,
                 notify: Callable[[str], None] | None = None,
                 supervise: Callable[..., threading.Thread] | None = None) -> None:
        self.transport, self.resolve, self.chunk_size = transport, resolve, chunk_size
        self.supervise = supervise  # runs a stream, counts its crashes and runs it again (cloud.supervise)
        self.notify = notify or log.info
        self.limit = RateLimit(bytes_per_s)
        self.egress_bytes = self.repair_bytes = 0
        self.progress: dict[tuple[str, str], int] = {}  # (sha, group) -> chunks published so far
        self._artifacts: dict[str, Artifact] = {}
        self._repaired: dict[tuple[str, str, int], float] = {}
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def artifact(self, sha256: str) -> Artifact:
        with self._lock:
            found = self._artifacts.get(sha256)
        if found is None:
            path = self.resolve(sha256)
            if path is None:
                raise NotFoundError(f"no bundle tarball with artifact sha256 {sha256[:12]} is known to the cloud")
            found = Artifact.load(path, self.chunk_size)
            with self._lock:
                self._artifacts[sha256] = found
        return found

    def _send(self, topic: str, frame: bytes, stop: threading.Event | None) -> bool:
        while self.transport.publish(topic, frame) is None:  # not connected: wait for the connection
            if stop is not None and stop.wait(0.2):
                return False
            if stop is None:
                time.sleep(0.2)
        self.limit.wait(len(frame))
        with self._lock:
            self.egress_bytes += len(frame)
        return True

    def publish_group(self, artifact: Artifact, group: str, stop: threading.Event | None = None,
                      on_chunk: Callable[[int, int], None] | None = None, first: int = 0) -> None:
        """Every chunk (from ``first`` on) once on the group topic, in order."""
        topic = topics.group_chunks(group, artifact.sha256)
        key = (artifact.sha256, group)
        started, count = time.monotonic(), len(artifact.frames)
        for index, frame in enumerate(artifact.frames[first:], start=first):
            if not self._send(topic, frame, stop):
                return
            self.progress[key] = index + 1
            if on_chunk is not None:
                on_chunk(index + 1, count)
            if (index + 1) % max(1, count // 4) == 0 or index + 1 == count:
                self.notify(f"published {index + 1}/{count} chunks of {artifact.sha256[:12]} to group {group} "
                            f"({artifact.size * (index + 1) / count / 2**20:.2f} MiB, "
                            f"{time.monotonic() - started:.1f} s)")

    def announce(self, artifact: Artifact, group: str) -> None:
        """A group stream of ``artifact`` is about to start: hold repairs of it until the stream
        has passed the chunks asked for (devices ask for everything before the first chunk)."""
        self.progress.setdefault((artifact.sha256, group), 0)

    def start_group(self, artifact: Artifact, group: str, stop: threading.Event | None = None) -> threading.Thread:
        """``publish_group`` in a background thread (the controller keeps watching meanwhile); a
        supervised stream that crashes resumes at the first chunk it had not published."""
        key = (artifact.sha256, group)
        self.progress[key] = 0

        def stream() -> None:
            self.publish_group(artifact, group, stop, first=self.progress.get(key, 0))

        if self.supervise is not None:
            thread = self.supervise("publisher", stream, lambda: self.progress.get(key, 0) >= len(artifact.frames)
                                    or (stop is not None and stop.is_set()), name=f"publish-{group}")
        else:
            thread = threading.Thread(target=stream, daemon=True, name=f"publish-{group}")
            thread.start()
        self._threads.append(thread)
        return thread

    def streaming(self, sha256: str) -> int | None:
        """The lowest chunk index not yet published by a group stream still in progress, if any."""
        artifact = self._artifacts.get(sha256)
        if artifact is None:
            return None
        cursors = [n for (sha, _), n in self.progress.items() if sha == sha256 and n < len(artifact.frames)]
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
        sent, clock = 0, time.monotonic()
        for index in report.indices():
            if cursor is not None and index >= cursor:
                break
            key = (report.device_id, report.sha256, index)
            if clock - self._repaired.get(key, -REPAIR_HOLDOFF_S) < REPAIR_HOLDOFF_S:
                continue
            self._repaired[key] = clock
            if self._send(topic, artifact.frames[index], None):
                with self._lock:
                    self.repair_bytes += len(artifact.frames[index])
                sent += 1
        return sent

    def idle(self) -> bool:
        return all(not t.is_alive() for t in self._threads)
