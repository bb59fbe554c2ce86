"""Many agents in one process, for fleet tests and benchmarks: each has its own identity, MQTT
connection, data directory (slots, jobs, spool) and frame source, and all agents running the
same bundle share one model session."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from agent.config import AgentConfig, LocalApiConfig, ProbationConfig
from agent.frames import FolderSource
from agent.loop import Agent
from contract import topics
from contract.state import offline
from transport.client import MqttTransport
from transport.config import BrokerConfig
from transport.loop import SharedLoop


def simulated_agents(count: int, broker: BrokerConfig, data_root: Path, trusted_keys: list[Path],
                     groups: list[str], frames: Path | None, prefix: str = "sim",
                     inference_interval_s: float = 1.0, telemetry_window_s: float = 10.0,
                     trust_file: Path | None = None,
                     credentials: Callable[[str], BrokerConfig] | None = None,
                     probation: ProbationConfig | None = None) -> list[Agent]:
    """``trusted_keys``: key files (both roles); or ``trust_file``: a root-signed trust document.
    ``credentials(device_id)``: each device's own broker login (e.g. the embedded broker's
    ``device_credentials``); without it every device uses ``broker``. ``probation``: without frames
    there is no live evidence, so probation lasts its ``max_s`` (24 h by default) unless this sets less."""
    agents = []
    network = SharedLoop()  # one epoll thread for every connection: paho's select() stops at fd 1024
    for i in range(count):
        device = f"{prefix}-{i:04d}"
        login = credentials(device) if credentials is not None else broker
        config = AgentConfig(device_id=device, groups=groups, data_dir=data_root / device, trusted_keys=trusted_keys,
                             trust_file=trust_file, broker=login, inference_interval_s=inference_interval_s,
                             telemetry_window_s=telemetry_window_s,
                             local_api=LocalApiConfig(enabled=False),  # no firmware beside a simulated fridge
                             probation=probation or ProbationConfig())
        transport = MqttTransport(device, login, topics.state(device), offline(device).to_json(), loop=network)
        source = FolderSource(frames, start=i * 7919) if frames is not None else None
        agents.append(Agent(config, transport, source, share_models=True))
    return agents


def run_all(agents: list[Agent], seconds: float | None, stop: threading.Event | None = None) -> None:
    """Run every agent in its own thread until ``seconds`` pass or ``stop`` is set."""
    stop = stop or threading.Event()
    until = None if seconds is None else time.monotonic() + seconds
    threads = [threading.Thread(target=a.run, kwargs={"until": until, "stop": stop}, daemon=True,
                                name=a.config.device_id) for a in agents]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(timeout=0.5)
    except KeyboardInterrupt:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
