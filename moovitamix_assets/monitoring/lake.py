"""The Parquet lake: each raw daily snapshot copied to hive-style Parquet, then pruned from DuckDB once verified.

Layout: `<root>/raw/<entity>/snapshot_date=YYYY-MM-DD/data.parquet`, which DuckDB
(`read_parquet('<root>/raw/*/*/*.parquet', hive_partitioning = true)`), Spark and Trino
read as tables partitioned by snapshot_date.
"""

import datetime as dt
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import dagster as dg
import duckdb

from moovitamix_assets.contract import ENTITIES
from moovitamix_assets.ingestion.assets import raw_snapshot_assets
from moovitamix_assets.ingestion.partitions import daily_snapshots
from moovitamix_assets.resources.warehouse import (
    DUCKDB_POOL,
    WarehouseResource,
    raw_table,
    set_variables,
    table_exists,
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


def export_raw_partition(
    connection: duckdb.DuckDBPyConnection, entity: str, snapshot_date: str, root: str
) -> ExportedPartition:
    """Writes one raw partition to its Parquet file, replacing any earlier copy at once.

    DuckDB writes a hidden temporary file next to the target, which is then renamed over
    it: a reader sees the old file or the new one, never half of one.
    """
    target = partition_path(root, entity, snapshot_date)
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
        if partition.rows == 0:
            context.log.warning(f"{raw_table(partition.entity)} has no rows for {context.partition_key}: its copy is empty.")
    return dg.MaterializeResult(
        metadata={
            "snapshot_date": context.partition_key,
            "dagster/row_count": sum(partition.rows for partition in exported),
            **{f"rows_{partition.entity}": partition.rows for partition in exported},
            "bytes": sum(partition.bytes for partition in exported),
            "seconds": round(time.monotonic() - started, 3),
            "path": dg.MetadataValue.path(str(partition_path(lake.root, "*", context.partition_key).parent)),
        }
    )


@dataclass
class RetentionReport:
    pruned: list[str] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)
    rows_deleted: int = 0
    differing: list[str] = field(default_factory=list)


def raw_partitions_before(connection: duckdb.DuckDBPyConnection, entity: str, cutoff: dt.date) -> list[str]:
    if not table_exists(connection, raw_table(entity)):
        return []
    rows = connection.execute(
        f"SELECT DISTINCT snapshot_date FROM {raw_table(entity)} WHERE snapshot_date < ? ORDER BY 1", [cutoff]
    ).fetchall()
    return [snapshot_date.isoformat() for (snapshot_date,) in rows]


def prune_raw_partitions(connection: duckdb.DuckDBPyConnection, root: str, cutoff: dt.date) -> RetentionReport:
    """Deletes from DuckDB every raw partition older than the cutoff whose Parquet copy checks out.

    Each partition is verified and deleted in one transaction, so nothing writes to it in
    between; a partition whose copy is missing or differs stays in DuckDB with its reason.
    """
    report = RetentionReport()
    for entity in ENTITIES:
        for snapshot_date in raw_partitions_before(connection, entity, cutoff):
            name = f"{raw_table(entity)}/{snapshot_date}"
            connection.execute("BEGIN TRANSACTION")
            try:
                ok, details = verify_parquet_copy(connection, entity, snapshot_date, root)
                if ok:
                    (deleted,) = connection.execute(
                        f"DELETE FROM {raw_table(entity)} WHERE snapshot_date = ?::DATE", [snapshot_date]
                    ).fetchone()
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            if ok:
                report.pruned.append(name)
                report.rows_deleted += deleted
            else:
                report.kept[name] = details
                if not details.startswith("no Parquet copy"):
                    report.differing.append(name)
    return report


class RetentionConfig(dg.Config):
    retention_days: int = 30
    # The day the retention counts back from, YYYY-MM-DD; the current UTC date when unset.
    today: Optional[str] = None


@dg.asset(
    key=[LAKE, "raw_retention"],
    group_name=LAKE,
    deps=[raw_snapshot_parquet],
    pool=DUCKDB_POOL,
    kinds={"duckdb"},
    description="Deletes from DuckDB the raw partitions older than the retention whose Parquet copy is verified.",
)
def raw_retention(
    context: dg.AssetExecutionContext, config: RetentionConfig, warehouse: WarehouseResource, lake: LakeResource
) -> dg.MaterializeResult:
    today = dt.date.fromisoformat(config.today) if config.today else dt.datetime.now(dt.timezone.utc).date()
    cutoff = today - dt.timedelta(days=config.retention_days)
    with warehouse.get_connection() as connection:
        report = prune_raw_partitions(connection, lake.root, cutoff)
    metadata = {
        "cutoff": cutoff.isoformat(),
        "partitions_pruned": len(report.pruned),
        "partitions_kept": len(report.kept),
        "rows_deleted": report.rows_deleted,
        "pruned": dg.MetadataValue.json(report.pruned),
        "kept": dg.MetadataValue.json(report.kept),
    }
    for name, reason in report.kept.items():
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
    description="Prunes verified raw partitions past the retention from DuckDB, daily after ingestion.",
)
