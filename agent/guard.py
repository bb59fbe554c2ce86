"""Defence in depth for the agent loop: each unit of work (one inbound message, one local API
request, one inference tick, one window close, one deploy step) runs isolated, so a bug met by one
of them (a KeyError, a library's ValueError, a RecursionError) costs that unit only.

Expected errors (``AgentError``, ``ContractError``, ``OSError``) are reported as
``agent_error.<type>``; anything else is an ``internal_error``: its traceback is logged once per code
location (the file, line and function it was raised in), it is counted (``count``, ``by_location``)
and reported as an error event through the agent's error budget. ``KeyboardInterrupt`` and
``SystemExit`` are not ``Exception``: they still stop the agent."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from agent.errors import AgentError
from contract.errors import ContractError

log = logging.getLogger("coldchain.agent")
MAX_LOCATIONS = 256  # distinct code locations remembered (the rest are counted under "other")
Report = Callable[[str, str], None]


def location(exc: BaseException) -> str:
    """Where ``exc`` was raised: ``file.py:line in function`` of its traceback's last frame."""
    tb = exc.__traceback__
    if tb is None:
        return "unknown"
    while tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code
    return f"{Path(code.co_filename).name}:{tb.tb_lineno} in {code.co_name}"


class Guard:
    def __init__(self, report: Report, allowed: Callable[[str], bool]) -> None:
        self.report = report  # the agent's report_error (its error budget holds back a flood)
        self.allowed = allowed  # the same budget, for expected errors' tracebacks
        self.count = 0  # internal errors since start
        self.by_location: dict[str, int] = {}

    def caught(self, what: str, exc: Exception) -> str:
        """A bug met by ``what``: logged (its traceback once per location), counted, reported.
        Returns the reason, for a job that fails with it or a request answered with it."""
        where = location(exc)
        key = where if where in self.by_location or len(self.by_location) < MAX_LOCATIONS else "other"
        first = key not in self.by_location
        self.by_location[key] = self.by_location.get(key, 0) + 1
        self.count += 1
        reason = f"internal error in {what}: {type(exc).__name__}: {str(exc)[:500]} (at {where})"
        if first:
            log.error("%s; traceback logged once for this location", reason, exc_info=exc)
        else:
            log.debug("%s (%d times at this location)", reason, self.by_location[key])
        self.report("internal_error", reason)
        return reason

    @contextmanager
    def unit(self, what: str) -> Iterator[None]:
        """Run one unit of work: whatever it raises is reported, and the loop goes on."""
        try:
            yield
        except (AgentError, ContractError, OSError) as exc:
            kind = f"agent_error.{type(exc).__name__}"
            if self.allowed(f"log.{kind}"):  # the traceback as rarely as the event
                log.exception("agent step failed in %s", what)
            self.report(kind, f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # a bug: this unit's, not the agent's
            self.caught(what, exc)
