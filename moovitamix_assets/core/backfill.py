"""rebuild_history: the history tables rebuilt from scratch from every kept raw snapshot, in date order.

Each complete day (raw.snapshot_manifest) is typed into core_staging by the same code as
the daily run (`stage_core_tables`), read from raw.<entity> while DuckDB still holds it
whole and from its Parquet copy in the lake once retention pruned it, then applied by the
same `apply_history_to`. The new history is built aside, in its own schema, and replaces
the published one in one transaction at the end: readers see the old history or the new
one, and a rebuild that fails leaves the old one as it was. The result is exactly what the
daily runs built from the same days (tested row by row).
"""

import dataclasses
import datetime as dt
import time
from pathlib import Path
from typing import Mapping, Optional, Sequence

import dagster as dg
import duckdb

from moovitamix_assets.constants import CORE
from moovitamix_assets.contract import ENTITIES, USERS
from moovitamix_assets.core.build import stage_core_tables, staged_snapshot_date
from moovitamix_assets.core.history import (
    HistoryStats,
    apply_history_to,
    audit_history,
    create_history_tables,
    failed_audits,
)
from moovitamix_assets.core.history_checks import HISTORY_ASSET_KEYS, check_result
from moovitamix_assets.ingestion.snapshots import SNAPSHOT_MANIFEST, complete_snapshot_dates
from moovitamix_assets.monitoring.lake import LakeResource, partition_path, sql_literal
from moovitamix_assets.monitoring.metrics import record_check_results
from moovitamix_assets.resources.warehouse import (
    DUCKDB_POOL,
    WarehouseResource,
    raw_table,
    run_sql_file,
    table_exists,
    transaction,
)

SQL = Path(__file__).parent / "sql"

# Where the new history is built before it replaces the published one.
REBUILD_SCHEMA = "history_rebuild"


class RebuildError(RuntimeError):
    """A day the rebuild needs cannot be read whole, from DuckDB or from the lake."""


@dataclasses.dataclass
class RebuildReport:
    days: list[dt.date]
    read_from_lake: dict[str, list[str]]  # day -> the endpoints read from their Parquet copy
    stats: list[HistoryStats]
    seconds: float


def served_day(connection: duckdb.DuckDBPyConnection) -> Optional[dt.date]:
    """The day core serves (core.users' snapshot), or None before the first publish."""
    if not table_exists(connection, f"{CORE}.{USERS}"):
        return None
    return connection.execute(f"SELECT max(snapshot_date) FROM {CORE}.{USERS}").fetchall()[0][0]


def snapshot_sources(connection: duckdb.DuckDBPyConnection, day: dt.date, lake_root: str) -> dict[str, str]:
    """{entity: relation} for the endpoints of a day no longer whole in DuckDB: views of their Parquet copies.

    Whole means the rows the manifest says were loaded; a copy is used only when it holds
    exactly that many rows too.
    """
    expected = dict(
        connection.execute(
            f"SELECT entity, records FROM {SNAPSHOT_MANIFEST} WHERE snapshot_date = ?", [day]
        ).fetchall()
    )
    sources = {}
    for entity in ENTITIES:
        in_duckdb = 0
        if table_exists(connection, raw_table(entity)):
            (in_duckdb,) = connection.execute(
                f"SELECT count(*) FROM {raw_table(entity)} WHERE snapshot_date = ?", [day]
            ).fetchall()[0]
        if in_duckdb == expected[entity]:
            continue
        path = partition_path(lake_root, entity, day.isoformat())
        if in_duckdb or not path.exists():
            raise RebuildError(
                f"{entity} of {day}: the manifest says {expected[entity]} records were loaded, DuckDB holds "
                f"{in_duckdb} and the lake has no copy at {path}: the day cannot be rebuilt."
            )
        view = f"history_rebuild_{entity}"
        run_sql_file(connection, SQL / "history_lake_source.sql", view=view, parquet_file=sql_literal(str(path)))
        (in_lake,) = connection.execute(f"SELECT count(*) FROM {view}").fetchall()[0]
        if in_lake != expected[entity]:
            raise RebuildError(
                f"{entity} of {day}: the manifest says {expected[entity]} records were loaded, its copy at {path} "
                f"holds {in_lake}: the day cannot be rebuilt."
            )
        sources[entity] = view
    return sources


