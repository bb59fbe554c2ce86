"""The cloud process: one MQTT connection (persistent session) that ingests what devices publish,
answers their missing-chunk reports, drives the rollout controller every ``step_s``, checks alerts
every ``alert_every_s`` and, when asked, serves the HTTP API. Each part runs supervised in a
thread of its own (``cloud.supervise``): one part's crash is logged, counted in ``failures`` and
the part runs again; none stops another. A broker that is away, late or busy never stops the
cloud: the transport retries with backoff and the cloud says what it waits for."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select

from cloud.commands import Deliveries
from cloud.config import CloudConfig
from cloud.controller import Controller
from cloud.ingest import IngestWorker
from cloud.metrics import Runtime
from cloud.monitor import check_alerts
from cloud.publisher import Publisher
from cloud.store import BundleRow, open_store
from cloud.supervise import Supervisor
from cloud.webhooks import Dispatcher
from transport.client import MqttTransport
from transport.config import BrokerConfig

log = logging.getLogger("coldchain.cloud")
SAY_EVERY_MAX_S = 60.0


class BrokerWait:
    """While the broker is away, say so at 1, 2, 4 ... (at most every 60) seconds, and say when it is back."""

    def __init__(self, url: str, say: Callable[[str], None], clock: Callable[[], float] = time.monotonic) -> None:
        self.url, self.say, self.clock = url, say, clock
        self.since: float | None = None
        self.next_say, self.interval, self.said = 0.0, 1.0, False

    def check(self, connected: bool) -> None:
        now = self.clock()
        if connected:
            if self.said and self.since is not None:
                self.say(f"connected to the broker at {self.url} after {now - self.since:.0f} s")
            self.since, self.said = None, False
            return
        if self.since is None:
            self.since, self.interval, self.next_say = now, 1.0, now + 1.0
        if now >= self.next_say:
            self.say(f"waiting for the broker at {self.url}: not connected for {now - self.since:.0f} s; the cloud "
                     "keeps retrying with backoff (is the broker running, or busy with a reconnect storm?)")
            self.said = True
            self.interval = min(self.interval * 2, SAY_EVERY_MAX_S)
            self.next_say = now + self.interval


class Cloud:
    def __init__(self, store_url: str, broker: BrokerConfig, operator_key: Ed25519PrivateKey,
                 client_id: str = "coldchain-cloud", share_group: str | None = None,
                 bytes_per_s: float | None = None, notify: Callable[[str], None] | None = None,
                 chunk_size: int = 128 * 1024, config: CloudConfig | None = None) -> None:
        self.sessions = open_store(store_url)
        self.config = config or CloudConfig()
        self.dispatcher = Dispatcher(self.sessions, self.config.alerts)
        self.broker = broker
        self.transport = MqttTransport(client_id, broker, manual_ack=True)
        self.stop_event = threading.Event()
        self.supervisor = Supervisor(self.stop_event)
        self.failures = self.supervisor.failures  # part -> crashes so far (ingestion, controller, alerts, ...)
        self.publisher = Publisher(self.transport, self._resolve, bytes_per_s, chunk_size, notify,
                                   supervise=self.supervisor.service)
        deliveries = Deliveries()  # which command each PUBACK the ingestion worker drains is for
        self.worker = IngestWorker(self.transport, self.sessions, share_group if broker.protocol == "5" else None,
                                   on_missing=self.publisher.repair, on_acked=deliveries.acked)
        self.controller = Controller(self.sessions, self.transport, self.publisher, operator_key, notify=notify,
                                     deliveries=deliveries)
        self.broker_wait = BrokerWait(broker.url, self._say)
        self.alert_every_s, self.alert_window_s = 60.0, 900.0
        self._thread: threading.Thread | None = None
        self._api: Any = None  # the uvicorn server, while it runs

    def _say(self, message: str) -> None:
        log.warning("%s", message)
        self.controller.notify(message)

    def _resolve(self, artifact_sha256: str) -> Path | None:
        with self.sessions() as session:
            row = session.scalars(select(BundleRow).where(BundleRow.artifact_sha256 == artifact_sha256)).first()
            return None if row is None else Path(row.tarball)

    def run(self, step_s: float = 0.5, until: float | None = None) -> None:
        """Run every part until ``stop()`` (or the monotonic time ``until``)."""
        self.transport.start()
        supervise = self.supervisor
        ingestion = supervise.every("ingestion", lambda: self.worker.drain(timeout=0.1), 0.0, backoff_max_s=2.0)
        supervise.every("controller", self._step, step_s)
        supervise.every("alerts", self._check_alerts, self.alert_every_s)
        if self.config.alerts.webhooks:
            supervise.every("webhooks", self.dispatcher.step, self.config.alerts.every_s)
        try:
            while not self.stop_event.is_set() and (until is None or time.monotonic() < until):
                self.broker_wait.check(self.transport.client.is_connected())
                self.stop_event.wait(0.2 if until is None else max(0.0, min(0.2, until - time.monotonic())))
        finally:
            self.stop_event.set()
            supervise.join(timeout=15)
            if not ingestion.is_alive():
                while self.worker.drain(timeout=0.05):  # what already arrived is stored before leaving
                    pass
            self.transport.stop()

    def _step(self) -> None:
        if self.worker.connected.is_set():  # commands need the broker; the controller waits for it
            self.controller.step()

    def _check_alerts(self) -> None:
        """Monitoring: drift and error alerts over the last ``alert_window_s`` of telemetry (its own
        thread and session: ingestion goes on meanwhile)."""
        since = datetime.now(UTC) - timedelta(seconds=self.alert_window_s)
        with self.sessions.begin() as session:
            messages = check_alerts(session, since)
        for message in messages:
            self.controller.notify(f"alert: {message}")

    def serve_api(self, port: int, token: str | None = None, host: str = "127.0.0.1") -> None:
        """The HTTP API (``cloud.api``) in a supervised thread, on 127.0.0.1 unless ``host`` says
        otherwise: if uvicorn fails (its port taken, a crash), it is counted under ``api`` and started again."""
        import uvicorn

        from cloud.api import create_app

        # a bad token is refused here, before anything runs; /ready reports the broker connection
        app = create_app(self.sessions, token, broker_connected=self.transport.client.is_connected,
                         runtime=self.runtime(), dashboard=self.config.dashboard)

        def run() -> None:
            self._api = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
            self._api.run()

        self.supervisor.service("api", run)

    def runtime(self) -> Runtime:
        """The live figures ``/metrics`` reads (``cloud.metrics``)."""
        publisher = self.publisher
        return Runtime(ingest_counts=lambda: dict(self.worker.counts),
                       ingest_queue=self.transport.inbox.qsize, ingest_lag_s=lambda: self.worker.lag_s,
                       egress_bytes=lambda: (publisher.egress_bytes, publisher.repair_bytes),
                       deliveries=lambda: dict(self.dispatcher.counts), failures=lambda: dict(self.failures))

    def start(self, wait_s: float | None = None) -> Cloud:
        """Run the cloud in a thread; return once it is connected to the broker (or after ``wait_s``,
        still connecting: it never gives up, and says what it waits for)."""
        self._thread = threading.Thread(target=self.run, daemon=True, name="coldchain-cloud")
        self._thread.start()
        deadline = None if wait_s is None else time.monotonic() + wait_s
        while not self.worker.connected.wait(0.2):
            if self.stop_event.is_set() or not self._thread.is_alive():
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
        return self

    def stop(self) -> None:
        self.stop_event.set()
        if self._api is not None:
            self._api.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=15)
        self.supervisor.join(timeout=5)
