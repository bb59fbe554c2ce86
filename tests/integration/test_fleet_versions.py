"""Fleets across versions (issue 13): the agent of the commit before issue 13 (af8e7d9, protocol 1:
unsigned commands, manifests up to v2, a version 1 state) runs as a real process against the
current cloud on the embedded broker, beside a current agent. The old device comes online and its
telemetry is stored; the fleet view (CLI and API) says it needs a new agent; a rollout that selects
both skips it with that reason (never PENDING) and succeeds on the new one; a rollout that selects
only old devices is refused, naming them."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from typer.testing import CliRunner

from agent.simulate import simulated_agents
from cloud.api import create_app
from cloud.broker import EmbeddedBroker
from cloud.errors import RolloutError
from cloud.fleet import add_bundle
from cloud.plan import Gates, RolloutPlan, Selector, Timeouts
from cloud.rollouts import FINISHED, SUCCEEDED, view
from cloud.rollouts import start as start_rollout
from cloud.service import Cloud
from cloud.store import Device, TelemetryRow, sqlite_url
from coldchain.cli import app as cli
from contract.versions import AGENT_PROTOCOL, STATE_SCHEMA_VERSION
from examples.fridge.synth import write_dataset
from tests.waiting import until

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
OLD_COMMIT = "af8e7d9"  # main before the issue-13 merges
OLD, NEW = "compat-old-0001", "compat-new-0000"
TOKEN = "t" * 32
PLAN = dict(waves="100%", probation_s=2.0, gates=Gates(min_inferences=5, max_input_drift=0.5, max_latency_ratio=100),
            timeouts=Timeouts(ack_s=3, wave_s=90, observe_s=1), chunk_size=32 * 1024)


@pytest.fixture(scope="module")
def old_checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The source tree of OLD_COMMIT (``git archive``: no repository state is touched)."""
    out = tmp_path_factory.mktemp("old")
    try:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", OLD_COMMIT], capture_output=True,
                                 check=True, timeout=60).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"commit {OLD_COMMIT} is not in this checkout (a shallow clone?): {exc}")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(out, filter="data")
    return out


