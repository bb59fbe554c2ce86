"""Row 6, fuzzing: a running agent (``Agent.run`` in a thread, ``MqttTransport`` to a real
Mosquitto, bundle 5 active) is sent hypothesis-generated payloads on its commands topic and its
chunk topics (``fuzz_payloads``), QoS 0, in batches. After each batch the harness cancels the jobs
the valid deploys created (so the data directory stays bounded) and sends a marker, a profile
command at QoS 1: its answer proves the agent is serving and has read everything sent before it.

Must hold: the agent thread never dies; ``agent.malformed`` grows by exactly the number of payloads
the contract refuses (checked at every marker); every marker is answered; at least half of what
was sent is schema-valid; the data directory stays small (its size at the end is reported)."""

from __future__ import annotations

import queue
import tempfile
import threading
from collections import Counter
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.configuration import set_hypothesis_home_dir

from agent.loop import Agent
from benchmarks.faults.broker import Inbox, close, cloud_client, mosquitto, wait_for
from benchmarks.faults.device import agent_config, known_good_template
from benchmarks.faults.fuzz_payloads import DEVICE, deploy_job, message, refused
from benchmarks.faults.invariant import data_dir_violations, tree_bytes
from benchmarks.faults.report import Row
from benchmarks.faults.world import World, signed
from contract import topics
from contract.commands import CancelCommand, ProfileCommand
from contract.events import ProfileEvent, decode_event
from contract.state import DeviceState, offline
from transport.client import MqttTransport
from transport.config import BrokerConfig

MAX_DATA_BYTES = 64 * 1024 * 1024
MARKER_TIMEOUT = 300.0


class Sender:
    """Publishes fuzz payloads, keeps the oracle's count, and checks the agent at every marker."""

    def __init__(self, agent: Agent, thread: threading.Thread, cloud: object, inbox: Inbox, batch: int,
                 row: Row, key: Ed25519PrivateKey) -> None:
        self.agent, self.thread, self.cloud, self.inbox, self.batch, self.row = agent, thread, cloud, inbox, batch, row
        self.key = key  # the operator key the agent trusts: markers and cancels are signed as the cloud signs
        self.sent = self.invalid = self.markers = 0
        self.base = agent.malformed
        self.kinds: Counter[str] = Counter()
        self.jobs: list[str] = []
        self.pending = 0

    def send(self, topic: str, payload: bytes) -> None:
        bad = refused(topic, payload)
        self.invalid += bad
        self.sent += 1
        kind = topics.parse(topic).kind.value
        self.kinds[f"{'invalid' if bad else 'valid'} {'command' if kind == 'commands' else 'chunk'}"] += 1
        if not bad and (job := deploy_job(topic, payload)) is not None:
            self.jobs.append(job)
            self.kinds["valid deploy"] += 1
        self.cloud.publish(topic, payload, qos=0)  # type: ignore[attr-defined]
        self.pending += 1
        if self.pending >= self.batch:
            self.checkpoint()

    def checkpoint(self) -> bool:
        """Cancel the batch's jobs, send a marker and wait for its answer; check the count."""
        self.pending = 0
        for number, job in enumerate(self.jobs):
            cancel = CancelCommand(job_id=f"zz-cancel-{self.markers}-{number}", target_job_id=job)
            self.cloud.publish(topics.commands(DEVICE), signed(cancel, self.key, DEVICE), qos=1)  # type: ignore[attr-defined]
        self.jobs.clear()
        self.markers += 1
        marker = f"zz-marker-{self.markers}"
        self.cloud.publish(topics.commands(DEVICE), signed(ProfileCommand(  # type: ignore[attr-defined]
            job_id=marker, iterations=1, warmup=0), self.key, DEVICE), qos=1)

        def answer(topic: str, payload: bytes) -> bool | None:
            if topic != topics.events(DEVICE):
                return None
            event = decode_event(payload)
            return True if isinstance(event, ProfileEvent) and event.job_id == marker else None

        where = f"marker {self.markers} (after {self.sent} payloads)"
        answered = wait_for(self.inbox, answer, MARKER_TIMEOUT) is not None
        if not self.thread.is_alive():
            self.row.violated(where, "the agent thread died")
            return False
        if not answered:
            self.row.violated(where, f"no answer to the marker within {MARKER_TIMEOUT:.0f} s")
            return False
        counted = self.agent.malformed - self.base
        if counted != self.invalid:
            self.row.violated(where, f"agent.malformed grew by {counted}, {self.invalid} invalid payloads were sent")
            self.base = self.agent.malformed - self.invalid  # count the next batches on their own
        return True


