"""The deploy job on real signed bundles compiled from the demo fridge model (no broker: chunks are
handed to the deployer the way the MQTT loop will)."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import pytest

from agent.deploy import Deployer
from agent.runtimes import available
from contract import signing
from contract.bundle import file_entry, pack, unpack
from contract.jobs import JobState
from contract.manifest import dump_manifest, load_manifest
from contract.transfer import decode_chunk
from tests.conftest import deploy_command


def _deployer(data: Path, world: dict[str, object], events: list[tuple[str, JobState, str | None]],
              runtimes: dict | None = None) -> Deployer:  # type: ignore[type-arg]
    return Deployer(data, world["trust"], available() if runtimes is None else runtimes,  # type: ignore[arg-type]
                    lambda job, state, reason, _: events.append((job, state, reason)))


def _deliver(deployer: Deployer, tarball: Path, manifest_sha256: str, seq: int, job: str) -> None:
    command, frames = deploy_command(tarball, manifest_sha256, seq, job)
    deployer.on_deploy(command)
    for frame in frames:
        deployer.on_chunk(job, decode_chunk(frame))


def _deploy(deployer: Deployer, world: dict[str, object], seq: int, job: str) -> None:
    bundle = world["bundles"][seq]  # type: ignore[index]
    _deliver(deployer, bundle.tarball, bundle.ref.sha256, seq, job)


def test_happy_path_then_anti_rollback(tmp_path: Path, world: dict[str, object]) -> None:
    events: list[tuple[str, JobState, str | None]] = []
    deployer = _deployer(tmp_path, world, events)
    _deploy(deployer, world, 5, "job-1")
    states = [s for _, s, _ in events]
    assert states == [JobState.QUEUED, JobState.DOWNLOADING, JobState.VERIFYING, JobState.INSTALLING,
                      JobState.SELF_TEST, JobState.ACTIVATING, JobState.PROBATION]
    record = deployer.jobs.get("job-1")
    assert record is not None and deployer.slots.pointer().active_sequence == 5
    done = deployer.probation(record, inferences=100, errors=0, non_finite=0, p95_ms=0.5,
                              now=(record.probation_started or 0) + 61)
    assert done.state is JobState.SUCCEEDED
    assert not (tmp_path / "downloads").exists() or not any((tmp_path / "downloads").iterdir())
    # an older sequence is refused and the active bundle stays
    _deploy(deployer, world, 4, "job-2")
    old = deployer.jobs.get("job-2")
    assert old is not None and old.state is JobState.FAILED and "anti-rollback" in (old.reason or "")
    assert deployer.slots.pointer().active_sequence == 5


def test_restart_mid_download_resumes_without_refetching(tmp_path: Path, world: dict[str, object]) -> None:
    bundle = world["bundles"][5]  # type: ignore[index]
    command, frames = deploy_command(bundle.tarball, bundle.ref.sha256, 5, "job-r")
    first = _deployer(tmp_path, world, [])
    first.on_deploy(command)
    half = len(frames) // 2
    for frame in frames[:half]:
        first.on_chunk("job-r", decode_chunk(frame))
    events: list[tuple[str, JobState, str | None]] = []
    second = _deployer(tmp_path, world, events)  # the agent restarted
    second.resume()
    assert second.missing("job-r") == list(range(half, len(frames)))
    for frame in frames[half:]:
        second.on_chunk("job-r", decode_chunk(frame))
    record = second.jobs.get("job-r")
    assert record is not None and record.state is JobState.PROBATION


def test_untrusted_signature_fails_and_leaves_the_active_bundle(tmp_path: Path, world: dict[str, object]) -> None:
    events: list[tuple[str, JobState, str | None]] = []
    deployer = _deployer(tmp_path, world, events)
    _deploy(deployer, world, 5, "job-ok")
    bundle = world["bundles"][6]  # type: ignore[index]
    directory = unpack(bundle.tarball, tmp_path / "resigned")
    (directory / "manifest.sig").write_bytes(signing.sign((directory / "manifest.json").read_bytes(),
                                                          world["rogue_key"]))  # type: ignore[arg-type]
    tarball = pack(directory, tmp_path / "rogue.tar.gz")
    _deliver(deployer, tarball, bundle.ref.sha256, 6, "job-rogue")
    record = deployer.jobs.get("job-rogue")
    assert record is not None and record.state is JobState.FAILED and "not trusted" in (record.reason or "")
    assert deployer.slots.pointer().active_sequence == 5


def test_missing_runtime_fails(tmp_path: Path, world: dict[str, object]) -> None:
    deployer = _deployer(tmp_path, world, [], runtimes={})
    _deploy(deployer, world, 5, "job-nort")
    record = deployer.jobs.get("job-nort")
    assert record is not None and record.state is JobState.FAILED
    assert "no onnxruntime runtime" in (record.reason or "")
    assert deployer.slots.pointer().active is None


def test_failed_self_test_never_activates(tmp_path: Path, world: dict[str, object]) -> None:
    bundle = world["bundles"][6]  # type: ignore[index]
    directory = unpack(bundle.tarball, tmp_path / "bad-golden")
    golden = directory / "golden.npz"
    with np.load(golden) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["output/0/0"] = arrays["output/0/0"] + 0.5  # the recorded outputs are wrong
    np.savez_compressed(golden, **arrays)
    manifest = load_manifest((directory / "manifest.json").read_bytes())
    files = [file_entry(directory, f.path, f.role) if f.path == "golden.npz" else f for f in manifest.files]
    data = dump_manifest(manifest.model_copy(update={"files": files}))
    (directory / "manifest.json").write_bytes(data)
    (directory / "manifest.sig").write_bytes(signing.sign(data, world["trusted_key"]))  # type: ignore[arg-type]
    tarball = pack(directory, tmp_path / "bad.tar.gz")
    deployer = _deployer(tmp_path / "device", world, [])
    _deliver(deployer, tarball, hashlib.sha256(data).hexdigest(), 6, "job-golden")
    record = deployer.jobs.get("job-golden")
    assert record is not None and record.state is JobState.FAILED
    assert "golden self-test failed" in (record.reason or "")
    assert deployer.slots.pointer().active is None


def test_failing_probation_rolls_back_by_itself(tmp_path: Path, world: dict[str, object]) -> None:
    events: list[tuple[str, JobState, str | None]] = []
    deployer = _deployer(tmp_path, world, events)
    _deploy(deployer, world, 5, "job-a")
    first = deployer.jobs.get("job-a")
    assert first is not None
    deployer.probation(first, 100, 0, 0, 0.5, now=(first.probation_started or 0) + 61)
    _deploy(deployer, world, 6, "job-b")
    second = deployer.jobs.get("job-b")
    assert second is not None and deployer.slots.pointer().active_sequence == 6
    rolled = deployer.probation(second, inferences=70, errors=30, non_finite=0, p95_ms=0.5)  # 30 of 100 attempts
    assert rolled.state is JobState.ROLLED_BACK and "error rate 30.0%" in (rolled.reason or "")
    assert deployer.slots.pointer().active_sequence == 5


def test_first_bundle_failing_probation_leaves_no_model_active(tmp_path: Path, world: dict[str, object]) -> None:
    deployer = _deployer(tmp_path, world, [])
    _deploy(deployer, world, 5, "job-first")
    record = deployer.jobs.get("job-first")
    assert record is not None
    rolled = deployer.probation(record, inferences=50, errors=0, non_finite=2, p95_ms=0.5)
    assert rolled.state is JobState.ROLLED_BACK and "no model is active" in (rolled.reason or "")
    pointer = deployer.slots.pointer()
    assert pointer.active is None and pointer.previous is None  # a bad bundle is nothing to go back to
    assert [(s.status.value, s.bundle.sequence) for s in pointer.slots.values() if s.bundle] == [("bad", 5)]


class SlowDevice:
    """A runtime on a simulated board ``factor`` times slower than this host (busy-waits the rest of
    each run); ``extra`` slows one bundle's model further, as a really heavier model would be."""

    def __init__(self, inner: object, factor: float) -> None:
        self.inner, self.factor = inner, factor
        self.name, self.version = inner.name, inner.version  # type: ignore[attr-defined]
        self.input_names, self.output_names = inner.input_names, inner.output_names  # type: ignore[attr-defined]

    def run(self, feed: object) -> object:
        started = time.perf_counter()
        out = self.inner.run(feed)  # type: ignore[attr-defined]
        until = started + (time.perf_counter() - started) * self.factor
        while time.perf_counter() < until:
            pass
        return out

    def close(self) -> None:
        self.inner.close()  # type: ignore[attr-defined]


