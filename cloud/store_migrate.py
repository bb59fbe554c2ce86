"""Bringing a store made by an older version up to date before the tables are created: the
telemetry key with spool epochs, columns added since, counts widened to BIGINT on PostgreSQL."""

from __future__ import annotations

from sqlalchemy import inspect
from sqlalchemy.engine import Engine

from cloud.store import Base


def upgrade(engine: Engine) -> None:
    _telemetry_epochs(engine)
    _added_columns(engine)
    _widened_columns(engine)


def _telemetry_epochs(engine: Engine) -> None:
    """A store from before spool epochs: its telemetry is unique per (device, seq), which would take
    a rebuilt spool's windows for duplicates (acked, so deleted on the device, never stored). Add the
    epoch ("" for the rows there) and make (device, epoch, seq) the key; SQLite copies the table."""
    if "telemetry" not in inspect(engine).get_table_names() or any(
            c["name"] == "epoch" for c in inspect(engine).get_columns("telemetry")):
        return
    table = Base.metadata.tables["telemetry"]
    columns = ", ".join(c.name for c in table.columns if c.name != "epoch")
    with engine.begin() as db:
        if engine.dialect.name == "postgresql":
            db.exec_driver_sql("ALTER TABLE telemetry ADD COLUMN epoch VARCHAR(64) NOT NULL DEFAULT ''")
            db.exec_driver_sql("ALTER TABLE telemetry DROP CONSTRAINT uq_telemetry_device_seq")
            db.exec_driver_sql("ALTER TABLE telemetry ADD CONSTRAINT uq_telemetry_device_epoch_seq "
                               "UNIQUE (device_id, epoch, seq)")
            return
        db.exec_driver_sql("ALTER TABLE telemetry RENAME TO telemetry_before_epochs")
        for index in table.indexes:  # the renamed table keeps its indexes' names
            db.exec_driver_sql(f"DROP INDEX IF EXISTS {index.name}")
        table.create(db)
        db.exec_driver_sql(f"INSERT INTO telemetry ({columns}, epoch) SELECT {columns}, '' "  # noqa: S608 (the model's columns)
                           "FROM telemetry_before_epochs")
        db.exec_driver_sql("DROP TABLE telemetry_before_epochs")


def _added_columns(engine: Engine) -> None:
    """Columns added to existing tables since they were created (nullable: old rows keep NULL; the
    rollups' span: 1, a minute)."""
    tables = inspect(engine).get_table_names()
    for table, column in (("devices", "state_ts"), ("devices", "protocol"), ("devices", "state_version"),
                          ("devices", "faults"),
                          ("commands", "give_up_at"), ("dead_letters", "kind"),
                          ("alerts", "dispatched")):
        if table not in tables or any(c["name"] == column for c in inspect(engine).get_columns(table)):
            continue
        kind = Base.metadata.tables[table].c[column].type.compile(dialect=engine.dialect)
        with engine.begin() as db:
            db.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
    if "telemetry_rollups" in tables and not any(c["name"] == "minutes" for c in
                                                 inspect(engine).get_columns("telemetry_rollups")):
        with engine.begin() as db:  # rollups from before compaction: all minute rows
            db.exec_driver_sql("ALTER TABLE telemetry_rollups ADD COLUMN minutes INTEGER NOT NULL DEFAULT 1")
            db.exec_driver_sql("CREATE INDEX IF NOT EXISTS ix_telemetry_rollups_minutes_bucket "
                               "ON telemetry_rollups (minutes, bucket)")


def _widened_columns(engine: Engine) -> None:
    """Counts stored as 32-bit INTEGER by older stores on PostgreSQL (SQLite's are 64-bit anyway):
    a window with more than 2**31 inferences would fail to store, so they become BIGINT."""
    if engine.dialect.name != "postgresql" or "telemetry" not in inspect(engine).get_table_names():
        return
    kinds = {c["name"]: str(c["type"]) for c in inspect(engine).get_columns("telemetry")}
    with engine.begin() as db:
        for column in ("inferences", "errors"):
            if kinds.get(column) == "INTEGER":
                db.exec_driver_sql(f"ALTER TABLE telemetry ALTER COLUMN {column} TYPE BIGINT")
