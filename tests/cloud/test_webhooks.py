"""Alert delivery to webhooks against a real HTTP receiver on 127.0.0.1: a wave that fails its
gate raises one alert, the receiver answers 500 first and gets it again after the backoff (on an
injected clock), a receiver that keeps failing ends in a dead letter, and kinds filter."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cloud import rollouts
from cloud.config import Alerts, Retry, Webhook
from cloud.fleet import add_bundle
from cloud.plan import RolloutPlan, Timeouts
from cloud.queries import Queries
from cloud.store import AlertDelivery, DeadLetter, Device, RolloutDevice
from cloud.webhooks import Dispatcher
from tests.cloud.test_controller import _controller
from tests.waiting import until


class Receiver:
    """Answers each POST with the next status of ``statuses`` (the last one for ever after)."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.got: list[tuple[dict[str, Any], dict[str, str]]] = []


@contextmanager
def receiving(statuses: list[int]) -> Iterator[tuple[Receiver, str]]:
    receiver = Receiver(statuses)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            receiver.got.append((body, dict(self.headers)))
            status = receiver.statuses.pop(0) if len(receiver.statuses) > 1 else receiver.statuses[0]
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver, f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        thread.join(timeout=10)


def failed_gate(sessions: sessionmaker[Session], world: dict[str, object]) -> None:
    """A one-wave rollout whose two jobs fail: job_success fails, the controller halts it."""
    bundle = world["bundles"][5]  # type: ignore[index]
    with sessions.begin() as session:
        sha = add_bundle(session, bundle.tarball, world["trust"]).sha256  # type: ignore[arg-type]
        session.add_all([Device(id="d1", online=True, groups=["eu"]), Device(id="d2", online=True, groups=["eu"])])
    rollout = rollouts.start(sessions, sha, RolloutPlan(waves="100%", timeouts=Timeouts(ack_s=1, observe_s=0)), "r-w")
    wall = [datetime.now(UTC)]
    controller, _ = _controller(sessions, bundle.tarball, wall)
    controller.step()
    wall[0] += timedelta(seconds=2)
    controller.step()
    with sessions.begin() as session:
        for device in ("d1", "d2"):
            session.get(RolloutDevice, (rollout, device)).state = "FAILED"  # type: ignore[union-attr]
    for _ in range(4):
        controller.step()
    until(controller.publisher.idle, "the wave's chunk stream to end")  # no thread outlives the test
    assert Queries(sessions).rollout(rollout).status == rollouts.FAILED


def test_one_alert_per_gate_failure_retried_after_a_500(sessions: sessionmaker[Session],
                                                       world: dict[str, object]) -> None:
    failed_gate(sessions, world)
    alerts = Queries(sessions).alerts().items
    assert [a.kind for a in alerts] == ["gate_failed"]  # one gate failure, one alert
    wall = [datetime.now(UTC)]
    with receiving([500, 200]) as (ops, ops_url), receiving([503]) as (pager, pager_url), \
            receiving([200]) as (drift_only, drift_url):
        config = Alerts(webhooks=[Webhook(name="ops", url=ops_url, headers={"Authorization": "Bearer x"}),
                                  Webhook(name="pager", url=pager_url),
                                  Webhook(name="drift", url=drift_url, kinds=["prediction_drift"])],
                        retry=Retry(max_attempts=3, backoff_s=2, backoff_max_s=3))
        dispatcher = Dispatcher(sessions, config, clock=lambda: wall[0])
        assert dispatcher.step() == 2  # ops and pager; drift does not want gate_failed
        assert len(ops.got) == 1 and dispatcher.step() == 0  # the 500's retry waits for its backoff
        wall[0] += timedelta(seconds=2)
        assert dispatcher.step() == 2
        wall[0] += timedelta(seconds=3)  # the backoff doubled, capped at 3 s
        assert dispatcher.step() == 1  # pager's third and last attempt
        wall[0] += timedelta(days=1)
        assert dispatcher.step() == 0
    assert [body["id"] for body, _ in ops.got] == [alerts[0].id] * 2  # the same alert, retried once
    body, headers = ops.got[-1]
    assert body["kind"] == "gate_failed" and body["subject"] == "r-w" and body["schema"] == "coldchain.alert/v1"
    assert "job_success" in body["message"]
    assert headers["Authorization"] == "Bearer x" and headers["Idempotency-Key"] == f"alert-{alerts[0].id}-ops"
    assert len(pager.got) == 3 and drift_only.got == []
    assert dispatcher.counts == {"delivered": 1, "retried": 3, "dead": 1}
    with sessions() as session:
        outcomes = {d.webhook: (d.outcome, d.attempts) for d in session.scalars(select(AlertDelivery)).all()}
        (letter,) = session.scalars(select(DeadLetter)).all()
    assert outcomes == {"ops": ("delivered", 2), "pager": ("dead", 3)}
    assert letter.topic == "webhook/pager" and letter.kind == "webhook" and "HTTP 503" in letter.reason
    assert json.loads(letter.payload)["id"] == alerts[0].id

