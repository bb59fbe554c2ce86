"""Read routes the dashboard shows too (scope ``read``): each wave's gates with the current wave's
evaluated now, a rollout's timeline, a device's telemetry as time series and the fleet's counts
per group, board and bundle. The dashboard reads the same ``Queries`` methods, so a page and
the API answer with the same numbers.

(No ``from __future__ import annotations`` here: FastAPI reads the annotations at runtime.)
"""

from typing import Annotated

from fastapi import APIRouter, Query

from cloud.api_routes import DeviceId, RolloutId, answered, scoped
from cloud.queries import Queries
from cloud.queries.device_series import SeriesView
from cloud.queries.live import RolloutGates, TimelineEntry
from cloud.queries.overview import FleetOverview

MAX_SERIES_HOURS = 24 * 31


def live_routes(queries: Queries) -> APIRouter:
    app = APIRouter()

    @app.get("/rollouts/{rollout_id}/gates")
    def gates(rollout_id: RolloutId) -> RolloutGates:
        with answered():
            return queries.gates(rollout_id)

    @app.get("/rollouts/{rollout_id}/timeline")
    def timeline(rollout_id: RolloutId) -> list[TimelineEntry]:
        with answered():
            return queries.timeline(rollout_id)

    @app.get("/devices/{device_id}/timeseries")
    def timeseries(device_id: DeviceId,
               hours: Annotated[float, Query(gt=0, le=MAX_SERIES_HOURS)] = 6.0) -> SeriesView:
        with answered():
            return queries.device_series(device_id, hours)

    @app.get("/fleet/overview")
    def overview() -> FleetOverview:
        return queries.overview()

    return scoped(app, "read")