def rebuild_history_from_snapshots(
    connection: duckdb.DuckDBPyConnection,
    lake_root: str,
    run_id: str,
    through: Optional[dt.date] = None,
    exclude: Sequence[dt.date] = (),
) -> RebuildReport:
    """Rebuilds the history tables from every complete day up to `through`, oldest first.

    through defaults to the day core serves, so that the history ends where core is; a
    complete day the daily runs refused to publish (a failed gate) is taken in unless it is
    in `exclude`. core_staging is left holding the day it held before.
    """
    started = time.monotonic()
    through = through or served_day(connection)
    days = [
        day for day in complete_snapshot_dates(connection) if (through is None or day <= through) and day not in exclude
    ]
    if not days:
        raise RebuildError(f"no complete snapshot{f' up to {through}' if through else ''} to rebuild the history from.")
    staged_before = staged_snapshot_date(connection)
    with transaction(connection):
        connection.execute(f"DROP SCHEMA IF EXISTS {REBUILD_SCHEMA} CASCADE")
        create_history_tables(connection, REBUILD_SCHEMA, REBUILD_SCHEMA)
    read_from_lake, stats = {}, []
    for day in days:
        sources = _stage(connection, day, lake_root, run_id)
        if sources:
            read_from_lake[day.isoformat()] = sorted(sources)
        with transaction(connection):
            stats.append(apply_history_to(connection, day, run_id, REBUILD_SCHEMA, REBUILD_SCHEMA))
    with transaction(connection):
        create_history_tables(connection)
        run_sql_file(connection, SQL / "history_swap.sql", rebuilt=REBUILD_SCHEMA)
    if staged_before is not None and staged_before != days[-1]:
        _stage(connection, staged_before, lake_root, run_id)
    return RebuildReport(days, read_from_lake, stats, time.monotonic() - started)


def _stage(connection: duckdb.DuckDBPyConnection, day: dt.date, lake_root: str, run_id: str) -> Mapping[str, str]:
    sources = snapshot_sources(connection, day, lake_root)
    stage_core_tables(connection, day, run_id, sources)
    return sources


class RebuildHistoryConfig(dg.Config):
    # The last day to take in, YYYY-MM-DD; by default the day core serves.
    through: Optional[str] = None
    # Complete days to leave out, YYYY-MM-DD (days the daily runs refused to publish).
    exclude_days: list[str] = []


@dg.op(pool=DUCKDB_POOL)
def rebuild_history_tables(
    context: dg.OpExecutionContext, config: RebuildHistoryConfig, warehouse: WarehouseResource, lake: LakeResource
) -> None:
    """Rebuilds core.users_history, core.tracks_history, core.listen_events and quality.history_rewrites
    from every kept snapshot, then records their materializations and audits."""
    through = dt.date.fromisoformat(config.through) if config.through else None
    exclude = [dt.date.fromisoformat(day) for day in config.exclude_days]
    with warehouse.get_connection() as connection:
        try:
            report = rebuild_history_from_snapshots(connection, lake.root, context.run.run_id, through, exclude)
        except RebuildError as error:
            raise dg.Failure(description=str(error)) from error
        rows = {
            table: connection.execute(f"SELECT count(*) FROM {key.path[0]}.{key.path[1]}").fetchall()[0][0]
            for table, key in HISTORY_ASSET_KEYS.items()
        }
        # Audited against core when the history ends on the day core serves (it does by default).
        findings = audit_history(connection, report.days[-1]) if served_day(connection) == report.days[-1] else []
        checks = record_check_results(connection, context.run.run_id, [check_result(f, report.days[-1]) for f in findings])
    summary = {
        "days": len(report.days),
        "first_day": report.days[0].isoformat(),
        "last_day": report.days[-1].isoformat(),
        "days_read_from_lake": len(report.read_from_lake),
        "read_from_lake": dg.MetadataValue.json(report.read_from_lake),
        "history_rewrites": sum(s.history_rewrites for s in report.stats),
        "seconds": round(report.seconds, 3),
    }
    context.log.info(f"history rebuilt from {len(report.days)} days, {report.days[0]} to {report.days[-1]}")
    for table, key in HISTORY_ASSET_KEYS.items():
        context.log_event(
            dg.AssetMaterialization(
                asset_key=key,
                description="Rebuilt by rebuild_history",
                metadata={"dagster/row_count": rows[table], "rows": rows[table], "rebuilt": True, **summary},
            )
        )
    # After the materializations: a check evaluation belongs to the latest materialization.
    for check in checks:
        context.log_event(
            dg.AssetCheckEvaluation(
                asset_key=check.asset_key,
                check_name=check.check_name,
                passed=check.passed,
                severity=check.severity,
                metadata=check.metadata,
            )
        )
    failed = failed_audits(findings)
    if failed:
        raise dg.Failure(description="the rebuilt history fails its audits: " + " | ".join(failed))


@dg.job(
    description="Rebuilds the history tables from every kept raw snapshot (DuckDB, then the Parquet lake), "
    "in date order, and swaps them in at once (config: through, exclude_days)."
)
def rebuild_history() -> None:
    rebuild_history_tables()
