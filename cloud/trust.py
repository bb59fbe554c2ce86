"""Pushing a root-signed trust document to the fleet (``coldchain keys push``).

The document verifies itself on each device (root signature, higher version): devices take a
``trust_update`` without an operator signature, so a compromised operator key cannot stop or
forge it. Each device gets the command under the job id ``trust-v{version}.{device}``, queued in
the command outbox (``cloud.commands``): the running cloud sends it once the broker acknowledged
it and re-sends it until the device answers with a job event (SUCCEEDED, or FAILED with why), so
a device offline at the push gets it when it returns. Pushing the same document again is harmless.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cloud.commands import enqueue
from cloud.fleet import matches
from cloud.plan import Selector
from cloud.store import Device, EventRow, now
from contract.commands import TrustUpdateCommand
from contract.trust import SignedTrust


def job_id(signed: SignedTrust, device_id: str) -> str:
    return f"trust-v{signed.document().version}.{device_id}"


def push(sessions: sessionmaker[Session], signed: SignedTrust, selector: Selector | None = None,
         clock: datetime | None = None) -> dict[str, str]:
    """Queue the document for every device the selector matches (the running cloud's outbox sends
    it); returns device id -> job id."""
    chosen = selector or Selector()
    jobs = {}
    with sessions.begin() as session:
        devices = [d.id for d in session.scalars(select(Device).order_by(Device.id)).all() if matches(d, chosen)]
        for device in devices:
            jobs[device] = job_id(signed, device)
            command = TrustUpdateCommand(job_id=jobs[device], device_id=device, trust=signed)
            enqueue(session, device, command, None, clock or now())
    return jobs


def results(sessions: sessionmaker[Session], jobs: dict[str, str]) -> dict[str, tuple[str, str | None]]:
    """What each device answered so far: device id -> (job state, reason); no answer: absent."""
    out: dict[str, tuple[str, str | None]] = {}
    with sessions() as session:
        for chunk in _chunks(list(jobs.values()), 500):
            rows = session.scalars(select(EventRow).where(EventRow.job_id.in_(chunk), EventRow.type == "job")
                                   .order_by(EventRow.id)).all()
            for row in rows:  # the latest event of each job wins
                out[row.device_id] = (row.state or "?", row.reason)
    return out


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
