"""The cloud's side of a broker conversation in integration tests: a paho client whose messages
land in a queue, and a wait for the first message a predicate accepts (``benchmarks.faults.broker``,
which the fault harness shares)."""

from __future__ import annotations

from benchmarks.faults.broker import Inbox, cloud_client, job_accepted, subscribe, subscribe_confirmed, wait_for

__all__ = ["Inbox", "cloud_client", "job_accepted", "subscribe", "subscribe_confirmed", "wait_for"]
