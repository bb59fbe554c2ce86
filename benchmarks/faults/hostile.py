"""Row 5, hostile bundles: tarballs built to hurt the device (a gzip bomb, a file larger than its
signed manifest declares, a deeply nested signed manifest, '..', absolute paths, links, device
nodes, duplicate and unlisted entries), each delivered as a real deploy to an in-process agent.

Must hold: the job FAILED; the bytes the agent wrote during that job (``wchar`` of this process,
so every write counts, staging files deleted since included) stay within what was declared (the
artifact, and what its signed manifest lists) plus a small slack; nothing of the job is left in
downloads/ or staging/; the old bundle stays active and verifies; the agent answers the next command.

The tarball builders are shared with ``tests/contract/test_bundle.py``."""

from __future__ import annotations

import io
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.frames import FolderSource
from agent.loop import Agent
from benchmarks.faults.device import MemoryTransport, known_good_template, new_agent, send_command
from benchmarks.faults.invariant import data_dir_violations
from benchmarks.faults.report import Row
from benchmarks.faults.world import World, deploy_command, signed
from compiler.bundle import Bundle
from contract import signing, topics
from contract.commands import ProfileCommand
from contract.events import JobEvent, ProfileEvent, decode_event
from contract.jobs import JobState
from contract.transfer import sha256_hex
from transport.client import Connected, Received

Entry = tuple[tarfile.TarInfo, BinaryIO | None]
BOMB = 256 * 1024 * 1024
SLACK = 512 * 1024  # job files, bitmaps, the spool: what a job writes besides its artifact and bundle


class Zeros(io.RawIOBase):
    """``size`` zero bytes, streamed (a bomb is built without holding it in memory)."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = min(n if n >= 0 else 1 << 20, self.left, 1 << 20)
        self.left -= n
        return b"\0" * n


def member(name: str, data: bytes) -> Entry:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, io.BytesIO(data)


def zeros(name: str, size: int) -> Entry:
    info = tarfile.TarInfo(name)
    info.size = size
    return info, Zeros(size)  # type: ignore[return-value]


def special(name: str, kind: bytes, target: str = "") -> Entry:
    """A symlink (SYMTYPE), hard link (LNKTYPE) or device node (CHRTYPE/BLKTYPE) entry."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    info.devmajor, info.devminor = 1, 3  # /dev/null's numbers
    return info, None


def tar_gz(entries: list[Entry] | list[tuple[str, bytes]]) -> bytes:
    """A gzipped tarball of the entries in order: (name, bytes) pairs or prepared entries."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:  # compressed as it streams
        for entry in entries:
            info, data = member(*entry) if isinstance(entry[0], str) else entry  # type: ignore[arg-type]
            tar.addfile(info, data)  # type: ignore[arg-type]
    return out.getvalue()


def signed_head(directory: Path) -> list[tuple[str, bytes]]:
    """A bundle's manifest and signature, as the first two entries of a tarball."""
    return [(name, (directory / name).read_bytes()) for name in ("manifest.json", "manifest.sig")]


@dataclass(frozen=True)
class Hostile:
    name: str
    tarball: bytes
    manifest_sha: str  # what the deploy command names
    declared: int  # bytes the signed manifest (if any is read) lets the device write


