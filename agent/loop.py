"""The agent: one thread that drains the transport's queue, runs inference on frames, closes
telemetry windows into the spool and publishes them (``uplink.py``) until the cloud confirms each.

Every decision is a plain method (``handle``, ``infer_once``, ``close_window``,
``publish_pending``), so it can be driven without a broker in tests.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from agent import runtimes
from agent.activation import Activation
from agent.commands import CommandLog, cancel, profile, roll_back, set_config
from agent.config import AgentConfig
from agent.deploy import Deployer
from agent.errors import AgentError, FrameError, SourceEnded
from agent.firmware import FirmwareLink
from agent.frames import FrameSource
from agent.gate import Answer, CommandGate, Refused
from agent.health import ErrorBudget, Health, SourceUnavailable
from agent.jobs import JobRecord
from agent.model import Inference, LoadedBundle
from agent.receiver import to_ask
from agent.shadow import ShadowRun
from agent.spool import Spool
from agent.telemetry import Window
from agent.trust import TrustKeeper
from agent.uplink import Uplink
from contract import topics
from contract.commands import (
    CancelCommand,
    DeployCommand,
    ProfileCommand,
    RollbackCommand,
    SetConfigCommand,
    TrustUpdateCommand,
)
from contract.common import BundleRef, RuntimeInfo
from contract.errors import ContractError
from contract.events import ErrorEvent, JobEvent, ShadowEvent
from contract.jobs import JobState
from contract.state import DeviceState, JobSummary, offline
from contract.transfer import decode_chunk
from transport.client import Connected, ConnectFailed, Disconnected, Inbound, Received, Transport

if TYPE_CHECKING:
    import numpy as np
else:
    from agent.lazy import lazy

    np = lazy("numpy")

log = logging.getLogger("coldchain.agent")
AGENT_VERSION = "0.1.0"

_SHARED: dict[str, LoadedBundle] = {}  # simulated fleets: one loaded bundle per sha, shared by every agent
_SHARED_LOCK = threading.Lock()
ERROR_BURST = 10  # error events of one kind sent at once at most ...
ERROR_EVERY_S = 6.0  # ... then one every this many seconds (tracebacks in the log alike)
OUTBOX_LIMIT = 1000


class Agent:
    def __init__(self, config: AgentConfig, transport: Transport, source: FrameSource | None,
                 share_models: bool = False, clock: Callable[[], float] = time.time) -> None:
        self.share_models = share_models  # simulated fleets: one model session per bundle, not per device
        self.config = config
        self.transport = transport
        self.source = source
        self.keeper = TrustKeeper(config)  # the one live trust store; root-signed updates change it in place
        self.trust = self.keeper.store
        self.available = runtimes.available()
        self.activation = Activation(config.activation, config.data_dir, clock)  # the firmware's hold, the window
        self.deployer = Deployer(config.data_dir, self.trust, self.available, self._emit, config.limits.threads,
                                 clock=clock, board=config.board,
                                 activation=self.activation)
        self.commands = CommandLog(config.data_dir)  # what each finished job, cancel and rollback came to
        self.gate = CommandGate(config.device_id, self.trust, self.commands, self.deployer.jobs, clock)
        self.spool = Spool(config.data_dir / "telemetry.db", config.limits.spool_max_windows)
        self.uplink = Uplink(self.spool, transport, config.device_id, config.limits.telemetry_in_flight,
                             config.limits.telemetry_resend_s)
        self.window = Window()
        self.window_started = time.monotonic()
        self.next_inference = self.next_repair = time.monotonic()
        self.event_seq = 0
        self.connected = False
        self._model: LoadedBundle | None = None  # the active bundle, loaded and verified once per activation
        self.malformed = 0
        self.outbox: list[tuple[str, bytes]] = []  # events produced while offline
        self.last_chunk: dict[str, float] = {}  # job id -> when its last chunk arrived
        self.highest_chunk: dict[str, int] = {}  # job id -> highest chunk index received
        self.shadows: dict[str, ShadowRun] = {}  # job id -> candidate running beside the active model
        self.source_ended = False  # a finite source gave every frame: no more inference, the rest goes on
        self.budget = ErrorBudget(ERROR_BURST, ERROR_EVERY_S)  # error events (and tracebacks) per code
        self.live_p95: dict[str, float | None] = {}  # bundle sha -> its last window's model p95 on this device
        self.firmware = FirmwareLink(self)  # the local API (docs/firmware.md); its socket opens in run()
        self.health = Health(config.data_dir, config.broker.url, config.device_id)  # broker and source faults
        repaired = [("slots_recovered", self.deployer.recovered), ("spool_recovered", self.spool.recovered),
                    ("commands_recovered", self.commands.damaged),
                    ("trust_recovered", self.keeper.recovered),
                    *[("jobs_recovered", m) for m in self.deployer.jobs.damaged]]
        for code, message in repaired:  # the data directory was repaired at start: say what was done, once
            if message:
                log.warning("%s", message)
                self._error(code, message)

    # ---- outbound ---------------------------------------------------------------------
    def _emit(self, job_id: str, state: JobState, reason: str | None, progress: float | None) -> None:
        self.event_seq += 1
        event = JobEvent(device_id=self.config.device_id, seq=self.event_seq, job_id=job_id, state=state,
                         reason=reason, progress=progress)
        self.send(topics.events(self.config.device_id), event.to_json())
        if state.terminal:  # answered from here if the command is re-sent (even after the job file is pruned)
            self.commands.record(job_id, state, reason)
        if state.terminal or state in (JobState.PROBATION, JobState.QUEUED):
            self.publish_state()
        self.firmware.job(job_id, state, reason)

    def _error(self, code: str, message: str, topic: str | None = None, job_id: str | None = None) -> None:
        """An error event, through a bucket per code (a burst of ``ERROR_BURST``, then one every
        ``ERROR_EVERY_S``): a repeating fault or a flood of bad messages is reported with the count
        of those held back, never as a flood of its own."""
        self.firmware.error(code, message)
        if not self.budget.allowed(code):
            return
        held = self.budget.held.pop(code, 0)
        if held:
            message = f"{message} ({held} more like it were held back)"
        self.event_seq += 1
        event = ErrorEvent(device_id=self.config.device_id, seq=self.event_seq, code=code, message=message[:2000],
                           topic=topic, job_id=job_id)
        self.send(topics.events(self.config.device_id), event.to_json())

    def send(self, topic: str, payload: bytes) -> None:
        """Publish an event now, or keep it (bounded) until the connection is back."""
        if self.connected and self.transport.publish(topic, payload) is not None:
            return
        self.outbox.append((topic, payload))
        del self.outbox[:-OUTBOX_LIMIT]

    def bundle_ref(self) -> BundleRef | None:
        loaded = self.active_model()
        return None if loaded is None else loaded.ref

    def state(self) -> DeviceState:
        # the job that moved last (history times are ISO 8601 UTC, so they sort as text)
        current = max(self.deployer.jobs.all(), key=lambda r: r.history[-1][2] if r.history else "", default=None)
        pointer = self.deployer.slots.pointer()
        return DeviceState(
            device_id=self.config.device_id, online=True, board=self.config.board, agent_version=AGENT_VERSION,
            runtimes=[RuntimeInfo(name=k, version=v) for k, v in self.available.items()],
            active=self.bundle_ref(), previous=pointer.previous_bundle, slots=pointer.slots, groups=self.config.groups,
            job=None if current is None else JobSummary(job_id=current.job_id, state=current.state))

    def publish_state(self) -> None:
        self.transport.publish(topics.state(self.config.device_id), self.state().to_json(), retain=True)

    def subscriptions(self) -> list[str]:
        device = self.config.device_id
        groups = set(self.config.groups)
        for record in self.deployer.jobs.unfinished():  # rollout waves publish on a group of their own
            group = record.command.get("artifact", {}).get("group")
            if group:
                groups.add(group)
        return [topics.commands(device), topics.device_artifacts(device), self.uplink.subscription,
                *[topics.group_artifacts(g) for g in sorted(groups)]]

    # ---- inbound ----------------------------------------------------------------------
    def handle(self, item: Inbound) -> None:
        if isinstance(item, ConnectFailed):
            self.health.connect_failed(item.cause, item.retry_in_s)
        elif isinstance(item, Connected):
            self.connected = True
            if (cause := self.health.connected()) is not None:  # the cloud hears what kept the device away
                self._error("broker_unreachable", f"the broker was unreachable until now: {cause}")
            self.transport.subscribe(self.subscriptions())
            self.publish_state()
            waiting, self.outbox = self.outbox, []
            for topic, payload in waiting:
                self.send(topic, payload)
            self.uplink.on_connected()  # unconfirmed windows are still in the spool: send again
        elif isinstance(item, Disconnected):
            self.health.disconnected(item.reason, item.retry_in_s)
            self.connected = False
            self.uplink.on_disconnected()
        elif isinstance(item, Received):  # a broker's PUBACK (Acked) deletes nothing: the cloud's ack does
            self.on_message(item.topic, item.payload)

    def on_message(self, topic: str, payload: bytes) -> None:
        try:
            parsed = topics.parse(topic)
            if parsed.kind is topics.TopicKind.ACKS:
                self.uplink.on_ack(payload)
            elif parsed.kind is topics.TopicKind.COMMANDS:
                self.on_command(payload, topic)
            elif parsed.kind in (topics.TopicKind.GROUP_CHUNKS, topics.TopicKind.DEVICE_CHUNKS):
                chunk = decode_chunk(payload)
                for record in self.deployer.jobs.unfinished():
                    if record.command.get("artifact", {}).get("sha256") == chunk.header.sha256:
                        self.last_chunk[record.job_id] = time.monotonic()
                        self.highest_chunk[record.job_id] = max(chunk.header.index,
                                                                self.highest_chunk.get(record.job_id, -1))
                        self.deployer.on_chunk(record.job_id, chunk)
        except (ContractError, AgentError) as exc:
            self.malformed += 1
            log.warning("refused a message on %s: %s", topic, exc)
            self._error("malformed_message", str(exc), topic)

    def on_command(self, payload: bytes, topic: str) -> None:
        verdict = self.gate.check(payload)
        if isinstance(verdict, Refused):  # a replay, an expired or foreign command, a bad signature: never acted on
            self._error(f"command_refused.{verdict.reason}", verdict.message, topic, verdict.job_id)
            return
        if isinstance(verdict, Answer):  # re-sent: answered with its state, never acted on twice
            self._emit(verdict.job_id, *verdict.outcome, None)
            return
        command = verdict.command
        if isinstance(command, DeployCommand):
            group = command.artifact.group
            if group is not None and group not in self.config.groups:  # a rollout wave's own group topic
                self.transport.subscribe([topics.group_artifacts(group)])
            self.last_chunk.setdefault(command.job_id, time.monotonic())  # the stream starts soon: wait for it
            self.deployer.on_deploy(command)
        elif isinstance(command, CancelCommand):
            self._emit(command.job_id, *cancel(self.deployer, self.commands, command), None)
        elif isinstance(command, RollbackCommand):
            state, reason = roll_back(self.deployer, command)
            if state is JobState.FAILED:
                self._error("rollback_refused", reason or "", topic)
            self._emit(command.job_id, state, reason, None)
        elif isinstance(command, SetConfigCommand):
            self.config, self.next_inference, applied = set_config(self.config, self.next_inference, command)
            self._emit(command.job_id, JobState.SUCCEEDED, applied, None)
        elif isinstance(command, ProfileCommand):
            self.on_profile(command, topic)
        elif isinstance(command, TrustUpdateCommand):
            self.keeper.on_update(command, self._emit)
        else:
            self._error("unsupported_command", f"{command.type} is not supported by this agent yet", topic)

    def on_profile(self, command: ProfileCommand, topic: str) -> None:
        """Time the active model on this device (model only, after warm-up) and report it."""
        loaded = self.active_model()
        if loaded is None:
            self._error("no_active_model", "profile needs an active bundle; none is installed", topic, command.job_id)
            return
        self.event_seq += 1
        event = profile(loaded, self.available, command, self.config.device_id, self.event_seq)
        self.send(topics.events(self.config.device_id), event.to_json())
        self.commands.record(command.job_id, JobState.SUCCEEDED, f"profiled: p95 {event.p95_ms:.3g} ms")

    # ---- inference and telemetry -------------------------------------------------------
    def active_model(self) -> LoadedBundle | None:
        """The active bundle, loaded and verified once when it became active (the pointer is in
        memory: this is a comparison per frame, not a disk read); the one before it is closed. A
        bundle damaged since it was installed is set aside and the known-good one loaded instead."""
        for _ in range(3):  # the active bundle, or the known-good one after it, or none
            sha = self.deployer.slots.pointer().active_sha256
            if self._model is not None and self._model.sha256 == sha:
                return self._model
            if self._model is not None and not self.share_models:
                self._model.close()
            self._model = None
            path = self.deployer.slots.active_path()
            if path is None or sha is None:
                return None
            try:
                self._model = self._load(sha, path)
            except (AgentError, ContractError) as exc:  # damaged since it was installed: back to safety
                what = self.deployer.active_unusable(f"{type(exc).__name__}: {exc}")
                log.error("%s", what)
                self._error("active_bundle_damaged", what)
                continue
            return self._model
        return None

    def _load(self, sha: str, path: Path) -> LoadedBundle:
        with _SHARED_LOCK:
            loaded = _SHARED.get(sha) if self.share_models else None
            if loaded is None:
                loaded = LoadedBundle.open_bundle(path, self.trust, self.config.limits.threads,
                                                  self.deployer.engine_cache)
                loaded.run(loaded.blank())  # the first run of a session allocates: not a representative one
                if self.share_models:
                    _SHARED[sha] = loaded
        return loaded

    def infer_once(self) -> Inference | str:
        """A frame of the source through the active model: its result, or why there is none."""
        if self.source is None or self.source_ended:
            return "no frame source" if self.source is None else "the frame source has ended"
        try:
            frame = self.source.read()
        except SourceUnavailable as exc:  # reported when it starts or its cause changes, retried with backoff
            if self.health.source_fault(exc):
                self._error("source_unavailable", str(exc))
            return f"the frame source is unavailable: {exc}"
        except FrameError as exc:
            self.window.frame_skipped(exc.kind)
            return f"frame skipped ({exc.kind}): {exc}"
        except SourceEnded as exc:  # a state, reported once: the agent stays up for commands and telemetry
            self.source_ended = True
            log.info("%s", exc)
            self._error("source_ended", str(exc))
            return str(exc)
        self.health.source_ok(self.source.name)
        return self.infer_frame(frame)

    def infer_frame(self, frame: np.typing.NDArray[np.uint8]) -> Inference | str:
        loaded = self.active_model()
        if loaded is None:
            return "no active bundle"
        try:
            result = loaded.predict(frame)
        except AgentError as exc:
            self.window.error(type(exc).__name__)
            return f"inference failed: {exc}"
        if not all(np.all(np.isfinite(np.asarray(o, np.float32))) for o in result.outputs):
            self.window.non_finite += 1
        self.window.inferred(frame, result.prediction, result.total_ms, result.model_ms, result.seen)
        for run in self.shadows.values():  # candidates in SHADOW see the same frame (not timed)
            run.compare(frame, result.prediction)
        return result

    def close_window(self) -> None:
        self.spool.append(lambda seq: self.window.close(self.config.device_id, seq, self.spool.epoch, self.bundle_ref(),
                                                        self.spool.size, self.spool.evicted).to_json())
        for job_id in list(self.shadows):  # a shadow candidate whose job was cancelled: close it
            record = self.deployer.jobs.get(job_id)
            if record is None or record.state is not JobState.SHADOW:
                self.shadows.pop(job_id).close()
        active = self.deployer.slots.pointer().active_sha256
        if active is not None and self.window.inferences >= self.deployer.limits.min_inferences:
            self.live_p95[active] = self.window.p95()  # what each bundle did here: the next one is judged on it
            for old in list(self.live_p95)[:-8]:  # the 8 newest bundles
                del self.live_p95[old]
        for record in self.deployer.jobs.unfinished():
            if record.state is JobState.PROBATION:
                baseline = self.live_p95.get(record.predecessor_sha256 or "")
                self.deployer.probation(record, self.window.inferences, sum(self.window.errors.values()),
                                        self.window.non_finite, self.window.p95(), baseline_p95_ms=baseline)
            elif record.state is JobState.SHADOW:
                self.shadow_step(record)
        self.window = Window()
        self.window_started = time.monotonic()

    def shadow_step(self, record: JobRecord) -> None:
        """Start the shadow run of a job in SHADOW, or, once its time is up, report it and activate."""
        run = self.shadows.get(record.job_id)
        if run is None:
            try:
                run = ShadowRun.open(record.job_id, self.deployer.candidate_path(record), self.trust,
                                     self.config.limits.threads, self.deployer.engine_cache)
            except (AgentError, ContractError) as exc:
                self.deployer.cancel_shadow(record, f"the candidate cannot run beside the active model: {exc}")
                return
            self.shadows[record.job_id] = run
        if not self.deployer.shadow_due(record):
            return
        self.shadows.pop(record.job_id).close()
        self.event_seq += 1
        event = ShadowEvent(device_id=self.config.device_id, seq=self.event_seq, job_id=record.job_id,
                            frames=run.frames, agreement=run.agreement)
        self.send(topics.events(self.config.device_id), event.to_json())
        self.deployer.end_shadow(record)

    def hold_activation(self, reason: str, max_s: float | None = None) -> float:
        """The firmware is busy: candidates wait in READY until released (or the hold's limit, returned)."""
        until = self.activation.hold(reason, max_s)
        self.deployer.release_ready()  # a candidate already in READY reports the hold as its reason
        return until

    def release_activation(self) -> None:
        self.activation.release()
        self.deployer.release_ready()

    def publish_pending(self) -> None:
        self.uplink.pump()

    def request_missing(self, quiet_s: float = 5.0, stall_s: float = 30.0) -> None:
        """Report what each download lacks, once its chunks stopped arriving for ``quiet_s`` (``to_ask``)."""
        now = time.monotonic()
        for record in self.deployer.jobs.unfinished():
            quiet = now - self.last_chunk.get(record.job_id, -stall_s)
            if quiet < quiet_s:
                continue
            report = to_ask(self.deployer.missing_report(record.job_id, self.config.device_id), quiet, stall_s,
                            self.highest_chunk.get(record.job_id))
            if report is not None:
                self.transport.publish(topics.missing(self.config.device_id, report.sha256), report.to_json())

    # ---- the loop -----------------------------------------------------------------------
    def step(self, repair_every_s: float = 5.0) -> None:
        """One turn of the loop: a queued message if there is one, else whatever is due."""
        self.firmware.serve()  # the local API's requests (the socket thread only queues them)
        try:
            self.handle(self.transport.inbox.get(timeout=0.05))
            return
        except queue.Empty:
            pass
        now = time.monotonic()
        if now >= self.next_inference:
            self.next_inference = now + self.config.inference_interval_s
            self.firmware.scheduled()  # infers on an interval source, or for the firmware's next_frame
        if now - self.window_started >= self.config.telemetry_window_s:
            self.close_window()
        if now >= self.next_repair:
            self.next_repair = now + repair_every_s
            self.request_missing()
            self.deployer.release_ready()  # the window opened, the device went idle, a hold ran out
        self.publish_pending()

    def run(self, until: float | None = None, repair_every_s: float = 5.0,
            stop: threading.Event | None = None) -> None:
        self.deployer.resume()
        self.transport.start()
        self.firmware.start()
        try:
            while (until is None or time.monotonic() < until) and not (stop is not None and stop.is_set()):
                try:
                    self.step(repair_every_s)
                except (AgentError, ContractError, OSError) as exc:  # the loop never dies on one bad step
                    kind = f"agent_error.{type(exc).__name__}"
                    if self.budget.allowed(f"log.{kind}"):  # the traceback as rarely as the event
                        log.exception("agent step failed")
                    self._error(kind, f"{type(exc).__name__}: {exc}")
        finally:
            self.transport.publish(topics.state(self.config.device_id), offline(self.config.device_id).to_json(),
                                   retain=True)
            self.transport.stop()
            self.firmware.stop()
            self.spool.close()


