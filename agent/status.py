"""What ``coldchain agent status`` shows: the running agent's own answer over its local API
(``live_status``), and what an agent recorded in its data directory (read without starting one)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from agent.errors import AgentError
from agent.health import HEALTH_FILE, read_health
from agent.jobs import JobStore
from agent.slots import SlotStore
from agent.spool import Spool
from contract.errors import ContractError
from contract.local import MAX_LINE_BYTES, ErrorAnswer, StatusAnswer, StatusRequest, decode_answer
from contract.trust import TRUST_FILE, load_signed

MARKERS = ("slots", "jobs", "telemetry.db", HEALTH_FILE)  # what an agent writes in its data directory
STATUS_ID = "cli-status"


def live_status(path: Path, timeout_s: float = 3.0) -> tuple[StatusAnswer | None, str]:
    """The running agent's ``status`` answer over its local API socket at ``path``, or ``None`` and why
    not (no socket, nobody listening, no answer within ``timeout_s``, an answer that does not parse)."""
    if not path.exists():
        return None, f"no agent socket at {path}"
    try:
        return _ask_status(path, timeout_s), "live"
    except AgentError as exc:
        return None, str(exc)


def _ask_status(path: Path, timeout_s: float) -> StatusAnswer:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    deadline = time.monotonic() + timeout_s
    late = AgentError(f"the agent on {path} did not answer within {timeout_s:g} s")
    buffer = b""
    try:
        sock.settimeout(timeout_s)
        sock.connect(str(path))
        sock.sendall(StatusRequest(id=STATUS_ID).to_json() + b"\n")
        while True:
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                answer = decode_answer(line)  # events this connection never subscribed to do not come
                if isinstance(answer, StatusAnswer) and answer.id == STATUS_ID:
                    return answer
                if isinstance(answer, ErrorAnswer):
                    raise AgentError(f"the agent on {path} refused the status request: {answer.message}")
            left = deadline - time.monotonic()
            if left <= 0 or len(buffer) > MAX_LINE_BYTES:
                raise late
            sock.settimeout(left)
            data = sock.recv(65536)
            if not data:
                raise AgentError(f"the agent on {path} closed the connection without answering")
            buffer += data
    except TimeoutError as exc:
        raise late from exc
    except OSError as exc:
        raise AgentError(f"no agent answers on {path}: {exc.strerror or exc}") from exc
    except ContractError as exc:
        raise AgentError(f"the agent on {path} answered something unreadable: {exc}") from exc
    finally:
        sock.close()


def check_data_dir(data_dir: Path, config: Path | None = None) -> None:
    """Refuse, saying why, a path that is not an agent's data directory (nothing is created in it);
    ``config``: the configuration that named it (then the agent has simply not run yet)."""
    if not data_dir.exists() and config is not None:
        raise AgentError(f"{data_dir} (data_dir in {config}) does not exist: no agent has run, and no bundle "
                         f"was installed, with this configuration yet (coldchain agent run --config {config})")
    if not data_dir.is_dir():
        raise AgentError(f"{data_dir} does not exist or is not a directory: pass the agent's --config, or the "
                         "--data-dir it uses (data_dir in its configuration)")
    if not any((data_dir / marker).exists() for marker in MARKERS):
        raise AgentError(f"{data_dir} is not an agent's data directory (it holds none of {', '.join(MARKERS)}): "
                         "pass the agent's --config, or the --data-dir it uses")


def data_dir_status(data_dir: Path) -> dict[str, object]:
    """Slots, jobs, the spool, the trust document's version and what the agent last recorded about its
    connection, frame source and errors (``health.json``); refuses a directory that is not an agent's."""
    check_data_dir(data_dir)
    pointer = SlotStore(data_dir).pointer()
    jobs = JobStore(data_dir, repair=False).all()
    spool = Spool(data_dir / "telemetry.db", 1_000_000, repair=False)
    try:
        slots = {name: {"status": slot.status.value, "sha256": slot.bundle.sha256 if slot.bundle else None,
                        "sequence": slot.bundle.sequence if slot.bundle else None,
                        "model": f"{slot.bundle.model_name} v{slot.bundle.model_version} ({slot.bundle.target})"
                        if slot.bundle else None}
                 for name, slot in pointer.slots.items()}
        return {"active": pointer.active, "active_sequence": pointer.active_sequence, "previous": pointer.previous,
                "slots": slots,
                "jobs": [(j.job_id, j.state.value, j.reason) for j in jobs], "spool_pending": spool.size,
                "spool_evicted": spool.evicted, "spool_expired": spool.expired,
                "spool_epoch": spool.epoch, "trust": trust_status(data_dir),
                "health": read_health(data_dir) or {}}
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
