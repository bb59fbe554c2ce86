"""The rows and how big each is: the full run (``FULL``, the defaults of the command) and the
sample the test suite runs (``QUICK``, ``--quick``). ``run_row`` is what both call."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from benchmarks.faults import (
    brokerkill,
    burst,
    cloudkill,
    corruption,
    diskfull,
    fuzz,
    hostile,
    partition,
    poison,
    powercut,
    sigkill,
)
from benchmarks.faults.report import Row
from benchmarks.faults.world import World


@dataclass(frozen=True)
class Sizes:
    kills: int = 300  # SIGKILLs of a real agent process
    restart_every: int = 5  # ... every n-th device is started again after its kill
    powercut_every: int = 1  # every n-th fsync/replace call of three deploys is a power cut point
    corruption_stride: int = 1  # every n-th (file, kind of damage) pair
    diskfull_repeats: int = 3  # each of the four full-disk cases
    hostile_repeats: int = 3  # each of the eleven hostile tarballs
    fuzz: int = 20_000  # payloads
    fuzz_batch: int = 500  # payloads between two markers
    burst_windows: int = 20_000  # telemetry windows of one burst, over all devices
    burst_devices: int = 200
    burst_repeats: int = 3
    broker_kills: int = 10  # Mosquitto SIGKILLed and restarted mid-rollout
    broker_kill_devices: int = 4  # simulated agents in each of those rollouts
    partitions: int = 12  # a device cut off for 10 simulated minutes (each cut timing x wave timeout, twice)
    partition_devices: int = 3  # real agents in each of those rollouts, one of them partitioned
    ingest_kills: int = 20  # the ingestion process SIGKILLed while telemetry flows
    ingest_kill_devices: int = 40  # ... from this many devices
    controller_kills: int = 20  # the rollout controller process SIGKILLed mid-rollout
    seed: int = 1


FULL = Sizes()
QUICK = Sizes(kills=20, restart_every=4, powercut_every=5, corruption_stride=2, diskfull_repeats=1, hostile_repeats=1,
              fuzz=1000, fuzz_batch=250, burst_windows=2000, burst_devices=20, burst_repeats=1,
              broker_kills=2, partitions=3,  # about 1 minute, 1.5 beside two busy loops on 2 cores
              ingest_kills=2, ingest_kill_devices=10, controller_kills=2)

ROWS: dict[str, Callable[[World, Sizes, Path], Row]] = {
    "sigkill": lambda w, s, d: sigkill.run(w, s.kills, s.restart_every, seed=s.seed, workdir=d),
    "powercut": lambda w, s, d: powercut.run(w, s.powercut_every, d),
    "corruption": lambda w, s, d: corruption.run(w, s.corruption_stride, d),
    "diskfull": lambda w, s, d: diskfull.run(w, s.diskfull_repeats, d),
    "hostile": lambda w, s, d: hostile.run(w, s.hostile_repeats, d),
    "fuzz": lambda w, s, d: fuzz.run(w, s.fuzz, s.fuzz_batch, s.seed, d),
    "burst": lambda w, s, d: burst.run(s.burst_windows, s.burst_devices, s.burst_repeats, d),
    "brokerkill": lambda w, s, d: brokerkill.run(w, s.broker_kills, s.broker_kill_devices, d),
    "poison": lambda w, s, d: poison.run(w, s.fuzz, s.fuzz_batch, s.seed, d),
    "partition": lambda w, s, d: partition.run(w, s.partitions, s.partition_devices, s.seed, d),
    "cloudkill": lambda w, s, d: cloudkill.run(w, s.ingest_kills, s.controller_kills, s.ingest_kill_devices, s.seed,
                                               d),
}


def run_row(name: str, world: World, sizes: Sizes, workdir: Path) -> Row:
    return ROWS[name](world, sizes, workdir)


def sized(quick: bool, kills: int | None = None, fuzz_payloads: int | None = None) -> Sizes:
    sizes = QUICK if quick else FULL
    if kills is not None:
        sizes = replace(sizes, kills=kills)
    if fuzz_payloads is not None:
        sizes = replace(sizes, fuzz=fuzz_payloads)
    return sizes
