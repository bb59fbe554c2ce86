"""Back to a safe state by itself: at start, the slot pointer must parse and every slot must hold
what the pointer says it holds. What does not is set aside and rebuilt from what verifies; the
caller reports the one line this returns. Nobody can reinstall a fridge's data directory by hand."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

from agent.errors import SlotError
from agent.slots import POINTER, SLOTS, Pointer, SlotName, SlotStore
from contract.bundle import manifest_sha256, verify_dir
from contract.common import BundleRef
from contract.errors import ContractError
from contract.signing import TrustStore
from contract.state import Slot, SlotStatus

log = logging.getLogger(__name__)


def quarantine(path: Path) -> Path:
    """Move a damaged file aside (kept for a post-mortem, never read again)."""
    target = path.with_name(f"{path.name}.damaged-{int(time.time())}")
    path.replace(target)
    return target


def _content(store: SlotStore, slot: SlotName) -> str | None:
    """The manifest sha the slot's content really has (None: no readable manifest)."""
    try:
        return manifest_sha256(store.path(slot))
    except OSError:
        return None


def _verified(store: SlotStore, slot: SlotName, trust: TrustStore) -> tuple[BundleRef, str] | None:
    """The slot's bundle ref and model stream, if its content verifies."""
    try:
        manifest = verify_dir(store.path(slot), trust)
    except (ContractError, OSError):
        return None
    return BundleRef(model_name=manifest.model.name, model_version=manifest.model.version,
                     target=manifest.target.name, sequence=manifest.sequence,
                     sha256=manifest_sha256(store.path(slot))), manifest.stream_name


def _rebuild(store: SlotStore, trust: TrustStore) -> Pointer:
    """A pointer from the slots' content alone: every bundle that verifies is taken as known-good
    (it was installed, self-tested and activated here), the newest of them active."""
    slots = {s: Slot(status=SlotStatus.EMPTY) for s in SLOTS}
    streams: dict[SlotName, str] = {}
    floors: dict[str, int] = {}  # the lost pointer's history is gone: the floors start from the slots
    for slot in SLOTS:
        found = _verified(store, slot, trust)
        if found is not None:
            slots[slot], streams[slot] = Slot(status=SlotStatus.GOOD, bundle=found[0]), found[1]
            floors[found[1]] = max(floors.get(found[1], 0), found[0].sequence)
    present = [s for s in SLOTS if slots[s].bundle is not None]
    active = max(present, key=lambda s: slots[s].bundle.sequence, default=None)  # type: ignore[union-attr]
    return Pointer(active, slots, tuple(slots[s].bundle.sha256 for s in present), (),  # type: ignore[union-attr]
                   floors, streams)


def check_slots(store: SlotStore, trust: TrustStore) -> str | None:
    """Make the pointer tell the truth; return what was repaired (None when nothing was)."""
    try:
        pointer = store.reload()
    except SlotError as exc:
        moved = quarantine(store.root / POINTER)
        rebuilt = store.write(_rebuild(store, trust))
        log.error("%s", exc)
        return (f"the slot pointer was unreadable (moved to {moved.name}); rebuilt from the slots' content: "
                f"active {rebuilt.active or 'none'}"
                + (f" (bundle #{rebuilt.active_sequence})" if rebuilt.active_sequence is not None else ""))
    repaired = []
    for slot in SLOTS:
        record = pointer.slots[slot]
        if record.status is SlotStatus.INSTALLING or record.bundle is None:
            continue  # an interrupted install: nobody points at it, the next install rewrites it
        if _content(store, slot) != record.bundle.sha256:
            repaired.append(f"slot {slot} did not hold bundle #{record.bundle.sequence} any more: forgotten")
            pointer = replace(pointer, active=None if pointer.active == slot else pointer.active,
                              slots={**pointer.slots, slot: Slot(status=SlotStatus.EMPTY)})
    if not repaired:
        return None
    if pointer.active is None and pointer.previous is not None:
        pointer = replace(pointer, active=pointer.previous)
        repaired.append(f"known-good bundle #{pointer.active_sequence} in slot {pointer.active} activated")
    store.write(pointer)
    return "; ".join(repaired)
