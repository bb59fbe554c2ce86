"""What the agent knows about its own faults: the broker connection and the frame source.

The agent never exits for a missing broker or camera. The transport keeps trying and tells the
loop why each attempt failed (``ConnectFailed``); the frame source is reopened with backoff
(:class:`ReopeningSource`). ``Health`` logs each cause with the next retry time, keeps the last
errors and the faults going on now (:class:`Faults`, which the retained state reports), and persists
a small summary (``health.json`` in the data directory) that ``coldchain agent status`` reads without
a running agent.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

from agent.errors import FrameError
from agent.frames import FrameSource, check_source, open_source
from agent.slots import atomic_write, read_json
from contract.state import MAX_FAULT_MESSAGE, Fault, FaultCode

log = logging.getLogger("coldchain.agent")
HEALTH_FILE = "health.json"
LAST_ERRORS = 20
CAPTURE_FAILURES_TO_REOPEN = 5  # consecutive "no frame" answers from an open camera: it is reopened


def _at(seconds: float) -> str:
    """A retry time as the operator reads it in a log: local wall-clock time."""
    return (datetime.now() + timedelta(seconds=seconds)).strftime("%H:%M:%S")


def _seconds(value: float) -> str:
    return f"{value:.1f} s" if value < 10 else f"{value:.0f} s"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


class SourceUnavailable(FrameError):
    """The frame source cannot be opened now; the next attempt is at ``retry_at`` (monotonic)."""

    def __init__(self, message: str, cause: str, changed: bool, source: str = "") -> None:
        super().__init__("unavailable", message)
        self.cause, self.source = cause, source
        self.changed = changed  # it just became unavailable (or its cause changed): report it


class ReopeningSource:
    """A frame source opened on first use and reopened with exponential backoff when it is missing
    (a camera not plugged in, a folder not mounted yet) or stops giving frames. ``check`` tells its
    health without opening it (``probe``, while no bundle is active); without one, probing opens it."""

    def __init__(self, opener: Callable[[], FrameSource], name: str, min_s: float = 1.0, max_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic, check: Callable[[], bool] | None = None) -> None:
        self.opener, self.name, self.clock, self.check = opener, name, clock, check
        self.min_s, self.max_s = min_s, max_s
        self.delay = min_s
        self.inner: FrameSource | None = None
        self.next_attempt = 0.0
        self.cause: str | None = None  # why it is unavailable (None: open, or not tried yet)
        self.capture_failures = 0

    def read(self) -> npt.NDArray[np.uint8]:
        inner = self.inner if self.inner is not None else self._open()
        try:
            frame = inner.read()
        except FrameError as exc:
            if exc.kind == "capture":
                self.capture_failures += 1
                if self.capture_failures >= CAPTURE_FAILURES_TO_REOPEN:
                    inner.close()
                    self.inner = None
                    self._failed(f"{exc} ({self.capture_failures} times in a row)")
            raise
        self.capture_failures = 0
        return frame

    def probe(self) -> bool:
        """The source's health without reading a frame, on the same backoff as ``read``: raises
        SourceUnavailable while it is faulty; True once it is known to be there (False: it could not
        be checked without opening it, a stream URL)."""
        now = self.clock()
        if self.cause is not None and now < self.next_attempt:
            raise SourceUnavailable(self._message(self.next_attempt - now), self.cause, False, self.name)
        try:
            if self.check is not None:
                checked = self.check()
            else:
                checked = (self.inner if self.inner is not None else self._open()).probe()
        except SourceUnavailable:  # the opener failed: already counted by _open
            raise
        except FrameError as exc:
            if self.inner is not None:
                self.inner.close()
                self.inner = None
            raise self._failed(str(exc)) from exc
        self.cause, self.delay = None, self.min_s
        return checked

    def _open(self) -> FrameSource:
        now = self.clock()
        if now < self.next_attempt:
            raise SourceUnavailable(self._message(self.next_attempt - now), self.cause or "", False, self.name)
        try:
            self.inner = self.opener()
        except FrameError as exc:
            raise self._failed(str(exc)) from exc
        self.cause, self.delay, self.capture_failures = None, self.min_s, 0
        return self.inner

    def _failed(self, cause: str) -> SourceUnavailable:
        changed = cause != self.cause
        self.cause = cause
        wait = self.delay
        self.next_attempt = self.clock() + wait
        self.delay = min(self.delay * 2, self.max_s)
        return SourceUnavailable(self._message(wait), cause, changed, self.name)

    def _message(self, wait: float) -> str:
        return f"frame source {self.name} is unavailable: {self.cause}; next attempt in {_seconds(wait)} at {_at(wait)}"

    def close(self) -> None:
        if self.inner is not None:
            self.inner.close()


class ErrorBudget:
    """A token bucket per error code: a burst of ``burst``, then one every ``every_s``; what it holds
    back is counted in ``held`` (the next event that goes out says how many)."""

    def __init__(self, burst: int, every_s: float) -> None:
        self.burst, self.every_s = burst, every_s
        self.tokens: dict[str, tuple[float, float]] = {}  # code -> (tokens left, when counted)
        self.held: dict[str, int] = {}  # code -> events held back since the last one sent

    def allowed(self, code: str) -> bool:
        now = time.monotonic()
        tokens, last = self.tokens.get(code, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) / self.every_s)
        if tokens < 1:
            self.tokens[code] = (tokens, now)
            self.held[code] = self.held.get(code, 0) + 1
            return False
        self.tokens[code] = (tokens - 1, now)
        return True


class Faults:
    """The faults going on now, one per code, as the retained state reports them (``DeviceState.faults``).
    ``start`` and ``clear`` say whether anything changed: the agent publishes its state only then, so a
    fault retried every interval is published when it begins, when its cause changes and when it ends."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.current: dict[FaultCode, Fault] = {}

    def start(self, code: FaultCode, message: str) -> bool:
        known, message = self.current.get(code), message[:MAX_FAULT_MESSAGE]
        if known is not None and known.message == message:
            return False
        since = known.since if known is not None else datetime.fromtimestamp(self.clock(), timezone.utc)
        self.current[code] = Fault(code=code, since=since, message=message)
        return True

    def clear(self, code: FaultCode) -> bool:
        return self.current.pop(code, None) is not None

    def now(self) -> list[Fault]:
        return [self.current[code] for code in FaultCode if code in self.current]


