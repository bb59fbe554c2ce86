"""One agent per data directory: ``coldchain agent run`` and ``agent install`` hold an exclusive
``flock`` on ``data_dir/agent.lock`` while they work, so a second agent (or an install while the agent
runs) is refused with the first one's pid instead of writing the same slots, jobs and spool, and
logging in to the broker under the same client id (each would disconnect the other). The kernel
drops the lock when the process ends, however it ends (a SIGKILL or a power cut leaves nothing stale).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from agent.errors import AgentError

LOCK_FILE = "agent.lock"


def lock_data_dir(data_dir: Path) -> IO[str]:
    """The data directory's lock, held until the returned file is closed (or the process ends);
    refuses, naming the holder's pid, when another process holds it."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        handle = (data_dir / LOCK_FILE).open("a+")
    except OSError as exc:  # a path under a file, a read-only or foreign directory: said, not a traceback
        raise AgentError(f"cannot use the data directory {data_dir}: {exc.strerror} (data_dir in the agent's "
                         "configuration; the agent's user must be able to create and write it)") from exc
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        handle.seek(0)
        holder = handle.read().strip() or "?"
        handle.close()
        raise AgentError(f"another agent (pid {holder}) runs on the data directory {data_dir}: stop it first "
                         "(systemctl stop coldchain-agent); two would overwrite each other's slots and jobs") from exc
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle
