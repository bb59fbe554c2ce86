from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from coldchain import __version__
from coldchain.cli import SUBAPPS, app

runner = CliRunner()


def test_help_lists_the_subapps_that_exist() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    listed = set(re.findall(r"^│ (\w+)\s{2,}", result.output, flags=re.MULTILINE))
    assert listed == set(SUBAPPS)
    assert {"compile", "agent", "fleet", "rollout", "monitor", "cloud", "broker", "demo"} <= listed


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"coldchain {__version__}"


def test_help_imports_no_subapp() -> None:
    code = (
        "import sys; from coldchain.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('coldchain.keys_cli', 'coldchain.demo_cli', 'onnxruntime', 'compiler', 'cv2') "
        "if m in sys.modules]\n"
        "print('LOADED', heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "LOADED []" in out


def test_unknown_command_is_an_error() -> None:
    result = runner.invoke(app, ["rollout"])
    assert result.exit_code != 0


def test_keys_generate_sign_verify_and_tamper(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    result = runner.invoke(app, ["keys", "generate", "--out", str(keys)])
    assert result.exit_code == 0, result.output
    assert (keys / "coldchain.key").stat().st_mode & 0o777 == 0o600
    manifest = tmp_path / "manifest.json"
    manifest.write_bytes((Path(__file__).parents[1] / "contract" / "golden" / "manifest.json").read_bytes())
    result = runner.invoke(app, ["keys", "sign", str(manifest), "--key", str(keys / "coldchain.key")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "manifest.sig").exists()
    verify = ["keys", "verify", str(manifest), "--trusted", str(keys / "coldchain.pub")]
    result = runner.invoke(app, verify)
    assert result.exit_code == 0, result.output
    assert "valid" in result.output
    data = bytearray(manifest.read_bytes())
    data[100] ^= 0x20  # one byte
    manifest.write_bytes(bytes(data))
    result = runner.invoke(app, verify)
    assert result.exit_code == 1
    assert "does not match the signed bytes" in result.output


def test_keys_generate_refuses_to_overwrite(tmp_path: Path) -> None:
    args = ["keys", "generate", "--out", str(tmp_path)]
    assert runner.invoke(app, args).exit_code == 0
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert "already exists" in result.output


def test_verify_with_untrusted_key(tmp_path: Path) -> None:
    for name in ("a", "b"):
        assert runner.invoke(app, ["keys", "generate", "--out", str(tmp_path), "--name", name]).exit_code == 0
    manifest = tmp_path / "m.json"
    manifest.write_text("{}")
    assert runner.invoke(app, ["keys", "sign", str(manifest), "--key", str(tmp_path / "a.key")]).exit_code == 0
    result = runner.invoke(app, ["keys", "verify", str(manifest), "--trusted", str(tmp_path / "b.pub")])
    assert result.exit_code == 1
    assert "not trusted" in result.output



def _cli_without(blocked: tuple[str, ...], *args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a subprocess where ``blocked`` cannot be imported (as on an install without them)."""
    code = (
        "import sys\n"
        f"for name in {blocked!r}:\n    sys.modules[name] = None\n"
        "from coldchain.cli import main\n"
        f"main({list(args)!r})\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)


# what only the compiler, cloud, train and hf extras install: absent on a device's `coldchain[agent]`
NOT_ON_A_DEVICE = ("onnx", "onnxslim", "mlflow", "sqlalchemy", "psycopg", "fastapi", "uvicorn", "httpx",
                   "prometheus_client", "amqtt", "jinja2", "torch", "onnxscript", "optimum", "transformers")


def test_agent_only_install_lists_only_what_it_can_run() -> None:
    result = _cli_without(NOT_ON_A_DEVICE, "--help")
    assert result.returncode == 0, result.stderr
    listed = set(re.findall(r"^│ (\w+)\s{2,}", result.stdout, flags=re.MULTILINE))
    assert listed == {"agent", "bundle"}
    for command in (("bundle", "--help"), ("agent", "status", "--help"), ("agent", "install", "--help")):
        result = _cli_without(NOT_ON_A_DEVICE, *command)
        assert result.returncode == 0 and "Traceback" not in result.stderr, (command, result.stderr)


def test_a_command_whose_extra_is_missing_names_the_extra() -> None:
    for command, extra in (("compile", "compiler"), ("fleet", "cloud"), ("keys", "compiler")):
        result = _cli_without(("onnxslim", "sqlalchemy"), command, "--help")
        assert result.returncode == 2
        assert f"pip install 'coldchain[{extra}]'" in result.stderr
        assert "Traceback" not in result.stderr + result.stdout
    result = _cli_without(("paho",), "agent", "run", "--config", "x.toml")
    assert "pip install 'coldchain[agent]'" in result.stderr


def test_python_dash_m_coldchain_runs_the_cli() -> None:
    """Found on a board without the entry point on PATH: `python -m coldchain agent status` answered
    `No module named coldchain.__main__`."""
    result = subprocess.run([sys.executable, "-m", "coldchain", "--version"], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"coldchain {__version__}"


def test_bundle_commands_name_a_missing_bundle(tmp_path: Path) -> None:
    """Found on a device: `bundle inspect missing.tar.gz` answered `[Errno 2] No such file or directory:
    'missing.tar.gz/manifest.json'` and `bundle verify` `is not a bundle: ... missing.tar.gz/manifest.json`."""
    missing = tmp_path / "missing.tar.gz"
    (tmp_path / "k.pub").write_text("")
    for command in (["bundle", "inspect", str(missing)],
                    ["bundle", "verify", str(missing), "--trusted", str(tmp_path / "k.pub")]):
        result = runner.invoke(app, command)
        words = " ".join(result.output.split())
        assert result.exit_code == 1, words
        assert f"{missing}: no such bundle (a signed .tar.gz or its unpacked directory)" in words, words
