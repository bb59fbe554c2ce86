"""What must hold in a device's data directory whatever happened to it: the slot pointer parses, the
slot it names active holds the bundle it says (manifest sha256), that bundle passes ``verify_dir``
with the device's trust store, its slot is a candidate or known-good one (never bad, installing or
empty), and it is one of the bundles allowed at that moment (the old known-good or the new one).
No bundle active is allowed only when no bundle was ever known-good on the device.

Returns what is wrong, one line each (empty: it holds), so a harness counts violations instead of
stopping at the first."""

from __future__ import annotations

from pathlib import Path

from agent.errors import AgentError
from agent.slots import SlotStore
from contract.bundle import manifest_sha256, verify_dir
from contract.errors import ContractError
from contract.signing import TrustStore
from contract.state import SlotStatus


def data_dir_violations(data: Path, trust: TrustStore, allowed: set[str], none_allowed: bool = False,
                        names: dict[str, str] | None = None) -> list[str]:
    """``allowed``: manifest shas the active bundle may have; ``names``: sha -> a readable name."""
    names = names or {}
    try:
        pointer = SlotStore(data).pointer()
    except (AgentError, OSError) as exc:
        return [f"the slot pointer does not parse: {exc}"]
    if pointer.active is None:
        return [] if none_allowed else ["no bundle is active although a known-good one was on the device"]
    wrong = []
    sha = pointer.active_sha256
    record = pointer.slots[pointer.active]
    if record.status not in (SlotStatus.CANDIDATE, SlotStatus.GOOD):
        wrong.append(f"the active slot {pointer.active} is {record.status.value}")
    if sha not in allowed:
        wrong.append(f"the active bundle is {names.get(sha or '', (sha or '?')[:12])}, not one of "
                     f"{sorted(names.get(s, s[:12]) for s in allowed)}")
    directory = data / "slots" / pointer.active
    try:
        if manifest_sha256(directory) != sha:
            wrong.append(f"slot {pointer.active} does not hold the bundle the pointer names")
        verify_dir(directory, trust)
    except (ContractError, OSError) as exc:
        wrong.append(f"the active bundle does not verify: {exc}")
    return wrong


def tree_bytes(root: Path) -> tuple[int, int]:
    """(bytes on disk, apparent bytes) of every file under ``root``: sparse files count what they use."""
    used = apparent = 0
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            stat = path.stat()
            used += stat.st_blocks * 512
            apparent += stat.st_size
    return used, apparent
