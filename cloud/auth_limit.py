"""How fast one client may guess tokens: a refused API bearer token or dashboard sign-in (unknown or
revoked, not a missing one) is a failure of the client's address; ``failures`` of them within
``window_s`` lock that address out for ``backoff_s``, doubling at each further lock-out up to
``backoff_max_s`` (back to ``backoff_s`` once the address has been quiet that long). While locked
out, every token from it is refused (429 with Retry-After) before it is checked, a correct one too:
otherwise a lucky guess would still be told so. A success changes no count (a valid token of low
scope must not buy guesses at a higher one). One limiter per cloud, shared by the API's gate and the
dashboard; at most ``max_clients`` addresses are tracked, the least recently failed forgotten first.

The address is the connection's peer: behind a reverse proxy, run uvicorn with ``--proxy-headers``
and ``--forwarded-allow-ips`` so that it is the client's, or every client shares the proxy's."""

from __future__ import annotations

import math
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from cloud.config import AuthLimit
from cloud.errors import CloudError
from cloud.store import now
from cloud.tokens import Identity, Refusal


class RateLimited(CloudError):
    """The address is locked out for ``retry_after`` more seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many refused tokens from this address: retry in {retry_after} s")
        self.retry_after = retry_after


@dataclass
class _Client:
    failures: deque[float] = field(default_factory=deque)  # times (s) within the window, at most `failures`
    until: float = 0.0  # locked out until
    lockouts: int = 0  # in a row (reset after backoff_max_s without a failure)
    last: float = 0.0


class FailureLimiter:
    """Thread-safe (the API checks tokens in worker threads); ``clock`` is the cloud's (tests inject one)."""

    def __init__(self, settings: AuthLimit | None = None, clock: Callable[[], datetime] = now) -> None:
        self.settings, self.clock = settings or AuthLimit(), clock
        self._clients: OrderedDict[str, _Client] = OrderedDict()
        self._lock = threading.Lock()

    def _now(self) -> float:
        return self.clock().timestamp()

    def blocked(self, address: str) -> int | None:
        """Seconds (rounded up) until ``address`` may try again, or None."""
        at = self._now()
        with self._lock:
            client = self._clients.get(address)
            left = 0.0 if client is None else client.until - at
        return math.ceil(left) if left > 0 else None

    def check(self, address: str) -> None:
        """Raise RateLimited while ``address`` is locked out."""
        left = self.blocked(address)
        if left is not None:
            raise RateLimited(left)

    def verify(self, address: str, verify: Callable[[], Identity | Refusal],
               refused: Callable[[str], None]) -> Identity | Refusal:
        """``verify()`` unless ``address`` is locked out (RateLimited); ``refused(reason)`` is told of
        each refusal (``rate_limited`` too), and one that is not ``missing`` counts as a failure."""
        try:
            self.check(address)
        except RateLimited:
            refused("rate_limited")
            raise
        found = verify()
        if not isinstance(found, Identity):
            refused(found)
            if found != "missing":
                self.failed(address)
        return found

    def failed(self, address: str) -> None:
        """Count a refused token from ``address``; the one that reaches the limit starts a lock-out."""
        s, at = self.settings, self._now()
        with self._lock:
            client = self._clients.pop(address, None) or _Client()
            self._clients[address] = client  # the most recent last
            while len(self._clients) > s.max_clients:
                self._clients.popitem(last=False)
            if at - client.last > s.backoff_max_s:
                client.lockouts = 0
            client.last = at
            while client.failures and at - client.failures[0] >= s.window_s:
                client.failures.popleft()
            client.failures.append(at)
            if len(client.failures) >= s.failures:
                client.until = at + min(s.backoff_s * 2 ** client.lockouts, s.backoff_max_s)
                client.lockouts = min(client.lockouts + 1, 32)  # 2**32 backoffs exceed any cap
                client.failures.clear()

    def tracked(self) -> int:
        with self._lock:
            return len(self._clients)
