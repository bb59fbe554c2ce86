"""Row 1, SIGKILL: a real agent process (``coldchain agent run``, one Mosquitto for the whole run)
on a device that runs bundle 5 (known-good) is sent bundle 6 in 16 KiB chunks, and killed in one of
four states: the download, verifying/installing/self-test/activating, probation, or an operator's
rollback. Two of three kills come at a random delay after the positive signal of the state (its
job event on the events topic; for a rollback, the rollback command sent in probation), one of three
at a fault point of ``agent/faults.py`` (the process SIGKILLs itself there).

After every kill the data directory is checked offline (``invariant.data_dir_violations``: bundle 5
or 6, verified, the pointer truthful). Every ``restart_every``-th device is started again: it must
come online, its job must end (PROBATION, SUCCEEDED, FAILED or ROLLED_BACK), and the data directory
must still hold. Each device starts from a copy of a template data directory; two at a time."""

from __future__ import annotations

import random
import shutil
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent.jobs import JobStore
from benchmarks.faults.agentproc import (
    AgentProcess,
    Cloud,
    Heard,
    Inbox,
    job_state,
    online_since,
    wait,
    write_config,
)
from benchmarks.faults.broker import mosquitto
from benchmarks.faults.device import known_good_template
from benchmarks.faults.invariant import data_dir_violations
from benchmarks.faults.report import Row
from benchmarks.faults.world import World, deploy_command, signed, signed_rollback
from contract import topics
from contract.jobs import JobState
from contract.state import DeviceState

STATES = ("download", "verify/install/self-test/activate", "probation", "rollback")
ENDED = {JobState.PROBATION, JobState.SUCCEEDED, JobState.FAILED, JobState.ROLLED_BACK}
CHUNK = 8 * 1024  # small chunks: a download of ~40 of them is a state a kill can land in
TIMEOUT = 90.0  # seconds for anything the agent must do (a loaded 2-core host)


@dataclass(frozen=True)
class Kill:
    index: int
    state: str
    fault: str | None  # a fault point of agent/faults.py, or None: a SIGKILL after a random delay
    after: int  # COLDCHAIN_FAULT_AFTER
    delay: float  # fraction of the state's calibrated duration
    restart: bool
    probation_s: float


def plan(kills: int, chunks: int, restart_every: int, seed: int) -> list[Kill]:
    rng = random.Random(seed)
    plans = []
    for i in range(kills):
        state = STATES[i % len(STATES)]
        fault, after = None, 1
        if i % 3 == 2:
            fault, after = {
                STATES[0]: ("download", rng.randint(1, chunks)),
                STATES[1]: rng.choice([("after_verify", 1), ("mid_install", 1), ("mid_activation", 1),
                                       ("mid_activation", 2), ("mid_activation", 3)]),
                STATES[2]: ("probation", 1),
                STATES[3]: ("mid_activation", 4),  # the pointer write of the rollback (three came before)
            }[state]
        probation_s = rng.choice([1.5, 60.0]) if state == STATES[2] else 60.0  # some kills around SUCCEEDED
        plans.append(Kill(i, state, fault, after, rng.random(), i % restart_every == 0, probation_s))
    return plans


