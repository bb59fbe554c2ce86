"""The deploy job, as plain decisions on messages (no MQTT here: the loop enqueues, this decides).

QUEUED -> DOWNLOADING -> VERIFYING -> INSTALLING -> SELF_TEST -> [SHADOW] -> [READY] -> ACTIVATING ->
PROBATION -> SUCCEEDED, or FAILED(reason) / ROLLED_BACK(reason); READY while the firmware holds
activation or the activation window is closed (``agent/activation.py``). Each state is persisted before the work
of the next begins, and every step can be repeated after a crash: verification re-reads the
finished artifact, installation rewrites the inactive slot, activation checks whether the
pointer already names the new bundle. A bundle becomes active only after its signature,
every hash, the board, the runtime, the anti-rollback sequence and the golden self-test pass.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path

from agent.activation import Activation
from agent.candidate import check_manifest, prune_engines, self_test, time_against
from agent.errors import AgentError, TransferError, disk_error
from agent.fallback import forget_unusable, restore, restored
from agent.faults import fault
from agent.jobs import JobRecord, JobStore
from agent.probation import DEFAULT_LIMITS, Evidence, ProbationLimits, judge
from agent.receiver import Download
from agent.recovery import check_slots
from agent.slots import SlotName, SlotStore, signed_ref
from contract.bundle import manifest_sha256, unpack
from contract.commands import DeployCommand
from contract.common import Runtime
from contract.errors import ContractError
from contract.jobs import JobState, probation_wait, waits_for_evidence
from contract.manifest import MANIFEST_FILE, Manifest, load_manifest
from contract.signing import TrustStore
from contract.state import SlotStatus
from contract.transfer import Chunk, MissingChunks

log = logging.getLogger(__name__)
Emit = Callable[[str, JobState, str | None, float | None], None]  # job id, state, reason, progress


READY_REASON_EVERY_S = 10.0  # READY's reason is re-sent at most this often (a firmware changing it per request)
EVIDENCE_REASON_EVERY_S = 600.0  # an extended probation's count of live inferences is re-sent at most this often


class Deployer:
    def __init__(self, data_dir: Path, trust: TrustStore, runtimes: dict[Runtime, str], emit: Emit,
                 threads: int = 1, limits: ProbationLimits = DEFAULT_LIMITS,
                 clock: Callable[[], float] = time.time, board: str | None = None,
                 activation: Activation | None = None,
                 internal: Callable[[str, Exception], str] | None = None) -> None:
        self.internal = internal  # a bug met by a deploy step fails its job with this reason (agent/guard.py)
        self.activation = activation  # None: a verified candidate activates at once
        self.board = board  # this device's board (agent config): a bundle for another is refused
        self.clock = clock  # wall-clock seconds: shadow and probation periods (injected by tests)
        self.data_dir = data_dir
        self.trust = trust
        self.runtimes = runtimes
        self.emit = emit
        self.threads = threads
        self.limits = limits
        self.slots = SlotStore(data_dir)
        self.recovered = check_slots(self.slots, trust)  # what was repaired at start, for the agent to report
        self.engine_cache = data_dir / "engines"  # TensorRT plans, keyed by model, TensorRT version and GPU
        self.jobs = JobStore(data_dir)
        self._downloads: dict[str, Download] = {}  # by artifact sha: open downloads, bitmaps in memory
        self._ready_sent: dict[str, float] = {}  # job id -> when READY's reason was last re-sent
        self._evidence_sent: dict[str, float] = {}  # job id -> when an extended probation's reason was last sent

    # ---- messages ---------------------------------------------------------------------
    def on_deploy(self, command: DeployCommand) -> JobRecord:
        """A deploy command; idempotent by job id (a repeated command only re-reports the state)."""
        existing = self.jobs.get(command.job_id)
        if existing is not None:
            self.emit(existing.job_id, existing.state, existing.reason, None)
            return existing
        record = JobRecord(command.job_id, command.model_dump(mode="json"))
        record.history.append((JobState.QUEUED.value, None, ""))
        self.jobs.save(record)
        self.emit(record.job_id, JobState.QUEUED, None, None)
        self._move(record, JobState.DOWNLOADING)
        try:
            self._download(command)
        except AgentError as exc:  # no room for it: the job fails, cleanly
            return self._fail(record, str(exc))
        except OSError as exc:  # the disk refuses
            return self._fail(record, disk_error(exc))
        return record

    def on_chunk(self, job_id: str, chunk: Chunk) -> JobRecord | None:
        """A verified chunk for a downloading job; continues the job once the artifact is whole."""
        record = self.jobs.get(job_id)
        if record is None or record.state is not JobState.DOWNLOADING:
            return record
        download = self._download(DeployCommand.model_validate(record.command))
        try:
            accepted = download.accept(chunk)
        except OSError as exc:  # the disk filled up (or failed) since the space was checked: the job fails
            return self._fail(record, disk_error(exc))
        if accepted:
            fault("download")
        if accepted and download.complete:
            return self.advance(record)
        return record

    def missing(self, job_id: str) -> list[int]:
        record = self.jobs.get(job_id)
        if record is None or record.state is not JobState.DOWNLOADING:
            return []
        return self._download(DeployCommand.model_validate(record.command)).missing()

    def missing_report(self, job_id: str, device_id: str) -> MissingChunks | None:
        """What a downloading job still lacks, as the message the device sends; None when nothing is."""
        record = self.jobs.get(job_id)
        if record is None or record.state is not JobState.DOWNLOADING:
            return None
        download = self._download(DeployCommand.model_validate(record.command))
        return download.missing_report(device_id) if not download.complete else None

    def resume(self) -> list[JobRecord]:
        """After a restart: continue every unfinished job from its persisted state, and report the
        state of those that had nothing to redo (a download waiting for chunks, a probation)."""
        resumed = []
        for stored in self.jobs.unfinished():
            before = stored.state
            record = self.advance(stored)
            if record.state is before:
                self.emit(record.job_id, record.state, record.reason, None)
            resumed.append(record)
        return resumed

    def cancel(self, job_id: str, reason: str) -> JobRecord | None:
        """Stop a job that has not activated its bundle yet (FAILED); later states are left alone."""
        record = self.jobs.get(job_id)
        before_activation = (JobState.QUEUED, JobState.DOWNLOADING, JobState.VERIFYING, JobState.INSTALLING,
                             JobState.SELF_TEST, JobState.SHADOW, JobState.READY)
        if record is None or record.state not in before_activation:
            return record
        self._cleanup(DeployCommand.model_validate(record.command))
        return self._move(record, JobState.FAILED, f"cancelled: {reason}")

    def roll_back_active(self, reason: str, to_sha256: str | None = None) -> str:
        """An operator's rollback to a known-good bundle still on this device (``to_sha256``, or the
        one other than the active): the active bundle is marked bad and the job that activated it
        ends ROLLED_BACK. Raises SlotError, saying why, when there is no such bundle."""
        pointer = self.slots.pointer()
        active = pointer.active_sha256
        if active is not None and to_sha256 == active:
            return "already active: nothing to do"
        slot = self.slots.known_good(to_sha256)  # refuses before anything changes
        done = restored(pointer, slot)
        if pointer.active is not None:
            self.slots.fall_back(pointer.active, SlotStatus.BAD, slot)
        else:
            self.slots.activate(slot)
        for record in self.jobs.all():
            if record.manifest_sha256 == active and record.state in (JobState.PROBATION, JobState.SUCCEEDED):
                return self._move(record, JobState.ROLLED_BACK, f"{reason}; {done}").reason or ""
        return done

    def active_unusable(self, reason: str) -> str:
        """The active bundle is damaged on disk: its slot forgotten (``agent/fallback.py``)."""
        return forget_unusable(self.slots, reason)

    # ---- the state machine -----------------------------------------------------------
    def advance(self, record: JobRecord) -> JobRecord:  # noqa: PLR0911, PLR0912 (one return per state it can stop in)
        command = DeployCommand.model_validate(record.command)
        try:
            if record.state is JobState.DOWNLOADING:
                download = self._download(command)
                if not download.complete:
                    return record
                if download.finished() is None:  # damaged on disk: those chunks are fetched again
                    self.emit(record.job_id, record.state, download.repaired, None)
                    return record
                self._move(record, JobState.VERIFYING)
            if record.state is JobState.VERIFYING:
                self._verify(record, command)
                fault("after_verify")
                self._move(record, JobState.INSTALLING)
            if record.state is JobState.INSTALLING:
                staged = self._staging(command)
                record.slot = self.slots.install(staged, *signed_ref(staged, command.bundle))
                self.jobs.save(record)
                self._move(record, JobState.SELF_TEST)
            if record.state is JobState.SELF_TEST:
                self._self_test(record)
                if command.shadow_s and self.slots.pointer().active_sha256 is not None:
                    record.shadow_started = self.clock()
                    return self._move(record, JobState.SHADOW)  # the loop runs it beside the active model
                if not self._onward(record):
                    return record
            if record.state is JobState.SHADOW:
                return record  # until end_shadow
            if record.state is JobState.READY and not self._onward(record):
                return record
            if record.state is JobState.ACTIVATING:
                pointer = self.slots.pointer()
                if pointer.active_sha256 != record.manifest_sha256:
                    self.slots.activate(self._slot(record))
                record.probation_started = self.clock()
                self._move(record, JobState.PROBATION)
                fault("probation")
        except (AgentError, ContractError) as exc:
            return self._fail(record, str(exc))
        except OSError as exc:  # a full or failing disk: the job fails with the reason, its files are removed
            return self._fail(record, disk_error(exc))
        except Exception as exc:  # a bug: the job fails with it rather than stays stuck (without a guard: raised)
            if self.internal is None:
                raise
            return self._fail(record, self.internal(f"job {record.job_id}'s {record.state.value} step", exc))
        return record

    def _waits(self, record: JobRecord) -> bool:
        """Whether a verified candidate must wait in READY (it moves there, or its reason is updated)."""
        if self.activation is None:
            return False
        if record.state is not JobState.READY:
            record.ready_started = self.clock()
        reason = self.activation.wait_reason(record.ready_started or self.clock())
        if reason is None:
            return False
        if record.state is not JobState.READY:
            self._move(record, JobState.READY, reason)
        elif reason != record.reason and self.clock() >= self._ready_sent.get(record.job_id, 0) + READY_REASON_EVERY_S:
            self._ready_sent[record.job_id] = self.clock()  # e.g. the window's wait became the firmware's hold
            record.reason = reason
            self.jobs.save(record)
            self.emit(record.job_id, JobState.READY, reason, None)
        return True

    def _onward(self, record: JobRecord) -> bool:
        """To ACTIVATING (True), or READY while activation must wait (False)."""
        if self._waits(record):
            return False
        self._move(record, JobState.ACTIVATING)
        return True

    def release_ready(self) -> list[JobRecord]:
        """Activate each candidate in READY that may go now (called on a hold's change and periodically)."""
        return [self.advance(r) for r in self.jobs.unfinished() if r.state is JobState.READY]

    def shadow_due(self, record: JobRecord, now: float | None = None) -> bool:
        command = DeployCommand.model_validate(record.command)
        return (record.state is JobState.SHADOW
                and (now or self.clock()) - (record.shadow_started or 0) >= (command.shadow_s or 0))

    def candidate_path(self, record: JobRecord) -> Path:
        """Where a job installed its bundle (the inactive slot until activation)."""
        return self.slots.path(self._slot(record))

    def cancel_shadow(self, record: JobRecord, reason: str) -> JobRecord:
        return self._fail(record, reason) if record.state is JobState.SHADOW else record

    def end_shadow(self, record: JobRecord) -> JobRecord:
        """The shadow run is over (its agreement reported): activate."""
        if record.state is not JobState.SHADOW:
            return record
        self._onward(record)
        return self.advance(record)

    def latency_limit(self, record: JobRecord) -> float:
        ratio = DeployCommand.model_validate(record.command).max_latency_ratio
        return ratio if ratio is not None else self.limits.max_latency_ratio

    def probation(self, record: JobRecord, inferences: int, errors: int, non_finite: int, p95_ms: float | None,
                  now: float | None = None, baseline_p95_ms: float | None = None,
                  latencies_ms: Sequence[float] | None = None) -> JobRecord:
        """Judge the new bundle on one more telemetry window; roll back by itself when it misbehaves, extend
        probation while live evidence is short (``agent.probation.judge``). ``baseline_p95_ms``: the live
        model p95 of the bundle it replaced on this device (none: latency was judged at install);
        ``latencies_ms``: the window's model latencies (without them, ``p95_ms`` stands for each)."""
        if record.state is not JobState.PROBATION:
            return record
        now = self.clock() if now is None else now
        evidence = Evidence.from_json(record.evidence)
        evidence.add(inferences, errors, non_finite, latencies_ms, p95_ms)
        record.evidence = evidence.to_json()
        started = record.probation_started or 0
        verdict = judge(self.limits, self.latency_limit(record), evidence, (inferences, errors, non_finite), p95_ms,
                        baseline_p95_ms, now - started, DeployCommand.model_validate(record.command).probation_s,
                        started)
        if verdict.outcome == "rolled_back":
            return self._move(record, JobState.ROLLED_BACK, f"{verdict.reason}; {restore(self.slots)}")
        if verdict.outcome == "passed":
            return self._known_good(record, verdict.reason)
        if verdict.outcome == "waiting":
            self._wait_for_evidence(record, evidence.attempts, verdict.until or now, now)
        self.jobs.save(record)
        return record

    def _known_good(self, record: JobRecord, reason: str | None) -> JobRecord:
        self.slots.mark(self._slot(record), SlotStatus.GOOD)  # known-good on this device from now on
        self._evidence_sent.pop(record.job_id, None)
        return self._move(record, JobState.SUCCEEDED, reason)

    def _wait_for_evidence(self, record: JobRecord, seen: int, until: float, now: float) -> None:
        """Probation extended for want of live evidence: said at once, then when the count changed, at
        most every ``EVIDENCE_REASON_EVERY_S`` (the cloud then gives the job ``evidence_s``)."""
        reason = probation_wait(seen, self.limits.min_inferences, datetime.fromtimestamp(until, timezone.utc))
        first = not waits_for_evidence(record.state.value, record.reason)
        due = now >= self._evidence_sent.get(record.job_id, 0) + EVIDENCE_REASON_EVERY_S
        if first or (reason != record.reason and due):
            self._evidence_sent[record.job_id] = now
            record.reason = reason
            log.info("%s: %s", record.job_id, reason)
            self.emit(record.job_id, JobState.PROBATION, reason, None)

    # ---- steps --------------------------------------------------------------------------
    def _download(self, command: DeployCommand) -> Download:
        """The job's download, opened once (its bitmap then lives in memory); a damaged one on disk
        is started again, and the job's next event says so."""
        sha = command.artifact.sha256
        download = self._downloads.get(sha)
        if download is None or not download.dir.is_dir():
            download = self._downloads[sha] = Download(self.data_dir, command.artifact)
            if download.repaired:
                log.warning("%s: %s", command.job_id, download.repaired)
                self.emit(command.job_id, JobState.DOWNLOADING, download.repaired, None)
        return download

    def _staging(self, command: DeployCommand) -> Path:
        return self.data_dir / "staging" / command.artifact.sha256

    def _verify(self, record: JobRecord, command: DeployCommand) -> Manifest:
        artifact = self._download(command).dir / "artifact"
        if not artifact.is_file():
            raise TransferError("the downloaded artifact vanished from the disk before it was verified")
        staging = self._staging(command)
        shutil.rmtree(staging, ignore_errors=True)
        unpack(artifact, staging, self.trust)  # signature first, then only what it declares, if it fits
        manifest = load_manifest((staging / MANIFEST_FILE).read_bytes())  # every file was hashed on the way
        record.manifest_sha256 = manifest_sha256(staging)
        record.sequence = manifest.sequence
        if record.manifest_sha256 != command.bundle.sha256:
            raise TransferError("the bundle's manifest is not the one the deploy command names")
        check_manifest(manifest, self.board, self.runtimes, self.slots.pointer())
        self.jobs.save(record)
        return manifest

    def _slot(self, record: JobRecord) -> SlotName:
        if record.slot not in ("a", "b"):
            raise AgentError("the job has no installed slot")
        return record.slot  # type: ignore[return-value]

    def _self_test(self, record: JobRecord) -> None:
        directory = self.slots.path(self._slot(record))
        self_test(directory, self.trust, self.threads, self.engine_cache)  # the installed copy, not the staging one
        self._time_against_active(record, directory)

    def _time_against_active(self, record: JobRecord, directory: Path) -> None:
        """Time the candidate and the active bundle in alternation on this device: too much slower
        than what it replaces, it is refused before it ever becomes active."""
        active = self.slots.active_path()
        record.predecessor_sha256 = self.slots.pointer().active_sha256
        if active is None or record.predecessor_sha256 in (None, record.manifest_sha256):
            self.jobs.save(record)
            return
        limit = self.latency_limit(record)
        record.install_ms, record.predecessor_ms = time_against(
            directory, active, self.trust, self.threads, self.engine_cache, limit, self.limits.timing_rounds,
            (record.install_ms, record.predecessor_ms))
        self.jobs.save(record)
        ratio = (record.install_ms or 0.0) / max(record.predecessor_ms or 0.0, 1e-6)
        if ratio > limit:  # the best of three medians of paired rounds
            raise AgentError(f"on this device the candidate takes {record.install_ms or 0:.2f} ms per inference, "
                             f"{ratio:.2f}x the {record.predecessor_ms or 0:.2f} ms of the active bundle "
                             f"(limit {limit:g}x)")

    def _cleanup(self, command: DeployCommand) -> None:
        self._downloads.pop(command.artifact.sha256, None)
        Download.remove(self.data_dir, command.artifact)
        shutil.rmtree(self._staging(command), ignore_errors=True)

    def _move(self, record: JobRecord, state: JobState, reason: str | None = None) -> JobRecord:
        if state.terminal:  # every way a job ends leaves no download or staging copy behind
            self._cleanup(DeployCommand.model_validate(record.command))
            prune_engines(self.engine_cache)
        self.jobs.move(record, state, reason)
        self.emit(record.job_id, state, reason, None)
        return record

    def _fail(self, record: JobRecord, reason: str) -> JobRecord:
        """FAILED, with the active bundle untouched; ROLLED_BACK if the new bundle had become active.
        A bundle installed here that failed (self-test) is marked bad in its slot."""
        pointer = self.slots.pointer()
        activated = record.state in (JobState.ACTIVATING, JobState.PROBATION)  # not: the same bundle, already active
        if activated and record.manifest_sha256 is not None and pointer.active_sha256 == record.manifest_sha256:
            return self._move(record, JobState.ROLLED_BACK, f"{reason}; {restore(self.slots)}")
        if (record.slot in ("a", "b") and record.manifest_sha256 is not None
                and pointer.holding(record.manifest_sha256) == record.slot):
            self.slots.mark(self._slot(record), SlotStatus.BAD)
        self._cleanup(DeployCommand.model_validate(record.command))  # a failed job leaves no copies behind
        return self._move(record, JobState.FAILED, reason)
