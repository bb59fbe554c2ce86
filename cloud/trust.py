"""Pushing a root-signed trust document to the fleet (``coldchain keys push``).

The document verifies itself on each device (root signature, higher version), so the cloud adds
no signature of its own: a compromised operator key cannot stop or forge it. Each device gets a
``trust_update`` command under the job id ``trust-v{version}.{device}`` and answers with a job
event (SUCCEEDED, or FAILED with why), which the ingestion worker stores like any other; pushing
the same document again is harmless (the device answers with the same result).
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cloud.fleet import matches
from cloud.plan import Selector
from cloud.store import Device, EventRow
from contract import topics
from contract.commands import TrustUpdateCommand
from contract.trust import SignedTrust
from transport.client import Transport


def job_id(signed: SignedTrust, device_id: str) -> str:
    return f"trust-v{signed.document().version}.{device_id}"


def push(sessions: sessionmaker[Session], transport: Transport, signed: SignedTrust,
         selector: Selector | None = None) -> dict[str, str]:
    """Send the document to every device the selector matches; returns device id -> job id."""
    chosen = selector or Selector()
    with sessions() as session:
        devices = [d.id for d in session.scalars(select(Device).order_by(Device.id)).all() if matches(d, chosen)]
    jobs = {}
    for device in devices:
        jobs[device] = job_id(signed, device)
        command = TrustUpdateCommand(job_id=jobs[device], device_id=device, trust=signed)
        transport.publish(topics.commands(device), command.to_json())
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
