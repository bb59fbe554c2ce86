"""The end of a telemetry window: it is stored in the spool (and sent from there), what the active
bundle did in it is kept to judge the next one, each bundle in probation is judged on it, and the
shadow runs of candidates in SHADOW are started or, once their time is up, reported. Functions of
the agent (its state stays on ``Agent``); ``Agent.close_window`` calls them."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from agent.errors import AgentError
from agent.jobs import JobRecord
from agent.shadow import ShadowRun
from agent.telemetry import Window
from contract import topics
from contract.errors import ContractError
from contract.events import ShadowEvent
from contract.jobs import JobState

if TYPE_CHECKING:
    from agent.loop import Agent


def close_window(agent: Agent) -> None:
    _, evicted = agent.spool.append(lambda seq: agent.window.close(agent.config.device_id, seq, agent.spool.epoch,
                                                                   agent.bundle_ref(), agent.spool.size,
                                                                   agent.spool.evicted).to_json())
    if agent.health.spool(agent.spool.size, agent.spool.max_windows, evicted):  # a fault started or cleared
        agent.publish_state()
    for job_id in list(agent.shadows):  # a shadow candidate whose job was cancelled: close it
        record = agent.deployer.jobs.get(job_id)
        if record is None or record.state is not JobState.SHADOW:
            agent.shadows.pop(job_id).close()
    active = agent.deployer.slots.pointer().active_sha256
    latencies, p95 = agent.window.judged_ms, agent.window.p95()
    if active is not None:  # what each bundle did here: the next one is judged on it
        agent.live_p95.window(active, latencies, p95)
    for record in agent.deployer.jobs.unfinished():
        if record.state is JobState.PROBATION:
            agent.deployer.probation(record, agent.window.inferences, sum(agent.window.errors.values()),
                                     agent.window.non_finite, p95,
                                     baseline_p95_ms=agent.live_p95.get(record.predecessor_sha256),
                                     latencies_ms=latencies)
        elif record.state is JobState.SHADOW:
            shadow_step(agent, record)
    agent.window = Window()
    agent.window_started = time.monotonic()


def shadow_step(agent: Agent, record: JobRecord) -> None:
    """Start the shadow run of a job in SHADOW, or, once its time is up, report it and activate."""
    run = agent.shadows.get(record.job_id)
    if run is None:
        try:
            run = ShadowRun.open(record.job_id, agent.deployer.candidate_path(record), agent.trust,
                                 agent.config.limits.threads, agent.deployer.engine_cache)
        except (AgentError, ContractError) as exc:
            agent.deployer.cancel_shadow(record, f"the candidate cannot run beside the active model: {exc}")
            return
        agent.shadows[record.job_id] = run
    if not agent.deployer.shadow_due(record):
        return
    agent.shadows.pop(record.job_id).close()
    agent.event_seq += 1
    event = ShadowEvent(device_id=agent.config.device_id, seq=agent.event_seq, job_id=record.job_id,
                        frames=run.frames, agreement=run.agreement)
    agent.send(topics.events(agent.config.device_id), event.to_json())
    agent.deployer.end_shadow(record)
