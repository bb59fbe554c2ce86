"""Alert delivery to webhooks: each new alert becomes one delivery per configured receiver (its
``kinds`` permitting), POSTed as generic JSON; a receiver that fails (no answer, or not 2xx) is
tried again after a backoff that doubles up to a ceiling, and after ``max_attempts`` the delivery
becomes a dead letter (topic ``webhook/<name>``, reason class ``webhook``). Deliveries live in the
store, so a restarted cloud goes on; the network is never called inside a transaction.

Each POST carries ``Idempotency-Key: alert-<id>-<webhook>``: a receiver that answered 2xx too late
(after its timeout) may see the alert again and can drop the copy."""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cloud.config import Alerts, Webhook
from cloud.ingest import dead_letter
from cloud.store import Alert, AlertDelivery, now

log = logging.getLogger("coldchain.cloud.webhooks")
SCHEMA = "coldchain.alert/v1"
BATCH = 100  # alerts queued, and deliveries sent, per step
Post = Callable[[Webhook, dict[str, Any], str], str | None]  # -> None when delivered, else why not


def payload(alert: Alert) -> dict[str, Any]:
    return {"schema": SCHEMA, "id": alert.id, "kind": alert.kind, "scope": alert.scope, "subject": alert.subject,
            "message": alert.message, "value": alert.value, "created_at": alert.created_at.isoformat()}


def http_post(hook: Webhook, body: dict[str, Any], key: str) -> str | None:
    """POST ``body`` as JSON; None on a 2xx answer, else what went wrong (for the retry's record)."""
    try:
        response = httpx.post(str(hook.url), json=body, timeout=hook.timeout_s, follow_redirects=False,
                              headers={**hook.headers, "Idempotency-Key": key, "User-Agent": "coldchain-cloud"})
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {str(exc)[:300]}"
    if 200 <= response.status_code < 300:
        return None
    return f"HTTP {response.status_code}: {response.text[:300]}"


class Dispatcher:
    def __init__(self, sessions: sessionmaker[Session], config: Alerts, clock: Callable[[], datetime] = now,
                 post: Post = http_post) -> None:
        self.sessions, self.config, self.clock, self.post = sessions, config, clock, post
        self.hooks = {hook.name: hook for hook in config.webhooks}
        self.counts: Counter[str] = Counter()  # delivered, retried, dead (for /metrics)

    def step(self) -> int:
        """Queue new alerts, then send what is due; returns how many POSTs were made."""
        self.queue()
        return self.send()

    def queue(self) -> int:
        """One delivery per new alert and interested webhook; the alert is marked dispatched."""
        with self.sessions.begin() as session:
            alerts = session.scalars(select(Alert).where(Alert.dispatched.is_(False)).order_by(Alert.id)
                                     .limit(BATCH)).all()
            for alert in alerts:
                for hook in self.hooks.values():
                    if not hook.kinds or alert.kind in hook.kinds:
                        session.add(AlertDelivery(alert_id=alert.id, webhook=hook.name, payload=payload(alert),
                                                  attempts=0, next_at=self.clock(), done=False,
                                                  created_at=self.clock()))
                alert.dispatched = True
            return len(alerts)

    def send(self) -> int:
        clock = self.clock()
        with self.sessions() as session:
            due = session.execute(select(AlertDelivery.id, AlertDelivery.webhook, AlertDelivery.payload,
                                         AlertDelivery.alert_id).where(
                AlertDelivery.done.is_(False), AlertDelivery.next_at <= clock)
                .order_by(AlertDelivery.next_at, AlertDelivery.id).limit(BATCH)).all()
        for delivery_id, name, body, alert_id in due:
            hook = self.hooks.get(name)
            error = "the webhook is no longer configured" if hook is None else \
                self.post(hook, body, f"alert-{alert_id}-{name}")
            with self.sessions.begin() as session:
                self._settle(session, session.get(AlertDelivery, delivery_id), error, hook is None)
        return len(due)

    def _settle(self, session: Session, row: AlertDelivery | None, error: str | None, gone: bool) -> None:
        if row is None:  # retention removed it meanwhile
            return
        row.attempts += 1
        if error is None:
            row.done, row.outcome, row.last_error = True, "delivered", None
            self.counts["delivered"] += 1
            return
        row.last_error = error[:2000]
        retry = self.config.retry
        if row.attempts >= retry.max_attempts or gone:
            row.done, row.outcome = True, "dead"
            self.counts["dead"] += 1
            reason = f"webhook {row.webhook}: {row.attempts} deliveries failed; the last: {error}"
            dead_letter(session, f"webhook/{row.webhook}", json.dumps(row.payload).encode(), reason, kind="webhook")
            log.warning("alert %s not delivered to %s: %s", row.alert_id, row.webhook, reason)
            return
        delay = min(retry.backoff_s * 2 ** (row.attempts - 1), retry.backoff_max_s)
        row.next_at = self.clock() + timedelta(seconds=delay)
        self.counts["retried"] += 1
        log.info("alert %s to %s failed (%s); again in %.0f s", row.alert_id, row.webhook, error, delay)
