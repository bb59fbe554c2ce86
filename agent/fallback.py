"""Falling back to a known-good bundle, on the slots alone: when the active bundle failed its
probation (marked bad) or can no longer be loaded (forgotten). ``agent/deploy.py`` decides when;
these say what was done, for the job's reason or the error event."""

from __future__ import annotations

from agent.slots import Pointer, SlotName, SlotStore
from contract.state import SlotStatus


def restored(pointer: Pointer, slot: SlotName) -> str:
    target = pointer.slots[slot].bundle
    return f"known-good bundle #{target.sequence if target else '?'} restored"


def restore(slots: SlotStore) -> str:
    """The active bundle failed here: mark it bad and go back to the known-good bundle in the
    other slot, or to no model at all when there is none (a first bundle)."""
    pointer = slots.pointer()
    good = pointer.previous
    if pointer.active is not None:
        slots.fall_back(pointer.active, SlotStatus.BAD, good)  # marked and replaced in one write
    elif good is not None:
        slots.activate(good)
    if good is None:
        return "there is no known-good bundle on this device, so no model is active"
    return restored(pointer, good)


def forget_unusable(slots: SlotStore, reason: str) -> str:
    """The active bundle no longer verifies or loads (damaged on disk): forget its slot and fall
    back to the known-good bundle in the other slot, if there is one. Returns what was done."""
    pointer = slots.pointer()
    if pointer.active is None:
        return f"no bundle is active ({reason})"
    seq = pointer.active_sequence
    good = pointer.previous
    slots.fall_back(pointer.active, SlotStatus.EMPTY, good)  # forgotten and replaced in one write
    if good is None:
        return f"the active bundle #{seq} is unusable ({reason}); no known-good bundle is left: no model is active"
    return (f"the active bundle #{seq} is unusable ({reason}); known-good bundle "
            f"#{slots.pointer().active_sequence} in slot {good} activated instead")
