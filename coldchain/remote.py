"""The cloud's HTTP API from the CLI (httpx): :class:`RemoteQueries` has the methods of
``cloud.queries.Queries`` that the commands call (:class:`Reads`), each over its route, and returns
the very pydantic views the query layer returns (the API's JSON is those views);
:class:`RemoteOperations` has the rollout and device writes of ``cloud.operations.Operations`` (:class:`Writes`);
:meth:`Api.upload` streams a bundle to ``POST /bundles``. Every failure becomes a
``coldchain.errors.RemoteError`` whose message says what to do (a wrong URL, a dead port, a refused
token or scope), never an httpx traceback."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

import httpx
from pydantic import TypeAdapter, ValidationError

from cloud.api_devices import ConfigQueued
from cloud.operations import Action
from cloud.plan import RolloutPlan
from cloud.queries.models import (
    AlertView,
    AuditView,
    BundleView,
    DeadLetterView,
    DeviceDetail,
    DeviceFilter,
    DeviceView,
    MonitorView,
    Page,
    Paging,
    RollbackStepView,
    RolloutDetail,
    RolloutSummary,
    Scope,
)
from cloud.tokens import WhoAmI
from coldchain import __version__
from coldchain.errors import AccessError, RemoteError, UnreachableError

T = TypeVar("T")
TIMEOUT = httpx.Timeout(30.0, connect=5.0)
UPLOAD_TIMEOUT = httpx.Timeout(600.0, connect=5.0)  # the cloud verifies every file before it answers
CHUNK = 256 * 1024


class Reads(Protocol):
    """What the commands read: ``cloud.queries.Queries`` or :class:`RemoteQueries`."""

    def devices(self, where: DeviceFilter | None = None) -> Page[DeviceView]: ...
    def device(self, device_id: str) -> DeviceDetail: ...
    def bundles(self, paging: Paging | None = None) -> Page[BundleView]: ...
    def rollouts(self, paging: Paging | None = None, status: str | None = None) -> Page[RolloutSummary]: ...
    def rollout(self, rollout_id: str) -> RolloutDetail: ...
    def rollback_plan(self, rollout_id: str) -> list[RollbackStepView]: ...
    def telemetry(self, by: Scope = "group", minutes: float = 60.0) -> list[MonitorView]: ...
    def alerts(self, paging: Paging | None = None, kind: str | None = None) -> Page[AlertView]: ...
    def dead_letters(self, paging: Paging | None = None) -> Page[DeadLetterView]: ...
    def audit(self, paging: Paging | None = None, action: str | None = None) -> Page[AuditView]: ...


class Writes(Protocol):
    """The rollout and device writes: ``cloud.operations.Operations`` or :class:`RemoteOperations`."""

    def start_rollout(self, bundle: str, plan: RolloutPlan, rollout_id: str | None = None,
                      supersede: bool = False) -> str: ...
    def rollout(self, action: Action, rollout_id: str, reason: str | None = None) -> None: ...
    def tag(self, device_ids: Sequence[str], tags: dict[str, str | None], add_groups: Sequence[str] = (),
            remove_groups: Sequence[str] = ()) -> list[DeviceView]: ...
    def set_config(self, device_id: str, inference_interval_s: float | None,
                   telemetry_window_s: float | None) -> str: ...


def _segment(value: str) -> str:
    """An id as one path segment: quoted, and never ``/``, ``.`` or ``..`` (which would name another route)."""
    if "/" in value or value in (".", ".."):
        raise RemoteError(f"{value[:80]!r} is not an id (ids have no '/')")
    return quote(value, safe="")


class Api:
    """One connection pool to the cloud at ``url`` with ``token``; a context manager."""

    def __init__(self, url: str, token: str, transport: httpx.BaseTransport | None = None) -> None:
        self.url = url
        self.client = httpx.Client(base_url=url, timeout=TIMEOUT, transport=transport, headers={
            "Authorization": f"Bearer {token}", "User-Agent": f"coldchain-cli/{__version__}"})

    def __enter__(self) -> Api:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self.client.close()

    def call(self, method: str, path: str, answer: type[T] | Any, **options: Any) -> T:
        """``method path`` parsed into ``answer`` (a view, or e.g. ``list[MonitorView]``)."""
        response = self._send(method, path, **options)
        try:
            return TypeAdapter[T](answer).validate_json(response.content)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise RemoteError(f"{self.url} answered {method} {path} with data this CLI does not understand "
                              f"({'.'.join(map(str, first['loc']))}: {first['msg']}): is the cloud another "
                              "version of coldchain, or not a coldchain cloud?") from exc

    def text(self, path: str, **options: Any) -> str:
        return self._send("GET", path, **options).text

    def _send(self, method: str, path: str, **options: Any) -> httpx.Response:
        try:
            response = self.client.request(method, path, **options)
        except httpx.TimeoutException as exc:
            raise UnreachableError(f"the cloud at {self.url} did not answer {method} {path} in time "
                                   f"({exc.__class__.__name__})") from exc
        except httpx.TransportError as exc:
            raise UnreachableError(f"cannot reach the cloud at {self.url} ({exc or exc.__class__.__name__}): is "
                                   "`coldchain cloud serve --port` running there, and is the URL right? "
                                   "(`coldchain login URL` changes it)") from exc
        if response.is_success:
            return response
        raise self._refusal(method, path, response)

    def _refusal(self, method: str, path: str, response: httpx.Response) -> RemoteError:
        status = response.status_code
        try:
            body = response.json()
            detail = body.get("message") or body["detail"]  # a 400/422 names its parameters in "message"
        except (ValueError, KeyError, AttributeError, TypeError):
            return RemoteError(f"{self.url} answered {method} {path} with {status} {response.reason_phrase}, "
                               "not like the coldchain cloud API: is the URL right?")
        detail = str(detail)[:500]
        if status == 401:
            return AccessError(f"the cloud at {self.url} refused the token (401): it is unknown or revoked; "
                               f"`coldchain login {self.url}` with a valid one (`coldchain token create`)")
        if status == 403:
            return AccessError(f"the cloud refused {method} {path} (403): {detail}")
        if status == 404 and detail == "Not Found":  # FastAPI's answer for a path it has no route for
            return RemoteError(f"{self.url} has no route {method} {path}: is that the cloud API's root URL "
                               "(what `coldchain cloud serve` printed)?")
        if status >= 500:
            return RemoteError(f"the cloud at {self.url} failed on {method} {path} ({status}): {detail}")
        return RemoteError(detail)

    def upload(self, tarball: Path, progress: Callable[[int], None] = lambda sent: None) -> BundleView:
        """Stream ``tarball`` to ``POST /bundles`` (``progress`` is told each piece's size); the cloud
        verifies it against its own trusted keys before it answers."""
        try:
            size = tarball.stat().st_size
        except OSError as exc:
            raise RemoteError(f"cannot read {tarball}: {exc.strerror}") from exc

        def pieces() -> Iterator[bytes]:
            with tarball.open("rb") as data:
                while piece := data.read(CHUNK):
                    yield piece
                    progress(len(piece))

        return self.call("POST", "/bundles", BundleView, content=pieces(), timeout=UPLOAD_TIMEOUT,
                         headers={"Content-Type": "application/gzip", "Content-Length": str(size)})


class RemoteQueries:
    """``cloud.queries.Queries`` over the API: the same methods, defaults and answers."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def devices(self, where: DeviceFilter | None = None) -> Page[DeviceView]:
        return self.api.call("GET", "/devices", Page[DeviceView],
                             params=(where or DeviceFilter()).model_dump(exclude_none=True))

    def device(self, device_id: str) -> DeviceDetail:
        return self.api.call("GET", f"/devices/{_segment(device_id)}", DeviceDetail)

    def bundles(self, paging: Paging | None = None) -> Page[BundleView]:
        return self.api.call("GET", "/bundles", Page[BundleView], params=(paging or Paging()).model_dump())

    def rollouts(self, paging: Paging | None = None, status: str | None = None) -> Page[RolloutSummary]:
        params = (paging or Paging(limit=20)).model_dump() | ({"status": status} if status else {})
        return self.api.call("GET", "/rollouts", Page[RolloutSummary], params=params)

    def rollout(self, rollout_id: str) -> RolloutDetail:
        return self.api.call("GET", f"/rollouts/{_segment(rollout_id)}", RolloutDetail)

    def rollback_plan(self, rollout_id: str) -> list[RollbackStepView]:
        return self.api.call("GET", f"/rollouts/{_segment(rollout_id)}/rollback-plan", list[RollbackStepView])

    def telemetry(self, by: Scope = "group", minutes: float = 60.0) -> list[MonitorView]:
        return self.api.call("GET", "/telemetry/summary", list[MonitorView], params={"by": by, "minutes": minutes})

    def alerts(self, paging: Paging | None = None, kind: str | None = None) -> Page[AlertView]:
        params = (paging or Paging(limit=20)).model_dump() | ({"kind": kind} if kind else {})
        return self.api.call("GET", "/alerts", Page[AlertView], params=params)

    def dead_letters(self, paging: Paging | None = None) -> Page[DeadLetterView]:
        return self.api.call("GET", "/dead-letters", Page[DeadLetterView],
                             params=(paging or Paging(limit=20)).model_dump())

    def audit(self, paging: Paging | None = None, action: str | None = None) -> Page[AuditView]:
        params = (paging or Paging(limit=50)).model_dump() | ({"action": action} if action else {})
        return self.api.call("GET", "/audit", Page[AuditView], params=params)

    def whoami(self) -> WhoAmI:
        """``GET /whoami``: the token's name, scope, creation and last use."""
        return self.api.call("GET", "/whoami", WhoAmI)

    def export(self, by: Scope, minutes: float, raw_ids: bool) -> str:
        """``GET /telemetry/export``: the cloud's CSV (keyed pseudonyms unless ``raw_ids`` and an admin token)."""
        return self.api.text("/telemetry/export", params={"by": by, "minutes": minutes,
                                                          "ids": "raw" if raw_ids else "pseudonyms"})


class RemoteOperations:
    """The rollout and device writes of ``cloud.operations.Operations`` over the API (an ``operate`` token);
    the cloud audits them under the token's name."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def start_rollout(self, bundle: str, plan: RolloutPlan, rollout_id: str | None = None,
                      supersede: bool = False) -> str:
        body = {"bundle": bundle, "plan": plan.model_dump(mode="json"), "rollout_id": rollout_id,
                "supersede": supersede}
        return self.api.call("POST", "/rollouts", RolloutDetail, json=body).id

    def rollout(self, action: Action, rollout_id: str, reason: str | None = None) -> None:
        self.api.call("POST", f"/rollouts/{_segment(rollout_id)}/{action}", RolloutDetail,
                      json={"reason": reason} if reason else None)

    def tag(self, device_ids: Sequence[str], tags: dict[str, str | None], add_groups: Sequence[str] = (),
            remove_groups: Sequence[str] = ()) -> list[DeviceView]:
        body = {"devices": list(device_ids), "tags": tags, "add_groups": list(add_groups),
                "remove_groups": list(remove_groups)}
        return self.api.call("POST", "/devices/tags", list[DeviceView], json=body)

    def set_config(self, device_id: str, inference_interval_s: float | None,
                   telemetry_window_s: float | None) -> str:
        body = {"inference_interval_s": inference_interval_s, "telemetry_window_s": telemetry_window_s}
        return self.api.call("POST", f"/devices/{_segment(device_id)}/config", ConfigQueued, json=body).job_id
