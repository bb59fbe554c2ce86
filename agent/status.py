"""What ``coldchain agent status`` shows, read from a data directory without starting an agent."""

from __future__ import annotations

from pathlib import Path

from agent.jobs import JobStore
from agent.slots import SlotStore
from agent.spool import Spool
from contract.errors import ContractError
from contract.trust import TRUST_FILE, load_signed


def data_dir_status(data_dir: Path) -> dict[str, object]:
    """Slots, jobs, the spool and the trust document's version."""
    pointer = SlotStore(data_dir).pointer()
    jobs = JobStore(data_dir, repair=False).all()
    spool = Spool(data_dir / "telemetry.db", 1_000_000, repair=False)
    try:
        slots = {name: {"status": slot.status.value, "sha256": slot.bundle.sha256 if slot.bundle else None,
                        "sequence": slot.bundle.sequence if slot.bundle else None}
                 for name, slot in pointer.slots.items()}
        return {"active": pointer.active, "active_sequence": pointer.active_sequence, "previous": pointer.previous,
                "slots": slots,
                "jobs": [(j.job_id, j.state.value, j.reason) for j in jobs], "spool_pending": spool.size,
                "spool_evicted": spool.evicted, "spool_epoch": spool.epoch, "trust": trust_status(data_dir)}
    finally:
        spool.close()


def trust_status(data_dir: Path) -> str:
    """The trust document's version and keys by role, or that the device has none (key files only)."""
    path = data_dir / "trust" / TRUST_FILE
    if not path.is_file():
        return "no trust document: key files from the configuration"
    try:
        document = load_signed(path.read_bytes()).document()
    except (OSError, ContractError) as exc:
        return f"unreadable trust document: {exc}"
    keys = ", ".join(f"{k.key_id} {k.role.value}" for k in document.keys)
    return f"version {document.version} ({keys}; {len(document.revoked)} revoked)"
