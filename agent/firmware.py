"""The agent's side of the local API: requests from the firmware, answered in the agent loop.

The socket thread (``agent/local_api.py``) only queues requests; ``serve()``, called by the loop
each step, answers them, so the loop stays the only thing that runs the model. Results of every
inference (the schedule's and the firmware's), inventory changes (``agent/inventory.py``), model
changes and job states are published to the clients subscribed to them.
"""

from __future__ import annotations

import base64
import binascii
import logging
import queue
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

from agent.errors import AgentError, FrameError, ImagePathRefused, LocalApiError
from agent.frames import decode
from agent.image_files import read_image_file
from agent.inventory import Change, InventoryTracker
from agent.local_api import Client, LocalServer
from agent.model import Inference
from contract.base import Message
from contract.errors import ContractError
from contract.jobs import JobState
from contract.local import (
    MAX_IMAGE_BYTES,
    ErrorAnswer,
    HoldActivationRequest,
    InferRequest,
    InferResult,
    InventoryEvent,
    Item,
    JobStateEvent,
    ModelEvent,
    OkAnswer,
    ReleaseActivationRequest,
    Request,
    StatusAnswer,
    StatusRequest,
    SubscribeRequest,
    Topic,
)
from contract.local import Change as ChangeMessage
from transport.client import Wake

if TYPE_CHECKING:
    from agent.loop import Agent

log = logging.getLogger("coldchain.agent.firmware")
MAIN_SOURCE = "main"  # the agent's own frame source, as the inventory and results name it
IMAGE_SOURCE = "image"  # images the firmware sends, unless the request names a source
REQUESTS_PER_STEP = 32
Waiting = tuple[Client, str]


