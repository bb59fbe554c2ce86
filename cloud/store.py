"""The cloud's database: SQLAlchemy 2 models for the fleet, bundles, rollouts, telemetry, events,
dead letters, message attempts and alerts. A SQLite file by default; PostgreSQL (psycopg) by URL, same models.

``open_store(url)`` creates the tables if they are missing and returns a session factory.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    event,
    inspect,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from cloud.errors import StoreError


def now() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware datetimes on SQLite too (which stores them naive): always read back as UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to the store: use timezone-aware UTC times")
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class Device(Base):
    """A device, as it reports itself (retained state) plus what operators assigned (groups, tags)."""

    __tablename__ = "devices"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    online: Mapped[bool] = mapped_column(Boolean, default=False)
    board: Mapped[str | None] = mapped_column(String(128))
    agent_version: Mapped[str | None] = mapped_column(String(128))
    reported_groups: Mapped[list[Any]] = mapped_column(default=list)
    groups: Mapped[list[Any]] = mapped_column(default=list)  # operator-assigned
    tags: Mapped[dict[str, Any]] = mapped_column(default=dict)
    active_sha256: Mapped[str | None] = mapped_column(String(64))
    active: Mapped[dict[str, Any] | None] = mapped_column()
    previous: Mapped[dict[str, Any] | None] = mapped_column()
    job_id: Mapped[str | None] = mapped_column(String(128))
    job_state: Mapped[str | None] = mapped_column(String(32))
    state_ts: Mapped[datetime | None] = mapped_column()  # the device's time of the state applied last
    protocol: Mapped[int | None] = mapped_column(Integer)  # agent protocol it speaks (contract.versions); None: unknown
    state_version: Mapped[int | None] = mapped_column(Integer)  # schema_version of its last online state
    faults: Mapped[list[Any] | None] = mapped_column()  # contract.state.Fault of its last online state (JSON)
    first_seen: Mapped[datetime] = mapped_column(default=now)
    last_seen: Mapped[datetime] = mapped_column(default=now)

    def all_groups(self) -> list[str]:
        return sorted({*self.reported_groups, *self.groups})


class BundleRow(Base):
    """A signed bundle the cloud can deploy: its manifest and where its tarball lies."""

    __tablename__ = "bundles"
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)  # of manifest.json
    model_name: Mapped[str] = mapped_column(String(128))
    model_version: Mapped[str] = mapped_column(String(128))
    target: Mapped[str] = mapped_column(String(128))
    sequence: Mapped[int] = mapped_column(BigInteger)
    tarball: Mapped[str] = mapped_column(Text)
    artifact_sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    manifest: Mapped[dict[str, Any]] = mapped_column()
    added_at: Mapped[datetime] = mapped_column(default=now)


class Rollout(Base):
    __tablename__ = "rollouts"
    id: Mapped[str] = mapped_column(String(48), primary_key=True)
    bundle_sha256: Mapped[str] = mapped_column(ForeignKey("bundles.sha256"))
    plan: Mapped[dict[str, Any]] = mapped_column()  # a RolloutPlan (selector, waves, gates, timeouts)
    status: Mapped[str] = mapped_column(String(24))
    wave: Mapped[int] = mapped_column(Integer, default=0)  # index of the current wave
    wave_started_at: Mapped[datetime | None] = mapped_column()
    wave_settled_at: Mapped[datetime | None] = mapped_column()  # every job of the wave ended
    chunks_published_at: Mapped[datetime | None] = mapped_column()
    reason: Mapped[str | None] = mapped_column(Text)
    gate_results: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[datetime] = mapped_column(default=now)
    updated_at: Mapped[datetime] = mapped_column(default=now, onupdate=now)


class RolloutDevice(Base):
    """One device of a rollout: its wave, job and what it ran before (to roll back to)."""

    __tablename__ = "rollout_devices"
    rollout_id: Mapped[str] = mapped_column(ForeignKey("rollouts.id"), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    wave: Mapped[int] = mapped_column(Integer)
    job_id: Mapped[str] = mapped_column(String(128), unique=True)
    state: Mapped[str] = mapped_column(String(32), default="PENDING")
    reason: Mapped[str | None] = mapped_column(Text)
    previous: Mapped[dict[str, Any] | None] = mapped_column()
    deploy_sent_at: Mapped[datetime | None] = mapped_column()
    activated: Mapped[bool] = mapped_column(Boolean, default=False)  # the bundle became active at some point
    rollback_sent_at: Mapped[datetime | None] = mapped_column()
    rolled_back: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(default=now, onupdate=now)


class CommandRow(Base):
    """A command to one device, tracked until the device's job state shows its job id (see
    :mod:`cloud.commands`): sent only once the broker acknowledged it, re-sent with a backoff."""

    __tablename__ = "commands"
    job_id: Mapped[str] = mapped_column(String(160), primary_key=True)  # unique per command: devices act once
    device_id: Mapped[str] = mapped_column(String(64), index=True)
    rollout_id: Mapped[str | None] = mapped_column(String(48), index=True)
    kind: Mapped[str] = mapped_column(String(24))  # deploy, cancel, rollback
    payload: Mapped[dict[str, Any]] = mapped_column()  # the command as JSON, re-sent as it is
    created_at: Mapped[datetime] = mapped_column(default=now)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # publishes the client accepted
    sent_at: Mapped[datetime | None] = mapped_column()  # the last of them
    acked_at: Mapped[datetime | None] = mapped_column()  # the broker's PUBACK of one of them
    acks: Mapped[int] = mapped_column(Integer, default=0)
    next_at: Mapped[datetime] = mapped_column(default=now)  # when it is due again
    give_up_at: Mapped[datetime | None] = mapped_column()  # re-sent until then whatever the attempts (a wave's end)
    done: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    outcome: Mapped[str | None] = mapped_column(String(16))  # confirmed, unconfirmed, superseded
    reason: Mapped[str | None] = mapped_column(Text)


class TelemetryRow(Base):
    """One window, stored once per (device, spool epoch, seq): a rebuilt spool counts from 1 again."""

    __tablename__ = "telemetry"
    __table_args__ = (UniqueConstraint("device_id", "epoch", "seq", name="uq_telemetry_device_epoch_seq"),)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(64), index=True)
    epoch: Mapped[str] = mapped_column(String(64), default="")  # "": from agents before spool epochs
    seq: Mapped[int] = mapped_column(BigInteger)
    bundle_sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    window_start: Mapped[datetime] = mapped_column()
    window_end: Mapped[datetime] = mapped_column()
    inferences: Mapped[int] = mapped_column(BigInteger)  # a Count: up to 2**63 - 1
    errors: Mapped[int] = mapped_column(BigInteger)
    latency_p95: Mapped[float | None] = mapped_column(Float)
    payload: Mapped[dict[str, Any]] = mapped_column()
    received_at: Mapped[datetime] = mapped_column(default=now, index=True)


class TelemetryRollup(Base):
    """Telemetry summed per device, bundle ("" for none) and minute of reception (``cloud.rollup``):
    what monitoring, drift and the rollout gates read. It outlives the raw windows (retention
    deletes those), so deleting raw rows never changes a figure or a gate's verdict. Past
    ``retention.rollup_minutes_days`` a device's and bundle's minutes are merged into one row per
    hour (``cloud.compaction``): ``bucket`` the hour's start, ``minutes`` 60."""

    __tablename__ = "telemetry_rollups"
    __table_args__ = (Index("ix_telemetry_rollups_minutes_bucket", "minutes", "bucket"),)  # compaction's scan
    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    bundle_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    bucket: Mapped[datetime] = mapped_column(primary_key=True, index=True)  # received_at, to the minute (or hour)
    minutes: Mapped[int] = mapped_column(Integer, default=1, server_default="1")  # the bucket's span: 1 or 60
    windows: Mapped[int] = mapped_column(BigInteger, default=0)
    inferences: Mapped[int] = mapped_column(BigInteger, default=0)
    errors: Mapped[int] = mapped_column(BigInteger, default=0)
    frames_skipped: Mapped[int] = mapped_column(BigInteger, default=0)
    latency_p50_sum: Mapped[float] = mapped_column(Float, default=0.0)  # p50 x inferences, summed
    latency_p95_sum: Mapped[float] = mapped_column(Float, default=0.0)
    latency_n: Mapped[float] = mapped_column(Float, default=0.0)  # inferences of windows with latencies
    model_p95_sum: Mapped[float] = mapped_column(Float, default=0.0)
    model_n: Mapped[float] = mapped_column(Float, default=0.0)
    predictions: Mapped[dict[str, Any]] = mapped_column(default=dict)  # label -> count
    histograms: Mapped[dict[str, Any]] = mapped_column(default=dict)  # stat -> edges (JSON text) -> counts
    inventory: Mapped[dict[str, Any] | None] = mapped_column()  # the latest non-empty one of the minute
    inventory_at: Mapped[datetime | None] = mapped_column()  # its window's end


