"""Damaged or full disks never put the agent in a crash loop (issue 11, finding 5): every persisted
file is checked when it is loaded; what is damaged is set aside or started again and reported once;
repeating errors are held back; a job that runs out of space fails with that reason, its files
removed, the active model untouched."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from agent.frames import FolderSource
from agent.loop import ERROR_BURST, Agent
from benchmarks.faults.device import send_command
from contract import topics
from contract.events import ErrorEvent, JobEvent, decode_event
from contract.jobs import JobState
from contract.transfer import decode_chunk
from tests.agent.conftest import MemoryTransport, deliver
from tests.conftest import deploy_command
from transport.client import Connected, Received

DEVICE = "fridge-7"


def _restart(a: Agent, tmp_path: Path) -> tuple[Agent, MemoryTransport]:
    transport = MemoryTransport()
    again = Agent(a.config, transport, FolderSource(tmp_path / "frames"))
    again.handle(Connected())
    return again, transport


def _errors(t: MemoryTransport) -> list[ErrorEvent]:
    return [e for e in map(decode_event, t.on(topics.events(DEVICE))) if isinstance(e, ErrorEvent)]


def _succeed(a: Agent, job: str) -> None:
    record = a.deployer.jobs.get(job)
    assert record is not None
    a.deployer.probation(record, 100, 0, 0, 0.5, now=(record.probation_started or 0) + 10_000)


def test_a_garbled_job_file_and_spool_are_set_aside_and_reported(tmp_path: Path, agent: tuple[Agent, MemoryTransport],
                                                                 world: dict[str, object]) -> None:
    a, _ = agent
    a.handle(Connected())
    deliver(a, world["bundles"][5], 5, "j5")  # type: ignore[index]
    deliver(a, world["bundles"][6], 6, "j6")  # type: ignore[index]
    a.close_window()
    a.spool.close()
    data = a.config.data_dir
    (data / "jobs" / "j5.json").write_bytes(b'{"job_id": "j5", "state": ')  # truncated
    (data / "telemetry.db").write_bytes(b"SQLite format 3\x00" + b"\xde\xad" * 4000)  # a garbled page
    again, t = _restart(a, tmp_path)
    codes = {e.code: e.message for e in _errors(t)}
    assert "j5.json was unreadable" in codes["jobs_recovered"]
    assert "spool was damaged" in codes["spool_recovered"]
    assert again.deployer.jobs.get("j6") is not None and again.deployer.jobs.get("j5") is None
    again.close_window()  # the new spool works
    assert again.spool.size == 1
    assert list((data / "jobs").glob("j5.json.damaged-*")) and list(data.glob("telemetry.db.damaged-*"))


@pytest.mark.parametrize("damage", ["ref.json", "bitmap", "artifact.part", "hashes", "bitmap garbled in place"])
def test_a_damaged_download_starts_again_and_completes(tmp_path: Path, agent: tuple[Agent, MemoryTransport],
                                                       world: dict[str, object], damage: str) -> None:
    a, _ = agent
    a.handle(Connected())
    bundle = world["bundles"][5]  # type: ignore[index]
    command, frames = deploy_command(bundle.tarball, bundle.ref.sha256, 5, "jd")
    send_command(a, command)
    for frame in frames[:2]:
        a.deployer.on_chunk("jd", decode_chunk(frame))
    folder = a.config.data_dir / "downloads" / command.artifact.sha256
    target = folder / damage.split(maxsplit=1)[0]
    if damage == "artifact.part":
        target.unlink()
    elif damage == "bitmap garbled in place":  # found by the fault harness: same size, bytes neither 0 nor 1
        target.write_bytes(b"\xa7" * len(target.read_bytes()))  # (the job was stuck: "complete" never came)
    else:
        target.write_bytes(b"\xff garbled")
    again, t = _restart(a, tmp_path)
    again.deployer.resume()
    assert again.deployer.missing("jd") == list(range(len(frames)))  # everything is fetched again
    for frame in frames:
        again.deployer.on_chunk("jd", decode_chunk(frame))
    record = again.deployer.jobs.get("jd")
    assert record is not None and record.state is JobState.PROBATION, record.reason
    said = [e.reason for e in map(decode_event, t.on(topics.events(DEVICE))) if isinstance(e, JobEvent)]
    assert any(r and "started again" in r for r in said), said


def test_a_chunk_damaged_on_disk_is_fetched_again_not_blamed_on_the_transport(
        agent: tuple[Agent, MemoryTransport], world: dict[str, object]) -> None:
    a, t = agent
    a.handle(Connected())
    bundle = world["bundles"][5]  # type: ignore[index]
    command, frames = deploy_command(bundle.tarball, bundle.ref.sha256, 5, "jc")
    send_command(a, command)
    for frame in frames[:-1]:
        a.deployer.on_chunk("jc", decode_chunk(frame))
    part = a.config.data_dir / "downloads" / command.artifact.sha256 / "artifact.part"
    data = bytearray(part.read_bytes())
    data[command.artifact.chunk_size + 10] ^= 0xFF  # chunk 1, after it arrived intact
    part.write_bytes(bytes(data))
    a.deployer.on_chunk("jc", decode_chunk(frames[-1]))
    record = a.deployer.jobs.get("jc")
    assert record is not None and record.state is JobState.DOWNLOADING
    assert a.deployer.missing("jc") == [1]
    a.deployer.on_chunk("jc", decode_chunk(frames[1]))
    assert record.state is JobState.PROBATION, record.reason
    reasons = [e.reason for e in map(decode_event, t.on(topics.events(DEVICE))) if isinstance(e, JobEvent)]
    assert any(r and "damaged on disk" in r for r in reasons)


def test_a_damaged_active_bundle_falls_back_to_the_known_good_once(tmp_path: Path,
                                                                    agent: tuple[Agent, MemoryTransport],
                                                                    world: dict[str, object]) -> None:
    a, _ = agent
    a.handle(Connected())
    deliver(a, world["bundles"][5], 5, "j5")  # type: ignore[index]
    _succeed(a, "j5")
    deliver(a, world["bundles"][6], 6, "j6")  # type: ignore[index]
    _succeed(a, "j6")
    active = a.deployer.slots.active_path()
    assert active is not None
    (active / "model.onnx").write_bytes(b"garbage")  # the model, not the manifest: found when it is loaded
    again, t = _restart(a, tmp_path)
    for _ in range(30):
        again.infer_once()
    damaged = [e for e in _errors(t) if e.code == "active_bundle_damaged"]
    assert len(damaged) == 1 and "known-good bundle #5" in damaged[0].message
    assert again.bundle_ref() is not None and again.bundle_ref().sequence == 5  # type: ignore[union-attr]
    assert again.window.inferences >= 25  # it went on inferring with the known-good bundle


def test_a_repeating_error_is_held_back_and_counted(agent: tuple[Agent, MemoryTransport]) -> None:
    a, t = agent
    a.handle(Connected())
    for _ in range(500):
        a.handle(Received(topics.commands(DEVICE), b"{not json"))
    malformed = [e for e in _errors(t) if e.code == "malformed_message"]
    assert len(malformed) == ERROR_BURST
    assert a.malformed == 500  # every one is counted


def test_no_room_for_a_download_or_an_install_fails_the_job_cleanly(tmp_path: Path,
                                                                     agent: tuple[Agent, MemoryTransport],
                                                                     world: dict[str, object],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from agent import receiver, slots

    a, _ = agent
    a.handle(Connected())
    deliver(a, world["bundles"][5], 5, "j5")  # type: ignore[index]
    real = shutil.disk_usage
    full = real(tmp_path)._replace(free=1024)
    monkeypatch.setattr(receiver, "free_bytes", lambda path: full.free)
    deliver(a, world["bundles"][6], 6, "j6")  # type: ignore[index]
    record = a.deployer.jobs.get("j6")
    assert record is not None and record.state is JobState.FAILED and "not enough space" in (record.reason or "")
    monkeypatch.undo()
    monkeypatch.setattr(slots, "free_bytes", lambda path: 1024)  # room to download, none to install
    deliver(a, world["bundles"][6], 6, "j6b")  # type: ignore[index]
    record = a.deployer.jobs.get("j6b")
    assert record is not None and record.state is JobState.FAILED and "install" in (record.reason or "")
    assert a.deployer.slots.pointer().active_sequence == 5
    data = a.config.data_dir
    artifact = [p.name for p in (data / "downloads").iterdir()] if (data / "downloads").exists() else []
    staging = [p.name for p in (data / "staging").iterdir()] if (data / "staging").exists() else []
    assert world["bundles"][6].ref.sha256 not in staging and len(artifact) <= 1  # type: ignore[index]  # j5's at most


def test_job_history_is_bounded_and_served_from_memory(tmp_path: Path) -> None:
    from agent.jobs import JobRecord, JobStore

    store = JobStore(tmp_path, keep=10)
    for i in range(40):
        record = JobRecord(f"job-{i}", {}, state=JobState.FAILED)
        store.save(record)
    files = sorted(p.name for p in (tmp_path / "jobs").glob("*.json"))
    assert len(files) == 10 and "job-39.json" in files and "job-0.json" not in files
    assert {r.job_id for r in store.all()} == {f"job-{i}" for i in range(30, 40)}
    (tmp_path / "jobs" / "job-39.json").unlink()  # read once at start: the store answers from memory
    assert store.get("job-39") is not None
    assert JobStore(tmp_path).get("job-39") is None and len(JobStore(tmp_path).all()) == 9


@pytest.mark.parametrize("where", ["download", "install"])
def test_a_disk_that_fills_up_under_a_job_fails_it_naming_the_space(tmp_path: Path,
                                                                    agent: tuple[Agent, MemoryTransport],
                                                                    world: dict[str, object], where: str,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by the fault harness's full-disk row (benchmarks/faults/diskfull.py, a real tmpfs): the
    free space was checked, then the disk filled up. In the download the write error escaped the
    job (it stayed DOWNLOADING with its files); in the install the job FAILED with the reason "Error"
    (``shutil.copytree`` gathers its errors as text). Both must fail the job naming the space."""
    import errno

    from agent import receiver, slots

    a, _ = agent
    a.handle(Connected())
    deliver(a, world["bundles"][5], 5, "j5")  # type: ignore[index]
    if where == "download":
        accept = receiver.Download.accept

        def full_after_two(self: receiver.Download, chunk: object) -> bool:
            if self.received >= 2:
                raise OSError(errno.ENOSPC, "No space left on device", str(self.part))
            return accept(self, chunk)  # type: ignore[arg-type]

        monkeypatch.setattr(receiver.Download, "accept", full_after_two)
    else:
        def copy_fails(src: Path, dst: Path) -> None:
            raise shutil.Error([(str(src), str(dst), "[Errno 28] No space left on device: 'model.onnx'")])

        monkeypatch.setattr(slots.shutil, "copytree", copy_fails)
    command = deliver(a, world["bundles"][6], 6, "j6")  # type: ignore[index]
    record = a.deployer.jobs.get("j6")
    assert record is not None and record.state is JobState.FAILED, record and record.state
    assert "No space left on device" in (record.reason or ""), record.reason
    data = a.config.data_dir
    assert not (data / "downloads" / command.artifact.sha256).exists()
    assert not (data / "staging" / command.artifact.sha256).exists()
    assert a.deployer.slots.pointer().active_sequence == 5
