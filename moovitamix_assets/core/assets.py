"""Core tables: the latest snapshot of each endpoint, typed, deduplicated and validated."""

import time
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb

from moovitamix_assets.constants import CORE, RAW
from moovitamix_assets.contract import LISTEN_HISTORY, TRACKS, USERS
from moovitamix_assets.monitoring.metrics import recorded_result
from moovitamix_assets.resources.warehouse import (
    DUCKDB_POOL,
    WarehouseResource,
    core_table,
    raw_table,
    run_sql_file,
    table_exists,
)

SQL = Path(__file__).parent / "sql"

# The kinds of reason a record is rejected for (macros.sql and dedupe.sql give them).
REASON_KINDS = (
    "missing_field", "null_field", "invalid_type", "invalid_id",
    "unparseable_timestamp", "invalid_duration", "duplicate_id",
)  # fmt: skip

# eager() also waits until no upstream partition is missing; a history of daily snapshots
# always misses some days, so that clause is dropped: any new raw snapshot rebuilds core.
CORE_AUTOMATION = dg.AutomationCondition.eager().without(~dg.AutomationCondition.any_deps_missing())


@dataclass
class CoreBuild:
    """What one rebuild of a core table did with the snapshot it read.

    served = accepted + rejected, always: a record is kept or rejected with its reasons.
    rows is the core table's row count (for listen_history, one row per listen).
    """

    snapshot_date: str
    served: int
    accepted: int
    rejected: int
    rows: int
    rejected_by_reason: dict[str, int]


def latest_snapshot_date(connection: duckdb.DuckDBPyConnection, entity: str) -> str:
    latest = None
    if table_exists(connection, raw_table(entity)):
        (latest,) = connection.execute(f"SELECT max(snapshot_date) FROM {raw_table(entity)}").fetchall()[0]
    if latest is None:
        raise dg.Failure(f"{raw_table(entity)} holds no snapshot yet: materialize a raw partition first.")
    return latest.isoformat()


def build_core_table(
    connection: duckdb.DuckDBPyConnection, entity: str, run_id: str
) -> CoreBuild:
    """Rebuilds core.<entity> from the latest raw snapshot, rejected records set aside, in one transaction."""
    snapshot_date = latest_snapshot_date(connection, entity)
    variables = {"snapshot_date": snapshot_date, "entity": entity, "run_id": run_id}
    connection.execute("BEGIN TRANSACTION")
    try:
        run_sql_file(connection, SQL / "macros.sql")
        run_sql_file(connection, SQL / f"type_{entity}.sql", variables)
        run_sql_file(connection, SQL / "dedupe.sql", variables)
        run_sql_file(connection, SQL / f"publish_{entity}.sql", variables)
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    (served, accepted) = connection.execute(
        "SELECT count(*), count(*) FILTER (WHERE final_reason IS NULL) FROM staged"
    ).fetchone()
    (rows,) = connection.execute(f"SELECT count(*) FROM {core_table(entity)}").fetchone()
    # A record may carry several reasons: each reason code counts the records that carry it.
    rejected_by_reason = dict(
        connection.execute(
            """
            SELECT reason, count(*)
            FROM staged, unnest(string_split(final_reason, '; ')) AS r(reason)
            GROUP BY reason
            ORDER BY reason
            """
        ).fetchall()
    )
    return CoreBuild(snapshot_date, served, accepted, served - accepted, rows, rejected_by_reason)


def rejects_by_kind(build: CoreBuild) -> dict[str, int]:
    """Rejected records per kind of reason (null_field, duplicate_id, ...), fields summed."""
    counts = dict.fromkeys(REASON_KINDS, 0)
    for reason, count in build.rejected_by_reason.items():
        kind = reason.split(":", 1)[0]
        counts[kind] = counts.get(kind, 0) + count
    return counts


def build_core_asset(entity: str, description: str) -> dg.AssetsDefinition:
    @dg.asset(
        key=[CORE, entity],
        group_name=CORE,
        deps=[dg.AssetKey([RAW, entity])],
        pool=DUCKDB_POOL,
        kinds={"duckdb"},
        automation_condition=CORE_AUTOMATION,
        description=description,
    )
    def core_asset(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
        started = time.monotonic()
        with warehouse.get_connection() as connection:
            build = build_core_table(connection, entity, context.run.run_id)
            columns = connection.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = 'core' AND table_name = ? ORDER BY ordinal_position",
                [entity],
            ).fetchall()
        seconds = time.monotonic() - started
        if build.rejected:
            context.log.warning(
                f"{build.rejected} of {build.served} {entity} records of {build.snapshot_date} "
                f"rejected: {build.rejected_by_reason}; see quality.rejected_records."
            )
        return recorded_result(
            context,
            warehouse,
            {
                "dagster/row_count": build.rows,
                "dagster/table_name": core_table(entity),
                "dagster/column_schema": dg.TableSchema(
                    columns=[dg.TableColumn(name, str(data_type)) for name, data_type in columns]
                ),
                "snapshot_date": build.snapshot_date,
                "rows": build.rows,
                "records_served": build.served,
                "records_accepted": build.accepted,
                "records_rejected": build.rejected,
                "duplicates_reduced": build.rejected_by_reason.get("duplicate_id", 0),
                "rejects_by_reason": dg.MetadataValue.json(build.rejected_by_reason),
                "seconds": round(seconds, 3),
                "rows_per_second": round(build.rows / seconds, 1) if seconds else 0.0,
                # One number per kind of reason, zero included, so the UI plots each over time.
                **{f"rejected_{kind}": count for kind, count in rejects_by_kind(build).items()},
            },
        )

    return core_asset


core_assets = [
    build_core_asset(
        USERS, "Users of the latest snapshot, typed: one row per user_id."
    ),
    build_core_asset(
        TRACKS, "Tracks of the latest snapshot, typed, duration also in seconds: one row per track_id."
    ),
    build_core_asset(
        LISTEN_HISTORY,
        "Listens of the latest snapshot, one row per listen: (user_id, position) with position 1 the oldest.",
    ),
]
