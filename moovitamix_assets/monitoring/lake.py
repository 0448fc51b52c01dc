"""The Parquet lake: each raw daily snapshot copied to hive-style Parquet, then pruned from DuckDB once verified.

Layout: `<root>/raw/<entity>/snapshot_date=YYYY-MM-DD/data.parquet`, which DuckDB
(`read_parquet('<root>/raw/*/*/*.parquet', hive_partitioning = true)`), Spark and Trino
read as tables partitioned by snapshot_date.

Retention (`raw_retention`, RetentionConfig) never takes the newest complete days: DuckDB
keeps the newest `keep_complete_days` complete snapshots whatever their age, any newer day,
and every day of the last `raw_days`; older partitions leave DuckDB once their Parquet copy
is verified. The lake, quality.rejected_records and the monitoring tables each have their
own, longer retention. raw.snapshot_manifest keeps the rows of a day pruned from DuckDB for
as long as its copy is in the lake.
"""

import contextlib
import datetime as dt
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import dagster as dg
import duckdb
import pydantic

from moovitamix_assets.contract import ENTITIES
from moovitamix_assets.ingestion.assets import raw_snapshot_assets
from moovitamix_assets.ingestion.partitions import daily_snapshots
from moovitamix_assets.ingestion.snapshots import SNAPSHOT_MANIFEST, complete_snapshot_dates
from moovitamix_assets.monitoring.health import HEALTH_REPORTS
from moovitamix_assets.monitoring.metrics import ASSET_METRICS, CHECK_RESULTS
from moovitamix_assets.resources.warehouse import (
    DUCKDB_POOL,
    REJECTED_RECORDS,
    WarehouseResource,
    raw_table,
    set_variables,
    table_exists,
    transaction,
    utc_today,
)

SQL = Path(__file__).parent / "sql"

LAKE = "lake"

LAKE_PATH_ENV = "MOOVITAMIX_LAKE_PATH"
DEFAULT_LAKE_PATH = "data/lake"


class LakeResource(dg.ConfigurableResource):
    """The folder that holds the Parquet copies of the raw snapshots."""

    root: str = DEFAULT_LAKE_PATH


def lake_from_env() -> LakeResource:
    return LakeResource(root=os.getenv(LAKE_PATH_ENV, DEFAULT_LAKE_PATH))


def partition_path(root: str, entity: str, snapshot_date: str) -> Path:
    """The Parquet file of one raw partition, absolute so that DuckDB and Python agree on it."""
    return Path(root).resolve() / "raw" / entity / f"snapshot_date={snapshot_date}" / "data.parquet"


def sql_literal(text: str) -> str:
    # COPY ... TO and read_parquet take their path as SQL text, not as a bound parameter.
    return "'" + text.replace("'", "''") + "'"


@dataclass
class ExportedPartition:
    entity: str
    rows: int
    bytes: int
    path: Path
    archived: bool = False  # the day is no longer in DuckDB: its existing copy was kept as it is


def rows_in_duckdb(connection: duckdb.DuckDBPyConnection, entity: str, snapshot_date: dt.date) -> int:
    if not table_exists(connection, raw_table(entity)):
        return 0
    return connection.execute(
        f"SELECT count(*) FROM {raw_table(entity)} WHERE snapshot_date = ?", [snapshot_date]
    ).fetchall()[0][0]


