"""The agent: one thread that drains the transport's queue, runs inference on frames, closes
telemetry windows into the spool and publishes them (``uplink.py``) until the cloud confirms each.

Every decision is a plain method (``handle``, ``infer_once``, ``close_window``,
``publish_pending``), so it can be driven without a broker in tests. What the cloud sends is decided
in ``inbound.py``, the end of a telemetry window in ``windows.py``; ``active.py`` keeps the active
bundle loaded.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from agent import inbound, reported, runtimes, windows
from agent.activation import Activation
from agent.active import ActiveModel
from agent.commands import CommandLog
from agent.config import AgentConfig
from agent.deploy import Deployer
from agent.errors import AgentError, FrameError, SourceEnded
from agent.firmware import FirmwareLink
from agent.frames import FrameSource
from agent.gate import CommandGate
from agent.guard import Guard
from agent.health import ErrorBudget, Health, SourceUnavailable
from agent.model import Inference, LoadedBundle
from agent.probation import Baselines, ProbationLimits
from agent.shadow import ShadowRun
from agent.spool import Spool
from agent.telemetry import Window
from agent.trust import TrustKeeper
from agent.uplink import Uplink
from contract import topics
from contract.base import text
from contract.common import BundleRef
from contract.events import ErrorEvent, JobEvent
from contract.jobs import JobState
from contract.state import DeviceState, offline
from transport.client import Connected, ConnectFailed, Disconnected, Inbound, Received, Transport, Wake

if TYPE_CHECKING:
    import numpy as np
else:
    from agent.lazy import lazy

    np = lazy("numpy")

log = logging.getLogger("coldchain.agent")

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
        self.budget = ErrorBudget(ERROR_BURST, ERROR_EVERY_S)  # error events (and tracebacks) per code
        self.guard = Guard(self.report_error, self.budget.allowed)  # each unit of work isolated (agent/guard.py)
        self.deployer = Deployer(config.data_dir, self.trust, self.available, self._emit, config.limits.threads,
                                 clock=clock, board=config.board, activation=self.activation,
                                 internal=self.guard.caught,
                                 limits=ProbationLimits(min_inferences=config.probation.min_inferences,
                                                        min_latency_samples=config.probation.min_latency_samples,
                                                        max_s=config.probation.max_s))
        self.commands = CommandLog(config.data_dir)  # what each finished job, cancel and rollback came to
        self.gate = CommandGate(config.device_id, self.trust, self.commands, self.deployer.jobs, clock)
        self.spool = Spool(config.data_dir / "telemetry.db", config.limits.spool_max_windows,
                           max_age_s=config.limits.spool_max_age_s)
        self.uplink = Uplink(self.spool, transport, config.device_id, config.limits.telemetry_in_flight,
                             config.limits.telemetry_resend_s)
        self.window = Window()
        self.window_started = time.monotonic()
        self.next_inference = self.next_repair = time.monotonic()
        self.event_seq = 0
        self.connected = False
        self.malformed = 0
        self.outbox: list[tuple[str, bytes]] = []  # events produced while offline
        self.last_chunk: dict[str, float] = {}  # job id -> when its last chunk arrived
        self.highest_chunk: dict[str, int] = {}  # job id -> highest chunk index received
        self.shadows: dict[str, ShadowRun] = {}  # job id -> candidate running beside the active model
        self.source_ended = False  # a finite source gave every frame: no more inference, the rest goes on
        self.live_p95 = Baselines(config.probation.min_inferences)  # each bundle's live model p95 here
        self.firmware = FirmwareLink(self)  # the local API (docs/firmware.md); its socket opens in run()
        self.health = Health(config.data_dir, config.broker.url, config.device_id, clock)  # broker, source, spool
        self.models = ActiveModel(self.deployer, self.trust, config.limits.threads, share_models,
                                  lambda what: self.report_error("active_bundle_damaged", what))
        repaired = [("slots_recovered", self.deployer.recovered), ("spool_recovered", self.spool.recovered),
                    ("commands_recovered", self.commands.damaged),
                    ("trust_recovered", self.keeper.recovered),
                    *[("jobs_recovered", m) for m in self.deployer.jobs.damaged]]
        for code, message in repaired:  # the data directory was repaired at start: say what was done, once
            if message:
                log.warning("%s", message)
                self.report_error(code, message)

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

    def report_error(self, code: str, message: str, topic: str | None = None, job_id: str | None = None) -> None:
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
        event = ErrorEvent(device_id=self.config.device_id, seq=self.event_seq, code=code, message=text(message),
                           topic=None if topic is None else text(topic), job_id=job_id)  # a hostile topic too
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
        return reported.device_state(self)  # faults included: published when one starts or clears

    def publish_state(self) -> None:
        self.transport.publish(topics.state(self.config.device_id), self.state().to_json(), retain=True)

    # ---- inbound ----------------------------------------------------------------------
    def handle(self, item: Inbound) -> None:
        if isinstance(item, ConnectFailed):
            self.health.connect_failed(item.cause, item.retry_in_s)
            self.firmware.error("broker_unreachable", item.cause)  # the local API's status says why, too
        elif isinstance(item, Connected):
            self.connected = True
            if (away := self.health.connected()) is not None:  # the cloud hears how long and why it was away
                self.report_error("broker_unreachable", away)
            self.transport.subscribe(inbound.subscriptions(self))
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
        inbound.on_message(self, topic, payload)

    # ---- inference and telemetry -------------------------------------------------------
    def active_model(self) -> LoadedBundle | None:
        """The active bundle, loaded and verified once per activation (``agent/active.py``)."""
        return self.models.get()

    def infer_once(self) -> Inference | str:
        """A frame of the source through the active model: its result, or why there is none."""
        if self.source is None or self.source_ended:
            return "no frame source" if self.source is None else "the frame source has ended"
        try:
            if self.active_model() is None:  # no frame is read (nor decoded) without a model: its health only
                return self.check_source() or "no active bundle"
            frame = self.source.read()
        except SourceUnavailable as exc:
            return self._source_fault(exc)
        except FrameError as exc:
            self.window.frame_skipped(exc.kind)
            return f"frame skipped ({exc.kind}): {exc}"
        except SourceEnded as exc:  # a state, reported once: the agent stays up for commands and telemetry
            self.source_ended = True
            log.info("%s", exc)
            self.report_error("source_ended", str(exc))
            return str(exc)
        if self.health.source_ok(self.source.name):
            self.publish_state()
        return self.infer_frame(frame)

    def check_source(self) -> str | None:
        """Probe the source without reading a frame (no model yet, or frames only on request): why it is
        unavailable, or None; a fault that starts, changes or clears goes on the retained state. A source
        without backoff (tests, simulations) raises FrameError here, as its next read would."""
        if self.source is None or self.source_ended:
            return None
        try:
            if self.source.probe() and self.health.source_ok(self.source.name):
                self.publish_state()  # the fault cleared
        except SourceUnavailable as exc:
            return self._source_fault(exc)
        return None

    def _source_fault(self, exc: SourceUnavailable) -> str:
        """Reported when it starts or its cause changes (retried with backoff); the state carries it until it clears."""
        if self.health.source_fault(exc):
            self.report_error("source_unavailable", str(exc))
            self.publish_state()
        return f"the frame source is unavailable: {exc}"

    def infer_frame(self, frame: np.typing.NDArray[np.uint8]) -> Inference | str:
        loaded = self.active_model()
        if loaded is None:
            return "no active bundle"
        try:
            result = loaded.predict(frame, statistics=True)  # taken while the image is in cache
        except AgentError as exc:
            self.window.error(type(exc).__name__)
            return f"inference failed: {exc}"
        if not result.finite():
            self.window.non_finite += 1
        self.window.inferred(frame, result.prediction, result.total_ms, result.model_ms, result.seen,
                             result.input_values)
        for run in self.shadows.values():  # candidates in SHADOW see the same frame (not timed)
            run.compare(frame, result.prediction)
        return result

    def close_window(self) -> None:
        windows.close_window(self)

    def hold_activation(self, reason: str, max_s: float | None = None) -> float:
        """The firmware is busy: candidates wait in READY until released (or the hold's limit, returned)."""
        until = self.activation.hold(reason, max_s)
        self.deployer.release_ready()  # a candidate already in READY reports the hold as its reason
        return until

    def release_activation(self) -> None:
        if not self.activation.release():
            raise AgentError("no activation hold to release (never held, already released, or past its limit)")
        self.deployer.release_ready()

    def publish_pending(self) -> None:
        self.uplink.pump()

    def request_missing(self, quiet_s: float = 5.0, stall_s: float = 30.0) -> None:
        inbound.request_missing(self, quiet_s, stall_s)

    # ---- the loop -----------------------------------------------------------------------
    def step(self, repair_every_s: float = 5.0) -> None:
        """One turn of the loop: a queued message if there is one, else whatever is due. Each unit of
        work is isolated (``agent/guard.py``): what one raises is reported and the others still run."""
        unit = self.guard.unit
        with unit("the local API"):
            self.firmware.serve()  # the local API's requests (the socket thread only queues them)
        try:
            item = self.transport.inbox.get(timeout=0.05)
        except queue.Empty:
            item = None
        if item is not None and not isinstance(item, Wake):
            with unit("an inbound message"):  # auto-acknowledged QoS 1 (no manual_ack): never redelivered
                self.handle(item)
            return
        if item is not None:
            with unit("the local API"):
                self.firmware.serve()  # woken by a request: answer it, then what it made due (a next_frame read)
        now = time.monotonic()
        if now >= self.next_inference:
            self.next_inference = now + self.config.inference_interval_s
            with unit("an inference"):
                self.firmware.scheduled()  # infers on an interval source, or for the firmware's next_frame
        if now - self.window_started >= self.config.telemetry_window_s:
            with unit("a telemetry window"):
                self.close_window()
        if now >= self.next_repair:
            self.next_repair = now + repair_every_s
            with unit("a download's repair"):
                self.request_missing()
            with unit("a deploy step"):
                self.deployer.release_ready()  # the window opened, the device went idle, a hold ran out
        with unit("the telemetry uplink"):
            self.publish_pending()

    def run(self, until: float | None = None, repair_every_s: float = 5.0,
            stop: threading.Event | None = None) -> None:
        self.deployer.resume()
        self.transport.start()
        self.firmware.start()
        try:
            while (until is None or time.monotonic() < until) and not (stop is not None and stop.is_set()):
                with self.guard.unit("a step"):  # the loop never dies on one bad step
                    self.step(repair_every_s)
        finally:
            self.transport.publish(topics.state(self.config.device_id), offline(self.config.device_id).to_json(),
                                   retain=True)
            self.transport.stop()
            self.firmware.stop()
            self.spool.close()


