"""The active bundle, loaded and verified once when it becomes active (the slot pointer is in memory:
asking for it is a comparison per frame, not a disk read) and closed when another takes its place.
A bundle damaged since it was installed is set aside and the known-good one loaded instead."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from agent.deploy import Deployer
from agent.errors import AgentError
from agent.model import LoadedBundle
from contract.errors import ContractError
from contract.signing import TrustStore

log = logging.getLogger("coldchain.agent")

_SHARED: dict[str, LoadedBundle] = {}  # simulated fleets: one loaded bundle per sha, shared by every agent
_SHARED_LOCK = threading.Lock()


class ActiveModel:
    def __init__(self, deployer: Deployer, trust: TrustStore, threads: int, share: bool,
                 on_damaged: Callable[[str], None]) -> None:
        self.deployer, self.trust, self.threads = deployer, trust, threads
        self.share = share  # simulated fleets: one model session per bundle, not per device
        self.on_damaged = on_damaged  # what was done about a damaged active bundle (the agent's error event)
        self.loaded: LoadedBundle | None = None

    def get(self) -> LoadedBundle | None:
        """The active bundle, or None; the one before it is closed."""
        for _ in range(3):  # the active bundle, or the known-good one after it, or none
            sha = self.deployer.slots.pointer().active_sha256
            if self.loaded is not None and self.loaded.sha256 == sha:
                return self.loaded
            if self.loaded is not None and not self.share:
                self.loaded.close()
            self.loaded = None
            path = self.deployer.slots.active_path()
            if path is None or sha is None:
                return None
            try:
                self.loaded = self._load(sha, path)
            except (AgentError, ContractError) as exc:  # damaged since it was installed: back to safety
                what = self.deployer.active_unusable(f"{type(exc).__name__}: {exc}")
                log.error("%s", what)
                self.on_damaged(what)
                continue
            return self.loaded
        return None

    def _load(self, sha: str, path: Path) -> LoadedBundle:
        with _SHARED_LOCK:
            loaded = _SHARED.get(sha) if self.share else None
            if loaded is None:
                loaded = LoadedBundle.open_bundle(path, self.trust, self.threads, self.deployer.engine_cache)
                loaded.run(loaded.blank())  # the first run of a session allocates: not a representative one
                if self.share:
                    _SHARED[sha] = loaded
        return loaded
