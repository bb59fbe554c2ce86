"""Offline install (issue 14): ``coldchain agent install BUNDLE.tar.gz --config`` puts a factory-default
bundle on a device with no broker, through the deployer's own checks (signature with the device's
trust, hashes, board, runtime, anti-rollback, self-test)."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from agent.config import load_config
from agent.loop import Agent
from agent.status import data_dir_status
from benchmarks.faults.world import resigned_bundle
from coldchain.agent_cli import app
from tests.agent.conftest import MemoryTransport


def _config(tmp_path: Path, world: dict[str, object], **settings: object) -> Path:
    root: Path = world["root"]  # type: ignore[assignment]
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump({"device_id": "fridge-9", "data_dir": str(tmp_path / "data"),
                                    "trusted_keys": [str(root / "keys" / "ops.pub")], **settings}))
    return path


def _install(bundle: Path, config: Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["install", str(bundle), "--config", str(config)], env={"COLUMNS": "200"})
    return result.exit_code, result.output


def test_a_signed_bundle_installs_without_a_broker_and_the_agent_runs_it(tmp_path: Path,
                                                                         world: dict[str, object]) -> None:
    bundle = world["bundles"][5]  # type: ignore[index]
    config = _config(tmp_path, world, board="rpi4")
    code, output = _install(bundle.tarball, config)
    assert code == 0, output
    for state in ("VERIFYING", "INSTALLING", "SELF_TEST", "ACTIVATING", "PROBATION"):
        assert f": {state}" in output, output
    status = data_dir_status(tmp_path / "data")
    assert status["slots"][status["active"]]["sha256"] == bundle.ref.sha256  # type: ignore[index]
    agent = Agent(load_config(config, {}), MemoryTransport(), None)
    loaded = agent.active_model()
    assert loaded is not None and loaded.sha256 == bundle.ref.sha256
    agent.spool.close()
    code, output = _install(world["bundles"][4].tarball, config)  # type: ignore[index]
    assert code == 1 and "FAILED" in output and "sequence" in output, output  # anti-rollback, as over MQTT


def test_a_bundle_the_device_does_not_trust_is_refused(tmp_path: Path, world: dict[str, object]) -> None:
    bundle = world["bundles"][5]  # type: ignore[index]
    rogue, _ = resigned_bundle(bundle, world["rogue_key"], tmp_path, "rogue")  # type: ignore[arg-type]
    code, output = _install(rogue, _config(tmp_path, world))
    assert code == 1 and "FAILED" in output and "not trusted here" in output, output
    assert data_dir_status(tmp_path / "data")["active"] is None


def test_a_bundle_for_another_board_is_refused(tmp_path: Path, world: dict[str, object]) -> None:
    bundle = world["bundles"][5]  # type: ignore[index]
    code, output = _install(bundle.tarball, _config(tmp_path, world, board="jetson-orin-nano"))
    assert code == 1 and "the bundle is for boards" in output, output
    assert data_dir_status(tmp_path / "data")["active"] is None


def test_an_install_that_failed_is_tried_again_once_the_device_is_fixed(tmp_path: Path,
                                                                        world: dict[str, object]) -> None:
    """Found installing with a wrong `board` in agent.toml, fixing it and installing again: the second run
    replayed the first verdict (`this device is a jetson-orin-nano`) without checking anything, since the
    job id is the tarball's hash and a known job id is only re-reported, as a re-sent MQTT command is."""
    bundle = world["bundles"][5]  # type: ignore[index]
    code, output = _install(bundle.tarball, _config(tmp_path, world, board="jetson-orin-nano"))
    assert code == 1 and "this device is a jetson-orin-nano" in output, output
    code, output = _install(bundle.tarball, _config(tmp_path, world, board="rpi4"))
    assert code == 0 and ": PROBATION" in output and "jetson-orin-nano" not in output, output
    status = data_dir_status(tmp_path / "data")
    assert status["slots"][status["active"]]["sha256"] == bundle.ref.sha256  # type: ignore[index]
    code, output = _install(bundle.tarball, _config(tmp_path, world, board="rpi4"))
    assert code == 0 and "VERIFYING" not in output, output  # installed: a repeat is only re-reported