def export_raw_partition(
    connection: duckdb.DuckDBPyConnection, entity: str, snapshot_date: str, root: str
) -> ExportedPartition:
    """Writes one raw partition to its Parquet file, replacing any earlier copy at once.

    DuckDB writes a hidden temporary file next to the target, which is then renamed over
    it: a reader sees the old file or the new one, never half of one. A day that retention
    pruned from DuckDB keeps its copy: exporting it again would replace the only copy left
    with an empty file.
    """
    target = partition_path(root, entity, snapshot_date)
    if target.exists() and rows_in_duckdb(connection, entity, dt.date.fromisoformat(snapshot_date)) == 0:
        (rows,) = connection.execute(f"SELECT count(*) FROM read_parquet({sql_literal(str(target))})").fetchall()[0]
        return ExportedPartition(entity, rows, target.stat().st_size, target, archived=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    set_variables(connection, {"snapshot_date": dt.date.fromisoformat(snapshot_date)})
    try:
        connection.execute(
            (SQL / "export_raw_partition.sql").read_text().format(table=raw_table(entity), path=sql_literal(str(temporary)))
        )
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    (rows,) = connection.execute(f"SELECT count(*) FROM read_parquet({sql_literal(str(target))})").fetchone()
    return ExportedPartition(entity, rows, target.stat().st_size, target)


def raw_fingerprint(connection: duckdb.DuckDBPyConnection, source: str) -> tuple[int, int]:
    return tuple(connection.execute((SQL / "raw_fingerprint.sql").read_text().format(source=source)).fetchone())


def verify_parquet_copy(
    connection: duckdb.DuckDBPyConnection, entity: str, snapshot_date: str, root: str
) -> tuple[bool, str]:
    """Whether a raw partition's Parquet copy holds exactly its rows: same count, same checksum."""
    path = partition_path(root, entity, snapshot_date)
    if not path.exists():
        return False, f"no Parquet copy at {path}"
    set_variables(connection, {"snapshot_date": dt.date.fromisoformat(snapshot_date)})
    table_rows, table_checksum = raw_fingerprint(
        connection, f"(SELECT * FROM {raw_table(entity)} WHERE snapshot_date = getvariable('snapshot_date'))"
    )
    try:
        copy_rows, copy_checksum = raw_fingerprint(connection, f"read_parquet({sql_literal(str(path))})")
    except duckdb.Error as error:
        return False, f"unreadable Parquet copy at {path}: {error}"
    if (copy_rows, copy_checksum) != (table_rows, table_checksum):
        return False, (
            f"Parquet copy differs: {copy_rows} rows (checksum {copy_checksum}) "
            f"vs {table_rows} rows (checksum {table_checksum}) in {raw_table(entity)}"
        )
    return True, f"{table_rows} rows, checksum {table_checksum}"


@dg.asset(
    key=[LAKE, "raw_snapshot_parquet"],
    group_name=LAKE,
    partitions_def=daily_snapshots,
    deps=raw_snapshot_assets,
    pool=DUCKDB_POOL,
    kinds={"duckdb", "parquet"},
    automation_condition=dg.AutomationCondition.eager(),
    description="The day's raw snapshots as hive-style Parquet files, one per endpoint, for readers outside DuckDB.",
)
def raw_snapshot_parquet(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, lake: LakeResource
) -> dg.MaterializeResult:
    started = time.monotonic()
    with warehouse.get_connection() as connection:
        exported = [export_raw_partition(connection, entity, context.partition_key, lake.root) for entity in ENTITIES]
    for partition in exported:
        if partition.archived:
            context.log.warning(
                f"{raw_table(partition.entity)} no longer holds {context.partition_key} (pruned): its copy was kept as it is."
            )
        elif partition.rows == 0:
            context.log.warning(f"{raw_table(partition.entity)} has no rows for {context.partition_key}: its copy is empty.")
    return dg.MaterializeResult(
        metadata={
            "snapshot_date": context.partition_key,
            "dagster/row_count": sum(partition.rows for partition in exported),
            **{f"rows_{partition.entity}": partition.rows for partition in exported},
            "bytes": sum(partition.bytes for partition in exported),
            "archived_copies_kept": sum(partition.archived for partition in exported),
            "seconds": round(time.monotonic() - started, 3),
            "path": dg.MetadataValue.path(str(partition_path(lake.root, "*", context.partition_key).parent)),
        }
    )


class RetentionConfig(dg.Config):
    """How long each kind of data is kept, counted back from `today` (UTC).

    No rule ever takes a day from `protected_since` on: the oldest of the newest
    `keep_complete_days` complete days (raw.snapshot_manifest). So the latest complete
    snapshot, the ones before it that core and its checks compare with, and any newer day
    (an incomplete one being retried) stay, whatever their age; with no complete day at
    all, nothing is pruned.
    """

    # raw.<entity> in DuckDB keeps the newest N complete days whatever their age (core
    # reads the latest and compares it with the one before: at least 2) ...
    keep_complete_days: int = 7
    # ... and every day of the last raw_days; an older day leaves DuckDB only once its
    # Parquet copy is verified, and stays in the lake.
    raw_days: int = 30
    # The Parquet lake: a day older than this is deleted, unless DuckDB still holds it.
    # The lake outlives DuckDB (at least raw_days): the history backfill reads it.
    lake_days: int = 365
    # quality.rejected_records, by snapshot_date.
    rejected_records_days: int = 90
    # monitoring.asset_metrics, check_results, health_reports and alert_deliveries, by when
    # the row was written. Keep it longer than the health report's window (30 days).
    monitoring_days: int = 90
    # The day the retention counts back from, YYYY-MM-DD; the current UTC date when unset.
    today: Optional[str] = None

    @pydantic.field_validator("keep_complete_days")
    @classmethod
    def _at_least_two(cls, value: int) -> int:
        if value < 2:
            raise ValueError("keep_complete_days must be at least 2: core compares the latest snapshot with the one before")
        return value

    @pydantic.field_validator("raw_days", "lake_days", "rejected_records_days", "monitoring_days")
    @classmethod
    def _at_least_one(cls, value: int) -> int:
        if value < 1:
            raise ValueError("a retention in days must be at least 1")
        return value

    @pydantic.model_validator(mode="after")
    def _lake_outlives_duckdb(self) -> "RetentionConfig":
        if self.lake_days < self.raw_days:
            raise ValueError(f"lake_days ({self.lake_days}) must be at least raw_days ({self.raw_days})")
        return self


@dataclass(frozen=True)
class RetentionWindow:
    """The dates one retention run compares with."""

    today: dt.date
    keep_complete_days: int
    complete_days: tuple[dt.date, ...]
    protected_since: Optional[dt.date]  # None when no day is complete: nothing is pruned
    raw_cutoff: dt.date
    lake_cutoff: dt.date
    rejected_records_cutoff: dt.date
    monitoring_cutoff: dt.date

    def prunable(self, day: dt.date, cutoff: dt.date) -> bool:
        return self.protected_since is not None and day < self.protected_since and day < cutoff

    def why_kept(self, day: dt.date, cutoff: dt.date) -> str:
        if self.protected_since is None:
            return "no complete day yet: nothing is pruned"
        if day > self.complete_days[-1]:
            return f"newer than the newest complete day ({self.complete_days[-1]})"
        if day >= self.protected_since:
            return f"within the newest {self.keep_complete_days} complete days (since {self.protected_since})"
        return f"younger than the cutoff ({cutoff})"


def retention_window(connection: duckdb.DuckDBPyConnection, config: RetentionConfig, today: dt.date) -> RetentionWindow:
    complete_days = tuple(complete_snapshot_dates(connection))
    return RetentionWindow(
        today=today,
        keep_complete_days=config.keep_complete_days,
        complete_days=complete_days,
        protected_since=complete_days[-config.keep_complete_days :][0] if complete_days else None,
        raw_cutoff=today - dt.timedelta(days=config.raw_days),
        lake_cutoff=today - dt.timedelta(days=config.lake_days),
        rejected_records_cutoff=today - dt.timedelta(days=config.rejected_records_days),
        monitoring_cutoff=today - dt.timedelta(days=config.monitoring_days),
    )


@dataclass
class RetentionReport:
    pruned: list[str] = field(default_factory=list)  # raw partitions deleted from DuckDB, e.g. raw.users/2026-10-01
    kept: dict[str, str] = field(default_factory=dict)  # raw partitions left in DuckDB, and why
    unverified: dict[str, str] = field(default_factory=dict)  # kept although due: their copy is missing or differs
    differing: list[str] = field(default_factory=list)  # of those, the ones whose copy differs
    lake_deleted: list[str] = field(default_factory=list)  # e.g. users/2025-10-01
    lake_kept: int = 0
    rows: dict[str, dict[str, int]] = field(default_factory=dict)  # table -> {"pruned": n, "kept": m}

    @property
    def rows_deleted(self) -> int:
        return sum(self.rows.get(raw_table(entity), {}).get("pruned", 0) for entity in ENTITIES)


def raw_partition_dates(connection: duckdb.DuckDBPyConnection, entity: str) -> list[dt.date]:
    if not table_exists(connection, raw_table(entity)):
        return []
    rows = connection.execute(f"SELECT DISTINCT snapshot_date FROM {raw_table(entity)} ORDER BY 1").fetchall()
    return [snapshot_date for (snapshot_date,) in rows]


def row_count(connection: duckdb.DuckDBPyConnection, table: str) -> int:
    return connection.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]


