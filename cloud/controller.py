"""The rollout controller: a bundle goes to a selected fleet in waves; a wave starts only after
the previous wave's gates passed; a failing gate halts the rollout and rolls back every device
it touched. All state lives in the store, so ``step()`` after a restart continues where the last
controller stopped; every command carries a job id the device acts on once, and goes through
:mod:`cloud.commands` (sent once the broker acknowledged it, re-sent until the device shows it).
Operators change a rollout through :mod:`cloud.rollouts`, which only writes the store.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cloud.aggregate import parts
from cloud.commands import Backoff, Deliveries, Outbox, cancel_command, delivery
from cloud.errors import NotFoundError
from cloud.fleet import bundle_ref, previous_bundle
from cloud.gates import WaveEvidence, evaluate, failed
from cloud.monitor import Summary, prediction_rates, raise_alert, summarize_parts
from cloud.plan import RolloutPlan
from cloud.publisher import Publisher
from cloud.rollouts import (
    ABORTED,
    ABORTING,
    ACTIVE,
    FAILED,
    NONE_ACTIVATED,
    OUT_OF_ROLLOUT,
    ROLLED_BACK,
    ROLLING_BACK,
    RUNNING,
    SUCCEEDED,
    RollbackStep,
    failure_reasons,
    rollback_step,
)
from cloud.store import BundleRow, CommandRow, Device, EventRow, Rollout, RolloutDevice, now
from contract.commands import DeployCommand, RollbackCommand
from contract.common import BundleRef
from contract.jobs import JobState, waits_for_evidence
from contract.manifest import Manifest
from transport.client import Transport

log = logging.getLogger("coldchain.rollout")
DOWNLOADING = frozenset({JobState.QUEUED.value, JobState.DOWNLOADING.value})  # the chunks are still of use
STREAMS_KEPT = 1000  # (rollout, wave) streams remembered
TERMINAL = frozenset({s.value for s in JobState if s.terminal} | {"TIMED_OUT"} | OUT_OF_ROLLOUT)


class Controller:
    def __init__(self, sessions: sessionmaker[Session], transport: Transport, publisher: Publisher,
                 operator_key: Ed25519PrivateKey, clock: Callable[[], datetime] = now,
                 notify: Callable[[str], None] | None = None, deliveries: Deliveries | None = None,
                 backoff: Backoff | None = None) -> None:
        self.sessions, self.transport, self.publisher = sessions, transport, publisher
        self.key, self.clock = operator_key, clock
        self.notify = notify or log.info
        self.outbox = Outbox(transport, operator_key, deliveries, backoff)  # signs each send; acks fed by ingestion
        self._streamed: dict[tuple[str, int], None] = {}  # (rollout, wave) streams this controller started

    # ---- the loop -------------------------------------------------------------------------
    def step(self) -> None:
        """Deliver the commands that are due, then advance every unfinished rollout."""
        with self.sessions.begin() as session:
            self._deliver(session)
        with self.sessions() as session:
            ids = session.scalars(select(Rollout.id).where(Rollout.status.in_(ACTIVE))).all()
        for rollout_id in ids:
            with self.sessions.begin() as session:
                rollout = session.get(Rollout, rollout_id)
                if rollout is None:
                    continue
                if rollout.status == RUNNING:
                    self._run(session, rollout)
                elif rollout.status == ROLLING_BACK:
                    self._roll_back(session, rollout)
                elif rollout.status == ABORTING:
                    self._abort(session, rollout)

    def _deliver(self, session: Session) -> None:
        """Acknowledged deploys count as sent; one never confirmed fails its device, with why."""
        clock = self.clock()
        pumped = self.outbox.pump(session, clock)
        for row in pumped.acked + pumped.failed:
            entry = session.get(RolloutDevice, (row.rollout_id, row.device_id)) if row.rollout_id else None
            if entry is None:
                continue
            if row.kind == "deploy" and row.job_id == entry.job_id and entry.deploy_sent_at is None:
                entry.deploy_sent_at = row.acked_at
            if row in pumped.failed:
                raise_alert(session, "command_unconfirmed", "device", row.device_id, row.reason or "")
                if row.kind != "cancel":  # an unconfirmed cancel is alerted; the device keeps its own reason
                    entry.reason = row.reason
                if row.kind == "deploy" and entry.state == "PENDING":
                    entry.state = "TIMED_OUT"
                    self._cancel(session, entry, row.reason or "unconfirmed")  # should it arrive late after all

    def _devices(self, session: Session, rollout_id: str, wave: int | None = None) -> list[RolloutDevice]:
        query = select(RolloutDevice).where(RolloutDevice.rollout_id == rollout_id)
        if wave is not None:
            query = query.where(RolloutDevice.wave == wave)
        return list(session.scalars(query.order_by(RolloutDevice.device_id)).all())

    def _run(self, session: Session, rollout: Rollout) -> None:
        plan = RolloutPlan.model_validate(rollout.plan)
        bundle = session.get(BundleRow, rollout.bundle_sha256)
        if bundle is None:
            raise NotFoundError(f"rollout {rollout.id} names bundle {rollout.bundle_sha256[:12]}, which is gone")
        wave = self._devices(session, rollout.id, rollout.wave)
        clock = self.clock()
        self.publisher.chunking(bundle.artifact_sha256, plan.chunk_size)  # repairs too, after a restart
        if rollout.wave_started_at is None:
            self._start_wave(session, rollout, bundle, plan, wave, clock)
            return
        if rollout.chunks_published_at is None:
            artifact = self.publisher.artifact(bundle.artifact_sha256, plan.chunk_size)
            self.publisher.announce(artifact, _wave_group(rollout))  # again after a restart: idempotent
            acked = all(d.state != "PENDING" for d in wave)  # every device confirmed its deploy
            if acked or clock - rollout.wave_started_at > timedelta(seconds=plan.timeouts.ack_s):
                self._stream(rollout, bundle, plan)
                rollout.chunks_published_at = clock
            return
        if rollout.wave_settled_at is None:
            if (rollout.id, rollout.wave) not in self._streamed and any(d.state in DOWNLOADING for d in wave):
                self._stream(rollout, bundle, plan)  # another controller's stream, cut short: once more, in full
            elapsed = clock - rollout.wave_started_at
            if elapsed > timedelta(seconds=plan.timeouts.wave_s):
                for device in wave:  # a device that says it waits (READY, PROBATION for evidence): its own limit
                    limit = _limit(plan, device)
                    if device.state not in TERMINAL and elapsed > timedelta(seconds=limit):
                        device.reason = f"no result within {limit:g} s (was {device.state})"
                        if device.state == "PENDING":
                            device.reason += f"; {delivery(session.get(CommandRow, device.job_id))}"
                        self._cancel(session, device, device.reason)
                        device.state = "TIMED_OUT"
            if all(d.state in TERMINAL for d in wave):
                rollout.wave_settled_at = clock
            return
        if clock - rollout.wave_settled_at < timedelta(seconds=plan.timeouts.observe_s):
            return
        self._judge(session, rollout, bundle, plan, wave)

    def _stream(self, rollout: Rollout, bundle: BundleRow, plan: RolloutPlan) -> None:
        """The wave's artifact, every chunk once on its group topic, at the plan's rate. Remembered:
        a controller that did not stream a wave itself (it started again, the last one was killed
        mid-stream) streams it again while devices still download, and they keep what they have."""
        artifact = self.publisher.artifact(bundle.artifact_sha256, plan.chunk_size)
        limit = self.publisher.rollout_limit(rollout.id, plan.bytes_per_s)  # the plan's rate, per rollout
        self.publisher.start_group(artifact, _wave_group(rollout), limit=limit)
        self._streamed[(rollout.id, rollout.wave)] = None
        while len(self._streamed) > STREAMS_KEPT:
            del self._streamed[next(iter(self._streamed))]

    def _start_wave(self, session: Session, rollout: Rollout, bundle: BundleRow, plan: RolloutPlan,
                    wave: list[RolloutDevice], clock: datetime) -> None:
        artifact = self.publisher.artifact(bundle.artifact_sha256, plan.chunk_size)  # chunked as the plan says
        group = _wave_group(rollout)
        for device in wave:
            if device.state != "PENDING":
                continue
            command = DeployCommand(job_id=device.job_id, bundle=bundle_ref(bundle), artifact=artifact.ref(group),
                                    probation_s=plan.probation_s, shadow_s=plan.shadow_s,
                                    max_latency_ratio=plan.gates.max_latency_ratio)  # judged on each device too
            self.outbox.issue(session, device.device_id, command, rollout.id, clock,  # sent once acknowledged,
                              deadline=clock + timedelta(seconds=plan.timeouts.wave_s))  # re-sent until the wave ends
        rollout.wave_started_at = clock
        self.notify(f"rollout {rollout.id}: wave {rollout.wave + 1} started ({len(wave)} devices)")

    def _judge(self, session: Session, rollout: Rollout, bundle: BundleRow, plan: RolloutPlan,
               wave: list[RolloutDevice]) -> None:
        if all(d.state in OUT_OF_ROLLOUT for d in wave):  # nothing of this wave is the rollout's to judge
            self._next_wave(session, rollout)
            return
        evidence = self.evidence(session, rollout, wave)
        manifest = Manifest.model_validate(bundle.manifest)
        results = evaluate(plan.gates, evidence, manifest)
        rollout.gate_results = [*rollout.gate_results, {"wave": rollout.wave, "results": [r.to_json() for r in
                                                                                          results]}]
        bad = failed(results)
        if bad:
            reason = f"wave {rollout.wave + 1} failed its gate: " + "; ".join(
                f"{r.gate} {_fmt(r.value)} (limit {_fmt(r.limit)}): {r.detail}" for r in bad)
            reasons = failure_reasons(wave)
            if reasons:  # what the devices themselves said, most frequent first
                reason += "; devices: " + "; ".join(f"{n} × {why}" for n, why in reasons[:3])
            rollout.status, rollout.reason = ROLLING_BACK, reason
            raise_alert(session, "gate_failed", "rollout", rollout.id, reason, bad[0].value)
            self.notify(f"rollout {rollout.id}: {reason}")
            return
        self.notify(f"rollout {rollout.id}: wave {rollout.wave + 1} passed its gates")
        self._next_wave(session, rollout)

    def _next_wave(self, session: Session, rollout: Rollout) -> None:
        last = max((d.wave for d in self._devices(session, rollout.id)), default=0)
        if rollout.wave >= last:
            rollout.status = SUCCEEDED
            self.notify(f"rollout {rollout.id}: SUCCEEDED")
            return
        rollout.wave += 1
        rollout.wave_started_at = rollout.chunks_published_at = rollout.wave_settled_at = None

    @staticmethod
    def evidence(session: Session, rollout: Rollout, wave: list[RolloutDevice]) -> WaveEvidence:
        """What the wave did so far (``cloud.queries.live`` judges it the same way, live)."""
        ids = [d.device_id for d in wave if d.state == JobState.SUCCEEDED.value]
        states = [d.state for d in wave if d.state not in OUT_OF_ROLLOUT]
        started = rollout.wave_started_at
        # from the rollups, never the raw windows: retention deleting those never changes a verdict
        new = summarize_parts(parts(session, started, ids, [rollout.bundle_sha256])) if ids else Summary()
        previous = sorted({d.previous["sha256"] for d in wave if d.previous})
        base = summarize_parts(parts(session, None, ids, previous)) if previous and ids else Summary()
        baseline, source = prediction_rates(base), "the previous bundle on these devices"
        if not baseline:  # no telemetry of what ran before: the reference of the model's previous bundle
            bundle = session.get(BundleRow, rollout.bundle_sha256)
            if bundle is None:
                return WaveEvidence(states, new, {}, "nothing")
            chosen = previous_bundle(session, bundle) or bundle
            baseline = dict((chosen.manifest.get("reference") or {}).get("prediction_rates") or {})
            source = f"the reference profile of bundle #{chosen.sequence}"
        jobs = [d.job_id for d in wave]
        shadows = session.scalars(select(EventRow).where(EventRow.type == "shadow", EventRow.job_id.in_(jobs))).all()
        return WaveEvidence(states, new, baseline,
                            source, [float(e.payload.get("agreement", 0.0)) for e in shadows],
                            baseline_model_p95=base.model_p95)

    def _abort(self, session: Session, rollout: Rollout) -> None:
        for device in self._devices(session, rollout.id):
            issued = session.get(CommandRow, device.job_id) is not None  # the deploy may be on its way
            if issued and device.state not in TERMINAL and not device.activated:
                self._cancel(session, device, rollout.reason or "aborted")
            elif device.state == "PENDING":
                device.state, device.reason = "SKIPPED", rollout.reason
        rollout.status = ABORTED
        self.notify(f"rollout {rollout.id}: ABORTED ({rollout.reason})")

    # ---- rolling back -----------------------------------------------------------------------
    def _roll_back(self, session: Session, rollout: Rollout) -> None:
        """Every touched device back to what it ran before; done when each confirmed (or timed out)."""
        plan = RolloutPlan.model_validate(rollout.plan)
        clock = self.clock()
        pending = 0
        devices = self._devices(session, rollout.id)
        for device in devices:
            if device.rolled_back or device.state in ("FAILED", "TIMED_OUT", *OUT_OF_ROLLOUT):
                continue
            if device.state == "PENDING":
                device.state, device.reason = "SKIPPED", "the rollout was halted before this device's wave"
                continue
            if device.state == JobState.ROLLED_BACK.value:  # the device's own probation did it
                device.rolled_back = True
                continue
            if device.state not in TERMINAL and not device.activated:
                if device.rollback_sent_at is None:
                    self._cancel(session, device, rollout.reason or "rollout halted")
                    device.rollback_sent_at = clock
                pending += 1
                continue
            pending += self._roll_back_device(session, rollout, device, plan, clock)
        if pending == 0:
            if any(d.activated or d.rolled_back for d in devices):
                rollout.status = ROLLED_BACK
            else:  # no device ever ran the bundle: nothing was rolled back, say what happened
                rollout.status = FAILED
                rollout.reason = f"{rollout.reason or 'halted'}; {NONE_ACTIVATED}"
            self.notify(f"rollout {rollout.id}: {rollout.status} ({rollout.reason})")

    def _roll_back_device(self, session: Session, rollout: Rollout, device: RolloutDevice, plan: RolloutPlan,
                          clock: datetime) -> int:
        """One device that ran the bundle: back to its own known-good bundle. Returns 1 while waiting."""
        current = session.get(Device, device.device_id)
        still_on_it = current is not None and current.active_sha256 == rollout.bundle_sha256
        if not still_on_it and device.rollback_sent_at is not None:
            device.rolled_back = True
            return 0
        if not still_on_it and not device.activated:
            return 0
        step = rollback_step(rollout, device, current)
        if step.action == "impossible":  # nothing known-good on the device: say so (once), never guess a slot
            if device.reason != step.why:
                device.reason = step.why
                raise_alert(session, "rollback_impossible", "device", device.device_id, step.why)
            return 0
        if device.rollback_sent_at is None:  # the outbox re-sends it until the device answers
            self._send_rollback(session, device, rollout, step, clock)
            device.rollback_sent_at = clock
        if clock - (device.rollback_sent_at or clock) > timedelta(seconds=plan.timeouts.rollback_s):
            device.reason = f"did not confirm the rollback within {plan.timeouts.rollback_s:g} s"
            raise_alert(session, "rollback_unconfirmed", "device", device.device_id, device.reason)
            device.state = "TIMED_OUT"  # not ROLLED_BACK: the fleet view must not claim what did not happen
            return 0
        return 1

    def _send_rollback(self, session: Session, device: RolloutDevice, rollout: Rollout, step: RollbackStep,
                       clock: datetime) -> None:
        """The exact bundle the device goes back to: its own last known-good (``rollback_step``)."""
        to = BundleRef.model_validate(step.to) if step.to else None
        command = RollbackCommand(job_id=f"{device.job_id}.rollback", to=to,
                                  reason=f"{rollout.reason or 'rolled back'}; {step.why}"[:2000])
        self.outbox.issue(session, device.device_id, command, rollout.id, clock)

    def _cancel(self, session: Session, device: RolloutDevice, reason: str) -> None:
        self.outbox.issue(session, device.device_id, cancel_command(device.job_id), device.rollout_id, self.clock())
        log.info("cancel %s: %s", device.job_id, reason)


def _wave_group(rollout: Rollout) -> str:
    return f"{rollout.id}.w{rollout.wave + 1}"


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def _limit(plan: RolloutPlan, device: RolloutDevice) -> float:
    """How long after its wave started a device's job may run: ``ready_s`` in READY (its firmware holds
    activation, or its window is closed), ``evidence_s`` in a probation extended for want of live
    inferences (an idle door-triggered device), else ``wave_s``."""
    if device.state == JobState.READY.value:
        return plan.timeouts.ready_s
    if waits_for_evidence(device.state, device.reason):
        return plan.timeouts.evidence_s
    return plan.timeouts.wave_s
