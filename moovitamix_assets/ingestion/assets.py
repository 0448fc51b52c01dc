"""Raw snapshots: each day's full pull of every endpoint, stored as received."""

import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator

import dagster as dg
import duckdb
import pyarrow as pa

from moovitamix_assets.constants import RAW
from moovitamix_assets.contract import ENTITIES
from moovitamix_assets.ingestion.partitions import daily_snapshots
from moovitamix_assets.monitoring.metrics import recorded_result
from moovitamix_assets.resources.api import MoovitamixApiResource, Page
from moovitamix_assets.resources.warehouse import DUCKDB_POOL, WarehouseResource, raw_table

SQL = Path(__file__).parent / "sql"

# Records held in memory before they are written: memory stays bounded at any scale.
BATCH_RECORDS = 20_000


def page_batches(pages: Iterable[Page], max_records: int = BATCH_RECORDS) -> Iterator[pa.Table]:
    """Groups pages into Arrow tables of (page, items_json), at most about max_records each."""
    numbers: list[int] = []
    items_json: list[str] = []
    records = 0
    for page in pages:
        if not page.items:
            continue
        numbers.append(page.number)
        items_json.append(json.dumps(page.items))
        records += len(page.items)
        if records >= max_records:
            yield pa.table({"page": numbers, "items_json": items_json})
            numbers, items_json, records = [], [], 0
    if numbers:
        yield pa.table({"page": numbers, "items_json": items_json})


def replace_snapshot(
    connection: duckdb.DuckDBPyConnection,
    entity: str,
    snapshot_date: str,
    run_id: str,
    pages: Iterable[Page],
) -> int:
    """Writes one day's pull of an endpoint in one transaction, replacing that day's rows.

    A failure at any point (the API, the process, the disk) rolls back: the day keeps
    either its previous complete snapshot or none, never a part of one.
    """
    table = raw_table(entity)
    connection.execute((SQL / "create_raw_table.sql").read_text().format(table=table))
    insert_sql = (SQL / "insert_raw_batch.sql").read_text().format(table=table)
    connection.execute("SET VARIABLE snapshot_date = ?::DATE", [snapshot_date])
    connection.execute("SET VARIABLE run_id = ?", [run_id])
    connection.execute(
        "SET VARIABLE ingested_at = ?::TIMESTAMP",
        [datetime.now(timezone.utc).replace(tzinfo=None)],
    )
    connection.execute("BEGIN TRANSACTION")
    try:
        connection.execute(
            f"DELETE FROM {table} WHERE snapshot_date = getvariable('snapshot_date')"
        )
        for raw_batch in page_batches(pages):
            connection.register("raw_batch", raw_batch)
            connection.execute(insert_sql)
            connection.unregister("raw_batch")
        (rows,) = connection.execute(
            f"SELECT count(*) FROM {table} WHERE snapshot_date = getvariable('snapshot_date')"
        ).fetchone()
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    return rows


def build_raw_snapshot_asset(entity: str) -> dg.AssetsDefinition:
    @dg.asset(
        key=[RAW, entity],
        group_name=RAW,
        partitions_def=daily_snapshots,
        pool=DUCKDB_POOL,
        kinds={"duckdb"},
        description=f"The day's full pull of GET /{entity}, every record and field as received.",
    )
    def raw_snapshot(
        context: dg.AssetExecutionContext,
        api: MoovitamixApiResource,
        warehouse: WarehouseResource,
    ) -> dg.MaterializeResult:
        started = time.monotonic()
        fetch = api.fetch_all_pages(entity)
        total_reported = 0

        def pages() -> Iterator[Page]:
            nonlocal total_reported
            for page in fetch:
                total_reported = page.total
                yield page

        with warehouse.get_connection() as connection:
            rows = replace_snapshot(connection, entity, context.partition_key, context.run.run_id, pages())
        seconds = time.monotonic() - started
        stats = fetch.stats
        if rows != total_reported:
            context.log.warning(
                f"/{entity}: the API reported {total_reported} records and served {rows}; "
                "records can move between pages while a pull runs."
            )
        return recorded_result(
            context,
            warehouse,
            {
                "dagster/row_count": rows,
                "dagster/table_name": raw_table(entity),
                "snapshot_date": context.partition_key,
                "records": rows,
                "total_reported_by_api": total_reported,
                "pages": stats.pages,
                "requests": stats.requests,
                "retries": stats.retries,
                "bytes": stats.bytes,
                "seconds": round(seconds, 3),
                "records_per_second": round(rows / seconds, 1) if seconds else 0.0,
            },
        )

    return raw_snapshot


raw_snapshot_assets = [build_raw_snapshot_asset(entity) for entity in ENTITIES]
