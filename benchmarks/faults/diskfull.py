"""Row 4, a full disk: the agent's data directory is a real small filesystem (tmpfs, mounted for
the case), on a device that runs bundle 5 (known-good). Bundle 6, padded with random bytes and
signed again, is deployed four ways: its download does not fit (refused up front), the disk fills
up under the download (a ballast file after half the chunks: the writes fail), its install does
not fit (the tmpfs holds the download and the staging copy, not the slot copy), and the disk fills
up under the install (the ballast appears after the install checked the space, before it copies).

Must hold: the job FAILED with a reason naming the space; bundle 5 stays active and verifies; the
download and staging files of the job are gone; the agent goes on (nothing escapes that its loop
would not catch, and it answers a profile command once the ballast is removed). Skipped, saying
so, where ``mount -t tmpfs`` is refused (not root)."""

from __future__ import annotations

import errno
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

from agent import slots as agent_slots
from agent.errors import AgentError
from agent.frames import FolderSource
from agent.loop import Agent
from benchmarks.faults.device import MemoryTransport, events, known_good_template, new_agent, send_command
from benchmarks.faults.invariant import data_dir_violations, tree_bytes
from benchmarks.faults.report import Row
from benchmarks.faults.world import World, deploy_command, padded_bundle, signed
from contract import topics
from contract.bundle import RESERVE_BYTES
from contract.commands import ProfileCommand
from contract.errors import ContractError
from contract.events import JobEvent, ProfileEvent
from contract.jobs import JobState
from transport.client import Connected, Received

KINDS = ("download does not fit", "disk fills during the download", "install does not fit",
         "disk fills during the install")
PADDING_MIB = 3
MIB = 1024 * 1024


class MountRefused(OSError):
    pass


@contextmanager
def tmpfs(where: Path, size_bytes: int) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={-(-size_bytes // 4096) * 4}k", "tmpfs", str(where)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise MountRefused(done.stderr.strip() or f"mount exited with {done.returncode}")
    try:
        yield where
    finally:  # lazily if a file is still open in it (the agent of a case that went wrong)
        if subprocess.run(["umount", str(where)], capture_output=True, check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)


def fill(folder: Path) -> Path:
    """A ballast file that takes every free byte of ``folder``'s filesystem."""
    ballast = folder / "ballast"
    with ballast.open("wb", buffering=0) as fh:
        for block in (1 << 20, 1 << 12):
            try:
                while fh.write(b"\0" * block):
                    pass
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
    return ballast


def loop_step(step: Callable[[], object], caught: list[str]) -> None:
    """One thing the agent's loop does; what its loop catches (and reports) is noted, not raised."""
    try:
        step()
    except (AgentError, ContractError, OSError) as exc:
        caught.append(f"{type(exc).__name__}: {exc}")


def run(world: World, repeats: int = 1, workdir: Path | None = None) -> Row:
    row = Row("full disk (tmpfs)", "job FAILED naming the space; bundle 5 active and verified; the job's download "
              "and staging gone; the agent goes on (answers a profile)")
    with row.timed(), tempfile.TemporaryDirectory(dir=workdir) as tmp:
        root = Path(tmp)
        template = known_good_template(world, root / "template")
        tarball, sha = padded_bundle(world.bundles[6], world.trusted_key, root, PADDING_MIB)
        used = tree_bytes(template)[0] + 64 * 1024
        size = tarball.stat().st_size  # the bundle's files are as big: random padding does not compress
        room = {KINDS[0]: used + RESERVE_BYTES + size // 2, KINDS[1]: used + RESERVE_BYTES + 3 * size + 4 * MIB,
                KINDS[2]: used + RESERVE_BYTES + 5 * size // 2, KINDS[3]: used + RESERVE_BYTES + 3 * size + 4 * MIB}
        caught: list[str] = []
        for n in range(repeats):
            for kind in KINDS:
                where = f"{kind} #{n + 1}"
                try:
                    with tmpfs(root / "mnt", room[kind]) as mnt:
                        data = mnt / "data"
                        shutil.copytree(template, data)
                        row.violated(where, one_case(world, data, tarball, sha, kind, f"full-{n}-{KINDS.index(kind)}",
                                                     caught))
                except MountRefused as exc:
                    row.skipped = f"mount -t tmpfs refused ({exc}); run as root"
                    return row
        row.how_often = f"{repeats * len(KINDS)} deploys: " + ", ".join(f"{k} x{repeats}" for k in KINDS) + \
            f" (bundle {size / MIB:.1f} MiB)"
        if caught:
            row.notes.append(f"{len(caught)} errors its loop would catch and report, e.g. {caught[0]}")
    return row


def one_case(world: World, data: Path, tarball: Path, sha: str, kind: str, job: str, caught: list[str]) -> list[str]:
    agent, transport = new_agent(world, data, FolderSource(world.root / "cal"))
    device = agent.config.device_id
    agent.handle(Connected())
    command, frames = deploy_command(tarball, sha, 6, job, chunk=64 * 1024)
    chunk_topic = topics.group_chunks("eu", command.artifact.sha256)
    ballast: Path | None = None

    def fill_at_install(point: str) -> None:  # the install checked the space and records its slot: now fill
        nonlocal ballast
        if point == "mid_activation" and ballast is None and kind == KINDS[3]:
            ballast = fill(data.parent)

    with mock.patch.object(agent_slots, "fault", fill_at_install):
        loop_step(lambda: agent.handle(Received(topics.commands(device), signed(command, world.trusted_key, device))),
                  caught)
        for index, frame in enumerate(frames):
            if kind == KINDS[1] and index == len(frames) // 2:
                ballast = fill(data.parent)
            loop_step(lambda f=frame: agent.handle(Received(chunk_topic, f)), caught)  # type: ignore[misc]
    if ballast is not None:
        loop_step(agent.close_window, caught)  # the spool on a full disk too
    wrong = _ended_cleanly(agent, transport, device, job, command.artifact.sha256)
    if ballast is not None:
        ballast.unlink()
    elif kind in (KINDS[1], KINDS[3]):
        wrong.append("the ballast was never placed (the case did not happen)")
    wrong += data_dir_violations(data, world.trust, {world.bundles[5].ref.sha256})
    answer = f"profile-{job}"
    loop_step(lambda: send_command(agent, ProfileCommand(job_id=answer, iterations=1, warmup=0)), caught)
    loop_step(agent.close_window, caught)
    if not any(isinstance(e, ProfileEvent) and e.job_id == answer for e in events(transport, device)):
        wrong.append("the agent did not answer a profile command afterwards")
    agent.spool.close()
    return wrong


def _ended_cleanly(a: Agent, transport: MemoryTransport, device: str, job: str, sha: str) -> list[str]:
    wrong = []
    said = [e for e in events(transport, device) if isinstance(e, JobEvent) and e.job_id == job]
    last = said[-1] if said else None
    if last is None or last.state is not JobState.FAILED:
        record = a.deployer.jobs.get(job)
        wrong.append(f"the job is {record.state.value if record else 'unknown'}, not FAILED")
    elif "space" not in (last.reason or "").lower():
        wrong.append(f"the job FAILED without naming the space: {last.reason}")
    for folder in ("downloads", "staging"):
        if (a.config.data_dir / folder / sha).exists():
            wrong.append(f"{folder}/{sha[:12]} was left behind")
    return wrong
