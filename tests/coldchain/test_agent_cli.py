from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from agent.deploy import Deployer
from agent.runtimes import available
from coldchain.cli import app
from contract.transfer import decode_chunk
from examples.fridge.synth import write_dataset
from tests.conftest import deploy_command

runner = CliRunner()


def test_agent_commands_import_no_compiler_or_cloud() -> None:
    code = ("import sys; from coldchain.cli import main\n"
            "try:\n    main(['agent', 'status', '--help'])\nexcept SystemExit:\n    pass\n"
            "print('LOADED', sorted(m for m in sys.modules if m.split('.')[0] in "
            "('compiler', 'cloud', 'mlflow', 'onnx', 'torch', 'sqlalchemy')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "LOADED []" in out


def test_infer_on_a_verified_bundle(tmp_path: Path, world: dict[str, object]) -> None:
    write_dataset(tmp_path / "photos", 2, seed=5)
    (tmp_path / "photos" / "empty.jpg").write_bytes(b"")
    bundle = world["bundles"][5]  # type: ignore[index]
    keys: Path = world["root"] / "keys" / "ops.pub"  # type: ignore[operator]
    photos = sorted((tmp_path / "photos").glob("*.jpg"))
    result = runner.invoke(app, ["agent", "infer", str(bundle.tarball), *map(str, photos), "--trusted", str(keys)])
    assert result.exit_code == 0, result.output
    assert "the frame has zero bytes" in result.output and "x1" in result.output
    rogue: Path = world["root"] / "keys" / "rogue.pub"  # type: ignore[operator]
    refused = runner.invoke(app, ["agent", "infer", str(bundle.tarball), str(photos[0]), "--trusted", str(rogue)])
    assert refused.exit_code == 1 and "not trusted" in refused.output


def test_infer_takes_folders_and_goes_on_past_a_missing_path(tmp_path: Path, world: dict[str, object]) -> None:
    write_dataset(tmp_path / "photos" / "shelf", 3, seed=6)
    (tmp_path / "empty").mkdir()
    bundle = world["bundles"][5]  # type: ignore[index]
    keys: Path = world["root"] / "keys" / "ops.pub"  # type: ignore[operator]
    result = runner.invoke(app, ["agent", "infer", str(bundle.tarball), str(tmp_path / "missing.jpg"),
                                 str(tmp_path / "photos"), str(tmp_path / "empty"), "--trusted", str(keys)])
    output = " ".join(result.output.split())
    assert result.exit_code == 1, output  # not every path could be read
    assert "missing.jpg: no such file or folder" in output and "the folder holds no images" in output
    assert output.count("Traceback") == 0
    rows = [line for line in result.output.splitlines() if line.startswith(f"│ {str(tmp_path)[:20]}")]
    assert len(rows) == 3 and all(" x1" in row for row in rows), result.output  # the folder, after the missing path


def test_status_reads_the_data_directory(tmp_path: Path, world: dict[str, object]) -> None:
    deployer = Deployer(tmp_path, world["trust"], available(), lambda *a: None)  # type: ignore[arg-type]
    bundle = world["bundles"][5]  # type: ignore[index]
    command, frames = deploy_command(bundle.tarball, bundle.ref.sha256, 5, "job-s")
    deployer.on_deploy(command)
    for frame in frames:
        deployer.on_chunk("job-s", decode_chunk(frame))
    result = runner.invoke(app, ["agent", "status", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "sequence 5" in result.output and "PROBATION" in result.output


def test_status_takes_the_config_and_shows_connection_slots_and_last_errors(tmp_path: Path,
                                                                            world: dict[str, object]) -> None:
    from agent.health import Health

    keys: Path = world["root"] / "keys" / "ops.pub"  # type: ignore[operator]
    config = tmp_path / "agent.toml"
    config.write_text(f'device_id = "fridge-42"\ndata_dir = "{tmp_path / "data"}"\ntrusted_keys = ["{keys}"]\n')
    health = Health(tmp_path / "data", "mqtt://127.0.0.1:1", "fridge-42")  # what a running agent records
    health.connect_failed("ConnectionRefusedError: [Errno 111] Connection refused", 4.0)
    health.spool(2, 2, 1)  # a full spool: a fault the agent's state reports
    bundle = world["bundles"][5]  # type: ignore[index]
    assert runner.invoke(app, ["agent", "install", str(bundle.tarball), "--config", str(config)]).exit_code == 0
    result = runner.invoke(app, ["agent", "status", "--config", str(config)], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    text = "".join(result.output.split())  # cells wrap (never cut): compare without the layout
    assert "fridge-42" in text and "failingtomqtt://127.0.0.1:1:ConnectionRefusedError" in text
    assert bundle.ref.sha256 in text  # the whole sha, folded over lines
    assert "broker_unreachable" in text and "PROBATION" in text
    assert "faultsnow│spool_fullsince" in text


def test_status_asks_the_running_agent_over_its_socket(tmp_path: Path, world: dict[str, object]) -> None:
    import threading

    from agent.config import load_config
    from agent.frames import FolderSource
    from agent.loop import Agent
    from benchmarks.faults.device import MemoryTransport
    from tests.waiting import until
    from transport.client import Connected

    keys: Path = world["root"] / "keys" / "ops.pub"  # type: ignore[operator]
    write_dataset(tmp_path / "frames", 2, seed=8)
    config = tmp_path / "agent.toml"
    config.write_text(f'device_id = "fridge-live"\ndata_dir = "{tmp_path / "data"}"\ntrusted_keys = ["{keys}"]\n'
                      f'[source]\nlocation = "{tmp_path / "frames"}"\ntrigger = "on_request"\n')
    bundle = world["bundles"][5]  # type: ignore[index]
    assert runner.invoke(app, ["agent", "install", str(bundle.tarball), "--config", str(config)]).exit_code == 0
    settings = load_config(config)
    transport = MemoryTransport()
    agent = Agent(settings, transport, FolderSource(tmp_path / "frames"))
    transport.inbox.put(Connected())
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, kwargs={"stop": stop}, daemon=True)
    thread.start()
    try:
        until(lambda: settings.socket_path.exists() and agent.connected, "the agent's socket and connection")
        agent.firmware.error("camera_missing", "no frames yet")  # what only the running agent knows
        result = runner.invoke(app, ["agent", "status", "--config", str(config)], env={"COLUMNS": "100"})
    finally:
        stop.set()
        thread.join(timeout=30)
    assert result.exit_code == 0, result.output
    text = "".join(result.output.split())
    assert f"agentfridge-live(livevia{settings.socket_path}".replace(" ", "") in text, result.output
    assert "connectedtothebroker" in text and "notconnected" not in text
    assert "camera_missing:noframesyet" in text and "triggeron_request" in text
    assert bundle.ref.sha256 in text and "(live,active)" in text and "install-" in text, result.output
    # the agent stopped: its socket is gone, so the same command reads the data directory and says so
    after = runner.invoke(app, ["agent", "status", "--config", str(config)], env={"COLUMNS": "100"})
    assert after.exit_code == 0, after.output
    words = " ".join(after.output.split())
    assert f"no agent socket at {settings.socket_path}: showing what the agent recorded" in words, words
    assert "(live via" not in words and "fridge-live" in words


def test_status_falls_back_when_the_socket_is_stale(tmp_path: Path, world: dict[str, object]) -> None:
    import socket

    test_status_reads_the_data_directory(tmp_path, world)  # a data directory with a job in PROBATION
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(tmp_path / "agent.sock"))  # what an agent killed with SIGKILL leaves: nobody listens
    dead.close()
    result = runner.invoke(app, ["agent", "status", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    words = " ".join(result.output.split())
    assert f"no agent answers on {tmp_path / 'agent.sock'}" in words and "PROBATION" in words, words


def test_status_refuses_a_directory_that_is_not_an_agents(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    result = runner.invoke(app, ["agent", "status", "--data-dir", str(tmp_path / "photos")])
    assert result.exit_code == 1 and "is not an agent's data directory" in " ".join(result.output.split())
    assert list((tmp_path / "photos").iterdir()) == []  # nothing was created in it
    missing = runner.invoke(app, ["agent", "status", "--data-dir", str(tmp_path / "nowhere")])
    assert missing.exit_code == 1 and "does not exist" in missing.output


def test_infer_json_gives_one_object_per_image_with_every_label(tmp_path: Path, world: dict[str, object]) -> None:
    import json

    write_dataset(tmp_path / "photos", 2, seed=7)
    (tmp_path / "photos" / "empty.jpg").write_bytes(b"")
    bundle = world["bundles"][5]  # type: ignore[index]
    keys: Path = world["root"] / "keys" / "ops.pub"  # type: ignore[operator]
    result = runner.invoke(app, ["agent", "infer", str(bundle.tarball), str(tmp_path / "photos"), "--trusted",
                                 str(keys), "--json"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.output.splitlines()]
    images = sorted(p for p in (tmp_path / "photos").rglob("*.jpg"))
    assert [r["image"] for r in records] == [str(p) for p in images]  # one object per image, in order
    labels = bundle.manifest.io.labels
    broken = [r for r in records if "error" in r]
    assert [(r["image"], r["error"]["kind"]) for r in broken] == [(str(tmp_path / "photos" / "empty.jpg"), "empty")]
    for record in (r for r in records if "error" not in r):
        assert list(record["scores"]) == list(labels) and all(0 <= s <= 1 for s in record["scores"].values())
        assert record["timings_ms"]["total"] >= record["timings_ms"]["model"] > 0
        assert all(set(d) == {"label", "score", "box"} for d in record["detections"])
        assert sum(record["inventory"].values()) == len(record["detections"])
        assert record["bundle"] == bundle.ref.sha256


def test_infer_table_never_cuts_a_long_path(tmp_path: Path, world: dict[str, object]) -> None:
    folder = tmp_path / ("a-rather-long-folder-name-" * 3) / "shelf"
    write_dataset(folder, 1, seed=8)
    image = next(folder.rglob("*.jpg"))
    bundle = world["bundles"][5]  # type: ignore[index]
    keys: Path = world["root"] / "keys" / "ops.pub"  # type: ignore[operator]
    result = runner.invoke(app, ["agent", "infer", str(bundle.tarball), str(image), "--trusted", str(keys)],
                           env={"COLUMNS": "70"})
    assert result.exit_code == 0, result.output
    cells = "".join(line.split("│")[1].strip() for line in result.output.splitlines() if line.count("│") > 2)
    assert str(image) in cells, result.output  # folded over lines, whole


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_second_agent_or_an_install_on_a_running_agents_data_directory_is_refused(
        tmp_path: Path, world: dict[str, object]) -> None:
    """Found following docs/firmware.md: "if another agent still serves [the socket], the agent refuses to
    start". It did not: the second agent logged that it could not serve the local API and ran on, on the
    same data directory and MQTT client id as the first; `agent install` wrote the running agent's slots."""
    import os

    from tests.waiting import until

    keys: Path = world["root"] / "keys" / "ops.pub"  # type: ignore[operator]
    write_dataset(tmp_path / "frames", 1, seed=9)
    config = tmp_path / "agent.toml"
    config.write_text(f'device_id = "fridge-twice"\ndata_dir = "{tmp_path / "data"}"\ntrusted_keys = ["{keys}"]\n'
                      f'[broker]\nurl = "mqtt://127.0.0.1:{_free_port()}"\n'
                      f'[source]\nkind = "folder"\nlocation = "{tmp_path / "frames"}"\ntrigger = "on_request"\n')
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    command = [sys.executable, "-c", "from coldchain.cli import main; main()", "agent", "run", "--config", str(config)]
    first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        until((tmp_path / "data" / "agent.sock").exists, "the first agent's socket")
        second = subprocess.run([*command, "--seconds", "5"], env=env, capture_output=True, text=True, timeout=60,
                                check=False)
        words = " ".join((second.stdout + second.stderr).split())
        assert second.returncode == 1, words
        assert f"another agent (pid {first.pid}) runs on the data directory {tmp_path / 'data'}" in words, words
        bundle = world["bundles"][5]  # type: ignore[index]
        install = runner.invoke(app, ["agent", "install", str(bundle.tarball), "--config", str(config)])
        assert install.exit_code == 1, install.output
        assert f"another agent (pid {first.pid}) runs on the data directory" in " ".join(install.output.split())
        assert first.poll() is None  # the first agent was left alone
    finally:
        first.terminate()
        first.wait(timeout=30)
    after = runner.invoke(app, ["agent", "install", str(world["bundles"][5].tarball), "--config", str(config)])  # type: ignore[index]
    assert after.exit_code == 0, after.output  # the lock went with the agent


def test_live_status_says_why_the_broker_and_the_camera_are_missing(tmp_path: Path, world: dict[str, object],
                                                                    monkeypatch: object) -> None:
    """Found running `agent status` against a live agent with a wrong broker port and no camera: the
    live table said `not connected to the broker` and `trigger on_request`, and nothing of why (the
    data-directory view shows both causes, the live one dropped them)."""
    import pytest

    from agent import status as agent_status
    from agent.errors import FrameError
    from agent.health import Health, SourceUnavailable
    from contract.local import StatusAnswer

    mp: pytest.MonkeyPatch = monkeypatch  # type: ignore[assignment]
    keys: Path = world["root"] / "keys" / "ops.pub"  # type: ignore[operator]
    config = tmp_path / "agent.toml"
    config.write_text(f'device_id = "fridge-43"\ndata_dir = "{tmp_path / "data"}"\ntrusted_keys = ["{keys}"]\n')
    health = Health(tmp_path / "data", "mqtt://127.0.0.1:1884", "fridge-43")  # what the running agent records
    health.connect_failed("ConnectionRefusedError: [Errno 111] Connection refused (127.0.0.1:1884)", 4.0)
    health.source_fault(SourceUnavailable("frame source /dev/video0 is unavailable", "camera /dev/video0 is not "
                                          "present", True))
    assert isinstance(SourceUnavailable("", "", True), FrameError)
    answer = StatusAnswer(id="cli-status", device_id="fridge-43", connected=False, active=None, trigger="on_request")
    mp.setattr(agent_status, "live_status", lambda path, timeout_s=3.0: (answer, "live"))
    result = runner.invoke(app, ["agent", "status", "--config", str(config)], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "(live via" in text
    words = "".join(result.output.split())
    assert "notconnectedtothebroker:ConnectionRefusedError" in words, result.output
    assert "unavailable:camera/dev/video0isnotpresent" in words, result.output


def test_status_before_the_agent_ever_ran_says_so(tmp_path: Path) -> None:
    """Found running `agent status --config agent.toml` on a new device: `no agent socket ...: showing what
    the agent recorded in DIR`, then `error: DIR does not exist ...: pass the agent's --config` (it had been
    passed). A directory that is not an agent's was also announced as "showing" before being refused."""
    from contract.signing import write_keypair

    keys = write_keypair(tmp_path / "keys", "ops")
    config = tmp_path / "agent.toml"
    config.write_text(f'device_id = "fridge-new"\ndata_dir = "{tmp_path / "data"}"\ntrusted_keys = ["{keys.public}"]\n')
    result = runner.invoke(app, ["agent", "status", "--config", str(config)], env={"COLUMNS": "200"})
    words = " ".join(result.output.split())
    assert result.exit_code == 1, words
    assert f"{tmp_path / 'data'} (data_dir in {config}) does not exist: no agent has run" in words, words
    assert "pass the agent's --config" not in words and "showing what the agent recorded" not in words, words
    (tmp_path / "photos").mkdir()
    other = runner.invoke(app, ["agent", "status", "--data-dir", str(tmp_path / "photos")], env={"COLUMNS": "200"})
    assert other.exit_code == 1 and "showing what the agent recorded" not in other.output, other.output


def test_agent_run_logs_what_came_back_not_only_what_failed(tmp_path: Path, world: dict[str, object]) -> None:
    """Found running `agent run` on a wrong port, then starting the broker: the log showed every failed
    attempt and then `lost the broker`, never `connected to the broker` (INFO lines were not shown at
    all: no logging configuration, so only Python's last-resort WARNING handler printed)."""
    import os

    keys: Path = world["root"] / "keys" / "ops.pub"  # type: ignore[operator]
    write_dataset(tmp_path / "frames", 1, seed=10)
    config = tmp_path / "agent.toml"
    config.write_text(f'device_id = "fridge-log"\ndata_dir = "{tmp_path / "data"}"\ntrusted_keys = ["{keys}"]\n'
                      f'inference_interval_s = 0.2\n[broker]\nurl = "mqtt://127.0.0.1:{_free_port()}"\n'
                      f'[source]\nkind = "folder"\nlocation = "{tmp_path / "frames"}"\n')
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    result = subprocess.run([sys.executable, "-m", "coldchain", "agent", "run", "--config", str(config),
                             "--seconds", "2"], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert f"local API listening on {tmp_path / 'data' / 'agent.sock'}" in result.stderr, result.stderr
    assert f"frame source {tmp_path / 'frames'} is available" in result.stderr, result.stderr
    assert "cannot connect to the broker" in result.stderr  # the warnings are still there


def test_status_reads_the_data_directory_of_a_configuration_run_would_refuse(tmp_path: Path,
                                                                             world: dict[str, object]) -> None:
    """Found running `agent status --config` with the example configuration on a device whose key file had
    gone: `invalid agent configuration ... trusted key file(s) not found` and nothing else, when status
    needs only the device id, data_dir and the socket (and is what one runs to see why `run` failed)."""
    test_status_reads_the_data_directory(tmp_path, world)  # a data directory with a job in PROBATION
    config = tmp_path / "agent.toml"
    config.write_text(f'device_id = "fridge-broken"\ndata_dir = "{tmp_path}"\n'
                      f'trusted_keys = ["{tmp_path / "gone.pub"}"]\n')
    result = runner.invoke(app, ["agent", "status", "--config", str(config)], env={"COLUMNS": "200"})
    words = " ".join(result.output.split())
    assert result.exit_code == 0, words
    assert "trusted key file(s) not found" in words and "agent run would refuse it" in words, words
    assert "fridge-broken" in words and "PROBATION" in words, words


def test_agent_help_lists_each_command_in_one_sentence() -> None:
    """Found reading `coldchain agent --help` on a device: `install` and `status` listed their whole
    docstrings, broken mid-sentence where the source lines ended ("with the same checks as a" / "deploy
    over MQTT: ..."), five lines each."""
    result = runner.invoke(app, ["agent", "--help"], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    listing = result.output.split("Commands")[1]
    rows: dict[str, list[str]] = {}
    for line in listing.splitlines():
        cells = line.strip("│ ").split(None, 1)
        if line.startswith("│ ") and not line.startswith("│  ") and cells:
            rows[cells[0]] = [cells[1] if len(cells) > 1 else ""]
        elif line.startswith("│  ") and rows:
            rows[list(rows)[-1]].append(line.strip("│ "))
    assert set(rows) == {"run", "install", "status", "infer", "simulate"}, listing
    for name, text in rows.items():
        assert " ".join(text).rstrip().endswith((".", ")")) and len(text) <= 2, (name, text)


def test_live_status_never_cuts_the_bundle_sha_in_a_narrow_terminal(tmp_path: Path, world: dict[str, object],
                                                                    monkeypatch: object) -> None:
    """Found running `agent status` live in a 70-column terminal: `active bundle ... 6eae4466...efad…`, the
    sha cut with an ellipsis (the first table's cells were cropped; only the slot tables folded)."""
    import pytest

    from agent import status as agent_status
    from coldchain import console as console_module
    from contract.local import StatusAnswer

    mp: pytest.MonkeyPatch = monkeypatch  # type: ignore[assignment]
    test_status_reads_the_data_directory(tmp_path, world)  # a data directory with bundle 5 in slot a
    bundle = world["bundles"][5]  # type: ignore[index]
    answer = StatusAnswer(id="cli-status", device_id="fridge-narrow", connected=True, active=bundle.ref,
                          trigger="interval")
    mp.setattr(agent_status, "live_status", lambda path, timeout_s=3.0: (answer, "live"))
    mp.setattr(console_module.console, "width", 70)
    result = runner.invoke(app, ["agent", "status", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    first_table = result.output.split("slots")[0]
    cells = "".join(line.split("│")[2].strip() for line in first_table.splitlines() if line.count("│") == 3)
    assert bundle.ref.sha256 in cells and "…" not in first_table, result.output


def test_a_data_directory_that_cannot_be_made_is_one_clear_line(tmp_path: Path, world: dict[str, object]) -> None:
    """Found with `data_dir` under a path that is a file (a mount point not mounted, a typo): `agent run`
    ended in a NotADirectoryError traceback from creating data_dir/slots."""
    keys: Path = world["root"] / "keys" / "ops.pub"  # type: ignore[operator]
    (tmp_path / "afile").write_text("")
    config = tmp_path / "agent.toml"
    config.write_text(f'device_id = "fridge-nodir"\ndata_dir = "{tmp_path / "afile" / "data"}"\n'
                      f'trusted_keys = ["{keys}"]\n[local_api]\nenabled = false\n')
    for command in (["agent", "run", "--config", str(config), "--seconds", "1"],
                    ["agent", "install", str(world["bundles"][5].tarball), "--config", str(config)]):  # type: ignore[index]
        result = runner.invoke(app, command)
        words = " ".join(result.output.split())
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), (words, result.exception)
        assert f"cannot use the data directory {tmp_path / 'afile' / 'data'}: Not a directory" in words, words


def test_infer_with_a_bundle_that_is_not_there_says_so(tmp_path: Path, world: dict[str, object]) -> None:
    """Found mistyping the bundle's name: `error: fridge.tar.gz is not a bundle: No such file or directory:
    fridge.tar.gz/manifest.json`, as if a tarball were a directory that lacked a manifest."""
    write_dataset(tmp_path / "photos", 1, seed=11)
    keys: Path = world["root"] / "keys" / "ops.pub"  # type: ignore[operator]
    missing = tmp_path / "fridge.tar.gz"
    result = runner.invoke(app, ["agent", "infer", str(missing), str(tmp_path / "photos"), "--trusted", str(keys)])
    words = " ".join(result.output.split())
    assert result.exit_code == 1, words
    assert f"{missing}: no such bundle (a signed .tar.gz or its unpacked directory)" in words, words
    assert "manifest.json" not in words, words
