"""Anti-rollback per model stream (issue 12.5): a device compares a bundle's sequence only with
what it ran of the same stream, may move to another stream, and remembers (persisted) the highest
sequence it activated per stream, so going back to an old bundle of a stream it left is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.deploy import Deployer
from agent.runtimes import available
from benchmarks.faults.world import resigned_bundle
from contract.jobs import JobState
from contract.manifest import ModelSource
from contract.transfer import decode_chunk
from tests.conftest import deploy_command


@pytest.fixture(scope="module")
def streams(world: dict[str, object], tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str, int]]:
    """Bundles of two models (fridge, pantry) re-signed with the given sequences: name -> (tarball, sha, seq)."""
    out = tmp_path_factory.mktemp("streams")
    base = world["bundles"][5]  # type: ignore[index]
    made = {}
    for model, seq in [("fridge", 1_700_000_000), ("pantry", 1), ("fridge", 3), ("fridge", 5), ("pantry", 2),
                       ("fridge", 6), ("v1-fridge", 4)]:
        name = model.removeprefix("v1-")
        source = ModelSource(name=name, version="1", source_uri=f"file:///{name}.onnx", sha256="2" * 64)
        update = {"model": source, "sequence": seq, "stream": name} if name == model else {
            "model": source, "sequence": seq, "stream": None, "boards": None, "schema": "coldchain.manifest/v1"}
        tarball, sha = resigned_bundle(base, world["trusted_key"], out, f"{model}-{seq}",  # type: ignore[arg-type]
                                       update)
        made[f"{model}-{seq}"] = (tarball, sha, seq)
    return made


def _deployer(data: Path, world: dict[str, object]) -> Deployer:
    return Deployer(data, world["trust"], available(), lambda *_: None)  # type: ignore[arg-type]


def _deploy(deployer: Deployer, bundle: tuple[Path, str, int], job: str, succeed: bool = True) -> JobState:
    """Deliver ``bundle``; when it reaches probation, pass probation. Returns the job's last state."""
    tarball, sha, seq = bundle
    command, frames = deploy_command(tarball, sha, seq, job)
    deployer.on_deploy(command)
    for frame in frames:
        deployer.on_chunk(job, decode_chunk(frame))
    record = deployer.jobs.get(job)
    assert record is not None
    if succeed and record.state is JobState.PROBATION:
        record = deployer.probation(record, inferences=100, errors=0, non_finite=0, p95_ms=0.5,
                                    now=(record.probation_started or 0) + 61)
    return record.state


def test_a_file_compiled_bundle_does_not_block_another_models_registry_bundles(
        tmp_path: Path, world: dict[str, object], streams: dict[str, tuple[Path, str, int]]) -> None:
    """The reported failure: a file compile (Unix-time sequence) then a registry compile of another
    model (sequence 1) was refused as a rollback, whatever the operator did."""
    deployer = _deployer(tmp_path, world)
    assert _deploy(deployer, streams["fridge-1700000000"], "job-file") is JobState.SUCCEEDED
    assert _deploy(deployer, streams["pantry-1"], "job-registry") is JobState.SUCCEEDED, \
        deployer.jobs.get("job-registry").reason  # type: ignore[union-attr]
    assert _deploy(deployer, streams["pantry-2"], "job-registry-2") is JobState.SUCCEEDED
    assert deployer.slots.pointer().active_bundle.model_name == "pantry"  # type: ignore[union-attr]


def test_the_floor_is_per_stream_and_survives_moves_and_restarts(
        tmp_path: Path, world: dict[str, object], streams: dict[str, tuple[Path, str, int]]) -> None:
    deployer = _deployer(tmp_path, world)
    assert _deploy(deployer, streams["fridge-5"], "job-a5") is JobState.SUCCEEDED
    assert _deploy(deployer, streams["pantry-1"], "job-b1") is JobState.SUCCEEDED  # another stream: allowed
    deployer = _deployer(tmp_path, world)  # a restart: the floors are persisted
    assert _deploy(deployer, streams["fridge-3"], "job-a3") is JobState.FAILED
    reason = deployer.jobs.get("job-a3").reason or ""  # type: ignore[union-attr]
    assert "anti-rollback" in reason and "stream 'fridge'" in reason and "3" in reason and "#5" in reason, reason
    assert deployer.slots.pointer().active_bundle.model_name == "pantry"  # type: ignore[union-attr]
    assert _deploy(deployer, streams["fridge-6"], "job-a6") is JobState.SUCCEEDED  # newer in its stream
    assert _deploy(deployer, streams["fridge-5"], "job-a5-again") is JobState.FAILED  # fridge's floor is 6 now


def test_returning_to_a_streams_newest_bundle_is_allowed(
        tmp_path: Path, world: dict[str, object], streams: dict[str, tuple[Path, str, int]]) -> None:
    deployer = _deployer(tmp_path, world)
    assert _deploy(deployer, streams["fridge-5"], "job-a5") is JobState.SUCCEEDED
    assert _deploy(deployer, streams["pantry-1"], "job-b1") is JobState.SUCCEEDED
    assert _deploy(deployer, streams["fridge-5"], "job-a5-again") is JobState.SUCCEEDED  # not older: back to A
    # the active bundle again under another job id: not newer than the active, so refused; it stays active
    assert _deploy(deployer, streams["fridge-5"], "job-a5-thrice") is JobState.FAILED
    assert deployer.slots.pointer().active_sha256 == streams["fridge-5"][1]


def test_a_manifest_without_a_stream_belongs_to_its_models_stream(
        tmp_path: Path, world: dict[str, object], streams: dict[str, tuple[Path, str, int]]) -> None:
    """A v1 manifest (before streams) names no stream: it is compared within its model's stream."""
    deployer = _deployer(tmp_path, world)
    assert _deploy(deployer, streams["fridge-6"], "job-6") is JobState.SUCCEEDED
    assert _deploy(deployer, streams["v1-fridge-4"], "job-old") is JobState.FAILED
    assert "stream 'fridge'" in (deployer.jobs.get("job-old").reason or "")  # type: ignore[union-attr]
    assert _deploy(deployer, streams["pantry-1"], "job-pantry") is JobState.SUCCEEDED
    assert _deploy(deployer, streams["v1-fridge-4"], "job-old-again") is JobState.FAILED  # the floor is 6