@pytest.mark.parametrize("k", [1, 5, 20])
def test_latency_is_judged_against_the_predecessor_on_the_same_device(tmp_path: Path, world: dict[str, object],
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      k: int) -> None:
    """On a board k times slower than the build host a healthy bundle passes, and a bundle really
    3x slower than the one it replaces is refused, at every k (the build host's p95 decides nothing)."""
    import agent.model

    heavy = {"sha": ""}
    real_open = agent.model.runtimes.open_runtime

    def open_on_slow_board(runtime, model, threads=1, cache_dir=None):  # type: ignore[no-untyped-def]
        from contract.bundle import manifest_sha256

        inner = real_open(runtime, model, threads, cache_dir)
        heavier = 3.0 if manifest_sha256(model.parent) == heavy["sha"] else 1.0  # 2.2 passed beside 2 busy loops
        return SlowDevice(inner, k * heavier)

    monkeypatch.setattr(agent.model.runtimes, "open_runtime", open_on_slow_board)
    events: list[tuple[str, JobState, str | None]] = []
    deployer = _deployer(tmp_path, world, events)
    _deploy(deployer, world, 4, "job-4")
    first = deployer.jobs.get("job-4")
    assert first is not None and first.state is JobState.PROBATION and first.install_ms is None  # nothing to compare
    deployer.probation(first, 100, 0, 0, 0.5 * k, now=(first.probation_started or 0) + 10_000)
    _deploy(deployer, world, 5, "job-5")  # as fast as 4: passes on this board, whatever k is
    healthy = deployer.jobs.get("job-5")
    assert healthy is not None and healthy.state is JobState.PROBATION, healthy.reason
    assert healthy.install_ms is not None and healthy.predecessor_ms is not None
    assert healthy.install_ms / healthy.predecessor_ms < 1.5
    kept = deployer.probation(healthy, 100, 0, 0, p95_ms=0.6 * k, baseline_p95_ms=0.5 * k)
    assert kept.state is JobState.PROBATION
    deployer.probation(healthy, 100, 0, 0, 0.5 * k, now=(healthy.probation_started or 0) + 10_000)
    heavy["sha"] = world["bundles"][6].ref.sha256  # type: ignore[index]
    _deploy(deployer, world, 6, "job-6")
    slow = deployer.jobs.get("job-6")
    assert slow is not None and slow.state is JobState.FAILED, slow.reason
    assert "x the" in (slow.reason or "") and "limit 1.5x" in (slow.reason or "")
    assert deployer.slots.pointer().active_sequence == 5  # never activated


