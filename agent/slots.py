"""A/B slots whose persisted pointer is the single source of truth, so that neither a power cut nor
a rollback can activate a bundle other than the one the pointer names.

Layout under ``<data_dir>/slots``::

    a/            one installed bundle (directory)
    b/            the other
    ACTIVE        JSON: which slot is active, and for *each* slot what it holds (bundle ref) and its
                  status; the bundles that passed probation here (known-good) and that failed (bad);
                  per model stream, the highest sequence this device has activated (anti-rollback)

Slot statuses (``contract.state.SlotStatus``): ``empty``, ``installing`` (being overwritten: its
content is nobody's), ``candidate`` (installed and verified, not yet proven), ``good`` (passed
probation on this device), ``bad`` (failed self-test or probation, or was rolled back).

- A slot's record is rewritten *before* its content is touched: the pointer never names content
  that is gone (the slot is ``installing`` while it is being overwritten).
- Rollback means back to a known-good bundle that is still in a slot, never "swap slots"; a bad
  bundle is never re-activated by a rollback; with no known-good bundle the store refuses.
- The pointer is replaced by writing a temporary file, fsyncing it, renaming it over ``ACTIVE``
  and fsyncing the directory: after a crash at any instant it is the old or the new pointer.
- It is read from disk once (or after ``reload()``); this process is its only writer.
- Anti-rollback is per model stream (``Pointer.refusal``): a bundle is refused when its sequence is
  below the highest this device activated in its stream (the *floor*, raised by every pointer write
  that makes a bundle active), or not above the active bundle's of the same stream. Another stream
  may be deployed whatever its sequence; operator-signed rollbacks activate a known-good slot and
  never lower a floor.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from agent.errors import SlotError
from agent.faults import fault
from contract.base import MAX_DEPTH, nesting
from contract.bundle import RESERVE_BYTES, free_bytes
from contract.common import BundleRef
from contract.manifest import MANIFEST_FILE, load_manifest
from contract.state import Slot, SlotStatus

SlotName = Literal["a", "b"]
SLOTS: tuple[SlotName, SlotName] = ("a", "b")
POINTER = "ACTIVE"
HISTORY = 32  # known-good and bad shas remembered
STREAMS = 64  # model streams whose anti-rollback floor is remembered (the least recently activated go first)


@dataclass(frozen=True)
class Pointer:
    active: SlotName | None = None
    slots: dict[SlotName, Slot] = field(default_factory=lambda: {s: Slot(status=SlotStatus.EMPTY) for s in SLOTS})
    good: tuple[str, ...] = ()  # manifest shas that passed probation here, oldest first
    bad: tuple[str, ...] = ()  # manifest shas that failed here, oldest first
    floors: dict[str, int] = field(default_factory=dict)  # stream -> highest sequence activated here
    # each slot's model stream (agent-private: the wire's BundleRef has none); absent: the model's name
    streams: dict[SlotName, str] = field(default_factory=dict)

    def bundle(self, slot: SlotName | None) -> BundleRef | None:
        return None if slot is None else self.slots[slot].bundle

    @property
    def active_bundle(self) -> BundleRef | None:
        return self.bundle(self.active)

    @property
    def active_sha256(self) -> str | None:
        ref = self.active_bundle
        return None if ref is None else ref.sha256

    @property
    def active_sequence(self) -> int | None:
        ref = self.active_bundle
        return None if ref is None else ref.sequence

    @property
    def previous(self) -> SlotName | None:
        """The slot a rollback without a target goes to: the other one, if it holds a known-good bundle."""
        other = other_slot(self.active) if self.active is not None else None
        candidates = [other] if other is not None else list(SLOTS)
        return next((s for s in candidates if self.slots[s].status is SlotStatus.GOOD), None)

    @property
    def previous_bundle(self) -> BundleRef | None:
        return self.bundle(self.previous)

    def stream(self, slot: SlotName | None) -> str | None:
        """The model stream of the bundle in ``slot`` (None: no bundle)."""
        ref = self.bundle(slot)
        return None if ref is None or slot is None else self.streams.get(slot, ref.model_name)

    def refusal(self, stream: str, sequence: int) -> str | None:
        """Why a bundle of ``stream`` with ``sequence`` must not be installed (anti-rollback), or None."""
        active = self.active_bundle
        rollback = "refused (anti-rollback); an older bundle needs an operator-signed rollback"
        if active is not None and self.stream(self.active) == stream and sequence <= active.sequence:
            return (f"stream {stream!r}: bundle sequence {sequence} is not newer than the active #{active.sequence} "
                    f"of that stream: {rollback}")
        floor = self.floors.get(stream)
        if floor is not None and sequence < floor:
            return (f"stream {stream!r}: bundle sequence {sequence} is older than #{floor}, the newest of that "
                    f"stream this device has run: {rollback}")
        return None

    def with_floor(self) -> Pointer:
        """This pointer with the active bundle's sequence counted in its stream's floor."""
        ref, stream = self.active_bundle, self.stream(self.active)
        if ref is None or stream is None:
            return self
        floors = {k: v for k, v in self.floors.items() if k != stream}
        floors[stream] = max(ref.sequence, self.floors.get(stream, ref.sequence))  # the most recent last
        return replace(self, floors=dict(list(floors.items())[-STREAMS:]))

    def holding(self, sha256: str) -> SlotName | None:
        return next((s for s in SLOTS if (b := self.slots[s].bundle) is not None and b.sha256 == sha256), None)

    def to_json(self) -> bytes:
        # floors as pairs: their order (least recently activated first) is what bounds them
        return json.dumps({"version": 3, "active": self.active,
                           "slots": {s: self.slots[s].model_dump(mode="json") for s in SLOTS},
                           "good": list(self.good), "bad": list(self.bad),
                           "floors": [[k, v] for k, v in self.floors.items()],
                           "streams": {s: v for s, v in self.streams.items() if self.bundle(s) is not None}},
                          sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Pointer:
        """Version 3, or 2 (before per-stream floors: the floors start from what the slots hold)."""
        if data.get("version") not in (2, 3):
            raise ValueError(f"unknown slot pointer version {data.get('version')!r}")
        active = data.get("active")
        if active not in (None, *SLOTS):
            raise ValueError(f"active slot {active!r} is neither a nor b")
        slots = {s: Slot.model_validate(data["slots"][s]) for s in SLOTS}
        floors = {str(k): int(v) for k, v in data.get("floors", [])}
        streams: dict[SlotName, str] = {s: str(v) for s, v in data.get("streams", {}).items() if s in SLOTS}
        pointer = cls(active, slots, tuple(str(x) for x in data.get("good", [])),
                      tuple(str(x) for x in data.get("bad", [])), floors, streams)
        for slot in SLOTS if data["version"] == 2 else ():  # a known-good bundle was activated here
            ref, stream = pointer.bundle(slot), pointer.stream(slot)
            if ref is not None and stream is not None and slots[slot].status is SlotStatus.GOOD:
                floors[stream] = max(floors.get(stream, 0), ref.sequence)
        return pointer.with_floor()


def signed_ref(bundle_dir: Path, claimed: BundleRef) -> tuple[BundleRef, str]:
    """What a slot records for a verified bundle: its ref with model, target and sequence as its signed
    manifest names them (the deploy command's ``claimed`` ref only names its sha), and its stream."""
    manifest = load_manifest((bundle_dir / MANIFEST_FILE).read_bytes())
    return claimed.model_copy(update={"model_name": manifest.model.name, "model_version": manifest.model.version,
                                      "target": manifest.target.name, "sequence": manifest.sequence}), \
        manifest.stream_name


def other_slot(slot: SlotName) -> SlotName:
    return "b" if slot == "a" else "a"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_json(path: Path) -> Any:
    """A state file the agent wrote, parsed; ValueError (as for bad JSON) for one nested too deep to
    parse (``json`` recurses: a file of 100,000 ``[`` raised RecursionError), OSError if unreadable."""
    text = path.read_text(encoding="utf-8")
    if nesting(text) > MAX_DEPTH:
        raise ValueError(f"{path.name} nests more than {MAX_DEPTH} levels deep: not a file the agent wrote")
    return json.loads(text)


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new content, never a mix."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    if path.name == POINTER:
        fault("mid_activation")  # the new pointer is written but not yet in place
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with path.open("rb") as fh:
                os.fsync(fh.fileno())
    for directory in sorted({p.parent for p in root.rglob("*")} | {root}):
        fsync_dir(directory)


def _remember(history: tuple[str, ...], sha256: str) -> tuple[str, ...]:
    return (*[h for h in history if h != sha256], sha256)[-HISTORY:]


def _marked(pointer: Pointer, slot: SlotName, status: SlotStatus) -> Pointer:
    """``pointer`` with what was learned of ``slot``'s bundle: good, bad, or (empty) forgotten."""
    record = pointer.slots[slot]
    if record.bundle is None or status is SlotStatus.EMPTY:
        return replace(pointer, slots={**pointer.slots, slot: Slot(status=SlotStatus.EMPTY)})
    pointer = replace(pointer, slots={**pointer.slots, slot: Slot(status=status, bundle=record.bundle)})
    sha = record.bundle.sha256
    if status is SlotStatus.GOOD:
        return replace(pointer, good=_remember(pointer.good, sha), bad=tuple(b for b in pointer.bad if b != sha))
    if status is SlotStatus.BAD:
        return replace(pointer, bad=_remember(pointer.bad, sha))
    return pointer


class SlotStore:
    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / "slots"
        self.root.mkdir(parents=True, exist_ok=True)
        for name in SLOTS:
            (self.root / name).mkdir(exist_ok=True)
        self._pointer: Pointer | None = None

    # ---- reading ------------------------------------------------------------------------
    def pointer(self) -> Pointer:
        if self._pointer is None:
            self._pointer = self._read()
        return self._pointer

    def reload(self) -> Pointer:
        self._pointer = None
        return self.pointer()

    def _read(self) -> Pointer:
        path = self.root / POINTER
        if not path.exists():
            return Pointer()
        try:  # OSError: a directory in its place; the others: JSON of another shape than a pointer's
            data = read_json(path)
            return Pointer.from_json(data) if isinstance(data, dict) else Pointer.from_json({})
        except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
            raise SlotError(f"slot pointer {path} is unreadable ({exc}); this cannot result from a crash, "
                            "only from outside tampering or a damaged disk") from exc

    def slots(self) -> dict[SlotName, Slot]:
        return dict(self.pointer().slots)

    def path(self, slot: SlotName) -> Path:
        return self.root / slot

    def active_path(self) -> Path | None:
        active = self.pointer().active
        return None if active is None else self.path(active)

    def inactive(self) -> SlotName:
        return "b" if self.pointer().active == "a" else "a"

    # ---- writing ------------------------------------------------------------------------
    def write(self, pointer: Pointer) -> Pointer:
        """Replace the persisted pointer (atomically) and the one in memory; the bundle it makes
        active raises its stream's anti-rollback floor in the same write."""
        pointer = pointer.with_floor()
        atomic_write(self.root / POINTER, pointer.to_json())
        self._pointer = pointer
        return pointer

    def _with_slot(self, slot: SlotName, status: SlotStatus, bundle: BundleRef | None,
                   stream: str | None = None) -> Pointer:
        current = self.pointer()
        streams = {s: v for s, v in current.streams.items() if s != slot} | ({slot: stream} if stream else {})
        return replace(current, slots={**current.slots, slot: Slot(status=status, bundle=bundle)}, streams=streams)

    def install(self, bundle_dir: Path, bundle: BundleRef, stream: str | None = None) -> SlotName:
        """Copy a verified bundle into the inactive slot and make it durable, as a ``candidate``; the
        slot is recorded as ``installing`` before its old content is removed. Does not activate it."""
        slot = self.inactive()
        target = self.path(slot)
        need = sum(p.stat().st_size for p in bundle_dir.rglob("*") if p.is_file())
        free = free_bytes(self.root) + sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
        if need + RESERVE_BYTES > free:  # checked before the old content is touched
            raise SlotError(f"not enough space to install the bundle: it needs {need} bytes plus {RESERVE_BYTES} "
                            f"kept free, {free} are free")
        self.write(self._with_slot(slot, SlotStatus.INSTALLING, None))
        shutil.rmtree(target)
        shutil.copytree(bundle_dir, target)
        fault("mid_install")  # copied, not yet made durable: a crash here leaves a slot marked installing
        fsync_tree(target)
        self.write(self._with_slot(slot, SlotStatus.CANDIDATE, bundle, stream))
        return slot

    def activate(self, slot: SlotName) -> Pointer:
        """Atomically make ``slot`` (a candidate or a known-good bundle) the active one."""
        current = self.pointer()
        record = current.slots[slot]
        if current.active == slot:
            raise SlotError(f"slot {slot} is already active")
        if record.bundle is None or record.status not in (SlotStatus.CANDIDATE, SlotStatus.GOOD):
            raise SlotError(f"slot {slot} holds no bundle that may be activated (status {record.status.value})")
        return self.write(replace(current, active=slot))

    def mark(self, slot: SlotName, status: SlotStatus) -> Pointer:
        """Record what this device learned of a slot's bundle: ``good`` (passed probation), ``bad``."""
        current = self.pointer()
        return current if current.slots[slot].bundle is None else self.write(_marked(current, slot, status))

    def fall_back(self, failed: SlotName, status: SlotStatus, to: SlotName | None) -> Pointer:
        """In one atomic pointer write: record the ``failed`` slot as ``bad`` (or ``empty``: its content
        is unusable) and make ``to`` (a known-good slot; None: no bundle) the active one. A crash
        leaves the pointer before or after, never the failed bundle active and marked, nor nothing
        active while a known-good bundle is there."""
        pointer = _marked(self.pointer(), failed, status)
        if to is not None and (pointer.slots[to].bundle is None or pointer.slots[to].status is not SlotStatus.GOOD):
            raise SlotError(f"slot {to} holds no known-good bundle to fall back to")
        return self.write(replace(pointer, active=to))

    def known_good(self, sha256: str | None = None) -> SlotName:
        """The slot a rollback goes to: the one holding ``sha256``, or (None) the known-good bundle
        other than the active one. Refuses, saying why, when that bundle is bad, gone or unproven."""
        pointer = self.pointer()
        if sha256 is None:
            slot = pointer.previous
            if slot is None:
                raise SlotError("there is no known-good bundle on this device other than the active one: "
                                "nothing to roll back to")
            return slot
        if sha256 in pointer.bad:
            raise SlotError(f"bundle {sha256[:12]} failed on this device (bad): a rollback never re-activates it")
        slot = pointer.holding(sha256)
        if slot is None:
            raise SlotError(f"bundle {sha256[:12]} is not on this device (its slot was overwritten since): "
                            "deploy it again instead")
        if pointer.slots[slot].status is not SlotStatus.GOOD:
            raise SlotError(f"bundle {sha256[:12]} never passed probation on this device "
                            f"({pointer.slots[slot].status.value}): not a known-good bundle")
        return slot
