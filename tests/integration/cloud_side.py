"""The cloud's side of a broker conversation in integration tests: a paho client whose messages
land in a queue, and a wait for the first message a predicate accepts (``benchmarks.faults.broker``,
which the fault harness shares)."""

from __future__ import annotations

from sqlalchemy import func, select

from benchmarks.faults.broker import Inbox, cloud_client, job_accepted, subscribe, subscribe_confirmed, wait_for
from cloud.service import Cloud
from cloud.store import Device

__all__ = ["Inbox", "cloud_client", "job_accepted", "online", "subscribe", "subscribe_confirmed", "wait_for"]


def online(cloud: Cloud, prefix: str) -> int:
    """How many of this test's devices (ids starting ``prefix-``) the cloud sees online; the
    shared Mosquitto also holds other tests' retained states."""
    with cloud.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(Device).where(
            Device.online.is_(True), Device.id.like(f"{prefix}-%"))) or 0)