class Health:
    """Connection and source faults, logged with their cause and next retry, persisted for ``status``.
    ``clock`` (wall time) dates the faults and measures how long the broker was away."""

    def __init__(self, data_dir: Path, broker: str, device_id: str = "",
                 clock: Callable[[], float] = time.time) -> None:
        self.path = data_dir / HEALTH_FILE
        self.broker, self.device_id, self.clock = broker, device_id, clock
        self.connection = "connecting"
        self.connection_cause: str | None = None
        self.away: tuple[float, str] | None = None  # since when and why the broker is unreachable
        self.faults = Faults(clock)
        self.source = "not opened yet"
        self.last_errors: list[tuple[str, str, str]] = []  # (UTC time, code, message), newest last
        self._save()

    def connect_failed(self, cause: str, retry_in_s: float) -> None:
        if "protocol" in cause.lower():
            cause += " (does the broker speak this MQTT version? set broker.protocol to \"5\" or \"3.1.1\")"
        self._connection("failing", cause)
        log.warning("cannot connect to the broker %s: %s; next attempt in %s at %s", self.broker, cause,
                    _seconds(retry_in_s), _at(retry_in_s))

    def disconnected(self, reason: str, retry_in_s: float | None) -> None:
        then = "" if retry_in_s is None else f"; next attempt in {_seconds(retry_in_s)} at {_at(retry_in_s)}"
        self._connection("disconnected", reason)
        log.warning("lost the broker %s: %s%s", self.broker, reason, then)

    def connected(self) -> str | None:
        """Connected; returns how long the broker was away and why, if it was (for an event: nothing
        about it could be published while it lasted)."""
        was = None
        if self.away is not None:
            since, why = self.away
            last = "" if self.connection_cause in (None, why) else f"; the last attempt: {self.connection_cause}"
            was = (f"the broker was unreachable for {_duration(self.clock() - since)} (since "
                   f"{datetime.fromtimestamp(since, timezone.utc).isoformat(timespec='seconds')}): {why}{last}")
        before, self.away = self.connection, None
        self._connection("connected", None)
        if before != "connected":
            log.info("connected to the broker %s", self.broker)
        return was

    def _connection(self, state: str, cause: str | None) -> None:
        if cause is not None and self.away is None:
            self.away = (self.clock(), cause)
        if (state, cause) != (self.connection, self.connection_cause):
            self.connection, self.connection_cause = state, cause
            if cause is not None:
                self._remember("broker_unreachable", cause)
            self._save()

    def source_fault(self, exc: SourceUnavailable) -> bool:
        """A source fault; True when it is new or its cause changed (the agent then sends an error event
        and its state): the fault's message is the cause, without the retry time that the state would keep."""
        if exc.changed:
            self.source = f"unavailable: {exc.cause}"
            self.faults.start(FaultCode.SOURCE_UNAVAILABLE, f"frame source {exc.source}: {exc.cause}")
            self._remember("source_unavailable", str(exc))
            self._save()
            log.warning("%s", exc)
        return exc.changed

    def source_ok(self, name: str) -> bool:
        """The source gave a frame or passed its check; True when that ended a fault (publish the state)."""
        cleared = self.faults.clear(FaultCode.SOURCE_UNAVAILABLE)
        if self.source != "ok":
            self.source = "ok"
            self._save()
            log.info("frame source %s is available", name)
        return cleared

    def spool(self, size: int, limit: int, evicted: int) -> bool:
        """The spool after a window was stored: full from the first window evicted to make room until it
        holds fewer than ``limit`` (the cloud confirmed some); True when that changed (publish the state)."""
        if size < limit:
            changed = self.faults.clear(FaultCode.SPOOL_FULL)
        else:
            changed = bool(evicted) and FaultCode.SPOOL_FULL not in self.faults.current and self.faults.start(
                FaultCode.SPOOL_FULL, f"the telemetry spool holds its limit of {limit} windows unconfirmed by the "
                                      "cloud: the oldest are dropped to make room")
        if changed:
            self._save()
        return changed

    def _remember(self, code: str, message: str) -> None:
        self.last_errors.append((datetime.now(timezone.utc).isoformat(timespec="seconds"), code, message))
        del self.last_errors[:-LAST_ERRORS]

    def _save(self) -> None:
        data = {"device_id": self.device_id, "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "connection": self.connection, "connection_cause": self.connection_cause, "broker": self.broker,
                "source": self.source, "last_errors": self.last_errors,
                "faults": [f.model_dump(mode="json") for f in self.faults.now()]}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, json.dumps(data).encode())
        except OSError as exc:  # a full disk must not stop the agent: the log still says it
            log.warning("cannot write %s: %s", self.path, exc.strerror)


def reopening(kind: str, location: str, loop: bool, max_pixels: int,
              clock: Callable[[], float] = time.monotonic) -> ReopeningSource:
    """The configured frame source, opened when first read and reopened with backoff; probed while
    no bundle is active without being opened (``check_source``: no capture device held, no decoder)."""
    return ReopeningSource(lambda: open_source(kind, location, loop, max_pixels), location, clock=clock,
                           check=lambda: check_source(kind, location))


def read_health(data_dir: Path) -> dict[str, Any] | None:
    """The last persisted health summary, or None when the agent never wrote one (or it is unreadable)."""
    try:
        data = read_json(data_dir / HEALTH_FILE)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