def test_live_probation_compares_with_the_predecessor_live_latency(tmp_path: Path, world: dict[str, object]) -> None:
    deployer = _deployer(tmp_path, world, [])
    _deploy(deployer, world, 5, "job-a")
    first = deployer.jobs.get("job-a")
    assert first is not None
    deployer.probation(first, 100, 0, 0, 40.0, now=(first.probation_started or 0) + 10_000)  # no baseline: judged not
    assert first.state is JobState.SUCCEEDED
    _deploy(deployer, world, 6, "job-b")
    second = deployer.jobs.get("job-b")
    assert second is not None
    kept = deployer.probation(second, 100, 0, 0, p95_ms=40.0 * 1.5 + 1.9, baseline_p95_ms=40.0)
    assert kept.state is JobState.PROBATION  # within 1.5x + 2 ms of slack
    rolled = deployer.probation(second, 100, 0, 0, p95_ms=40.0 * 2.0, baseline_p95_ms=40.0)
    assert rolled.state is JobState.ROLLED_BACK
    assert "1.5x the 40.0 ms of the bundle it replaced" in (rolled.reason or "")


def test_tampered_chunk_fails_the_job_and_leaves_the_active_bundle(tmp_path: Path,
                                                                   world: dict[str, object]) -> None:
    """A chunk rewritten on the way with a matching header hash: only the whole-file hash can tell."""
    from contract.transfer import encode_chunk

    deployer = _deployer(tmp_path, world, [])
    _deploy(deployer, world, 5, "job-ok")
    bundle = world["bundles"][6]  # type: ignore[index]
    command, frames = deploy_command(bundle.tarball, bundle.ref.sha256, 6, "job-tampered")
    deployer.on_deploy(command)
    for frame in frames:
        chunk = decode_chunk(frame)
        if chunk.header.index == 1:
            evil = bytes([chunk.data[0] ^ 0xFF]) + chunk.data[1:]
            chunk = decode_chunk(encode_chunk(chunk.header.sha256, 1, chunk.header.count, evil))
        deployer.on_chunk("job-tampered", chunk)
    record = deployer.jobs.get("job-tampered")
    assert record is not None and record.state is JobState.FAILED and "tampered with" in (record.reason or "")
    assert deployer.slots.pointer().active_sequence == 5


