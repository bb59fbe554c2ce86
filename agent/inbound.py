"""What the cloud sends a device, decided on: the cloud's acks of telemetry, commands (each checked by
the gate before it is acted on) and the chunks of the artifacts being downloaded; ``request_missing``
reports what a download still lacks once its chunks stopped arriving. Functions of the agent (its
state stays on ``Agent``); ``Agent.on_message`` and ``Agent.request_missing`` call them, and the agent
subscribes to ``subscriptions`` at each connection. A bug met by one message drops it like a malformed
one (``agent/guard.py``)."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from agent.commands import cancel, profile, roll_back, set_config
from agent.errors import AgentError
from agent.gate import Answer, Refused
from agent.receiver import to_ask
from contract import topics
from contract.commands import (
    CancelCommand,
    DeployCommand,
    ProfileCommand,
    RollbackCommand,
    SetConfigCommand,
    TrustUpdateCommand,
)
from contract.errors import ContractError, TopicError
from contract.jobs import JobState
from contract.transfer import decode_chunk

if TYPE_CHECKING:
    from agent.loop import Agent

log = logging.getLogger("coldchain.agent")


def subscriptions(agent: Agent) -> list[str]:
    """The topics an agent reads: its commands and artifacts, its telemetry acks, its groups' artifacts."""
    device = agent.config.device_id
    groups = set(agent.config.groups)
    for record in agent.deployer.jobs.unfinished():  # rollout waves publish on a group of their own
        group = record.command.get("artifact", {}).get("group")
        if group:
            groups.add(group)
    return [topics.commands(device), topics.device_artifacts(device), agent.uplink.subscription,
            *[topics.group_artifacts(g) for g in sorted(groups)]]


def on_message(agent: Agent, topic: str, payload: bytes) -> None:
    try:
        parsed = topics.parse(topic)
        if parsed.kind is topics.TopicKind.ACKS:
            agent.uplink.on_ack(payload)
        elif parsed.kind is topics.TopicKind.COMMANDS:
            on_command(agent, payload, topic)
        elif parsed.kind in (topics.TopicKind.GROUP_CHUNKS, topics.TopicKind.DEVICE_CHUNKS):
            chunk = decode_chunk(payload)
            for record in agent.deployer.jobs.unfinished():
                if record.command.get("artifact", {}).get("sha256") == chunk.header.sha256:
                    agent.last_chunk[record.job_id] = time.monotonic()
                    agent.highest_chunk[record.job_id] = max(chunk.header.index,
                                                             agent.highest_chunk.get(record.job_id, -1))
                    agent.deployer.on_chunk(record.job_id, chunk)
        else:  # a device's own state, telemetry, ...: never subscribed to, so a broker's mistake or worse
            raise TopicError(f"topic {topic!r} carries {parsed.kind.value}, which an agent does not read")
    except (ContractError, AgentError) as exc:
        agent.malformed += 1
        log.warning("refused a message on %s: %s", topic, exc)
        agent.report_error("malformed_message", str(exc), topic)
    except Exception as exc:  # a bug met by this message (agent/guard.py): dropped like a malformed one
        agent.malformed += 1
        agent.guard.caught(f"a message on {topic[:200]!r}", exc)


def on_command(agent: Agent, payload: bytes, topic: str) -> None:
    verdict = agent.gate.check(payload)
    if isinstance(verdict, Refused):  # a replay, an expired or foreign command, a bad signature: never acted on
        agent.report_error(f"command_refused.{verdict.reason}", verdict.message, topic, verdict.job_id)
        return
    if isinstance(verdict, Answer):  # re-sent: answered with its state, never acted on twice
        agent._emit(verdict.job_id, *verdict.outcome, None)
        return
    command = verdict.command
    if isinstance(command, DeployCommand):
        group = command.artifact.group
        if group is not None and group not in agent.config.groups:  # a rollout wave's own group topic
            agent.transport.subscribe([topics.group_artifacts(group)])
        agent.last_chunk.setdefault(command.job_id, time.monotonic())  # the stream starts soon: wait for it
        agent.deployer.on_deploy(command)
    elif isinstance(command, CancelCommand):
        agent._emit(command.job_id, *cancel(agent.deployer, agent.commands, command), None)
    elif isinstance(command, RollbackCommand):
        state, reason = roll_back(agent.deployer, command)
        if state is JobState.FAILED:
            agent.report_error("rollback_refused", reason or "", topic)
        agent._emit(command.job_id, state, reason, None)
    elif isinstance(command, SetConfigCommand):
        agent.config, agent.next_inference, applied = set_config(agent.config, agent.next_inference, command)
        agent._emit(command.job_id, JobState.SUCCEEDED, applied, None)
    elif isinstance(command, ProfileCommand):
        on_profile(agent, command, topic)
    elif isinstance(command, TrustUpdateCommand):
        agent.keeper.on_update(command, agent._emit)
    else:
        agent.report_error("unsupported_command", f"{command.type} is not supported by this agent yet", topic)


def on_profile(agent: Agent, command: ProfileCommand, topic: str) -> None:
    """Time the active model on this device (model only, after warm-up) and report it."""
    loaded = agent.active_model()
    if loaded is None:
        agent.report_error("no_active_model", "profile needs an active bundle; none is installed", topic,
                           command.job_id)
        return
    agent.event_seq += 1
    event = profile(loaded, agent.available, command, agent.config.device_id, agent.event_seq)
    agent.send(topics.events(agent.config.device_id), event.to_json())
    agent.commands.record(command.job_id, JobState.SUCCEEDED, f"profiled: p95 {event.p95_ms:.3g} ms")


def request_missing(agent: Agent, quiet_s: float = 5.0, stall_s: float = 30.0) -> None:
    """Report what each download lacks, once its chunks stopped arriving for ``quiet_s`` (``to_ask``)."""
    now = time.monotonic()
    for record in agent.deployer.jobs.unfinished():
        quiet = now - agent.last_chunk.get(record.job_id, -stall_s)
        if quiet < quiet_s:
            continue
        report = to_ask(agent.deployer.missing_report(record.job_id, agent.config.device_id), quiet, stall_s,
                        agent.highest_chunk.get(record.job_id))
        if report is not None:
            agent.transport.publish(topics.missing(agent.config.device_id, report.sha256), report.to_json())
