"""What the agent reports of itself on its retained state topic (``DeviceState``): who it is, what it
runs, its slots, the job that moved last, and the faults going on now (``agent.health.Faults``).
``Agent.publish_state`` sends it at each connection, when a job moves, and when a fault starts or clears."""

from __future__ import annotations

from typing import TYPE_CHECKING

from contract.common import RuntimeInfo
from contract.state import DeviceState, JobSummary

if TYPE_CHECKING:
    from agent.loop import Agent

AGENT_VERSION = "0.1.0"


def device_state(agent: Agent) -> DeviceState:
    # the job that moved last (history times are ISO 8601 UTC, so they sort as text)
    current = max(agent.deployer.jobs.all(), key=lambda r: r.history[-1][2] if r.history else "", default=None)
    pointer = agent.deployer.slots.pointer()
    return DeviceState(
        device_id=agent.config.device_id, online=True, board=agent.config.board, agent_version=AGENT_VERSION,
        runtimes=[RuntimeInfo(name=k, version=v) for k, v in agent.available.items()],
        active=agent.bundle_ref(), previous=pointer.previous_bundle, slots=pointer.slots, groups=agent.config.groups,
        job=None if current is None else JobSummary(job_id=current.job_id, state=current.state),
        faults=agent.health.faults.now())