class Harness:
    def __init__(self, world: World, root: Path, url: str) -> None:
        self.world, self.root, self.url = world, root, url
        self.cloud = Cloud(url)
        self.template = known_good_template(world, root / "template", chunk=CHUNK)
        self.frames = world.root / "cal"
        self.old, self.new = world.bundles[5], world.bundles[6]
        self.names = {self.old.ref.sha256: "bundle 5", self.new.ref.sha256: "bundle 6"}
        self.windows = {s: 1.0 for s in STATES}  # seconds each state lasts, from the calibration run
        self.starts: list[float] = []  # process start -> online, seconds
        self.at_kill: Counter[str] = Counter()
        self.lock = threading.Lock()

    def device(self, name: str) -> tuple[Path, Path, str]:
        folder = self.root / name
        shutil.copytree(self.template, folder / "data")
        config = write_config(folder, name, folder / "data", self.world.public_key, self.frames, self.url)
        job = f"job-{name}"
        return folder, config, job

    def start(self, config: Path, inbox: Inbox, device: str, fault: str | None = None,
              after: int = 1) -> AgentProcess | None:
        process = AgentProcess(config, fault, after)
        state = wait(inbox, online_since(device, process.started), TIMEOUT, alive=process.alive)
        if state is None:
            process.kill()
            return None
        with self.lock:
            self.starts.append(time.monotonic() - process.started_at)
        return process

    def calibrate(self) -> list[str]:
        """One deploy and rollback without a kill: how long each state lasts on this host."""
        name = "calibration"
        folder, config, job = self.device(name)
        inbox = self.cloud.listen(name)
        process = self.start(config, inbox, name)
        if process is None:
            return ["the calibration agent never came online"]
        try:
            command, frames = deploy_command(self.new.tarball, self.new.ref.sha256, 6, job, None, CHUNK)
            self.cloud.publish(topics.commands(name), signed(command, self.world.trusted_key, name))
            first = wait(inbox, job_state(name, job, {JobState.DOWNLOADING}), TIMEOUT)
            for frame in frames:
                self.cloud.publish(topics.device_chunks(name, command.artifact.sha256), frame)
            verifying = wait(inbox, job_state(name, job, {JobState.VERIFYING}), TIMEOUT)
            probation = wait(inbox, job_state(name, job, ENDED), TIMEOUT)
            if first is None or verifying is None or probation is None or probation[0].state is not JobState.PROBATION:
                return [f"the calibration deploy did not reach PROBATION ({probation and probation[0]})"]
            sent = time.monotonic()
            rollback = signed_rollback(self.world.trusted_key, f"rb-{name}", device=name)
            self.cloud.publish(topics.commands(name), rollback)
            rolled = wait(inbox, job_state(name, job, {JobState.ROLLED_BACK}), TIMEOUT)
            if rolled is None:
                return ["the calibration rollback never ended ROLLED_BACK"]
            self.windows = {STATES[0]: (verifying[1] - first[1]) * 1.5, STATES[1]: (probation[1] - verifying[1]) * 1.2,
                            STATES[2]: 2.5, STATES[3]: (rolled[1] - sent) * 1.5}
            return data_dir_violations(folder / "data", self.world.trust, {self.old.ref.sha256}, names=self.names)
        finally:
            process.stop()
            self.cloud.forget(name)
            shutil.rmtree(folder, ignore_errors=True)

    def iteration(self, kill: Kill) -> list[str]:
        name = f"kill-{kill.index:04d}"
        folder, config, job = self.device(name)
        inbox = self.cloud.listen(name)
        wrong: list[str] = []
        try:
            wrong = self._kill_and_check(kill, name, folder, config, job, inbox)
        finally:
            self.cloud.forget(name)
            if not wrong:
                shutil.rmtree(folder, ignore_errors=True)
        return [f"{w} (kept: {folder})" for w in wrong]

    def _kill_and_check(self, kill: Kill, name: str, folder: Path, config: Path, job: str,
                        inbox: Inbox) -> list[str]:
        process = self.start(config, inbox, name, kill.fault, kill.after)
        if process is None:
            return ["the agent never came online"]
        command, frames = deploy_command(self.new.tarball, self.new.ref.sha256, 6, job, None, CHUNK,
                                         probation_s=kill.probation_s)
        chunk_topic = topics.device_chunks(name, command.artifact.sha256)
        signal = {STATES[0]: {JobState.QUEUED, JobState.DOWNLOADING},
                  STATES[1]: {JobState.VERIFYING}}.get(kill.state, {JobState.PROBATION})
        timer = threading.Timer(kill.delay * self.windows[kill.state], process.process.kill)
        self.cloud.publish(topics.commands(name), signed(command, self.world.trusted_key, name))
        for step in ("accepted", "signal"):
            states = {JobState.QUEUED, JobState.DOWNLOADING} if step == "accepted" else signal
            heard = wait(inbox, job_state(name, job, states | {JobState.FAILED}), TIMEOUT,
                         alive=process.alive)
            if heard is None and kill.fault and not process.alive():
                break  # the fault point came first (the process died before it said so)
            if heard is None or heard[0].state is JobState.FAILED:
                process.kill()
                return [f"no {'/'.join(sorted(states))} event before the kill ({heard and heard[0].reason})"]
            if step == "accepted":
                if kill.state == STATES[0] and kill.fault is None:
                    timer.start()  # the positive signal of a download: the job took the command
                for frame in frames:
                    self.cloud.publish(chunk_topic, frame)
                if kill.state == STATES[0]:
                    break
                continue
            if kill.state == STATES[3]:
                rollback = signed_rollback(self.world.trusted_key, f"rb-{name}", device=name)
                self.cloud.publish(topics.commands(name), rollback)
            if kill.fault is None:
                timer.start()
        code = process.exited(TIMEOUT)
        timer.cancel()
        if code is None:
            process.kill()
            return [f"the fault point {kill.fault} (after {kill.after}) was never reached"]
        if code != -9:
            return [f"the agent exited with {code} by itself (a crash)"]
        record = JobStore(folder / "data", repair=False).get(job)
        with self.lock:
            self.at_kill[record.state.value if record else "no job yet"] += 1
        allowed = {self.old.ref.sha256, self.new.ref.sha256}
        wrong = data_dir_violations(folder / "data", self.world.trust, allowed, names=self.names)
        if not kill.restart or wrong:
            return wrong
        return self._restart(name, config, job, inbox, frames, chunk_topic, allowed, folder)

    def _restart(self, name: str, config: Path, job: str, inbox: Inbox, frames: list[bytes], chunk_topic: str,
                 allowed: set[str], folder: Path) -> list[str]:
        process = AgentProcess(config)
        try:
            state = wait(inbox, online_since(name, process.started), TIMEOUT, alive=process.alive)
            if state is None:
                return ["after the restart the agent never came online"]
            with self.lock:
                self.starts.append(time.monotonic() - process.started_at)
            if state.job is None or state.job.job_id != job or state.job.state not in ENDED:
                for frame in frames:  # a download resumes with what it lacks (duplicates are ignored)
                    self.cloud.publish(chunk_topic, frame)
                ended = wait(inbox, _ended(name, job), TIMEOUT)
                if ended is None:
                    return ["after the restart the job never ended"]
        finally:
            process.stop()
        return [f"after the restart: {w}" for w in data_dir_violations(folder / "data", self.world.trust, allowed,
                                                                        names=self.names)]


