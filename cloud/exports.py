"""Exports of telemetry summaries as CSV (``coldchain monitor --export``, ``GET /telemetry/export``).
Device ids are replaced by keyed pseudonyms — ``dev-`` and the first 20 hex digits of
HMAC-SHA256(key, device id): stable across exports (the same device, the same pseudonym, so
exports can be joined) and not reversible without the key — unless an admin asks for raw ids.
The key is ``exports.pseudonym_key_file`` (made, mode 0600, if missing) or, without one, a key
the cloud makes once and keeps in its store (``cloud_secrets``)."""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import os
import secrets
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from cloud.config import Exports
from cloud.errors import CloudError
from cloud.queries.models import MonitorView
from cloud.store import CloudSecret, now

KEY_NAME = "export-pseudonyms"
COLUMNS = ("subject", "devices", "windows", "inferences", "error_rate", "latency_p50_ms", "latency_p95_ms",
           "prediction_drift_js", "previous_drift_js", "input_drift_psi", "inventory", "bundles")


def _file_key(path: Path) -> bytes:
    try:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(secrets.token_bytes(32))
        key = path.read_bytes()
    except OSError as exc:
        raise CloudError(f"the export pseudonym key {path} cannot be used: {exc.strerror or exc}") from exc
    if len(key) < 16:
        raise CloudError(f"the export pseudonym key {path} is shorter than 16 bytes")
    return key


def pseudonym_key(sessions: sessionmaker[Session], config: Exports) -> bytes:
    if config.pseudonym_key_file is not None:
        return _file_key(config.pseudonym_key_file)
    with sessions.begin() as session:  # made once; two clouds racing keep the one stored first
        insert = sqlite.insert if session.get_bind().dialect.name == "sqlite" else postgresql.insert
        session.execute(insert(CloudSecret).values(name=KEY_NAME, value=secrets.token_bytes(32), created_at=now())
                        .on_conflict_do_nothing(index_elements=["name"]))
        row = session.get(CloudSecret, KEY_NAME)
        if row is None:
            raise CloudError("the export pseudonym key could not be stored")
        return bytes(row.value)


def pseudonym(key: bytes, device_id: str) -> str:
    return "dev-" + hmac.new(key, device_id.encode(), hashlib.sha256).hexdigest()[:20]


def to_csv(rows: Sequence[MonitorView], key: bytes | None) -> str:
    """``rows`` as CSV; device subjects pseudonymised with ``key`` (None: raw ids)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for r in rows:
        subject = pseudonym(key, r.subject) if key is not None and r.scope == "device" else r.subject
        writer.writerow([subject, r.devices, r.windows, r.inferences, f"{r.error_rate:.6g}", r.latency_p50_ms,
                         r.latency_p95_ms, r.prediction_drift_js, r.previous_drift_js, r.input_drift_psi,
                         json.dumps(r.inventory, sort_keys=True), ";".join(r.bundles)])
    return out.getvalue()
