"""Run figures kept in DuckDB: each asset's numbers and each check's outcome, queryable across days.

The same numbers are returned as Dagster metadata, so the UI plots them per asset; the
`monitoring` tables hold them for SQL across days and for the pipeline health report.
"""

import json
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

import dagster as dg
import duckdb

from moovitamix_assets.resources.warehouse import WarehouseResource, run_sql_file, utc_now

SQL = Path(__file__).parent / "sql"

ASSET_METRICS = "monitoring.asset_metrics"
CHECK_RESULTS = "monitoring.check_results"


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, dg.MetadataValue) else value


def numeric_metrics(metadata: Mapping[str, Any]) -> dict[str, float]:
    """The metadata entries that are numbers (booleans excluded), under names without `dagster/`."""
    figures = {}
    for name, value in metadata.items():
        value = _plain(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            figures[name.removeprefix("dagster/")] = float(value)
    return figures


def record_asset_metrics(
    connection: duckdb.DuckDBPyConnection,
    run_id: str,
    asset: str,
    partition: Optional[str],
    metadata: Mapping[str, Any],
) -> None:
    run_sql_file(connection, SQL / "create_monitoring_tables.sql")
    rows = [(utc_now(), run_id, asset, partition, name, value) for name, value in numeric_metrics(metadata).items()]
    if rows:
        connection.executemany(f"INSERT INTO {ASSET_METRICS} VALUES (?, ?, ?, ?, ?, ?)", rows)


def recorded_result(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, metadata: dict
) -> dg.MaterializeResult:
    """The asset's MaterializeResult, its numbers first written to monitoring.asset_metrics."""
    partition = context.partition_key if context.has_partition_key else None
    with warehouse.get_connection() as connection:
        record_asset_metrics(
            connection, context.run.run_id, context.asset_key.to_user_string(), partition, metadata
        )
    return dg.MaterializeResult(metadata=metadata)


def record_check_results(
    connection: duckdb.DuckDBPyConnection, run_id: str, results: Iterable[dg.AssetCheckResult]
) -> list[dg.AssetCheckResult]:
    """Writes each check result to monitoring.check_results and hands the results back."""
    results = list(results)
    run_sql_file(connection, SQL / "create_monitoring_tables.sql")
    rows = []
    for result in results:
        metadata = {name: _plain(value) for name, value in (result.metadata or {}).items()}
        count, rate = metadata.get("count"), metadata.get("rate")
        rows.append((
            utc_now(), run_id, result.asset_key.to_user_string(), result.check_name, result.passed,
            result.severity.value, count if isinstance(count, int) else None,
            float(rate) if isinstance(rate, (int, float)) else None,
            json.dumps(metadata, default=str),
        ))  # fmt: skip
    if rows:
        connection.executemany(f"INSERT INTO {CHECK_RESULTS} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    return results