def _ended(device: str, job: str) -> Callable[[Heard], bool | None]:
    def found(heard: Heard) -> bool | None:
        if heard.topic == topics.state(device):
            state = DeviceState.from_json(heard.payload)
            return True if state.job and state.job.job_id == job and state.job.state in ENDED else None
        return True if job_state(device, job, ENDED)(heard) else None
    return found


def run(world: World, kills: int = 300, restart_every: int = 5, workers: int = 2, seed: int = 1,
        workdir: Path | None = None) -> Row:
    row = Row("SIGKILL (real agent process)", "after every kill, offline: pointer parses, active = bundle 5 or 6, "
              "truthful, verified; after a restart: online, the job ends, still so")
    with row.timed(), tempfile.TemporaryDirectory(dir=workdir) as tmp, mosquitto(Path(tmp)) as url:
        harness = Harness(world, Path(tmp), url)
        try:
            row.violated("calibration", harness.calibrate())
            _, frames = deploy_command(world.bundles[6].tarball, world.bundles[6].ref.sha256, 6, "x", None, CHUNK)
            plans = plan(kills, len(frames), restart_every, seed)
            todo = list(reversed(plans))
            lock = threading.Lock()

            def worker() -> None:
                while True:
                    with lock:
                        if not todo:
                            return
                        kill = todo.pop()
                    where = f"kill {kill.index} ({kill.state}, {kill.fault or f'{kill.delay:.2f} of the state'})"
                    problems = harness.iteration(kill)
                    with lock:
                        row.violated(where, problems)

            threads = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        finally:
            harness.cloud.close()
        by_state = Counter(k.state for k in plans)
        faults = sum(1 for k in plans if k.fault)
        row.how_often = (f"{kills} kills: " + ", ".join(f"{s} {n}" for s, n in by_state.items()) +
                         f"; {faults} at fault points; {sum(k.restart for k in plans)} restarted")
        row.notes.append("job state on disk at the kill: " + ", ".join(f"{s} {n}" for s, n in
                                                                       harness.at_kill.most_common()))
        if harness.starts:
            row.notes.append(f"agent process start -> online: median {statistics.median(harness.starts):.2f} s, "
                             f"max {max(harness.starts):.2f} s over {len(harness.starts)} starts")
        row.notes.append("calibrated state windows (s): " + ", ".join(f"{s} {w:.2f}" for s, w in
                                                                     harness.windows.items()))
    return row