def prune_raw_partitions(
    connection: duckdb.DuckDBPyConnection, root: str, window: RetentionWindow, report: RetentionReport
) -> None:
    """Deletes from DuckDB the raw partitions the window lets go whose Parquet copy checks out.

    Each partition is verified and deleted in one transaction, so nothing writes to it in
    between; a partition whose copy is missing or differs stays in DuckDB with its reason.
    """
    for entity in ENTITIES:
        pruned = 0
        for day in raw_partition_dates(connection, entity):
            name = f"{raw_table(entity)}/{day}"
            if not window.prunable(day, window.raw_cutoff):
                report.kept[name] = window.why_kept(day, window.raw_cutoff)
                continue
            with transaction(connection):
                ok, details = verify_parquet_copy(connection, entity, day.isoformat(), root)
                if ok:
                    (deleted,) = connection.execute(
                        f"DELETE FROM {raw_table(entity)} WHERE snapshot_date = ?", [day]
                    ).fetchall()[0]
            if ok:
                report.pruned.append(name)
                pruned += deleted
            else:
                report.kept[name] = report.unverified[name] = details
                if not details.startswith("no Parquet copy"):
                    report.differing.append(name)
        if table_exists(connection, raw_table(entity)):
            report.rows[raw_table(entity)] = {"pruned": pruned, "kept": row_count(connection, raw_table(entity))}