class FirmwareLink:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.server: LocalServer | None = None
        self.inventory = InventoryTracker(agent.config.inventory.enter, agent.config.inventory.exit)
        self.next_frame: list[Waiting] = []  # infer next_frame requests: answered by the next frame read
        self.active_sha: str | None = agent.deployer.slots.pointer().active_sha256
        self.last_error: str | None = None
        self.reported: dict[str, int] = {}  # the server's refusals by code when last reported to the cloud

    # ---- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        api = self.agent.config.local_api
        if api.enabled:
            inbox = self.agent.transport.inbox  # a request wakes the loop from its wait for MQTT traffic
            try:
                server = LocalServer(self.agent.config.socket_path, api.mode, api.client_queue, api.max_clients,
                                     on_request=lambda: inbox.put(Wake()))
                server.start()
            except LocalApiError as exc:  # the agent still runs for the cloud: say why the firmware cannot reach it
                log.error("%s", exc)
                self.agent.report_error("local_api_unavailable", str(exc))
                return
            self.server = server

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    # ---- called by the loop --------------------------------------------------------------------
    def scheduled(self) -> None:
        """The schedule's turn: infer on the next frame if the source runs on an interval, or if the
        firmware asked for the next frame."""
        if self.agent.config.source.trigger == "interval" or self.next_frame:
            waiting, self.next_frame = self.next_frame, []
            try:
                outcome: Inference | str = self.agent.infer_once()
            except Exception as exc:  # a bug met by this frame: its waiters hear why, the next tick runs
                outcome = self.agent.guard.caught("an inference", exc)
            self._answer(outcome, MAIN_SOURCE, waiting)
        else:  # ready for the door: the active bundle loaded (a first request paid 0.1-1.1 s), the source checked
            self.agent.active_model()
            self.check_source()

    def check_source(self) -> None:
        """On request no frame is read on the schedule's turn, but a camera that is missing (or comes
        back) is found then, on the source's backoff, and reported as when a frame is read (``Agent.check_source``)."""
        try:
            self.agent.check_source()
        except FrameError as exc:  # a source without backoff (tests, simulations): its next read says it
            log.debug("frame source check: %s", exc)

    def serve(self) -> None:
        """Answer the requests waiting (a bounded number per step), then report a model change."""
        if self.server is not None:
            for _ in range(REQUESTS_PER_STEP):
                try:
                    client, request = self.server.take()
                except queue.Empty:
                    break
                try:
                    self.handle(client, request)
                except Exception as exc:  # a bug met by this request (agent/guard.py): answered, the next served
                    reason = self.agent.guard.caught(f"a local API {request.type} request", exc)
                    self.reply(client, ErrorAnswer(id=request.id, code="internal_error", message=reason[:2048]))
            self.report_refusals()
        sha = self.agent.deployer.slots.pointer().active_sha256
        if sha != self.active_sha:
            previous, self.active_sha = self.active_sha, sha
            self.inventory.reset()  # another model's scores are not comparable with this one's
            self.publish("model", ModelEvent(active=self.agent.bundle_ref(), previous_sha256=previous))

    def report_refusals(self) -> None:
        """Errors the local API answered since the last report, as one error event (the agent's error
        budget holds back a flood; each event carries the running totals by code)."""
        totals = {} if self.server is None else self.server.refusals()
        if sum(totals.values()) == sum(self.reported.values()):
            return
        new = {code: n - self.reported.get(code, 0) for code, n in totals.items() if n > self.reported.get(code, 0)}
        self.reported = totals
        self.agent.report_error("local_api_refused", "the local API answered errors: "
                                + ", ".join(f"{code} {n}" for code, n in sorted(new.items()))
                                + " (totals since start: "
                                + ", ".join(f"{code} {n}" for code, n in sorted(totals.items())) + ")")

    def job(self, job_id: str, state: JobState, reason: str | None) -> None:
        self.publish("jobs", JobStateEvent(job_id=job_id, state=state, reason=reason and reason[:2048]))

    def error(self, code: str, message: str) -> None:
        self.last_error = f"{code}: {message}"[:2048]

    # ---- requests --------------------------------------------------------------------------------
    def handle(self, client: Client, request: Request) -> None:
        if isinstance(request, InferRequest):
            self.agent.activation.note_request()  # the appliance is in use: not idle (activation.when_idle_s)
            self.infer(client, request)
        elif isinstance(request, StatusRequest):
            self.reply(client, self.status(client, request.id))
        elif isinstance(request, SubscribeRequest):
            if self.server is not None:
                self.server.subscribe(client, frozenset(request.topics))
            self.reply(client, OkAnswer(id=request.id, detail=f"subscribed to {', '.join(sorted(request.topics))}"))
        elif isinstance(request, HoldActivationRequest):
            self.activation(client, request.id, "hold_activation", request.reason, request.max_s)
        elif isinstance(request, ReleaseActivationRequest):
            self.activation(client, request.id, "release_activation")

    def infer(self, client: Client, request: InferRequest) -> None:
        if request.mode == "next_frame":  # the schedule's next read answers it; clients gone wait no more
            server = self.server
            self.next_frame = [(c, i) for c, i in self.next_frame if server is not None and server.connected(c)]
            self.next_frame.append((client, request.id))
            if self.agent.config.source.trigger == "on_request":  # no schedule: read at the loop's next turn
                self.agent.next_inference = 0.0
        elif request.mode == "now":
            self._answer(self.agent.infer_once(), request.source or MAIN_SOURCE, [(client, request.id)])
        else:
            try:
                frame = self._image(request)
            except ImagePathRefused as exc:
                self.reply(client, ErrorAnswer(id=request.id, code="image_path_refused", field="image_path",
                                               message=str(exc)[:2048]))
                return
            except FrameError as exc:
                self.reply(client, ErrorAnswer(id=request.id, code=f"frame_{exc.kind}",
                                               field="image_path" if request.image_path else "image_b64",
                                               message=str(exc)))
                return
            self._answer(self.agent.infer_frame(frame), request.source or IMAGE_SOURCE, [(client, request.id)])

    def _image(self, request: InferRequest) -> npt.NDArray[np.uint8]:
        if request.image_path is not None:
            data = read_image_file(request.image_path, self.agent.config.local_api.image_dirs, MAX_IMAGE_BYTES)
        else:
            try:
                data = base64.b64decode(request.image_b64 or "", validate=True)
            except binascii.Error as exc:
                raise FrameError("corrupt", f"image_b64 is not valid base64: {exc}") from exc
        return decode(data, self.agent.config.limits.max_frame_pixels)

    def _answer(self, outcome: Inference | str, source: str, waiting: list[Waiting]) -> None:
        """Answer the requests that waited for this inference, publish its result and any inventory change."""
        if isinstance(outcome, str):
            for client, request_id in waiting:
                self.reply(client, ErrorAnswer(id=request_id, code="no_result", message=outcome[:2048]))
            return
        loaded = self.agent.active_model()
        labels = loaded.io.labels if loaded is not None else []
        prediction = outcome.prediction
        items = [Item(label=d.label, score=min(max(d.score, 0.0), 1.0), box=None if d.box is None else list(d.box))
                 for d in prediction.detections[:1000]]
        first_id = waiting[0][1] if waiting else None
        result = InferResult(id=first_id, source=source, bundle=None if loaded is None else loaded.ref, items=items,
                             inventory=prediction.inventory, model_ms=outcome.model_ms, total_ms=outcome.total_ms)
        for client, request_id in waiting:
            self.reply(client, result.model_copy(update={"id": request_id}))
        self.publish("results", result)
        changes = self.inventory.update(source, prediction, labels)
        if changes is not None:
            self.publish("inventory", InventoryEvent(id=first_id, source=source, added=_changes(changes.added),
                                                     removed=_changes(changes.removed)))

    def status(self, client: Client, request_id: str) -> StatusAnswer:
        state = self.agent.state()
        return StatusAnswer(id=request_id, device_id=state.device_id, connected=self.agent.connected,
                            active=state.active, slots=state.slots, job=state.job,
                            trigger=self.agent.config.source.trigger, last_error=self.last_error,
                            dropped=client.dropped, refused=self.server.refusals() if self.server else {})

    def activation(self, client: Client, request_id: str, what: str, *args: Any) -> None:
        """Hold or release activation (``Agent.hold_activation`` / ``release_activation``)."""
        try:
            detail = getattr(self.agent, what)(*args)
        except (AgentError, ContractError, ValueError) as exc:
            self.reply(client, ErrorAnswer(id=request_id, code=f"{what}_refused", message=str(exc)[:2048]))
            return
        if isinstance(detail, float):  # hold_activation: the Unix time at which the hold ends by itself
            ends = datetime.fromtimestamp(detail, timezone.utc).isoformat(timespec="seconds")
            detail = f"activation held until {ends} (or release_activation)"
        self.reply(client, OkAnswer(id=request_id, detail=None if detail is None else str(detail)[:2048]))

    # ---- out -------------------------------------------------------------------------------------
    def reply(self, client: Client, message: Message) -> None:
        """The answer to one of ``client``'s requests (never dropped)."""
        if self.server is not None:
            self.server.answer(client, message)

    def publish(self, topic: Topic, message: Message) -> None:
        if self.server is not None:
            self.server.publish(topic, message)


def _changes(changes: tuple[Change, ...]) -> list[ChangeMessage]:
    return [ChangeMessage(label=c.label, count=min(c.count, 1000), score=min(max(c.score, 0.0), 1.0),
                          total=min(c.total, 1000)) for c in changes[:1000]]
