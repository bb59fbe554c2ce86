"""The API's device writes (scope operate), the same audited operations as ``coldchain fleet tag``
and ``coldchain fleet config`` on the store (``cloud.operations``): tags and groups, and a
``set_config`` command queued for the running cloud to sign and send.

(No ``from __future__ import annotations`` here: FastAPI reads the annotations at runtime.)
"""

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field, StringConstraints

from cloud.api_routes import DeviceId, answered, scoped
from cloud.operations import Operations
from cloud.queries.models import DeviceView, View

Name = Annotated[str, StringConstraints(min_length=1, max_length=64)]  # checked as ids by the operation


class TagDevices(BaseModel):
    devices: Annotated[list[Name], Field(min_length=1, max_length=1000)]
    tags: Annotated[dict[Name, Annotated[str, StringConstraints(max_length=1024)] | None],
                    Field(max_length=64)] = {}  # a value sets the tag, null removes it
    add_groups: Annotated[list[Name], Field(max_length=64)] = []
    remove_groups: Annotated[list[Name], Field(max_length=64)] = []


class SetConfig(BaseModel):
    inference_interval_s: Annotated[float, Field(ge=0, le=3600)] | None = None
    telemetry_window_s: Annotated[float, Field(ge=1, le=24 * 3600)] | None = None


class ConfigQueued(View):
    device_id: str
    job_id: str  # the set_config command's job: its answer shows in the device's events


def device_routes(operations: Callable[[Request], Operations]) -> APIRouter:
    app = APIRouter()
    Operator = Annotated[Operations, Depends(operations)]

    @app.post("/devices/tags")
    def tag(body: TagDevices, operator: Operator) -> list[DeviceView]:
        """Set or remove tags and assign or unassign groups on devices (rollouts select by both)."""
        with answered():
            return operator.tag(body.devices, body.tags, body.add_groups, body.remove_groups)

    @app.post("/devices/{device_id}/config", status_code=202)
    def config(device_id: DeviceId, body: SetConfig, operator: Operator) -> ConfigQueued:
        """Queue a set_config command: the running cloud signs it and sends it until the device answers."""
        with answered():
            job = operator.set_config(device_id, body.inference_interval_s, body.telemetry_window_s)
        return ConfigQueued(device_id=device_id, job_id=job)

    return scoped(app, "operate")
