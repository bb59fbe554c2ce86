"""Commands and rollouts on the controller's injected clock, with an in-memory broker: a command
counts as sent only on PUBACK, is re-sent with a bounded backoff until the device shows its job id
(and a restarted controller goes on), a never-confirmed one fails with a reason; two rollouts never
hold a device at once; an all-failed rollout is FAILED with the devices' own reasons (issue 12.4, 12.5, 12.7)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from cloud import rollouts
from cloud.commands import Backoff
from cloud.controller import Controller
from cloud.errors import RolloutError
from cloud.fleet import add_bundle, bundle_ref
from cloud.ingest import ingest
from cloud.plan import Gates, RolloutPlan, Timeouts
from cloud.publisher import Publisher
from cloud.store import BundleRow, CommandRow, Rollout, RolloutDevice, open_store, sqlite_url
from contract import topics
from contract.commands import COMMAND_TTL_S, content_sha256, decode_command, verify_command
from contract.events import JobEvent
from contract.jobs import JobState
from contract.signing import Role, TrustStore
from contract.state import DeviceState, JobSummary

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
DEVICES = ["d1", "d2", "d3"]


class Broker:
    """The cloud's transport: publishes are taken (a message id) while ``online``, acknowledged on ``ack()``."""

    def __init__(self) -> None:
        self.online, self.mid = True, 0
        self.published: list[tuple[int, str, bytes]] = []
        self.lock = threading.Lock()

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> int | None:
        with self.lock:
            if not self.online:
                return None
            self.mid += 1
            self.published.append((self.mid, topic, payload))
            return self.mid

    def commands(self, device: str, job: str | None = None) -> list[tuple[int, str]]:
        """(mid, job id) of the commands sent to ``device``."""
        with self.lock:
            sent = [(mid, decode_command(p).job_id) for mid, t, p in self.published if t == topics.commands(device)]
        return [s for s in sent if job is None or s[1] == job]


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def fleet(tmp_path: Path, world: dict[str, object]) -> tuple[sessionmaker[Session], str, Path]:
    sessions = open_store(sqlite_url(tmp_path / "cloud.db"))
    bundle = world["bundles"][5]  # type: ignore[index]
    with sessions.begin() as session:
        sha = add_bundle(session, bundle.tarball, world["trust"]).sha256  # type: ignore[arg-type]
        for device in DEVICES:
            state = DeviceState(device_id=device, online=True, board="rpi4", groups=["eu"])
            assert ingest(session, topics.state(device), state.to_json()).kind == "stored"
    return sessions, sha, bundle.tarball


def controller(sessions: sessionmaker[Session], broker: Broker, clock: Clock, tarball: Path) -> Controller:
    publisher = Publisher(broker, lambda sha: tarball)  # type: ignore[arg-type]
    return Controller(sessions, broker, publisher, Ed25519PrivateKey.generate(), clock=clock,  # type: ignore[arg-type]
                      backoff=Backoff(first_s=2, max_s=16, attempts=5, offline_s=1))


def plan(**timeouts: float) -> RolloutPlan:
    return RolloutPlan(waves="100%", probation_s=1, gates=Gates(min_inferences=0, max_error_rate=None,  # type: ignore[arg-type]
                                                                max_latency_ratio=None, max_prediction_drift=None),
                       timeouts=Timeouts(**{"ack_s": 3600, "wave_s": 7200, "observe_s": 0, **timeouts}))


def report(sessions: sessionmaker[Session], device: str, job: str, state: JobState, reason: str | None = None,
           seq: int = 1) -> None:
    event = JobEvent(device_id=device, seq=seq, job_id=job, state=state, reason=reason)
    with sessions.begin() as session:
        assert ingest(session, topics.events(device), event.to_json()).kind == "stored"


def entry(sessions: sessionmaker[Session], rollout: str, device: str) -> RolloutDevice:
    with sessions() as session:
        found = session.get(RolloutDevice, (rollout, device))
        assert found is not None
        return found


def test_a_deploy_published_while_offline_is_sent_once_the_broker_is_back(fleet: tuple[sessionmaker[Session], str,
                                                                                        Path]) -> None:
    sessions, sha, tarball = fleet
    broker, clock = Broker(), Clock()
    c = controller(sessions, broker, clock, tarball)
    rollouts.start(sessions, sha, plan(), "r1")
    broker.online = False
    c.step()  # the wave starts: nothing goes out, and nothing counts as sent
    assert broker.commands("d1") == [] and entry(sessions, "r1", "d1").deploy_sent_at is None
    clock.advance(30)
    c.step()
    assert broker.commands("d1") == []
    broker.online = True
    clock.advance(1)
    c.step()
    assert [job for _, job in broker.commands("d1")] == ["r1.d1"]
    mid = broker.commands("d1")[0][0]
    c.outbox.deliveries.acked(mid)  # the PUBACK, as the ingestion worker hands it over
    clock.advance(1)
    c.step()
    assert entry(sessions, "r1", "d1").deploy_sent_at == clock.now  # sent = acknowledged
    assert entry(sessions, "r1", "d2").deploy_sent_at is None  # no PUBACK for d2 yet


def test_resent_with_backoff_until_the_device_shows_the_job_and_a_restart_goes_on(
        fleet: tuple[sessionmaker[Session], str, Path]) -> None:
    sessions, sha, tarball = fleet
    broker, clock = Broker(), Clock()
    c = controller(sessions, broker, clock, tarball)
    rollouts.start(sessions, sha, plan(), "r1")
    sent_at: list[float] = []
    for second in range(0, 15):  # backoff 2, 4, 8 s: sends at 0, 2, 6, 14
        c.step()
        if len(broker.commands("d1")) > len(sent_at):
            sent_at.append(second)
        clock.advance(1)
    assert sent_at == [0, 2, 6, 14]
    c = controller(sessions, broker, clock, tarball)  # a new controller: attempts and due times are in the store
    clock.advance(16)
    c.step()
    assert len(broker.commands("d1")) == 5
    report(sessions, "d1", "r1.d1", JobState.QUEUED)  # the device shows the job: no more sends
    clock.advance(60)
    c.step()
    assert len(broker.commands("d1")) == 5
    with sessions() as session:
        row = session.get(CommandRow, "r1.d1")
        assert row is not None and row.done and row.outcome == "confirmed" and row.attempts == 5


def test_a_command_never_confirmed_fails_its_device_with_the_reason(fleet: tuple[sessionmaker[Session], str,
                                                                                 Path]) -> None:
    sessions, sha, tarball = fleet
    broker, clock = Broker(), Clock()
    c = controller(sessions, broker, clock, tarball)
    rollouts.start(sessions, sha, plan(wave_s=40), "r1")
    report(sessions, "d2", "r1.d2", JobState.QUEUED)
    for _ in range(120):  # sends at 0, 2, 6, 14 and 30 s; the wave ends at 40 s: given up at the next due time
        c.step()
        for mid, _ in broker.commands("d1"):
            c.outbox.deliveries.acked(mid)  # the broker takes each: the device is the one away
        clock.advance(1)
    d1 = entry(sessions, "r1", "d1")
    assert d1.state == "TIMED_OUT"
    assert "never confirmed the deploy" in (d1.reason or "") and "acknowledged 5" in (d1.reason or "")
    assert "is the device online?" in (d1.reason or "")
    assert len(broker.commands("d1", "r1.d1")) == 5  # bounded: no send after the wave's end
    assert broker.commands("d1", "r1.d1.cancel")  # should it arrive late after all, it is cancelled


def test_a_cancel_never_confirmed_is_given_up_after_its_attempts(fleet: tuple[sessionmaker[Session], str,
                                                                              Path]) -> None:
    """Commands without a deadline (cancels, rollbacks) are bounded by the outbox's attempts."""
    sessions, sha, tarball = fleet
    broker, clock = Broker(), Clock()
    c = controller(sessions, broker, clock, tarball)
    rollouts.start(sessions, sha, plan(wave_s=40), "r1")
    for _ in range(200):
        c.step()
        for mid, _ in broker.commands("d1"):
            c.outbox.deliveries.acked(mid)
        clock.advance(1)
    assert len(broker.commands("d1", "r1.d1.cancel")) == 5
    with sessions() as session:
        row = session.get(CommandRow, "r1.d1.cancel")
        assert row is not None and row.done and row.outcome == "unconfirmed"
        assert "never confirmed the cancel" in (row.reason or "") and "is the device online?" in (row.reason or "")


