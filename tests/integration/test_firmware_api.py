"""The appliance firmware's view (issue 14, docs/firmware.md): a C client, compiled here with the
system's ``cc``, talks to a running agent (connected to Mosquitto) over its Unix socket: it
subscribes, triggers an inference, gets the result with its request id, and sees the inventory
change between two images it names by path."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from agent.config import AgentConfig
from agent.frames import FolderSource
from agent.loop import Agent
from benchmarks.faults.device import deliver, pass_probation
from cloud.fleet import add_bundle
from cloud.plan import Gates, RolloutPlan, Selector, Timeouts
from cloud.rollouts import RUNNING, SUCCEEDED, view
from cloud.rollouts import start as start_rollout
from cloud.service import Cloud
from cloud.store import Device, EventRow, sqlite_url
from contract import topics
from contract.local import decode_answer
from contract.state import offline
from examples.fridge.synth import write_dataset
from tests.waiting import until
from transport.client import MqttTransport
from transport.config import BrokerConfig

PRELUDE_C = r"""
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* connect to the agent's socket: lines are read from *in and written to *out */
static int open_socket(const char *path, FILE **in, FILE **out) {
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    strncpy(addr.sun_path, path, sizeof addr.sun_path - 1);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) { perror("connect"); return 1; }
    *in = fdopen(fd, "r");
    *out = fdopen(dup(fd), "w");
    return 0;
}
"""
CLIENT_C = PRELUDE_C + r"""
/* usage: client SOCKET IMAGE_A IMAGE_B; prints every line the agent sends until the inventory
   change caused by IMAGE_B (request id img-b) */
int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: %s socket image-a image-b\n", argv[0]); return 2; }
    FILE *in, *out;
    if (open_socket(argv[1], &in, &out) != 0) return 1;
    fprintf(out, "{\"schema_version\":1,\"type\":\"subscribe\",\"id\":\"sub-1\",\"topics\":[\"inventory\"]}\n");
    fprintf(out, "{\"schema_version\":1,\"type\":\"infer\",\"id\":\"door-1\",\"mode\":\"now\"}\n");
    fprintf(out, "{\"schema_version\":1,\"type\":\"infer\",\"id\":\"img-a\",\"mode\":\"image\","
                 "\"image_path\":\"%s\"}\n", argv[2]);
    fprintf(out, "{\"schema_version\":1,\"type\":\"infer\",\"id\":\"img-b\",\"mode\":\"image\","
                 "\"image_path\":\"%s\"}\n", argv[3]);
    fflush(out);
    static char line[1 << 20];
    while (fgets(line, sizeof line, in)) {
        fputs(line, stdout);
        if (strstr(line, "\"type\":\"inventory\"") && strstr(line, "\"id\":\"img-b\"")) return 0;
    }
    fprintf(stderr, "the agent closed the connection\n");
    return 1;
}
"""


@pytest.fixture(scope="module")
def client_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _compile(CLIENT_C, "client", tmp_path_factory.mktemp("cclient"))


def _truth(frames: Path) -> dict[str, set[str]]:
    with (frames / "labels.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    return {row["file"]: {k for k, v in row.items() if k != "file" and v == "1"} for row in rows}


@pytest.fixture
def running_agent(tmp_path: Path, world: dict[str, object], mosquitto_url: str) -> Iterator[Agent]:
    root: Path = world["root"]  # type: ignore[assignment]
    frames = tmp_path / "frames"
    write_dataset(frames, 3, seed=3)
    config = AgentConfig.model_validate({
        "device_id": "fridge-fw", "groups": ["eu"], "data_dir": tmp_path / "data",
        "trusted_keys": [root / "keys" / "ops.pub"], "broker": {"url": mosquitto_url},
        "telemetry_window_s": 2,  # probation is judged when a window closes
        "source": {"location": str(frames), "trigger": "on_request"},
        "probation": {"max_s": 2},  # idle between requests: a bundle with no live error is kept after 2 s
        "local_api": {"image_dirs": [tmp_path]}})  # the C client names images under tmp_path
    transport = MqttTransport(config.device_id, config.broker, topics.state(config.device_id),
                              offline(config.device_id).to_json())
    agent = Agent(config, transport, FolderSource(frames))
    deliver(agent, world["bundles"][5], 5, "job-fw")  # type: ignore[index]  # before the loop runs: one thread
    pass_probation(agent.deployer, "job-fw")  # bundle 5 is the device's known-good one
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, kwargs={"stop": stop}, daemon=True)
    thread.start()
    until(lambda: config.socket_path.exists() and agent.connected, "the agent's socket and broker connection")
    yield agent
    stop.set()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert not config.socket_path.exists()  # removed on the way out


def test_c_client_infers_and_sees_the_inventory_change(running_agent: Agent, client_binary: Path,
                                                       tmp_path: Path) -> None:
    shelves = tmp_path / "shelves"
    write_dataset(shelves, 12, seed=21)
    truth = _truth(shelves)
    names = sorted(truth)
    a, b = next((x, y) for x in names for y in names if truth[x] - truth[y] and truth[y] - truth[x])
    done = subprocess.run([str(client_binary), str(running_agent.config.socket_path), str(shelves / a),
                           str(shelves / b)], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    lines: list[dict[str, Any]] = [json.loads(line) for line in done.stdout.splitlines()]
    for line in lines:
        decode_answer(json.dumps(line))  # every line is a contract message
    by_id = {(m["type"], m["id"]) for m in lines}
    assert ("ok", "sub-1") in by_id
    result = next(m for m in lines if m["type"] == "result" and m["id"] == "door-1")
    assert result["bundle"]["sequence"] == 5 and result["source"] == "main"
    change = next(m for m in lines if m["type"] == "inventory" and m["id"] == "img-b")
    added = {c["label"] for c in change["added"]}
    removed = {c["label"] for c in change["removed"]}
    assert change["source"] == "image"
    assert added == truth[b] - truth[a] and removed == truth[a] - truth[b], (a, b, truth[a], truth[b], change)
    assert all(0.5 <= c["score"] <= 1 for c in change["added"]) and all(c["score"] < 0.35 for c in change["removed"])


# ---- hold_activation / release_activation during a rollout -----------------------------------------
HOLDER_C = PRELUDE_C + r"""
/* usage: holder SOCKET; holds activation and prints every line the agent sends; once a job waits in
   READY it reads one line on stdin (the go-ahead), releases the hold, and exits at the model change */