@pytest.fixture
def old_agent(old_checkout: Path, amqtt_broker: EmbeddedBroker, tmp_path: Path,
              world: dict[str, object]) -> Iterator[subprocess.Popen[bytes]]:
    """The old agent as its commit starts it (``coldchain agent run --config``), with its own broker
    login, the trusted key as a plain file (its only trust format) and a folder of frames."""
    login = amqtt_broker.device_credentials(OLD)
    config = {"device_id": OLD, "board": "rpi4", "groups": ["compat"], "data_dir": str(tmp_path / "old-data"),
              "trusted_keys": [str(world["root"] / "keys" / "ops.pub")],  # type: ignore[operator]
              "broker": {"url": login.url, "protocol": "3.1.1", "username": login.username,
                         "password": login.password, "reconnect_min_s": 1},
              "source": {"kind": "folder", "location": str(tmp_path / "frames")},
              "inference_interval_s": 0.2, "telemetry_window_s": 1}
    (tmp_path / "old-agent.yaml").write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLDCHAIN_")}
    env["PYTHONPATH"] = str(old_checkout)
    log = (tmp_path / "old-agent.log").open("wb")
    process = subprocess.Popen([sys.executable, "-c", "from coldchain.cli import main; main()", "agent", "run",
                                "--config", str(tmp_path / "old-agent.yaml")],
                               cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


def test_an_old_agent_stays_in_the_fleet_and_is_not_deployed_to(
        old_agent: subprocess.Popen[bytes], amqtt_broker: EmbeddedBroker, tmp_path: Path,
        world: dict[str, object]) -> None:
    write_dataset(tmp_path / "frames", 40, seed=11)
    agents = simulated_agents(1, amqtt_broker.cloud_credentials(), tmp_path / "devices",
                              [world["root"] / "keys" / "ops.pub"], ["compat"], tmp_path / "frames",  # type: ignore[operator]
                              prefix="compat-new", inference_interval_s=0.2, telemetry_window_s=1,
                              credentials=lambda d: amqtt_broker.device_credentials(d, reconnect_min_s=1))
    stop = threading.Event()
    thread = threading.Thread(target=agents[0].run, kwargs={"stop": stop}, daemon=True)
    thread.start()
    store = sqlite_url(tmp_path / "cloud.db")
    cloud = Cloud(store, amqtt_broker.cloud_credentials(reconnect_min_s=1), world["trusted_key"],  # type: ignore[arg-type]
                  client_id="cloud-compat").start()
    old_log = tmp_path / "old-agent.log"
    try:
        until(lambda: _online(cloud) == {OLD, NEW}, "both agents' states", 60,
              detail=lambda: f"old agent exit {old_agent.poll()}: {old_log.read_text()[-3000:]}")
        until(lambda: _windows(cloud, OLD) >= 2, "the old agent's telemetry", 60,
              detail=lambda: old_log.read_text()[-3000:])
        with cloud.sessions() as session:
            old, new = session.get(Device, OLD), session.get(Device, NEW)
            assert old is not None and new is not None
            assert (old.protocol, old.state_version) == (1, 1)
            assert (new.protocol, new.state_version) == (AGENT_PROTOCOL, STATE_SCHEMA_VERSION)
            stored = session.scalars(select(TelemetryRow.payload).where(TelemetryRow.device_id == OLD)).first()
            assert stored is not None and stored["schema_version"] == 1

        # ---- the fleet view: CLI and API name the old device and why ------------------------------
        listed = CliRunner().invoke(cli, ["fleet", "list", "--db", store, "--group", "compat"], terminal_width=250)
        assert listed.exit_code == 0, listed.output
        lines = {line.split()[1]: line for line in listed.output.splitlines() if "compat-" in line}
        assert "needs a new agent" in lines[OLD] and "needs a new agent" not in lines[NEW], listed.output
        shown = CliRunner().invoke(cli, ["fleet", "show", OLD, "--db", store], terminal_width=250)
        assert f"it reports protocol 1, the cloud commands with protocol {AGENT_PROTOCOL}" in shown.output
        api = TestClient(create_app(cloud.sessions, TOKEN))
        body = api.get(f"/devices/{OLD}", headers={"Authorization": f"Bearer {TOKEN}"}).json()["device"]
        assert body["protocol"] == 1 and "needs a new agent" in body["needs_new_agent"]
        body = api.get(f"/devices/{NEW}", headers={"Authorization": f"Bearer {TOKEN}"}).json()["device"]
        assert body["protocol"] == AGENT_PROTOCOL and body["needs_new_agent"] is None

        # ---- a rollout of both: the old one skipped with the reason, the new one deployed --------
        with cloud.sessions.begin() as session:
            five = add_bundle(session, world["bundles"][5].tarball, world["trust"]).sha256  # type: ignore[index,arg-type]
        rollout = start_rollout(cloud.sessions, five, RolloutPlan(selector=Selector(groups=["compat"]), **PLAN),
                                "r-compat")
        with cloud.sessions() as session:
            devices = {d.device_id: d for d in view(session, rollout).devices}
        assert devices[OLD].state == "SKIPPED", devices[OLD]
        assert f"reports protocol 1, the cloud commands with protocol {AGENT_PROTOCOL}" in (devices[OLD].reason or "")
        until(lambda: _status(cloud, rollout) in FINISHED, "the rollout to finish", 180)
        with cloud.sessions() as session:
            v = view(session, rollout)
            assert v.rollout.status == SUCCEEDED, v.rollout.reason
            assert {d.device_id: d.state for d in v.devices} == {OLD: "SKIPPED", NEW: "SUCCEEDED"}
        assert agents[0].bundle_ref() is not None and agents[0].bundle_ref().sha256 == five  # type: ignore[union-attr]

        # ---- a rollout of old devices only: refused, naming them -------------------------------------
        with pytest.raises(RolloutError, match=f"{OLD}.*needs a new agent"):
            start_rollout(cloud.sessions, five, RolloutPlan(selector=Selector(devices=[OLD]), **PLAN), "r-old")
        assert old_agent.poll() is None, old_log.read_text()[-3000:]  # still running, still reporting
        before = _windows(cloud, OLD)
        until(lambda: _windows(cloud, OLD) > before, "more of the old agent's telemetry", 30)
    finally:
        cloud.stop()
        stop.set()
        thread.join(timeout=20)


def _online(cloud: Cloud) -> set[str]:
    with cloud.sessions() as session:
        return set(session.scalars(select(Device.id).where(Device.online.is_(True), Device.id.in_([OLD, NEW]))))


def _windows(cloud: Cloud, device: str) -> int:
    with cloud.sessions() as session:
        return session.scalar(select(func.count()).select_from(TelemetryRow).where(TelemetryRow.device_id == device)) \
            or 0


def _status(cloud: Cloud, rollout: str) -> str:
    with cloud.sessions() as session:
        return view(session, rollout).rollout.status