def test_bad_signature_fails_and_leaves_the_active_bundle(tmp_path: Path, world: dict[str, object]) -> None:
    deployer = _deployer(tmp_path, world, [])
    _deploy(deployer, world, 5, "job-ok")
    bundle = world["bundles"][6]  # type: ignore[index]
    directory = unpack(bundle.tarball, tmp_path / "edited")
    manifest = (directory / "manifest.json").read_bytes()
    (directory / "manifest.json").write_bytes(manifest.replace(b'"sequence":6', b'"sequence":60'))
    assert (directory / "manifest.json").read_bytes() != manifest
    tarball = pack(directory, tmp_path / "edited.tar.gz")
    _deliver(deployer, tarball, bundle.ref.sha256, 6, "job-edited")
    record = deployer.jobs.get("job-edited")
    assert record is not None and record.state is JobState.FAILED and "signed bytes" in (record.reason or "")
    assert deployer.slots.pointer().active_sequence == 5


def test_a_gzip_bomb_is_refused_before_extraction_and_leaves_nothing(tmp_path: Path,
                                                                     world: dict[str, object]) -> None:
    """An unsigned tarball that unpacks to 256 MiB of zeros: the job fails at VERIFYING with the
    reason, nothing of it stays on disk (download or staging), and the active bundle is untouched."""
    import gzip
    import io
    import tarfile

    events: list[tuple[str, JobState, str | None]] = []
    data = tmp_path / "data"
    deployer = _deployer(data, world, events)
    _deploy(deployer, world, 5, "job-ok")
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("model.onnx")
        info.size = 256 * 1024 * 1024
        tar.addfile(info, io.BytesIO(b"\0" * info.size))
    bomb = tmp_path / "bomb.tar.gz"
    bomb.write_bytes(gzip.compress(raw.getvalue(), compresslevel=9))
    assert bomb.stat().st_size < 1024 * 1024
    _deliver(deployer, bomb, world["bundles"][6].ref.sha256, 6, "job-bomb")  # type: ignore[index]
    record = deployer.jobs.get("job-bomb")
    assert record is not None and record.state is JobState.FAILED
    assert "must start with manifest.json" in (record.reason or "")
    artifact = hashlib.sha256(bomb.read_bytes()).hexdigest()
    assert not (data / "staging" / artifact).exists() and not (data / "downloads" / artifact).exists()
    assert deployer.slots.pointer().active_sequence == 5