int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: %s socket\n", argv[0]); return 2; }
    FILE *in, *out;
    if (open_socket(argv[1], &in, &out) != 0) return 1;
    fprintf(out, "{\"schema_version\":1,\"type\":\"subscribe\",\"id\":\"sub-2\",\"topics\":[\"model\",\"jobs\"]}\n");
    fprintf(out, "{\"schema_version\":1,\"type\":\"hold_activation\",\"id\":\"hold-1\","
                 "\"reason\":\"door open: restocking\",\"max_s\":3600}\n");
    fflush(out);
    static char line[1 << 20];
    char go[64];
    int released = 0;
    while (fgets(line, sizeof line, in)) {
        fputs(line, stdout);
        fflush(stdout);
        if (!released && strstr(line, "\"type\":\"job\"") && strstr(line, "\"state\":\"READY\"")) {
            if (!fgets(go, sizeof go, stdin)) { fprintf(stderr, "no go-ahead on stdin\n"); return 3; }
            fprintf(out, "{\"schema_version\":1,\"type\":\"release_activation\",\"id\":\"rel-1\"}\n");
            fflush(out);
            released = 1;
        }
        if (released && strstr(line, "\"type\":\"model\"")) return 0;
    }
    fprintf(stderr, "the agent closed the connection\n");
    return 1;
}
"""
HOLD_PLAN = RolloutPlan(selector=Selector(devices=["fridge-fw"]), waves="100%", probation_s=1.0,  # type: ignore[arg-type]
                        gates=Gates(min_inferences=0, max_latency_ratio=None, max_prediction_drift=None),
                        timeouts=Timeouts(ack_s=5, wave_s=120, observe_s=0.5), chunk_size=32 * 1024)


def _compile(source: str, name: str, work: Path) -> Path:
    cc = shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler (cc) on this machine: the C client cannot be built")
    (work / f"{name}.c").write_text(source)
    built = subprocess.run([cc, "-std=c99", "-Wall", "-Werror", "-o", str(work / name), str(work / f"{name}.c")],
                           capture_output=True, text=True, timeout=120, check=False)
    assert built.returncode == 0, built.stderr
    return work / name


def _device(cloud: Cloud, rollout: str) -> tuple[str, str | None]:
    with cloud.sessions() as session:
        devices = view(session, rollout).devices
        return (devices[0].state, devices[0].reason) if devices else ("", None)


def test_c_client_holds_activation_through_a_rollout(running_agent: Agent, tmp_path: Path,
                                                     world: dict[str, object], mosquitto_url: str) -> None:
    holder = _compile(HOLDER_C, "holder", tmp_path)
    before = running_agent.bundle_ref()
    assert before is not None and before.sequence == 5
    client = subprocess.Popen([str(holder), str(running_agent.config.socket_path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[dict[str, Any]] = []
    reader = threading.Thread(target=lambda: lines.extend(json.loads(line) for line in client.stdout or ()),
                              daemon=True)  # each line parsed as it comes: lines grows while the client runs
    reader.start()
    broker = BrokerConfig(url=mosquitto_url, protocol="5", reconnect_min_s=1)
    cloud = Cloud(sqlite_url(tmp_path / "cloud.db"), broker, world["trusted_key"],  # type: ignore[arg-type]
                  client_id="cloud-fw").start()
    try:
        until(lambda: ("ok", "hold-1") in {(m["type"], m["id"]) for m in lines}, "the agent to take the hold", 30)
        until(lambda: _online(cloud) == 1, "the agent's retained state in the cloud", 60)
        with cloud.sessions.begin() as session:
            six = add_bundle(session, world["bundles"][6].tarball, world["trust"]).sha256  # type: ignore[index,arg-type]
        start_rollout(cloud.sessions, six, HOLD_PLAN, "r-held")

        # ---- the bundle is verified and waits in READY; the cloud shows the firmware's hold -----------
        until(lambda: _device(cloud, "r-held")[0] == "READY", "the device to report READY", 180,
              detail=lambda: f"{_device(cloud, 'r-held')} {lines}")
        reason = _device(cloud, "r-held")[1]
        assert reason == "held by the firmware: door open: restocking", reason
        with cloud.sessions() as session:
            events = session.scalars(select(EventRow).where(EventRow.job_id.like("r-held.%"),
                                                            EventRow.state == "READY")).all()
            assert any("door open: restocking" in (e.reason or "") for e in events)
            assert _status(cloud, "r-held") == RUNNING  # the hold is not a timeout
        ready = next(m for m in lines if m["type"] == "job" and m["state"] == "READY")
        assert "door open: restocking" in ready["reason"]
        assert running_agent.bundle_ref() == before  # still the old model while held
        assert not any(m["type"] == "model" for m in lines)

        # ---- the firmware releases: the bundle activates and the client hears the model change -------
        assert client.stdin is not None
        client.stdin.write("go\n")
        client.stdin.flush()
        assert client.wait(timeout=120) == 0, client.stderr.read() if client.stderr else ""
        reader.join(timeout=10)
        kinds = [(m["type"], m["id"]) for m in lines]
        assert kinds.index(("ok", "rel-1")) < next(i for i, m in enumerate(lines) if m["type"] == "model")
        model = next(m for m in lines if m["type"] == "model")
        assert model["active"]["sha256"] == six and model["active"]["sequence"] == 6
        assert model["previous_sha256"] == before.sha256
        until(lambda: _status(cloud, "r-held") == SUCCEEDED, "the rollout to succeed after the release", 120,
              detail=lambda: str(_device(cloud, "r-held")))
        with cloud.sessions() as session:
            assert view(session, "r-held").devices[0].activated
    finally:
        if client.poll() is None:
            client.kill()
            client.wait(timeout=10)
        cloud.stop()


def _online(cloud: Cloud) -> int:
    with cloud.sessions() as session:
        return len(session.scalars(select(Device.id).where(Device.online.is_(True))).all())


def _status(cloud: Cloud, rollout: str) -> str:
    with cloud.sessions() as session:
        return view(session, rollout).rollout.status
