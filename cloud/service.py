"""The cloud process: one MQTT connection (persistent session) that ingests what devices publish,
answers their missing-chunk reports, and drives the rollout controller every ``step_s``."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select

from cloud.commands import Deliveries
from cloud.controller import Controller
from cloud.errors import BrokerError
from cloud.ingest import IngestWorker
from cloud.monitor import check_alerts
from cloud.publisher import Publisher
from cloud.store import BundleRow, open_store
from transport.client import MqttTransport
from transport.config import BrokerConfig

log = logging.getLogger("coldchain.cloud")


class Cloud:
    def __init__(self, store_url: str, broker: BrokerConfig, operator_key: Ed25519PrivateKey,
                 client_id: str = "coldchain-cloud", share_group: str | None = None,
                 bytes_per_s: float | None = None, notify: Callable[[str], None] | None = None,
                 chunk_size: int = 128 * 1024) -> None:
        self.sessions = open_store(store_url)
        self.transport = MqttTransport(client_id, broker, manual_ack=True)
        self.publisher = Publisher(self.transport, self._resolve, bytes_per_s, chunk_size, notify)
        deliveries = Deliveries()  # which command each PUBACK the ingestion worker drains is for
        self.worker = IngestWorker(self.transport, self.sessions, share_group if broker.protocol == "5" else None,
                                   on_missing=self.publisher.repair, on_acked=deliveries.acked)
        self.controller = Controller(self.sessions, self.transport, self.publisher, operator_key, notify=notify,
                                     deliveries=deliveries)
        self.stop_event = threading.Event()
        self.alert_every_s, self.alert_window_s = 60.0, 900.0
        self._thread: threading.Thread | None = None
        self.failures: dict[str, int] = {}  # part -> crashes so far (ingestion, controller, alerts)

    def _resolve(self, artifact_sha256: str) -> Path | None:
        with self.sessions() as session:
            row = session.scalars(select(BundleRow).where(BundleRow.artifact_sha256 == artifact_sha256)).first()
            return None if row is None else Path(row.tarball)

    def run(self, step_s: float = 0.5, until: float | None = None) -> None:
        self.transport.start()
        next_step = next_check = time.monotonic()
        try:
            while not self.stop_event.is_set() and (until is None or time.monotonic() < until):
                if not self._guard("ingestion", lambda: self.worker.drain(timeout=0.1)):
                    self.stop_event.wait(0.2)  # a failing store: back off a little, then ingest again
                if time.monotonic() >= next_step and self.worker.connected.is_set():
                    next_step = time.monotonic() + step_s
                    self._guard("controller", self.controller.step)
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + self.alert_every_s
                    self._guard("alerts", self._check_alerts)
            while self.worker.drain(timeout=0.05):  # what already arrived is stored before leaving
                pass
        finally:
            self.transport.stop()

    def _guard(self, part: str, work: Callable[[], object]) -> bool:
        """Run one turn of a part of the cloud; a crash is logged and counted, and the part simply
        runs again at its next turn: no part's failure stops the others. False if it failed."""
        try:
            work()
        except Exception:  # whatever it was, it was this turn's: the loop and the other parts go on
            count = self.failures[part] = self.failures.get(part, 0) + 1
            if count & (count - 1) == 0:  # the traceback at the 1st, 2nd, 4th, 8th ... failure: no log flood
                log.exception("cloud part %s failed (%d times so far); it runs again at its next turn", part, count)
            return False
        return True

    def _check_alerts(self) -> None:
        """Monitoring: drift and error alerts over the last ``alert_window_s`` of telemetry."""
        since = datetime.now(UTC) - timedelta(seconds=self.alert_window_s)
        try:
            with self.sessions.begin() as session:
                for message in check_alerts(session, since):
                    self.controller.notify(f"alert: {message}")
        except Exception:  # monitoring must not stop ingestion
            log.exception("alert check failed")

    def start(self) -> Cloud:
        self._thread = threading.Thread(target=self.run, daemon=True, name="coldchain-cloud")
        self._thread.start()
        if not self.worker.connected.wait(15):
            raise BrokerError("the cloud did not connect to the broker within 15 s: is it running at that URL?")
        return self

    def stop(self) -> None:
        self.stop_event.set()
        if self._thread is not None:
            self._thread.join(timeout=15)
