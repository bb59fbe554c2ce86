"""What ``/metrics`` tells Prometheus: the fleet and rollouts as the store has them (read at each
scrape), and the running cloud's own counters (ingestion, publisher egress, alert deliveries,
supervised parts' failures). Names follow Prometheus conventions (``coldchain_`` prefix, base
units in the name, ``_total`` for counters); labels are groups, statuses, gates, kinds and
rollout ids, never a device id."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from cloud.queries import fleet, overview
from cloud.store import Alert, DeadLetter, Rollout

MAX_GROUP_SERIES = 50  # groups with a series of their own in /metrics; the rest are summed as '(other)'
log = logging.getLogger("coldchain.cloud.metrics")
WATCHED = ("RUNNING", "PAUSED", "ROLLING_BACK", "ABORTING")  # rollouts whose gate values are exported


@dataclass
class Runtime:
    """Live figures of the cloud process, read at each scrape (callables: the parts own the numbers)."""

    ingest_counts: Callable[[], dict[str, int]] = dict  # outcome -> messages so far
    ingest_queue: Callable[[], int] = lambda: 0  # messages received, not yet stored
    ingest_lag_s: Callable[[], float | None] = lambda: None  # stored time - window end, last telemetry batch
    egress_bytes: Callable[[], tuple[int, int]] = lambda: (0, 0)  # (all chunk bytes, of which repairs)
    deliveries: Callable[[], dict[str, int]] = dict  # webhook delivery result -> count so far
    failures: Callable[[], dict[str, int]] = dict  # supervised part -> crashes so far


def _gauge(name: str, doc: str, labels: list[str], rows: dict[tuple[str, ...], float]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for key, value in sorted(rows.items()):
        family.add_metric(list(key), value)
    return family


def _counter(name: str, doc: str, label: str, rows: dict[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=[label])
    for key, value in sorted(rows.items()):
        family.add_metric([key], value)
    return family


class StoreMetrics(Collector):
    """Read at each scrape; a store that does not answer gives ``coldchain_store_up 0`` only."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("coldchain_store_up", "1 if the store answered this scrape")
        try:
            with self.sessions() as session:
                families = list(self._read(session))
        except SQLAlchemyError as exc:
            log.warning("metrics: the store did not answer: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _read(self, session: Session) -> Iterator[Metric]:
        by_board = overview.boards(session)  # counted by the store (GROUP BY), as on the dashboard
        total, up = sum(f.devices for f in by_board), sum(f.online for f in by_board)
        online: dict[tuple[str, ...], float] = {("true",): float(up), ("false",): float(total - up)}
        by_group: dict[tuple[str, ...], float] = {}
        for rank, facet in enumerate(overview.groups(session, total, up)):  # most devices first
            # served without a token, and devices report groups of their own: the largest groups get a
            # series each, the rest are summed, so neither the series nor the names published are unbounded
            name = (facet.value or "(none)") if rank < MAX_GROUP_SERIES else "(other)"
            for state, n in (("true", facet.online), ("false", facet.devices - facet.online)):
                if n:
                    by_group[(name, state)] = by_group.get((name, state), 0) + n
        yield _gauge("coldchain_devices", "Devices known to the cloud", ["online"], online)
        yield _gauge("coldchain_group_devices", "Devices per group (assigned or reported)", ["group", "online"],
                     by_group)
        yield _gauge("coldchain_device_faults", "Devices whose last state reports a fault, by code (a closed set)",
                     ["code"], {(code,): n for code, n in fleet.fault_counts(session).items()})
        states = session.execute(select(Rollout.status, func.count()).group_by(Rollout.status)).all()
        yield _gauge("coldchain_rollouts", "Rollouts by status", ["status"], {(s,): n for s, n in states})
        yield from self._gates(session)
        kinds = session.execute(select(DeadLetter.kind, func.count()).group_by(DeadLetter.kind)).all()
        yield _gauge("coldchain_dead_letters", "Payloads refused (stored, within their retention), by reason",
                     ["reason"], {(k or "unknown",): n for k, n in kinds})
        alerts = session.execute(select(Alert.kind, func.count()).group_by(Alert.kind)).all()
        yield _gauge("coldchain_alerts", "Alerts raised (stored, within their retention), by kind", ["kind"],
                     {(k,): n for k, n in alerts})

    def _gates(self, session: Session) -> Iterator[Metric]:
        """The latest judged wave's gates of every unfinished rollout: value, limit, passed."""
        values: dict[tuple[str, ...], float] = {}
        limits: dict[tuple[str, ...], float] = {}
        passed: dict[tuple[str, ...], float] = {}
        for rollout_id, results in session.execute(select(Rollout.id, Rollout.gate_results)
                                                   .where(Rollout.status.in_(WATCHED))):
            for gate in (results[-1]["results"] if results else []):
                key: tuple[str, ...] = (str(rollout_id), str(gate["gate"]))
                if isinstance(gate.get("value"), int | float):
                    values[key] = float(gate["value"])
                if isinstance(gate.get("limit"), int | float):
                    limits[key] = float(gate["limit"])
                passed[key] = 1.0 if gate.get("passed") else 0.0
        labels = ["rollout", "gate"]
        yield _gauge("coldchain_rollout_gate_value", "Measured value of a gate, latest judged wave", labels, values)
        yield _gauge("coldchain_rollout_gate_limit", "Limit of a gate", labels, limits)
        yield _gauge("coldchain_rollout_gate_passed", "1 if the gate passed in the latest judged wave", labels, passed)


class RuntimeMetrics(Collector):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        r = self.runtime
        yield _counter("coldchain_ingest_messages", "Device messages handled by ingestion, by outcome", "outcome",
                       r.ingest_counts())
        yield GaugeMetricFamily("coldchain_ingest_queue_messages", "Messages received and not yet stored",
                                value=r.ingest_queue())
        lag = r.ingest_lag_s()
        if lag is not None:
            yield GaugeMetricFamily("coldchain_ingest_lag_seconds", "Time from a telemetry window's end (device "
                                    "clock) to its storage, latest batch", value=lag)
        total, repairs = r.egress_bytes()
        yield _counter("coldchain_publisher_sent_bytes", "Artifact chunk bytes published", "stream",
                       {"group": total - repairs, "repair": repairs})
        yield _counter("coldchain_alert_deliveries", "Webhook deliveries of alerts, by result", "result",
                       r.deliveries())
        yield _counter("coldchain_part_failures", "Crashes of the cloud's supervised parts", "part", r.failures())