def lake_partition_dates(root: str, entity: str) -> list[dt.date]:
    folder = Path(root).resolve() / "raw" / entity
    days = []
    for path in folder.glob("snapshot_date=*"):
        with contextlib.suppress(ValueError):
            days.append(dt.date.fromisoformat(path.name.removeprefix("snapshot_date=")))
    return sorted(days)


def days_in_duckdb(connection: duckdb.DuckDBPyConnection) -> set[dt.date]:
    return {day for entity in ENTITIES for day in raw_partition_dates(connection, entity)}


def prune_lake(connection: duckdb.DuckDBPyConnection, root: str, window: RetentionWindow, report: RetentionReport) -> None:
    """Deletes the lake's partitions past lake_days, never of a day DuckDB still holds (its
    copy is what lets DuckDB prune it later) nor of the protected days."""
    held = days_in_duckdb(connection)
    for entity in ENTITIES:
        for day in lake_partition_dates(root, entity):
            if window.prunable(day, window.lake_cutoff) and day not in held:
                shutil.rmtree(partition_path(root, entity, day.isoformat()).parent)
                report.lake_deleted.append(f"{entity}/{day}")
            else:
                report.lake_kept += 1


def prune_snapshot_manifest(
    connection: duckdb.DuckDBPyConnection, root: str, window: RetentionWindow, report: RetentionReport
) -> None:
    """Drops the manifest rows of days whose data is gone from DuckDB and the lake.

    A day pruned from DuckDB keeps its rows while its Parquet copy is in the lake: the
    manifest says which days were loaded whole, wherever they live now (the history
    backfill reads the lake by it). Runs after prune_lake, so a crash in between leaves
    rows that the next run drops.
    """
    if not table_exists(connection, SNAPSHOT_MANIFEST) or window.protected_since is None:
        return
    in_duckdb = {entity: set(raw_partition_dates(connection, entity)) for entity in ENTITIES}
    gone = []
    candidates = connection.execute(
        f"SELECT snapshot_date, entity FROM {SNAPSHOT_MANIFEST} WHERE snapshot_date < ? ORDER BY ALL",
        [window.protected_since],
    ).fetchall()
    for day, entity in candidates:
        if day not in in_duckdb.get(entity, ()) and not partition_path(root, entity, day.isoformat()).exists():
            gone.append((day, entity))
    with transaction(connection):
        for day, entity in gone:
            connection.execute(f"DELETE FROM {SNAPSHOT_MANIFEST} WHERE snapshot_date = ? AND entity = ?", [day, entity])
    report.rows[SNAPSHOT_MANIFEST] = {"pruned": len(gone), "kept": row_count(connection, SNAPSHOT_MANIFEST)}


def prune_rejected_records(connection: duckdb.DuckDBPyConnection, window: RetentionWindow, report: RetentionReport) -> None:
    if not table_exists(connection, REJECTED_RECORDS):
        return
    pruned = 0
    if window.protected_since is not None:
        before = min(window.protected_since, window.rejected_records_cutoff)
        (pruned,) = connection.execute(f"DELETE FROM {REJECTED_RECORDS} WHERE snapshot_date < ?", [before]).fetchall()[0]
    report.rows[REJECTED_RECORDS] = {"pruned": pruned, "kept": row_count(connection, REJECTED_RECORDS)}


# Written by the alert sensors (monitoring/alert_delivery.py), when they have run.
ALERT_DELIVERIES = "monitoring.alert_deliveries"

