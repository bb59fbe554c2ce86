"""When a verified candidate may become active: the firmware's hold, the activation window, idleness.

A candidate that passed every check waits in ``READY`` while :meth:`Activation.wait_reason` gives a
reason; the deployer reports that reason with the state (the cloud shows it and does not time the
device out for it, see docs/cloud.md). The rules, in order:

1. a candidate never waits in READY longer than ``max_hold_s`` (default 24 h): then it activates;
2. a hold by the firmware (``hold``) keeps it until released or until the hold's own limit
   (``max_s``, at most ``max_hold_s``; a later, shorter hold never shortens it); a release after
   the candidate became READY lets it go now (a release without a hold changes nothing);
3. without a hold: with neither ``window`` nor ``when_idle_s`` configured it goes at once, otherwise
   when the window is open (local time) or no firmware request came for ``when_idle_s``.

Only activation waits: a rollback to a known-good bundle (probation failure, operator rollback)
never passes through here. The hold is persisted, so an agent restarted mid-hold keeps it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent.config import ActivationConfig
from agent.slots import atomic_write, read_json

log = logging.getLogger("coldchain.agent")
HOLD_FILE = "activation.json"
MAX_REASON = 200
WRITE_SLACK_S = 60.0  # a hold extended by less than this is not written again (a firmware re-asserting it)


@dataclass(frozen=True)
class Hold:
    reason: str
    until: float  # wall-clock seconds: the hold ends by itself then


def minutes_of(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


def window_open(window: str, now: float) -> bool:
    """Whether ``now`` (Unix time) falls in ``window`` ("HH:MM-HH:MM", local time, may wrap midnight)."""
    start, end = (minutes_of(part) for part in window.split("-"))
    local = time.localtime(now)
    minute = local.tm_hour * 60 + local.tm_min
    return start <= minute < end if start <= end else (minute >= start or minute < end)


class Activation:
    def __init__(self, config: ActivationConfig, data_dir: Path, clock: Callable[[], float] = time.time) -> None:
        self.config, self.clock = config, clock
        self.path = data_dir / HOLD_FILE
        self.last_request = clock()  # idle is counted from the agent's start until the firmware asks
        self.released_at: float | None = None
        self.hold_: Hold | None = None
        self.saved_until: float | None = None  # the end of the hold on disk, if one is
        try:
            data = read_json(self.path)
            self.hold_ = Hold(str(data["reason"])[:MAX_REASON], float(data["until"]))
            self.saved_until = self.hold_.until
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError) as exc:  # damaged: no hold (max_hold bounds it anyway)
            log.warning("the persisted activation hold %s was unreadable (%s): no hold", self.path, exc)

    def note_request(self) -> None:
        """A firmware request (an inference asked for through the local API): the device is busy."""
        self.last_request = self.clock()

    def hold(self, reason: str, max_s: float | None = None) -> float:
        """Keep candidates in READY until :meth:`release` or ``max_s`` (at most ``max_hold_s``) from now;
        returns when the hold ends by itself.

        Written to disk when there was none there or when it ends ``WRITE_SLACK_S`` later than the one
        there: a firmware re-asserting its hold on every request costs no fsync each (nor flash wear).
        A restarted agent may so end a hold up to that much early. Holds of several clients are one
        hold: it lasts until the latest end asked, with the latest reason; a release ends it."""
        limit = self.config.max_hold_s if max_s is None else min(max(max_s, 0.0), self.config.max_hold_s)
        until = self.clock() + limit
        held = self.current_hold()
        if held is not None:  # one hold for every client: a shorter one never cuts another's short
            until = max(until, held.until)
        text = "".join(c if c.isprintable() else " " for c in reason[:MAX_REASON])  # no forged log lines
        self.hold_ = Hold(text or "no reason given", until)
        self.released_at = None
        if self.saved_until is None or self.hold_.until > self.saved_until + WRITE_SLACK_S:
            self._save()
            log.info("activation held by the firmware for at most %.0f s: %s", limit, self.hold_.reason)
        return self.hold_.until

    def release(self) -> bool:
        """End the hold: a candidate waiting in READY activates now. Without a hold (never held, already
        released, or past its limit) nothing changes and it returns False: a release is not a way
        around the window or idleness."""
        if self.current_hold() is None:
            return False
        self.hold_ = None
        self.released_at = self.clock()
        self._save()
        log.info("activation released by the firmware")
        return True

    def current_hold(self) -> Hold | None:
        if self.hold_ is not None and self.clock() >= self.hold_.until:
            log.warning("the firmware's activation hold (%s) reached its limit: it ends", self.hold_.reason)
            self.hold_ = None
            self._save()
        return self.hold_

    def wait_reason(self, ready_since: float) -> str | None:
        """Why a candidate READY since ``ready_since`` must still wait, or None when it may activate."""
        now = self.clock()
        if now - ready_since >= self.config.max_hold_s:
            return None
        held = self.current_hold()
        if held is not None:
            return f"held by the firmware: {held.reason}"
        if (self.released_at is not None and self.released_at >= ready_since) or self._free(now):
            return None
        window, idle_s = self.config.window, self.config.when_idle_s
        waits = ([f"the activation window {window}"] if window else []) + \
            ([f"{idle_s:g} s without a firmware request"] if idle_s is not None else [])
        return "waiting for " + " or ".join(waits)

    def _free(self, now: float) -> bool:
        """No hold: nothing configured to wait for, the window is open, or the device is idle."""
        window, idle_s = self.config.window, self.config.when_idle_s
        return ((window is None and idle_s is None) or (window is not None and window_open(window, now))
                or (idle_s is not None and now - self.last_request >= idle_s))

    def _save(self) -> None:
        try:
            if self.hold_ is None:
                self.path.unlink(missing_ok=True)
                self.saved_until = None
            else:
                atomic_write(self.path, json.dumps({"reason": self.hold_.reason, "until": self.hold_.until}).encode())
                self.saved_until = self.hold_.until
        except OSError as exc:  # the hold still applies in memory
            log.warning("cannot persist the activation hold in %s: %s", self.path, exc.strerror)
