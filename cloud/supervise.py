"""Supervision of the cloud's parts: ingestion, the rollout controller, the alert check, the
publisher's chunk streams and the HTTP API each run in a thread of their own; whatever one of them
raises is logged (the traceback at the 1st, 2nd, 4th, 8th ... failure: no log flood), counted in
``failures[part]`` and the part runs again, after a backoff while it keeps failing. No part's
failure stops another, nor the cloud."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("coldchain.cloud")


class Supervisor:
    def __init__(self, stop: threading.Event, backoff_min_s: float = 0.2, backoff_max_s: float = 30.0) -> None:
        self.stop = stop
        self.backoff_min_s, self.backoff_max_s = backoff_min_s, backoff_max_s
        self.failures: dict[str, int] = {}  # part -> failures so far
        self.threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def failed(self, part: str, what: str = "failed") -> None:
        with self._lock:
            count = self.failures[part] = self.failures.get(part, 0) + 1
        if count & (count - 1) == 0:
            log.error("cloud part %s %s (%d times so far); it runs again", part, what, count, exc_info=True)

    def turn(self, part: str, work: Callable[[], object]) -> bool:
        """One turn of a part; False if it failed (counted)."""
        try:
            work()
        except Exception:  # whatever it was, it was this turn's: the part and the others go on
            self.failed(part)
            return False
        return True

    def every(self, part: str, work: Callable[[], object], period_s: float,
              backoff_max_s: float | None = None) -> threading.Thread:
        """A thread that runs ``work`` every ``period_s`` until the cloud stops; while it keeps
        failing, the next turn waits longer (doubling up to ``backoff_max_s``)."""
        ceiling = self.backoff_max_s if backoff_max_s is None else backoff_max_s

        def loop() -> None:
            delay = self.backoff_min_s
            while not self.stop.is_set():
                if self.turn(part, work):
                    delay = self.backoff_min_s
                    self.stop.wait(period_s)
                else:
                    self.stop.wait(max(period_s, delay))
                    delay = min(delay * 2, ceiling)

        return self._start(part, loop)

    def service(self, part: str, run: Callable[[], object], done: Callable[[], bool] = lambda: False,
                name: str | None = None) -> threading.Thread:
        """A long-running ``run`` (the HTTP API, a chunk stream) in a thread: if it raises, or
        returns before ``done()`` while the cloud runs, it is counted and run again after a backoff."""
        def loop() -> None:
            delay = self.backoff_min_s
            while not self.stop.is_set():
                try:
                    run()
                    if done() or self.stop.is_set():
                        return
                    self.failed(part, "stopped on its own")
                except (Exception, SystemExit):  # uvicorn exits (SystemExit) when it cannot serve
                    self.failed(part)
                if self.stop.wait(delay):
                    return
                delay = min(delay * 2, self.backoff_max_s)

        return self._start(name or part, loop)

    def _start(self, name: str, loop: Callable[[], None]) -> threading.Thread:
        thread = threading.Thread(target=loop, daemon=True, name=f"cloud-{name}")
        with self._lock:
            self.threads = [t for t in self.threads if t.is_alive()] + [thread]
        thread.start()
        return thread

    def join(self, timeout: float) -> None:
        with self._lock:
            threads = list(self.threads)
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(timeout=timeout)
