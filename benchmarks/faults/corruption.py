"""Row 3, damaged files: a device whose bundle 4 passed probation, 5 is in probation, and a third
job's download is half done (bundle 4 again: it ends FAILED, anti-rollback, once whole). Every file
it persisted (slot pointer, both slots' bundle files, job files, the download's part/bitmap/hashes/
ref.json, the telemetry spool) is damaged in turn, three ways (truncated to half, emptied, bytes
garbled in the middle), and a fresh agent runs on a copy: ``resume()``, ``Connected``, 50 inference
attempts, a telemetry window; then the download's chunks are offered again (and what it still asks for).

Must hold: nothing raises; the pointer parses, tells the truth and names a verified bundle (4 or 5);
at most 15 error events (no flood); what the agent had to repair it reported (``*_recovered`` or
``active_bundle_damaged`` error events, or the download's job event saying it started again); the
half-done download is not stuck: it leaves DOWNLOADING once its chunks come again."""

from __future__ import annotations

import random
import shutil
import tempfile
import traceback
from pathlib import Path

from agent.frames import FolderSource
from agent.loop import Agent
from benchmarks.faults.device import MemoryTransport, deliver, events, new_agent, pass_probation, send_command
from benchmarks.faults.invariant import data_dir_violations
from benchmarks.faults.report import Row
from benchmarks.faults.world import World, deploy_command
from contract import topics
from contract.commands import DeployCommand
from contract.events import ErrorEvent, JobEvent
from contract.jobs import JobState
from transport.client import Connected, Received

KINDS = ("truncated to half", "emptied", "garbled")
MAX_ERRORS = 15
ATTEMPTS = 50
AGAIN = "j4-again"  # the job whose download is half done


def damage(path: Path, kind: str, rng: random.Random) -> None:
    data = path.read_bytes()
    if kind == "truncated to half":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "emptied":
        path.write_bytes(b"")
    else:  # a run of random bytes in the middle (at least one byte, at most 4 KiB)
        size = max(1, min(4096, len(data) // 3))
        start = max(0, (len(data) - size) // 2)
        noise = bytes(rng.randrange(128, 256) for _ in range(size))  # never plain ASCII: JSON does not survive it
        path.write_bytes(data[:start] + noise + data[start + size:])


def _again(world: World) -> tuple[DeployCommand, list[bytes]]:
    bundle = world.bundles[4]
    return deploy_command(bundle.tarball, bundle.ref.sha256, 4, AGAIN, chunk=16 * 1024)


def prepare(world: World, data: Path, frames: Path) -> None:
    """The device described above, its spool closed (the files at rest)."""
    agent, _ = new_agent(world, data, FolderSource(frames))
    agent.handle(Connected())
    deliver(agent, world.bundles[4], 4, "j4")
    pass_probation(agent.deployer, "j4")
    deliver(agent, world.bundles[5], 5, "j5")
    command, chunks = _again(world)
    send_command(agent, command)
    for frame in chunks[: len(chunks) // 2]:
        agent.handle(Received(topics.group_chunks("eu", command.artifact.sha256), frame))
    for _ in range(2):
        for _ in range(5):
            agent.infer_once()
        agent.close_window()
    agent.spool.close()


def expected_report(relative: str, active: str) -> str | None:
    """What the agent must say it repaired when this file is damaged (None: nothing it must notice
    at start; a garbled download part or bitmap is found once the chunks are whole)."""
    if relative == "slots/ACTIVE":
        return "slots_recovered"
    if relative.startswith(f"slots/{active}/"):
        return "slots_recovered or active_bundle_damaged"
    if relative.startswith("jobs/"):
        return "jobs_recovered"
    return None


def reported(transport: MemoryTransport, device: str) -> tuple[set[str], bool, int]:
    """(error codes, whether the download said it started again, number of error events)."""
    said = events(transport, device)
    codes = {e.code for e in said if isinstance(e, ErrorEvent)}
    restarted = any(isinstance(e, JobEvent) and e.job_id == AGAIN and e.reason and "damaged" in e.reason for e in said)
    return codes, restarted, sum(isinstance(e, ErrorEvent) for e in said)


def one_case(world: World, copy: Path, frames: Path, relative: str, kind: str, active: str) -> list[str]:
    wrong: list[str] = []
    try:
        agent, transport = new_agent(world, copy, FolderSource(frames))
        agent.deployer.resume()
        agent.handle(Connected())
        for _ in range(ATTEMPTS):
            agent.infer_once()
        agent.close_window()
        device = agent.config.device_id
        codes, restarted, count = reported(transport, device)
        wrong += data_dir_violations(copy, world.trust, {world.bundles[s].ref.sha256 for s in (4, 5)})
        if count > MAX_ERRORS:
            wrong.append(f"{count} error events in {ATTEMPTS} inference attempts (a flood)")
        must = expected_report(relative, active)
        if must and not any(code in must.split(" or ") for code in codes):
            wrong.append(f"nothing reported (expected {must}); said: {sorted(codes)}")
        set_aside = [p.relative_to(copy).as_posix() for p in copy.rglob("*.damaged-*")]
        if set_aside and not any(code.endswith("_recovered") for code in codes):
            wrong.append(f"{set_aside} set aside without a *_recovered report")
        if relative.startswith(f"downloads/{_again(world)[0].artifact.sha256}/") and kind != "garbled" \
                and not restarted:  # (a garbled part or bitmap keeps its size: found when the chunks are whole)
            wrong.append("the damaged download was not reported as started again")
        wrong += _download_not_stuck(agent, world)
        agent.spool.close()
    except Exception as exc:
        wrong.append(f"raised {type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}")
    return wrong


def _download_not_stuck(agent: Agent, world: World) -> list[str]:
    """Offer every chunk, then (as the repair loop would) what the job still lacks, twice more."""
    record = agent.deployer.jobs.get(AGAIN)
    if record is None or record.state is not JobState.DOWNLOADING:
        return []  # its job file was set aside, or it already ended
    command, chunks = _again(world)
    wanted = list(range(len(chunks)))
    for _ in range(3):
        for index in wanted:
            agent.handle(Received(topics.group_chunks("eu", command.artifact.sha256), chunks[index]))
        if record.state is not JobState.DOWNLOADING:
            return []
        wanted = agent.deployer.missing(AGAIN)
    return [f"the half-done download is stuck in DOWNLOADING with every chunk offered (asks for {wanted[:8]})"]


def run(world: World, stride: int = 1, workdir: Path | None = None) -> Row:
    """``stride``: damage every ``stride``-th (file, kind) pair (1: all of them)."""
    row = Row("damaged files", f"nothing raises; pointer truthful, active 4 or 5 verified; <= {MAX_ERRORS} error "
              f"events in {ATTEMPTS} inferences; repairs reported; the half-done download is not stuck")
    rng = random.Random(3)
    with row.timed(), tempfile.TemporaryDirectory(dir=workdir) as tmp:
        root = Path(tmp)
        base = root / "base"
        prepare(world, base, world.root / "cal")
        active = (base / "slots" / "ACTIVE").read_text().split('"active": "')[1][0]
        files = sorted(p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file())
        cases = [(f, k) for f in files for k in KINDS][::stride]
        for relative, kind in cases:
            copy = root / "case"
            shutil.copytree(base, copy)
            damage(copy / relative, kind, rng)
            row.violated(f"{relative} {kind}", one_case(world, copy, world.root / "cal", relative, kind, active))
            shutil.rmtree(copy)
        row.how_often = f"{len(cases)} cases: {len(files)} files x {len(KINDS)} kinds" + \
            (f", every {stride}." if stride > 1 else "")
    return row
