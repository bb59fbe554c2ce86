"""The agent process is SIGKILLed at five points of a deploy (Mosquitto, MQTT v5, persistent
session). After each restart, chunks already persisted are not fetched again, and the active
model is always the old or the new fully verified bundle, never anything else."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
from pathlib import Path

import pytest

from agent.deploy import Deployer
from agent.runtimes import available
from benchmarks.faults.invariant import data_dir_violations
from benchmarks.faults.world import signed
from contract import topics
from contract.events import JobEvent, decode_event
from contract.jobs import JobState
from contract.signing import TrustStore
from contract.transfer import MissingChunks, decode_chunk
from examples.fridge.synth import write_dataset
from tests.conftest import deploy_command
from tests.integration.cloud_side import cloud_client, job_accepted, wait_for

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _agent(config: Path, fault: str | None, after: int = 1) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("COLDCHAIN_FAULT", None)
    if fault:
        env |= {"COLDCHAIN_FAULT": fault, "COLDCHAIN_FAULT_AFTER": str(after)}
    code = "import sys; from coldchain.cli import main; main()"
    return subprocess.Popen([sys.executable, "-c", code, "agent", "run", "--config", str(config)], env=env,
                            stdout=subprocess.DEVNULL, stderr=open(str(config) + ".log", "ab"))


def _assert_whole(data: Path, trust: TrustStore, allowed: set[str]) -> None:
    """The pointer parses and names a slot that holds an allowed bundle, every file of it verified."""
    assert not data_dir_violations(data, trust, allowed)


@pytest.mark.parametrize("fault", ["download", "after_verify", "mid_install", "mid_activation", "probation"])
def test_sigkill_at_each_point_of_a_deploy(fault: str, tmp_path: Path, mosquitto_url: str,
                                           world: dict[str, object]) -> None:
    device = f"kill-{fault.replace('_', '-')}"
    root: Path = world["root"]  # type: ignore[assignment]
    trust: TrustStore = world["trust"]  # type: ignore[assignment]
    data = tmp_path / "data"
    old, new = world["bundles"][5], world["bundles"][6]  # type: ignore[index]
    # the device already runs bundle 5
    installer = Deployer(data, trust, available(), lambda *a: None)
    command, frames = deploy_command(old.tarball, old.ref.sha256, 5, "job-old")
    installer.on_deploy(command)
    for frame in frames:
        installer.on_chunk("job-old", decode_chunk(frame))
    write_dataset(tmp_path / "frames", 4, seed=1)
    config = tmp_path / "agent.toml"
    config.write_text(f'device_id = "{device}"\ngroups = ["eu"]\ndata_dir = "{data}"\n'
                      f'trusted_keys = ["{root / "keys" / "ops.pub"}"]\ninference_interval_s = 0.2\n'
                      f'telemetry_window_s = 2\n[broker]\nurl = "{mosquitto_url}"\nprotocol = "5"\n'
                      f'[source]\nkind = "folder"\nlocation = "{tmp_path / "frames"}"\n')
    inbox: queue.Queue[tuple[str, bytes]] = queue.Queue()
    cloud = cloud_client(mosquitto_url, True, inbox, [f"coldchain/v1/devices/{device}/#"])
    command, frames = deploy_command(new.tarball, new.ref.sha256, 6, f"job-{fault}", chunk=16 * 1024)
    after = 3 if fault == "download" else 1
    agent = _agent(config, fault, after)
    try:
        assert wait_for(inbox, lambda t, p: True if t == topics.state(device) and b'"online":true' in p else None,
                            30), "the agent never came online"
        cloud.publish(topics.commands(device), signed(command, world["trusted_key"], device), qos=1)  # type: ignore[arg-type]
        assert wait_for(inbox, job_accepted(command.job_id), 60), "the agent did not take the deploy command"
        sent = frames[:8] if fault == "download" else frames
        for frame in sent:
            cloud.publish(topics.group_chunks("eu", command.artifact.sha256), frame, qos=1)
        assert agent.wait(timeout=60) == -9, "the fault point was not reached"
        while not inbox.empty():  # what the killed process said before dying
            inbox.get()
        _assert_whole(data, trust, {old.ref.sha256, new.ref.sha256})
        persisted = set(range(len(frames))) - set(Deployer(data, trust, available(), lambda *a: None)
                                                   .missing(command.job_id))
        agent = _agent(config, None)  # restart, no fault

        def missing_report(topic: str, payload: bytes) -> MissingChunks | None:
            return MissingChunks.from_json(payload) if topic.endswith("/missing") else None

        def final(topic: str, payload: bytes) -> JobEvent | None:
            if topic == topics.events(device):
                event = decode_event(payload)
                if isinstance(event, JobEvent) and event.job_id == command.job_id and event.state in (
                        JobState.PROBATION, JobState.SUCCEEDED,
                                                                    JobState.FAILED, JobState.ROLLED_BACK):
                    return event
            return None

        if fault == "download":
            assert len(persisted) >= 3 and len(frames) > 8
            report = wait_for(inbox, missing_report, 30)
            assert report is not None, "the restarted agent did not ask for its missing chunks"
            assert not persisted & set(report.indices()), "chunks persisted before the kill were asked for again"
            for index in report.indices():
                cloud.publish(topics.device_chunks(device, command.artifact.sha256), frames[index], qos=1)
        event = wait_for(inbox, final, 60)
        assert event is not None and event.state is JobState.PROBATION, event
        _assert_whole(data, trust, {new.ref.sha256})
    finally:
        agent.kill()
        agent.wait(timeout=10)
        cloud.loop_stop()
        cloud.disconnect()