def drive(sender: Sender, payloads: int, rng_seed: int) -> None:
    @seed(rng_seed)
    @settings(max_examples=payloads, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(message(sender.key))
    def one(item: tuple[str, bytes]) -> None:
        sender.send(*item)

    one()


def run(world: World, payloads: int = 20_000, batch: int = 500, rng_seed: int = 1, workdir: Path | None = None) -> Row:
    row = Row("fuzzing (hypothesis, over Mosquitto)", "the agent thread never dies; agent.malformed grows by exactly "
              "the invalid payloads sent; every marker (profile) answered; >= half valid; data dir bounded")
    with row.timed(), tempfile.TemporaryDirectory(dir=workdir) as tmp, mosquitto(Path(tmp), True) as url:
        data = known_good_template(world, Path(tmp) / "data")
        config = agent_config(world, data, DEVICE, broker=BrokerConfig(url=url, protocol="5"))
        transport = MqttTransport(DEVICE, config.broker, topics.state(DEVICE), offline(DEVICE).to_json())
        agent = Agent(config, transport, None)
        inbox: Inbox = queue.Queue()
        cloud = cloud_client(url, True, inbox, [topics.events(DEVICE), topics.state(DEVICE)])
        stop = threading.Event()
        thread = threading.Thread(target=agent.run, kwargs={"stop": stop}, name="fuzzed-agent", daemon=True)
        thread.start()
        try:
            online = wait_for(inbox, lambda t, p: True if t == topics.state(DEVICE) and DeviceState.from_json(p).online
                              else None, 60)
            if online is None:
                row.violated("start", "the agent never came online")
                return row
            sender = Sender(agent, thread, cloud, inbox, batch, row, world.trusted_key)
            set_hypothesis_home_dir(Path(tmp) / "hypothesis")  # its caches, never the working directory
            drive(sender, payloads, rng_seed)
            sender.checkpoint()  # the last batch, and the proof that it still serves
        finally:
            set_hypothesis_home_dir(None)
            stop.set()
            thread.join(timeout=60)
            close(cloud)
        used, apparent = tree_bytes(data)
        row.violated("end", data_dir_violations(data, world.trust, {world.bundles[5].ref.sha256}))
        if used > MAX_DATA_BYTES:
            row.violated("end", f"the data directory holds {used / 2**20:.1f} MiB")
        valid = sender.sent - sender.invalid
        if valid * 2 < sender.sent:
            row.violated("end", f"only {valid} of {sender.sent} payloads were schema-valid")
        row.how_often = (f"{sender.sent} payloads ({valid} valid, {sender.invalid} invalid; "
                         f"{sender.kinds['valid deploy']} deploys), {sender.markers} markers")
        row.notes.append(", ".join(f"{k} {n}" for k, n in sorted(sender.kinds.items())))
        row.notes.append(f"data directory at the end: {used / 2**20:.1f} MiB on disk, {apparent / 2**20:.1f} MiB "
                         f"apparent (sparse downloads); agent.malformed = {agent.malformed}")
        row.notes.append("commands refused by the gate (not malformed): "
                         + (", ".join(f"{k} {n}" for k, n in sorted(agent.gate.refused.items())) or "none"))
    return row
