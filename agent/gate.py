"""What a device does with a command before acting on it (docs/security.md, "Commands and replay").

A command is acted on only if it is signed by a key this device trusts as ``operator`` (over bytes
that bind its type, device, job id, times and content: ``contract.commands``), names this device,
and has not expired by the device's *trusted time*; ``trust_update`` is exempt (its root signatures
and version are checked by ``agent.trust``). Then, by job id:

- unknown: acted on, and its content hash remembered (``CommandLog``, bounded and persisted);
- known with the same content (a re-send, re-signed with fresh times): answered with the job's state;
- known with other content: refused (``job_id_reused``, or ``job_finished`` when the job is over).

Every refusal names its reason (``old_version``, ``unsigned``, ``bad_signature``, ``other_device``,
``expired``, ``job_id_reused``, ``job_finished``) and is counted in ``refused``.

Trusted time is the latest of the device's clock, the newest ``issued_at`` of a command it verified
(persisted) and the issue time of its root-signed trust document. A clock reset to 1970 therefore
still refuses what expired before the newest command it saw, and takes fresh commands (their issue
time moves the trusted time on); a clock ahead of the cloud's refuses every command as expired,
naming how far ahead the clock is, until it is set right: it never acts on a stale command.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

from agent.commands import CommandLog, Outcome
from agent.jobs import JobStore
from contract import COMMAND_SCHEMA_VERSION
from contract.commands import (
    Command,
    TrustUpdateCommand,
    content_sha256,
    declared_version,
    decode_command,
    verify_command,
)
from contract.errors import PayloadError, SignatureError
from contract.signing import TrustStore

log = logging.getLogger("coldchain.agent.gate")
CLOCK_AHEAD_S = 24 * 3600.0  # a device clock this far past a command's issue time is named in the refusal


@dataclass(frozen=True)
class Act:
    command: Command


@dataclass(frozen=True)
class Answer:
    """A re-send of a job this device knows: report the job's state, do nothing else."""

    job_id: str
    outcome: Outcome


@dataclass(frozen=True)
class Refused:
    reason: str  # one word, for the error event's code (``command_refused.<reason>``)
    message: str
    job_id: str | None = None


Verdict = Act | Answer | Refused


class CommandGate:
    def __init__(self, device_id: str, trust: TrustStore, commands: CommandLog, jobs: JobStore,
                 clock: Callable[[], float]) -> None:
        self.device_id, self.trust, self.commands, self.jobs, self.clock = device_id, trust, commands, jobs, clock
        self.refused: Counter[str] = Counter()

    def trusted_now(self) -> datetime:
        """The device clock, but never earlier than the newest time it verified (see the module doc)."""
        floors = [t for t in (self.commands.newest_issued, self.trust.issued_at) if t is not None]
        return max([datetime.fromtimestamp(self.clock(), timezone.utc), *floors])

    def check(self, payload: bytes) -> Verdict:
        """The verdict on a command payload; a malformed one (not an old version) raises PayloadError."""
        try:
            command = decode_command(payload)
        except PayloadError:
            version = declared_version(payload)
            if version is None or version == COMMAND_SCHEMA_VERSION:
                raise
            return self._refuse(Refused("old_version", f"a version {version} command: this agent takes only "
                                        f"version {COMMAND_SCHEMA_VERSION} commands (signed by an operator key "
                                        "and bound to this device); upgrade the cloud that sent it"))
        if isinstance(command, TrustUpdateCommand):
            return Act(command)
        refused = self._refusal(command)
        if refused is not None:
            return self._refuse(refused)
        content = content_sha256(command)
        known, outcome = self._known(command.job_id)
        if known is not None and known != content:
            finished = outcome is not None and outcome[0].terminal
            what = f"job {command.job_id} " + (f"finished ({outcome[0].value})" if finished and outcome else
                                               "is known here")
            return self._refuse(Refused("job_finished" if finished else "job_id_reused",
                                        f"{what} with other content: this {command.type} reuses its job id "
                                        "(a replay, or a cloud that reused an id); not acted on", command.job_id))
        if outcome is not None:
            self.commands.saw(command.issued_at)
            return Answer(command.job_id, outcome)
        self.commands.accept(command.job_id, content, command.issued_at)
        return Act(command)

    def _refusal(self, command: Command) -> Refused | None:
        try:
            verify_command(command, self.trust)
        except SignatureError as exc:
            return Refused("unsigned" if command.authorization is None else "bad_signature", str(exc), command.job_id)
        if command.device_id != self.device_id:
            return Refused("other_device", f"{command.type} {command.job_id} is for device "
                           f"{command.device_id or '(none named)'}, not {self.device_id}", command.job_id)
        now = self.trusted_now()
        if command.expires_at is None or command.expires_at <= now:
            message = (f"{command.type} {command.job_id} expired at {_iso(command.expires_at)}; this device's "
                       f"trusted time is {_iso(now)} (the later of its clock and the newest time it verified)")
            ahead = self.clock() - command.issued_at.timestamp()
            if ahead > CLOCK_AHEAD_S:
                message += (f"; the device clock is {ahead / 86400:.1f} days past the command's issue time: if the "
                            "clock is wrong, set it (every command is refused until then)")
            return Refused("expired", message, command.job_id)
        return None

    def _known(self, job_id: str) -> tuple[str | None, Outcome | None]:
        """(content hash, state) of a job this device knows; a deploy job from before signed
        commands has no hash to compare (None)."""
        record = self.jobs.get(job_id)
        if record is not None:
            signed = record.command.get("authorization") is not None
            return (content_sha256(record.command) if signed else None), (record.state, record.reason)
        return self.commands.content(job_id), self.commands.get(job_id)

    def _refuse(self, refused: Refused) -> Refused:
        self.refused[refused.reason] += 1
        log.warning("command refused (%s): %s", refused.reason, refused.message)
        return refused


def _iso(moment: datetime | None) -> str:
    return "(never)" if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%SZ")