class CloudSecret(Base):
    """Keys the cloud makes for itself (the export pseudonyms' HMAC key)."""

    __tablename__ = "cloud_secrets"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=now)


class SpoolDrops(Base):
    """Windows a device dropped unsent (its spool was full), as it reports them: a running total
    per spool epoch, so the fleet's loss is counted, never silent."""

    __tablename__ = "spool_drops"
    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    epoch: Mapped[str] = mapped_column(String(64), primary_key=True)
    evicted: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=now, onupdate=now)


class EventRow(Base):
    __tablename__ = "events"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 of the payload: redeliveries dedupe
    device_id: Mapped[str] = mapped_column(String(64), index=True)
    type: Mapped[str] = mapped_column(String(32))
    job_id: Mapped[str | None] = mapped_column(String(128), index=True)
    state: Mapped[str | None] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column()
    ts: Mapped[datetime] = mapped_column()
    received_at: Mapped[datetime] = mapped_column(default=now)


class DeadLetter(Base):
    __tablename__ = "dead_letters"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    topic: Mapped[str] = mapped_column(Text)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    reason: Mapped[str] = mapped_column(Text)
    kind: Mapped[str | None] = mapped_column(String(48))  # the reason's class (a metric label): SchemaError, ...
    received_at: Mapped[datetime] = mapped_column(default=now, index=True)


