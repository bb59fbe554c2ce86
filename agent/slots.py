"""A/B slots with an atomic active pointer, so a power cut can never activate a partial bundle.

Layout under ``<data_dir>/slots``::

    a/            one installed bundle (directory)
    b/            the other
    ACTIVE        JSON pointer: {"active": "a"|"b"|null, "previous": ..., sequences and shas}

A bundle is installed into the *inactive* slot (its old content removed first); the pointer
is only rewritten after the new slot is complete and fsynced. The pointer is replaced by
writing a temporary file, fsyncing it, renaming it over ``ACTIVE`` and fsyncing the
directory: after a crash at any instant, ``ACTIVE`` is either the old or the new pointer.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from agent.errors import SlotError
from agent.faults import fault

SlotName = Literal["a", "b"]
POINTER = "ACTIVE"


@dataclass(frozen=True)
class Pointer:
    active: SlotName | None = None
    previous: SlotName | None = None
    active_sha256: str | None = None  # manifest sha256 of the active bundle
    previous_sha256: str | None = None
    active_sequence: int | None = None
    previous_sequence: int | None = None


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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


class SlotStore:
    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / "slots"
        self.root.mkdir(parents=True, exist_ok=True)
        for name in ("a", "b"):
            (self.root / name).mkdir(exist_ok=True)

    def pointer(self) -> Pointer:
        path = self.root / POINTER
        if not path.exists():
            return Pointer()
        try:
            data = json.loads(path.read_text())
            return Pointer(**data)
        except (ValueError, TypeError) as exc:
            raise SlotError(f"slot pointer {path} is unreadable ({exc}); this cannot result from a crash, "
                            "only from outside tampering: reinstall the agent's data directory") from exc

    def path(self, slot: SlotName) -> Path:
        return self.root / slot

    def active_path(self) -> Path | None:
        active = self.pointer().active
        return None if active is None else self.path(active)

    def inactive(self) -> SlotName:
        return "b" if self.pointer().active == "a" else "a"

    def install(self, bundle_dir: Path) -> SlotName:
        """Copy a verified bundle into the inactive slot and make it durable; does not activate it."""
        slot = self.inactive()
        target = self.path(slot)
        shutil.rmtree(target)
        shutil.copytree(bundle_dir, target)
        fault("mid_install")  # copied, not yet made durable: a crash here leaves a slot nobody points to
        fsync_tree(target)
        return slot

    def activate(self, slot: SlotName, sha256: str, sequence: int) -> Pointer:
        """Atomically make ``slot`` active; the previously active slot becomes ``previous``."""
        current = self.pointer()
        if current.active == slot:
            raise SlotError(f"slot {slot} is already active")
        new = Pointer(active=slot, previous=current.active, active_sha256=sha256,
                      previous_sha256=current.active_sha256, active_sequence=sequence,
                      previous_sequence=current.active_sequence)
        atomic_write(self.root / POINTER, json.dumps(asdict(new), sort_keys=True).encode())
        return new

    def rollback(self) -> Pointer:
        """Atomically switch back to the previous slot (kept intact until the next install)."""
        current = self.pointer()
        if current.previous is None or current.active is None:
            raise SlotError("there is no previous bundle to roll back to")
        new = Pointer(active=current.previous, previous=current.active, active_sha256=current.previous_sha256,
                      previous_sha256=current.active_sha256, active_sequence=current.previous_sequence,
                      previous_sequence=current.active_sequence)
        atomic_write(self.root / POINTER, json.dumps(asdict(new), sort_keys=True).encode())
        return new

    def deactivate(self) -> Pointer:
        """Atomically leave no bundle active (the failing first bundle stays in its slot as ``previous``)."""
        current = self.pointer()
        new = Pointer(active=None, previous=current.active, previous_sha256=current.active_sha256,
                      previous_sequence=current.active_sequence)
        atomic_write(self.root / POINTER, json.dumps(asdict(new), sort_keys=True).encode())
        return new
