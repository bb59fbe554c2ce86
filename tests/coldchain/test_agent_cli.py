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