def test_a_deploy_is_resent_until_the_wave_timeout_not_given_up_before(
        fleet: tuple[sessionmaker[Session], str, Path]) -> None:
    """Found by the partition row: a device away for 10 minutes when its wave started was given up
    after the outbox's attempts (about 46 s here) although the wave allowed 30 minutes."""
    sessions, sha, tarball = fleet
    broker, clock = Broker(), Clock()
    c = controller(sessions, broker, clock, tarball)
    rollouts.start(sessions, sha, plan(wave_s=1800), "r1")
    report(sessions, "d2", "r1.d2", JobState.QUEUED)
    for _ in range(600):  # 10 minutes: the broker takes every send, the device is away
        c.step()
        for mid, _ in broker.commands("d1"):
            c.outbox.deliveries.acked(mid)
        clock.advance(1)
    assert entry(sessions, "r1", "d1").state == "PENDING"
    sends = len(broker.commands("d1", "r1.d1"))
    assert 5 < sends <= 5 + 600 // 16 + 1  # still re-sent after the 5 attempts, at most every max_s (16 s)
    report(sessions, "d1", "r1.d1", JobState.QUEUED)  # back: it got the deploy
    clock.advance(20)
    c.step()
    assert entry(sessions, "r1", "d1").state == "QUEUED"
    assert broker.commands("d1", "r1.d1.cancel") == []


def test_two_rollouts_never_hold_a_device_at_once(fleet: tuple[sessionmaker[Session], str, Path],
                                                  world: dict[str, object]) -> None:
    sessions, sha, tarball = fleet
    broker, clock = Broker(), Clock()
    c = controller(sessions, broker, clock, tarball)
    rollouts.start(sessions, sha, plan(), "old")
    c.step()  # deploys on their way
    report(sessions, "d1", "old.d1", JobState.DOWNLOADING)
    with sessions.begin() as session:
        newer = add_bundle(session, world["bundles"][6].tarball, world["trust"]).sha256  # type: ignore[index,arg-type]
    with pytest.raises(RolloutError, match=r"rollout old \(RUNNING\) holds 3: d1, d2, d3.*--supersede"):
        rollouts.start(sessions, newer, plan(), "new")
    with sessions() as session:
        assert session.get(Rollout, "new") is None

    rollouts.start(sessions, newer, plan(), "new", clock=clock.now, supersede=True)
    with sessions() as session:
        old = session.get(Rollout, "old")
        assert old is not None and old.status == rollouts.SUPERSEDED and "new" in (old.reason or "")
        states = {d.device_id: (d.state, d.reason) for d in rollouts.view(session, "old").devices}
        assert states["d1"] == ("SUPERSEDED", "superseded by rollout new (was DOWNLOADING)")
        assert {s for s, _ in states.values()} == {"SUPERSEDED"}
        assert [d.state for d in rollouts.view(session, "new").devices] == ["PENDING"] * 3
    report(sessions, "d1", "old.d1", JobState.VERIFYING, seq=2)  # what the old job still does is not its rollout's
    assert entry(sessions, "old", "d1").state == "SUPERSEDED"
    c.step()  # the old jobs are cancelled before the new deploys go out
    jobs = [job for _, job in broker.commands("d1")]
    assert jobs.index("old.d1.cancel") < jobs.index("new.d1")
    with pytest.raises(RolloutError, match="rollout new"):  # and the new one holds them now
        rollouts.start(sessions, sha, plan(), "third")


def test_an_all_failed_rollout_is_failed_with_the_devices_reasons(fleet: tuple[sessionmaker[Session], str, Path],
                                                                  ) -> None:
    sessions, sha, tarball = fleet
    broker, clock = Broker(), Clock()
    c = controller(sessions, broker, clock, tarball)
    rollouts.start(sessions, sha, plan(), "r1")
    c.step()
    refused = "bundle sequence 5 is not newer than the active 1732000000: refused (anti-rollback)"
    for device in ("d1", "d2"):
        report(sessions, device, f"r1.{device}", JobState.FAILED, refused)
    report(sessions, "d3", "r1.d3", JobState.FAILED, "golden self-test failed: max error 3.1")
    for _ in range(4):
        clock.advance(1)
        c.step()
    with sessions() as session:
        v = rollouts.view(session, "r1")
        assert v.rollout.status == rollouts.FAILED, v.rollout.status
        assert "none was rolled back" in (v.rollout.reason or "")
        assert f"2 × {refused}" in (v.rollout.reason or "")  # the gate's line says what the devices said
        assert v.reasons() == [(2, refused), (1, "golden self-test failed: max error 3.1")]


