"""Row 7, poison messages: a running cloud (``cloud.service.Cloud`` in a thread, SQLite store, a
real Mosquitto) is sent hypothesis-generated payloads on its devices' state, telemetry, events and
missing-chunk topics (``poison_payloads``), QoS 1, in batches. After each batch a marker, a real
telemetry window of a healthy device, is published: once it is stored, everything sent before it
has been handled (one ingestion worker, in order).

Must hold at every marker: the marker is stored (valid windows keep flowing); no part of the cloud
failed (``Cloud.failures`` is empty) and its thread lives; the dead letters grew by exactly the
number of payloads the contract refuses, each with a reason; at least half of what was sent is
schema-valid."""

from __future__ import annotations

import tempfile
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.configuration import set_hypothesis_home_dir
from sqlalchemy import func, select

from benchmarks.faults.broker import close, cloud_client, mosquitto
from benchmarks.faults.poison_payloads import message, refused
from benchmarks.faults.report import Row
from benchmarks.faults.world import World
from cloud.service import Cloud
from cloud.store import DeadLetter, TelemetryRow, sqlite_url
from contract import topics
from contract.telemetry import Telemetry
from transport.config import BrokerConfig

MARKER = "healthy-1"
MARKER_TIMEOUT = 300.0


def _count(cloud: Cloud, query: object) -> int:
    with cloud.sessions() as session:
        return int(session.scalar(query) or 0)  # type: ignore[call-overload]


class Sender:
    def __init__(self, cloud: Cloud, client: object, batch: int, row: Row) -> None:
        self.cloud, self.client, self.batch, self.row = cloud, client, batch, row
        self.sent = self.invalid = self.markers = self.pending = 0
        self.kinds: Counter[str] = Counter()

    def send(self, topic: str, payload: bytes) -> None:
        bad = refused(topic, payload)
        self.invalid += bad
        self.sent += 1
        self.kinds[f"{'invalid' if bad else 'valid'} {topics.parse(topic).kind.value}"] += 1
        self.client.publish(topic, payload, qos=1)  # type: ignore[attr-defined]
        self.pending += 1
        if self.pending >= self.batch:
            self.checkpoint()

    def checkpoint(self) -> bool:
        self.pending = 0
        self.markers += 1
        now = datetime.now(UTC)
        marker = Telemetry(device_id=MARKER, seq=self.markers, window_start=now - timedelta(seconds=10),
                           window_end=now, inferences=10, predictions={"apple": 10})
        self.client.publish(topics.telemetry(MARKER), marker.to_json(), qos=1)  # type: ignore[attr-defined]
        where = f"marker {self.markers} (after {self.sent} payloads)"
        stored = select(func.count()).select_from(TelemetryRow).where(TelemetryRow.device_id == MARKER)
        deadline = datetime.now(UTC) + timedelta(seconds=MARKER_TIMEOUT)
        while _count(self.cloud, stored) < self.markers:  # a row in the store: nothing to subscribe to
            if datetime.now(UTC) > deadline or self.cloud.stop_event.wait(0.05):
                self.row.violated(where, f"the marker window was not stored within {MARKER_TIMEOUT:.0f} s")
                return False
        if self.cloud.failures:
            self.row.violated(where, f"cloud parts failed: {self.cloud.failures}")
        thread = self.cloud._thread
        if thread is None or not thread.is_alive():
            self.row.violated(where, "the cloud thread died")
            return False
        letters = _count(self.cloud, select(func.count()).select_from(DeadLetter))
        if letters != self.invalid:
            self.row.violated(where, f"{letters} dead letters, {self.invalid} invalid payloads were sent")
            self.invalid = letters  # count the next batches on their own
        return True


def drive(sender: Sender, payloads: int, rng_seed: int) -> None:
    @seed(rng_seed)
    @settings(max_examples=payloads, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(message())
    def one(item: tuple[str, bytes]) -> None:
        sender.send(*item)

    one()


def run(world: World, payloads: int = 20_000, batch: int = 500, rng_seed: int = 1, workdir: Path | None = None) -> Row:
    row = Row("poison messages to the cloud (hypothesis, over Mosquitto)", "0 cloud crashes (no part failed); "
              "dead letters grow by exactly the invalid payloads, each with a reason; every marker window stored; "
              ">= half valid")
    with row.timed(), tempfile.TemporaryDirectory(dir=workdir) as tmp, mosquitto(Path(tmp), True) as url:
        cloud = Cloud(sqlite_url(Path(tmp) / "cloud.db"), BrokerConfig(url=url, protocol="5"),
                      Ed25519PrivateKey.generate(), client_id="poisoned-cloud")
        cloud.start(wait_s=60)
        client = cloud_client(url, True, None)
        try:
            sender = Sender(cloud, client, batch, row)
            set_hypothesis_home_dir(Path(tmp) / "hypothesis")
            drive(sender, payloads, rng_seed)
            sender.checkpoint()
            with cloud.sessions() as session:
                unexplained = session.scalar(select(func.count()).select_from(DeadLetter)
                                             .where(DeadLetter.reason == ""))
                reasons = Counter(r.split(":")[0][:60] for r in session.scalars(select(DeadLetter.reason)).all())
        finally:
            set_hypothesis_home_dir(None)
            close(client)
            cloud.stop()
        if unexplained:
            row.violated("end", f"{unexplained} dead letters without a reason")
        valid = sender.sent - sender.invalid
        if valid * 2 < sender.sent:
            row.violated("end", f"only {valid} of {sender.sent} payloads were schema-valid")
        row.how_often = f"{sender.sent} payloads ({valid} valid, {sender.invalid} invalid), {sender.markers} markers"
        row.notes.append(", ".join(f"{k} {n}" for k, n in sorted(sender.kinds.items())))
        row.notes.append("dead-letter reasons: " + ", ".join(f"{k} {n}" for k, n in reasons.most_common(8)))
        row.notes.append(f"ingestion counts: {cloud.worker.counts}")
    return row
