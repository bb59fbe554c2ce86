"""Shared fixtures: ../shared/data, and signed bundles compiled from the demo fridge model."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from compiler.bundle import Bundle, write_bundle
from compiler.description import load_description
from compiler.evaluate import image_sets
from compiler.pipeline import Pipeline
from compiler.target import load_target
from contract import signing
from contract.commands import ArtifactRef, DeployCommand
from contract.common import BundleRef
from contract.manifest import ModelSource
from contract.transfer import encode_chunk
from examples.fridge import DESCRIPTION_FILE, MODEL_FILE
from examples.fridge.synth import write_dataset

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REPO = Path(__file__).resolve().parents[1]
_UNTRACKED_BEFORE: set[str] = set()


def pytest_sessionstart(session: pytest.Session) -> None:
    from tests.strays import untracked

    _UNTRACKED_BEFORE.update(untracked(REPO))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if it left files in the checkout (tests write only under tmp_path)."""
    from tests.strays import strays

    left = strays(REPO, _UNTRACKED_BEFORE)
    if left:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"FAILED: the test run left files in the checkout: {', '.join(left)}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real models and photos); tests that need it skip when it is absent."""
    if not (SHARED_DATA / "README.md").exists():
        pytest.skip(f"{SHARED_DATA} is absent: real-model tests need ../shared/data beside the project")
    return SHARED_DATA




CHUNK = 64 * 1024


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("deploy")
    write_dataset(root / "cal", 30, seed=1)
    write_dataset(root / "eval", 40, seed=2)
    description = load_description(DESCRIPTION_FILE)
    cal, ev, _ = image_sets(root / "cal", root / "eval", 30, 0, description)
    target = load_target("arm64-cortex-a72-ort")
    result = Pipeline(description, target, cal, ev, root / "work").run(MODEL_FILE)
    trusted = signing.write_keypair(root / "keys", "ops")
    rogue = signing.write_keypair(root / "keys", "rogue")
    key = signing.load_private_key(trusted.private)
    source = ModelSource(name="fridge", version="1", source_uri="file:///fridge.onnx", sha256="0" * 64)
    bundles = {seq: write_bundle(result, source, target, cal, ev, key, root / "bundles", seq) for seq in (4, 5, 6)}
    return {"root": root, "trust": signing.TrustStore.from_paths([trusted.public]), "bundles": bundles,
            "trusted_key": key, "rogue_key": signing.load_private_key(rogue.private), "sets": (cal, ev),
            "description": description, "target": target}


@pytest.fixture(scope="session")
def faulty_bundle(world: dict[str, object]) -> Bundle:
    """Sequence 7: the fridge model with a broken head (sees milk everywhere); signed like the rest."""
    from examples.fridge.faulty import write_faulty_model

    root: Path = world["root"]  # type: ignore[assignment]
    cal, ev = world["sets"]  # type: ignore[misc]
    model = write_faulty_model(MODEL_FILE, root / "faulty" / "fridge-v2.onnx")
    result = Pipeline(world["description"], world["target"], cal, ev, root / "work-faulty").run(model)  # type: ignore[arg-type]
    source = ModelSource(name="fridge", version="2", source_uri="file:///fridge-v2.onnx", sha256="1" * 64)
    return write_bundle(result, source, world["target"], cal, ev, world["trusted_key"],  # type: ignore[arg-type]
                        root / "bundles", 7)


def deploy_command(tarball: Path, manifest_sha: str, sequence: int, job: str, group: str = "eu",
                   chunk: int = CHUNK) -> tuple[DeployCommand, list[bytes]]:
    data = tarball.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    count = -(-len(data) // chunk)
    ref = ArtifactRef(sha256=sha, size=len(data), chunk_size=chunk, chunk_count=count, group=group)
    bundle = BundleRef(model_name="fridge", model_version="1", target="arm64-cortex-a72-ort", sequence=sequence,
                       sha256=manifest_sha)
    frames = [encode_chunk(sha, i, count, data[i * chunk:(i + 1) * chunk]) for i in range(count)]
    return DeployCommand(job_id=job, bundle=bundle, artifact=ref, probation_s=60), frames
