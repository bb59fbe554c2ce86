"""``coldchain agent run``: one agent on the configured broker and frame source until SIGTERM."""

from __future__ import annotations

import signal
import threading
import time

from agent.config import AgentConfig
from agent.frames import FrameSource
from agent.health import reopening
from agent.lock import lock_data_dir
from agent.loop import Agent
from contract import topics
from contract.state import offline


def run_agent(config: AgentConfig, source: FrameSource | None = None, seconds: float | None = None) -> Agent:
    """The agent as ``coldchain agent run`` starts it: the configured source (default) is opened when first
    read and reopened with backoff, so a missing camera or broker is reported, never a reason to exit.
    Refuses to start while another agent runs on the same data directory (``agent/lock.py``)."""
    with lock_data_dir(config.data_dir):
        return _run(config, source, seconds)


def _run(config: AgentConfig, source: FrameSource | None, seconds: float | None) -> Agent:
    from transport.client import MqttTransport

    if source is None:
        source = reopening(config.source.kind, config.source.location, config.source.loop,
                           config.limits.max_frame_pixels)
    transport = MqttTransport(config.device_id, config.broker, topics.state(config.device_id),
                              offline(config.device_id).to_json())
    agent = Agent(config, transport, source)
    stop = threading.Event()
    # systemd stops with SIGTERM: finish the step, publish the offline state, close the spool
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    agent.run(until=None if seconds is None else time.monotonic() + seconds, stop=stop)
    return agent
