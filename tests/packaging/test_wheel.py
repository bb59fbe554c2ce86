"""The built wheel, installed without ``-e`` into a fresh virtual environment, from a folder outside
the checkout: every file read at run time must be in it (targets, example models and descriptions).
Lists the targets and compiles the demo fridge model with the default ``--out``, for an onnxruntime
board and (where onnx2tf's environment exists) for LiteRT."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from compiler.errors import PassError
from compiler.passes.litert import ConvertLiteRTConfig, onnx2tf_executable
from compiler.target import list_targets

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 900) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"{' '.join(cmd)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _source_copy(destination: Path) -> Path:
    """The checkout's files as git sees them (tracked, or new and not ignored): setuptools writes
    build/ and *.egg-info into the folder it builds, which must not be the checkout."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    return destination


def test_wheel_installs_lists_targets_and_compiles(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    source = _source_copy(tmp_path / "source")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path / "dist"), str(source)],
         tmp_path, env)
    (wheel,) = (tmp_path / "dist").glob("coldchain-*.whl")
    packed = set(zipfile.ZipFile(wheel).namelist())
    assets = [p.relative_to(ROOT).as_posix() for folder in ("templates", "static")
              for p in (ROOT / "cloud" / "web" / folder).iterdir()]
    assert len(assets) >= 10 and not [a for a in assets if a not in packed]  # the dashboard's pages and charts
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], tmp_path, env)
    extras = "compiler,litert"
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", f"coldchain[{extras}] @ {wheel.as_uri()}"],
         tmp_path, env)
    work = tmp_path / "work"  # outside the checkout: only the installed package can be imported
    work.mkdir()
    python, coldchain = str(venv / "bin" / "python"), str(venv / "bin" / "coldchain")
    where = _run([python, "-c", "import compiler, examples.fridge as f; print(compiler.__file__); "
                  "print(f.MODEL_FILE); print(f.DESCRIPTION_FILE)"], work, env).split()
    assert all(str(venv) in p and Path(p).exists() for p in where), where

    listed = _run([coldchain, "targets", "list"], work, env)
    for name in list_targets():
        assert name in listed, listed

    _run([python, "-c", "from pathlib import Path; from examples.fridge.synth import write_dataset; "
          "write_dataset(Path('cal'), 40, seed=3); write_dataset(Path('eval'), 40, seed=4)"], work, env)
    _run([coldchain, "keys", "generate", "--out", "keys", "--name", "ci"], work, env)
    targets = ["-t", "arm64-cortex-a72-ort"]
    try:
        env["COLDCHAIN_ONNX2TF_VENV"] = str(onnx2tf_executable(ConvertLiteRTConfig()).parents[1])
        targets += ["-t", "arm64-litert"]
    except PassError:
        pass  # no onnx2tf environment on this machine: scripts/test.sh creates one, so CI covers it
    out = _run([coldchain, "compile", where[1], "--description", where[2], *targets, "--calibration", "cal",
                "--evaluation", "eval", "--key", "keys/ci.key"], work, env)
    assert len(list((work / "bundles").glob("*-arm64-cortex-a72-ort-*.tar.gz"))) == 1, out
    if "arm64-litert" in targets:
        assert len(list((work / "bundles").glob("*-arm64-litert-*.tar.gz"))) == 1, out