def test_rollout_status_shows_the_devices_reasons_grouped(fleet: tuple[sessionmaker[Session], str, Path],
                                                         tmp_path: Path) -> None:
    from coldchain.cli import app

    sessions, sha, _ = fleet
    rollouts.start(sessions, sha, plan(), "r1")
    for device in ("d1", "d2"):
        report(sessions, device, f"r1.{device}", JobState.FAILED, "refused: sequence 5 is older than installed 9")
    report(sessions, "d3", "r1.d3", JobState.FAILED, "self-test failed: max error 3.1")
    with sessions.begin() as session:
        for d in session.scalars(select(RolloutDevice)):
            d.reason = None  # reasons only in the events: read from there
    result = CliRunner().invoke(app, ["rollout", "status", "r1", "--db", sqlite_url(tmp_path / "cloud.db")],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "2 × refused: sequence 5 is older than installed 9" in result.output
    assert "1 × self-test failed: max error 3.1" in result.output
    with sessions() as session:
        assert session.scalar(select(BundleRow.sha256)) == sha


def test_the_devices_retained_state_moves_its_job_when_the_events_were_lost(
        fleet: tuple[sessionmaker[Session], str, Path]) -> None:
    sessions, sha, _ = fleet
    rollouts.start(sessions, sha, plan(), "r1")
    state = DeviceState(device_id="d1", online=True, board="rpi4", groups=["eu"],
                        job=JobSummary(job_id="r1.d1", state=JobState.FAILED))
    with sessions.begin() as session:
        ingest(session, topics.state("d1"), state.to_json())
    assert (entry(sessions, "r1", "d1").state, entry(sessions, "r1", "d1").reason) == ("FAILED", None)
    report(sessions, "d1", "r1.d1", JobState.FAILED, "golden self-test failed")  # the event, late: its reason
    assert entry(sessions, "r1", "d1").reason == "golden self-test failed"


def test_a_device_that_activates_after_its_wave_timed_out_is_rolled_back_when_the_rollout_was_halted(
        fleet: tuple[sessionmaker[Session], str, Path]) -> None:
    """Partitioned mid-download past the wave timeout: the cloud times the job out and cancels it,
    the rollout is halted and ends; the device comes back, gets its last chunks before the cancel
    (delivery is not ordered across a reconnect) and activates the halted bundle. The rollout must
    take it back rather than leave a device on a bundle it says it rolled back (found by the
    partition row of the fault harness)."""
    sessions, sha, tarball = fleet
    broker, clock = Broker(), Clock()
    c = controller(sessions, broker, clock, tarball)
    rollouts.start(sessions, sha, plan(wave_s=300), "r1")
    c.step()
    for device in DEVICES:
        report(sessions, device, f"r1.{device}", JobState.QUEUED)
    for device in ("d1", "d2"):
        report(sessions, device, f"r1.{device}", JobState.FAILED, "golden self-test failed", seq=2)
    report(sessions, "d3", "r1.d3", JobState.DOWNLOADING, seq=2)  # ... and then d3 is cut off
    for _ in range(6):
        clock.advance(100)
        c.step()
    assert entry(sessions, "r1", "d3").state == "TIMED_OUT"
    with sessions() as session:
        assert rollouts.view(session, "r1").rollout.status == rollouts.FAILED
        new = bundle_ref(session.get(BundleRow, sha))  # type: ignore[arg-type]
    old = new.model_copy(update={"sequence": 4, "sha256": "4" * 64})
    report(sessions, "d3", "r1.d3", JobState.PROBATION, seq=3)  # back: it activated the halted bundle
    state = DeviceState(device_id="d3", online=True, board="pi4", groups=["eu"], active=new, previous=old,
                        job=JobSummary(job_id="r1.d3", state=JobState.PROBATION))
    with sessions.begin() as session:
        ingest(session, topics.state("d3"), state.to_json())
    clock.advance(1)
    c.step()
    assert broker.commands("d3", "r1.d3.rollback"), "the device on the halted bundle was never told to roll back"
    report(sessions, "d3", "r1.d3", JobState.ROLLED_BACK, "rolled back by the cloud", seq=4)
    with sessions.begin() as session:
        ingest(session, topics.state("d3"), state.model_copy(update={"active": old, "previous": None}).to_json())
    clock.advance(1)
    c.step()
    with sessions() as session:
        v = rollouts.view(session, "r1")
        assert v.rollout.status == rollouts.ROLLED_BACK, (v.rollout.status, v.rollout.reason)
        assert "activated" in (v.rollout.reason or "") and "r1.d3" not in [d.job_id for d in v.devices
                                                                             if d.state == "SUCCEEDED"]


def test_every_send_is_signed_for_its_device_with_a_fresh_expiry_under_the_same_job(
        fleet: tuple[sessionmaker[Session], str, Path]) -> None:
    """Issue 13: re-sends are signed again (fresh issue and expiry times) under the same job id and
    content, so the device answers them with the job's state; a row an older cloud queued (version 1)
    is sent as a version 2 command too."""
    sessions, sha, tarball = fleet
    broker, clock, key = Broker(), Clock(), Ed25519PrivateKey.generate()
    c = Controller(sessions, broker, Publisher(broker, lambda sha: tarball), key, clock=clock,  # type: ignore[arg-type]
                   backoff=Backoff(first_s=2, max_s=16, attempts=5, offline_s=1))
    trust = TrustStore.from_keys([key.public_key()], [Role.OPERATOR])
    rollouts.start(sessions, sha, plan(), "r1")
    for _ in range(7):  # sends at 0, 2 and 6 s
        c.step()
        clock.advance(1)
    with broker.lock:
        sent = [decode_command(p) for _, t, p in broker.published if t == topics.commands("d1")]
    assert [s.job_id for s in sent] == ["r1.d1"] * 3
    assert [s.issued_at for s in sent] == [T0, T0 + timedelta(seconds=2), T0 + timedelta(seconds=6)]
    for command in sent:
        assert verify_command(command, trust) and command.device_id == "d1"
        assert command.expires_at == command.issued_at + timedelta(seconds=COMMAND_TTL_S)
    assert len({content_sha256(s) for s in sent}) == 1
    with sessions.begin() as session:  # queued by a cloud before signed commands
        row = session.get(CommandRow, "r1.d2")
        assert row is not None
        row.payload = {**row.payload, "schema_version": 1}
        row.next_at = clock.now
    c.step()
    with broker.lock:
        last = decode_command(broker.published[-1][2])
    assert last.job_id == "r1.d2" and last.schema_version == 2 and verify_command(last, trust)


def test_fleet_config_queues_a_set_config_the_outbox_signs(fleet: tuple[sessionmaker[Session], str, Path],
                                                          tmp_path: Path) -> None:
    from coldchain.cli import app

    sessions, _, tarball = fleet
    result = CliRunner().invoke(app, ["fleet", "config", "d2", "--inference-interval-s", "5",
                                      "--db", sqlite_url(tmp_path / "cloud.db")])
    assert result.exit_code == 0, result.output
    missing = CliRunner().invoke(app, ["fleet", "config", "ghost", "--inference-interval-s", "5",
                                       "--db", sqlite_url(tmp_path / "cloud.db")])
    assert missing.exit_code == 1 and "not in the store" in missing.output
    broker, clock, key = Broker(), Clock(), Ed25519PrivateKey.generate()
    c = Controller(sessions, broker, Publisher(broker, lambda sha: tarball), key, clock=clock)  # type: ignore[arg-type]
    clock.now = datetime.now(UTC) + timedelta(seconds=1)
    c.step()
    with broker.lock:
        (sent,) = [decode_command(p) for _, t, p in broker.published if t == topics.commands("d2")]
    assert sent.type == "set_config" and sent.inference_interval_s == 5 and sent.device_id == "d2"
    assert verify_command(sent, TrustStore.from_keys([key.public_key()], [Role.OPERATOR]))


def test_commands_outside_rollouts_do_not_supersede_each_other(fleet: tuple[sessionmaker[Session], str, Path],
                                                               tmp_path: Path) -> None:
    """A trust push queued after a set_config for the same device must not cancel its delivery
    (both are outside any rollout; superseding is for a rollout's own deploy, cancel, rollback)."""
    from cloud import trust as cloud_trust
    from cloud.commands import enqueue
    from contract.commands import SetConfigCommand
    from contract.signing import generate_private_key
    from contract.trust import TrustDocument, TrustedKey, sign_trust

    sessions, _, tarball = fleet
    with sessions.begin() as session:
        enqueue(session, "d2", SetConfigCommand(job_id="cfg-1", inference_interval_s=5), None, T0)
    root = generate_private_key()
    document = TrustDocument(version=2, keys=[TrustedKey.of(root.public_key(), Role.ROOT)])
    jobs = cloud_trust.push(sessions, sign_trust(document, [root]), clock=T0)
    broker, clock = Broker(), Clock()
    c = controller(sessions, broker, clock, tarball)
    c.step()
    sent = {job for _, job in broker.commands("d2")}
    assert {"cfg-1", jobs["d2"]} <= sent, sent
    with sessions() as session:
        assert session.get(CommandRow, "cfg-1").outcome is None  # type: ignore[union-attr]


def test_a_device_waiting_in_ready_is_not_timed_out_by_the_wave(fleet: tuple[sessionmaker[Session], str,
                                                                              Path]) -> None:
    """A device whose firmware holds activation (or that waits for its activation window) reports
    READY with why: the wave's timeout leaves it alone until ``ready_s``, the others time out."""
    sessions, sha, tarball = fleet
    broker, clock = Broker(), Clock()
    c = controller(sessions, broker, clock, tarball)
    rollouts.start(sessions, sha, plan(wave_s=40, ready_s=300), "r1")
    c.step()
    report(sessions, "d1", "r1.d1", JobState.READY, "waiting for the activation window 02:00-05:00", seq=1)
    report(sessions, "d1", "r1.d1", JobState.READY, "held by the firmware: door open", seq=2)
    for _ in range(60):
        c.step()
        clock.advance(1)
    d1, d2 = entry(sessions, "r1", "d1"), entry(sessions, "r1", "d2")
    assert (d1.state, d1.reason) == ("READY", "held by the firmware: door open")  # the latest reason shows
    assert d2.state == "TIMED_OUT"  # never answered: given up by the wave
    clock.advance(300)
    c.step()
    d1 = entry(sessions, "r1", "d1")
    assert d1.state == "TIMED_OUT" and "no result within 300 s (was READY)" in (d1.reason or "")


WAITING = "probation: waiting for live inferences: {} of 20 seen, up to 2026-11-27 12:00 UTC"


def test_a_device_waiting_for_live_evidence_in_probation_is_not_timed_out_by_the_wave(
        fleet: tuple[sessionmaker[Session], str, Path]) -> None:
    """An idle door-triggered device reports PROBATION with how much live evidence it has seen: the wave's
    timeout leaves it alone until ``evidence_s`` (like READY), and ``rollout status`` shows why it waits;
    a device in PROBATION that says nothing of the kind is timed out by the wave as before."""
    from rich.console import Console

    from cloud.queries.rollouts import detail
    from coldchain.cloud_views import rollout_table

    sessions, sha, tarball = fleet
    broker, clock = Broker(), Clock()
    c = controller(sessions, broker, clock, tarball)
    rollouts.start(sessions, sha, plan(wave_s=40, evidence_s=300), "r1")
    c.step()
    report(sessions, "d1", "r1.d1", JobState.PROBATION, seq=1)
    report(sessions, "d1", "r1.d1", JobState.PROBATION, WAITING.format(3), seq=2)
    report(sessions, "d1", "r1.d1", JobState.PROBATION, WAITING.format(5), seq=3)
    report(sessions, "d3", "r1.d3", JobState.PROBATION, seq=1)  # in probation, silent since
    for _ in range(60):
        c.step()
        clock.advance(1)
    d1, d3 = entry(sessions, "r1", "d1"), entry(sessions, "r1", "d3")
    assert (d1.state, d1.reason) == ("PROBATION", WAITING.format(5))  # the latest count shows
    assert d3.state == "TIMED_OUT" and "(was PROBATION)" in (d3.reason or "")
    with sessions() as session:
        shown = detail(session, "r1")
    console = Console(width=200, record=True)
    console.print(rollout_table(shown))
    text = console.export_text()
    assert f"d1 PROBATION: {WAITING.format(5)}" in text, text
    clock.advance(300)
    c.step()
    d1 = entry(sessions, "r1", "d1")
    assert d1.state == "TIMED_OUT" and "no result within 300 s (was PROBATION)" in (d1.reason or "")