# Each monitoring table and the column that says when its row was written.
MONITORING_TABLES = {
    ASSET_METRICS: "recorded_at",
    CHECK_RESULTS: "recorded_at",
    HEALTH_REPORTS: "generated_at",
    ALERT_DELIVERIES: "recorded_at",
}


def is_base_table(connection: duckdb.DuckDBPyConnection, table: str) -> bool:
    """Whether a table exists and holds its rows (a view over another store is left alone)."""
    schema, name = table.split(".")
    return bool(
        connection.execute(
            "SELECT count(*) FROM information_schema.tables "
            "WHERE table_schema = ? AND table_name = ? AND table_type = 'BASE TABLE'",
            [schema, name],
        ).fetchall()[0][0]
    )


def prune_monitoring(connection: duckdb.DuckDBPyConnection, window: RetentionWindow, report: RetentionReport) -> None:
    # Runs are not days: monitoring rows age by when they were written, protected days or not.
    before = dt.datetime.combine(window.monitoring_cutoff, dt.time())
    for table, column in MONITORING_TABLES.items():
        if not is_base_table(connection, table):
            continue
        (pruned,) = connection.execute(f"DELETE FROM {table} WHERE {column} < ?", [before]).fetchall()[0]
        report.rows[table] = {"pruned": pruned, "kept": row_count(connection, table)}


def apply_retention(connection: duckdb.DuckDBPyConnection, root: str, window: RetentionWindow) -> RetentionReport:
    """Every retention rule, DuckDB's raw partitions first, then the lake, the manifest,
    the rejected records and the monitoring tables."""
    report = RetentionReport()
    prune_raw_partitions(connection, root, window, report)
    prune_lake(connection, root, window, report)
    prune_snapshot_manifest(connection, root, window, report)
    prune_rejected_records(connection, window, report)
    prune_monitoring(connection, window, report)
    return report


def retention_metadata(window: RetentionWindow, report: RetentionReport) -> dict:
    return {
        "today": window.today.isoformat(),
        "protected_since": window.protected_since.isoformat() if window.protected_since else "none: no complete day",
        "complete_days": len(window.complete_days),
        "raw_cutoff": window.raw_cutoff.isoformat(),
        "partitions_pruned": len(report.pruned),
        "partitions_kept": len(report.kept),
        "rows_deleted": report.rows_deleted,
        "pruned": dg.MetadataValue.json(report.pruned),
        "kept": dg.MetadataValue.json(report.kept),
        "lake_partitions_deleted": len(report.lake_deleted),
        "lake_partitions_kept": report.lake_kept,
        "lake_deleted": dg.MetadataValue.json(report.lake_deleted),
        **{f"pruned_rows_{table}": rows["pruned"] for table, rows in report.rows.items()},
        **{f"kept_rows_{table}": rows["kept"] for table, rows in report.rows.items()},
        "tables": dg.MetadataValue.json(report.rows),
    }


@dg.asset(
    key=[LAKE, "raw_retention"],
    group_name=LAKE,
    deps=[raw_snapshot_parquet],
    pool=DUCKDB_POOL,
    kinds={"duckdb", "parquet"},
    description=(
        "Prunes old data, never the newest complete days: verified raw partitions from DuckDB, "
        "then old lake partitions, rejected records and monitoring rows, each by its own retention."
    ),
)
def raw_retention(
    context: dg.AssetExecutionContext, config: RetentionConfig, warehouse: WarehouseResource, lake: LakeResource
) -> dg.MaterializeResult:
    today = dt.date.fromisoformat(config.today) if config.today else utc_today()
    with warehouse.get_connection() as connection:
        window = retention_window(connection, config, today)
        report = apply_retention(connection, lake.root, window)
    metadata = retention_metadata(window, report)
    if window.protected_since is None:
        context.log.warning("No complete snapshot in raw.snapshot_manifest: nothing was pruned.")
    for name, reason in report.unverified.items():
        context.log.warning(f"Kept {name} in DuckDB: {reason}")
    if report.differing:
        # The pruned partitions stay pruned: each was verified on its own.
        raise dg.Failure(
            description=f"Parquet copies differ from DuckDB for {', '.join(report.differing)}; those partitions were kept.",
            metadata=metadata,
        )
    return dg.MaterializeResult(metadata=metadata)


raw_retention_job = dg.define_asset_job("raw_retention_job", selection=[raw_retention])

raw_retention_schedule = dg.ScheduleDefinition(
    name="raw_retention_schedule",
    job=raw_retention_job,
    cron_schedule="0 4 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Applies the retention daily after ingestion: never the newest complete days.",
)
