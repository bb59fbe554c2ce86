"""Row 2, power cuts: three whole deploys are replayed in-process (bundle 4 onto an empty device and
5 over it, each through probation to SUCCEEDED; then 6, whose probation fails and rolls back to 5)
with ``os.fsync`` and ``os.replace`` wrapped so that after every call the whole data directory is
copied aside: each copy is what a power cut at that instant could leave (what the agent had made
durable, or was about to). A fresh agent then boots on every copy (``resume()``, ``Connected``).

Must hold at every point: booting raises nothing; the pointer parses and tells the truth; the active
bundle verifies and is the old known-good or the new one of the deploy under way; no bundle is
active only before the first bundle ever passed probation."""

from __future__ import annotations

import os
import shutil
import tempfile
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.deploy import Deployer
from agent.runtimes import available
from benchmarks.faults.device import new_agent, pass_probation
from benchmarks.faults.invariant import data_dir_violations
from benchmarks.faults.report import Row
from benchmarks.faults.world import World, deploy_command
from contract.transfer import decode_chunk
from transport.client import Connected


@dataclass(frozen=True)
class Point:
    folder: Path
    call: str  # "fsync" or "replace", and of what
    deploy: str
    allowed: frozenset[str]
    none_allowed: bool


class Snapshots:
    """Copies of ``data`` after each wrapped call (every ``every``-th is kept)."""

    def __init__(self, data: Path, out: Path, every: int = 1) -> None:
        self.data, self.out, self.every = data, out, every
        self.calls = 0
        self.points: list[Point] = []
        self.deploy = ""
        self.allowed: frozenset[str] = frozenset()
        self.none_allowed = True

    def taken(self, what: str) -> None:
        self.calls += 1
        if self.calls % self.every:
            return
        folder = self.out / f"{self.calls:05d}"
        shutil.copytree(self.data, folder)  # leftovers (*.tmp) too: a power cut leaves them
        self.points.append(Point(folder, what, self.deploy, self.allowed, self.none_allowed))

    @contextmanager
    def wrapped(self) -> Iterator[Snapshots]:
        real_fsync, real_replace = os.fsync, os.replace

        def fsync(fd: Any) -> None:
            real_fsync(fd)
            self.taken("fsync")

        def replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
            real_replace(src, dst, *args, **kwargs)
            self.taken(f"replace -> {Path(dst).name}")

        os.fsync, os.replace = fsync, replace  # type: ignore[assignment]
        try:
            yield self
        finally:
            os.fsync, os.replace = real_fsync, real_replace  # type: ignore[assignment]


def replay(world: World, data: Path, snaps: Snapshots) -> None:
    """Three whole deploys, the way the agent runs them, with the snapshots on."""
    deployer = Deployer(data, world.trust, available(), lambda *_: None)
    b4, b5, b6 = (world.bundles[s] for s in (4, 5, 6))

    def deploy(seq: int, job: str, then: Callable[[], None]) -> None:
        bundle = world.bundles[seq]
        command, frames = deploy_command(bundle.tarball, bundle.ref.sha256, seq, job, chunk=64 * 1024)
        deployer.on_deploy(command)
        for frame in frames:
            deployer.on_chunk(job, decode_chunk(frame))
        then()

    with snaps.wrapped():
        snaps.deploy, snaps.allowed, snaps.none_allowed = "4 onto an empty device", frozenset({b4.ref.sha256}), True
        deploy(4, "d4", lambda: pass_probation(deployer, "d4"))
        snaps.deploy, snaps.allowed, snaps.none_allowed = "5 over 4", frozenset({b4.ref.sha256, b5.ref.sha256}), False
        deploy(5, "d5", lambda: pass_probation(deployer, "d5"))
        snaps.deploy, snaps.allowed = "6 over 5, rolled back", frozenset({b5.ref.sha256, b6.ref.sha256})

        def fail_probation() -> None:
            record = deployer.jobs.get("d6")
            assert record is not None
            deployer.probation(record, inferences=50, errors=0, non_finite=3, p95_ms=0.5)

        deploy(6, "d6", fail_probation)
    state = deployer.jobs.get("d6")
    if state is None or state.state.value != "ROLLED_BACK" or deployer.slots.pointer().active_sha256 != b5.ref.sha256:
        raise RuntimeError(f"the replay itself went wrong: d6 is {state and state.state}")


def boot(world: World, point: Point) -> list[str]:
    """A fresh agent on the copy: what is wrong after it started (empty: the invariant holds)."""
    try:
        agent, _ = new_agent(world, point.folder)
        agent.deployer.resume()
        agent.handle(Connected())
        loaded = agent.bundle_ref()
    except Exception as exc:
        return [f"booting raised {type(exc).__name__}: {exc}\n{traceback.format_exc(limit=4)}"]
    wrong = data_dir_violations(point.folder, world.trust, set(point.allowed), point.none_allowed)
    if loaded is not None and loaded.sha256 != agent.deployer.slots.pointer().active_sha256:
        wrong.append("the agent runs another bundle than the pointer names")
    agent.spool.close()
    return wrong


def run(world: World, every: int = 1, workdir: Path | None = None) -> Row:
    row = Row("power cut", "booting on every point raises nothing; pointer parses and tells the truth; active "
              "verifies and is the old known-good or the new bundle (none only before any was good)")
    with row.timed(), tempfile.TemporaryDirectory(dir=workdir) as tmp:
        root = Path(tmp)
        snaps = Snapshots(root / "data", root / "points", every)
        replay(world, root / "data", snaps)
        by_deploy: dict[str, int] = {}
        for point in snaps.points:
            by_deploy[point.deploy] = by_deploy.get(point.deploy, 0) + 1
            row.violated(f"after {point.call} #{point.folder.name} ({point.deploy})", boot(world, point))
            shutil.rmtree(point.folder)
        row.how_often = (f"{len(snaps.points)} points (every {every}. of {snaps.calls} fsync/replace calls) in 3 "
                         "deploys: " + ", ".join(f"{n} in {d}" for d, n in by_deploy.items()))
    return row
