"""What ingestion keeps and how it names what it refuses: a device's inventory as its groups
allow (``telemetry.inventory``), and a dead letter's reason as a short class for metrics."""

from __future__ import annotations

import re

from sqlalchemy.orm import Session

from cloud.config import Telemetry as TelemetrySettings
from cloud.store import Device
from contract.base import MAX_INT
from contract.telemetry import Telemetry

_EXCEPTION = re.compile(r"^([A-Z][A-Za-z0-9]{0,46}):")


def reason_kind(reason: str) -> str:
    """A dead letter's reason as a short, bounded class (a metric label): the exception's name for
    what the contract refused, ``store_error``, ``attempts`` (handling never finished), ``mismatch``."""
    if reason.startswith("failed ") and " times" in reason[:24]:
        return "attempts"
    if " while storing" in reason[:80]:
        return "store_error"
    if reason.startswith("missing-chunk report names"):
        return "mismatch"
    match = _EXCEPTION.match(reason)
    return match.group(1) if match else "other"


def kept_inventory(session: Session, window: Telemetry, settings: TelemetrySettings | None) -> Telemetry:
    """The window with its inventory as the device's groups allow: ``labels`` as sent, ``counts``
    only the number of items (``{"(all)": n}``), ``off`` nothing. A device in several groups takes
    the strictest; one the store does not know yet, the default."""
    if settings is None or not window.inventory or (settings.inventory == "labels" and not settings.groups):
        return window
    device = session.get(Device, window.device_id)
    policy = settings.inventory_for(device.all_groups() if device is not None else [])
    if policy == "labels":
        return window
    kept = {} if policy == "off" else {"(all)": min(sum(window.inventory.values()), MAX_INT)}
    return window.model_copy(update={"inventory": kept})