def hostile_tarballs(bundle: Bundle, key: Ed25519PrivateKey) -> list[Hostile]:
    directory = bundle.directory
    head = signed_head(directory)
    files = [(f.path, (directory / f.path).read_bytes()) for f in bundle.manifest.files]
    model = bundle.manifest.model_file.path
    model_bytes = (directory / model).read_bytes()
    rest = [f for f in files if f[0] != model]
    declared = sum(f.size for f in bundle.manifest.files) + sum(len(d) for _, d in head)
    nested = b'{"schema_version": 1, "x": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    sha = bundle.ref.sha256
    cases = [
        Hostile("gzip bomb, unsigned (256 MiB of zeros)", tar_gz([zeros(model, BOMB)]), sha, 0),
        Hostile("gzip bomb behind a signed manifest", tar_gz([*map(lambda e: member(*e), head), zeros(model, BOMB)]),
                sha, declared),
        Hostile("file larger than its manifest declares", tar_gz([*head, (model, model_bytes + b"x" * 1_000_000),
                                                                  *rest]), sha, declared),
        Hostile("deeply nested signed manifest", tar_gz([("manifest.json", nested),
                                                         ("manifest.sig", signing.sign(nested, key)), *files]),
                sha256_hex(nested), len(nested)),
        Hostile("'..' entry", tar_gz([*head, ("../escape.txt", b"x" * 100), *files]), sha, declared),
        Hostile("absolute path entry", tar_gz([*head, ("/tmp/coldchain-absolute.txt", b"x" * 100), *files]), sha,
                declared),
        Hostile("symlink entry", tar_gz([*map(lambda e: member(*e), head), special(model, tarfile.SYMTYPE,
                                                                                   "/etc/passwd")]), sha, declared),
        Hostile("hardlink entry", tar_gz([*map(lambda e: member(*e), head), special(model, tarfile.LNKTYPE,
                                                                                    "/etc/passwd")]), sha, declared),
        Hostile("device node entry", tar_gz([*map(lambda e: member(*e), head), special(model, tarfile.CHRTYPE)]),
                sha, declared),
        Hostile("duplicate entry", tar_gz([*head, (model, model_bytes), (model, model_bytes), *rest]), sha, declared),
        Hostile("unlisted entry", tar_gz([*head, ("evil.so", b"\x7fELF" * 1000), *files]), sha, declared),
    ]
    return cases


def written_bytes() -> int:
    """Bytes this process has passed to write() so far (all files; sockets and pipes too)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise OSError("no wchar in /proc/self/io")


def run(world: World, repeats: int = 1, workdir: Path | None = None) -> Row:
    row = Row("hostile bundles", "job FAILED; bytes written <= declared + 512 KiB; no download/staging left; "
              "old bundle active and verified; next command answered")
    with row.timed(), tempfile.TemporaryDirectory(dir=workdir) as tmp:
        root = Path(tmp)
        cases = hostile_tarballs(world.bundles[6], world.trusted_key)
        old = world.bundles[5].ref.sha256
        data = known_good_template(world, root / "data")
        agent, transport = new_agent(world, data, FolderSource(world.root / "cal"))
        agent.handle(Connected())
        device = agent.config.device_id
        worst = 0.0
        for round_ in range(repeats):
            for number, case in enumerate(cases):
                where = f"{case.name} (round {round_ + 1})"
                job = f"hostile-{round_}-{number}"
                path = root / f"{job}.tar.gz"
                path.write_bytes(case.tarball)
                command, frames = deploy_command(path, case.manifest_sha, 6, job)
                received = [Received(topics.group_chunks("eu", command.artifact.sha256), f) for f in frames]
                before = written_bytes()
                agent.handle(Received(topics.commands(device), signed(command, world.trusted_key, device)))
                for item in received:
                    agent.handle(item)
                written = written_bytes() - before
                limit = command.artifact.size + 32 * command.artifact.chunk_count + case.declared + SLACK
                worst = max(worst, written / limit)
                _check(row, where, agent.config.data_dir, transport, device, job, command.artifact.sha256)
                if written > limit:
                    row.violated(where, f"{written} bytes written during the job, more than {limit} declared")
                row.violated(where, data_dir_violations(data, world.trust, {old}))
                _answers_next(row, where, agent, transport, f"profile-{job}")
        row.how_often = (f"{len(cases) * repeats} deploys: {len(cases)} kinds x {repeats}; the bomb is "
                         f"{len(cases[0].tarball) // 1024} KiB -> 256 MiB")
        row.notes.append(f"most written by one job: {worst:.0%} of what was declared (+ slack)")
    return row


def _check(row: Row, where: str, data: Path, transport: MemoryTransport, device: str, job: str, sha: str) -> None:
    states = [e for e in map(decode_event, transport.on(topics.events(device)))
              if isinstance(e, JobEvent) and e.job_id == job]
    if not states or states[-1].state is not JobState.FAILED:
        row.violated(where, f"the job ended {states[-1].state if states else 'without an event'}, not FAILED")
    for folder in ("downloads", "staging"):
        if (data / folder / sha).exists():
            row.violated(where, f"{folder}/{sha[:12]} was left behind")


def _answers_next(row: Row, where: str, agent: Agent, transport: MemoryTransport, job: str) -> None:
    device = agent.config.device_id
    send_command(agent, ProfileCommand(job_id=job, iterations=1, warmup=0))
    if not any(isinstance(e, ProfileEvent) and e.job_id == job
               for e in map(decode_event, transport.on(topics.events(device)))):
        row.violated(where, "the next command (profile) was not answered")