class Attempt(Base):
    """A message being handled: how often handling it began without ending (``cloud.attempts``)."""

    __tablename__ = "attempts"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of topic and payload
    count: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=now)


class Alert(Base):
    __tablename__ = "alerts"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    kind: Mapped[str] = mapped_column(String(48))  # gate_failed, drift, error_rate, latency, rollout
    scope: Mapped[str] = mapped_column(String(16))  # device, group, bundle, rollout
    subject: Mapped[str] = mapped_column(String(128))
    message: Mapped[str] = mapped_column(Text)
    value: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=now, index=True)
    dispatched: Mapped[bool | None] = mapped_column(Boolean, index=True)  # False: webhooks not yet queued


class AlertDelivery(Base):
    """One alert to one webhook (``cloud.webhooks``): retried with a backoff until the receiver
    answers 2xx, or dead-lettered after the configured attempts."""

    __tablename__ = "alert_deliveries"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    alert_id: Mapped[int] = mapped_column(BigInteger, index=True)
    webhook: Mapped[str] = mapped_column(String(48))
    payload: Mapped[dict[str, Any]] = mapped_column()
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_at: Mapped[datetime] = mapped_column(default=now)
    done: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    outcome: Mapped[str | None] = mapped_column(String(16))  # delivered, dead
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=now)


class AuditEntry(Base):
    """One write by an operator or a scheduled job: who, what, on what, when, and how it ended."""

    __tablename__ = "audit"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=now, index=True)
    actor: Mapped[str] = mapped_column(String(160))  # token:<name>, cli:<user>, cloud
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str | None] = mapped_column(String(160))
    result: Mapped[str] = mapped_column(Text)  # ok, refused: ..., failed: ...
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


class ApiToken(Base):
    """An API bearer token: only its sha256 is kept; ``scope`` is read, operate or admin."""

    __tablename__ = "api_tokens"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 of the token
    scope: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=now)
    created_by: Mapped[str] = mapped_column(String(160))
    revoked_at: Mapped[datetime | None] = mapped_column()
    last_used_at: Mapped[datetime | None] = mapped_column()



class WebSession(Base):
    """A dashboard sign-in (``cloud.web.sessions``): the cookie holds a random id, the store only its
    sha256, bound to the sha256 of the token it was made from (``ApiToken.digest``)."""

    __tablename__ = "web_sessions"
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of the session id
    token_digest: Mapped[str] = mapped_column(String(64), index=True)
    token_name: Mapped[str] = mapped_column(String(64), index=True)  # revoking the token deletes its sessions
    created_at: Mapped[datetime] = mapped_column()  # the absolute expiry counts from here
    seen_at: Mapped[datetime] = mapped_column()  # the idle expiry from here (written at most every minute)

DEFAULT_URL = "sqlite:///coldchain.db"


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path.resolve()}"


def make_engine(url: str) -> Engine:
    try:
        if url.startswith("sqlite"):
            engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

            @event.listens_for(engine, "connect")
            def _pragmas(connection: Any, _: Any) -> None:
                cursor = connection.cursor()
                cursor.execute("PRAGMA journal_mode=WAL")  # readers (API, CLI) beside the writer
                cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.close()

            return engine
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
        return create_engine(url, pool_pre_ping=True)
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        raise StoreError(f"cannot use the store at {url!r}: {exc}. Give a sqlite:///PATH or "
                         "postgresql://user:password@host/db URL") from exc


def open_store(url: str = DEFAULT_URL) -> sessionmaker[Session]:
    """Connect, create missing tables (and bring older ones up to date), and return a session factory."""
    from cloud.store_migrate import upgrade  # it needs the models above

    engine = make_engine(url)
    try:
        upgrade(engine)
        older = "telemetry" in inspect(engine).get_table_names() and \
            "telemetry_rollups" not in inspect(engine).get_table_names()
        Base.metadata.create_all(engine)
        sessions = sessionmaker(engine, expire_on_commit=False)
        if older:  # a store from before the rollups: its telemetry is summed into them once
            from cloud.rollup import backfill

            backfill(sessions)
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot open the store at {engine.url.render_as_string(hide_password=True)}: "
                         f"{exc.__class__.__name__}: {str(exc).splitlines()[0]}") from exc
    return sessions
