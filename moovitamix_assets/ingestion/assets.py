"""Raw snapshots: each day's full pull of every endpoint, stored as received."""

import datetime as dt
import json
import re
import time
from dataclasses import dataclass
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
from moovitamix_assets.resources.warehouse import (
    DUCKDB_POOL,
    WarehouseResource,
    raw_table,
    set_variables,
    utc_now,
)

SQL = Path(__file__).parent / "sql"

# Records held in memory before they are written: memory stays bounded at any scale.
BATCH_RECORDS = 20_000


class SnapshotPolicy(dg.ConfigurableResource):
    """Which daily partitions a pull may be stored under.

    The API has no as-of parameter: it serves the current snapshot only. Stored under a
    date long past (a backfill), it would pass today's data off as that day's, so only
    today's and recent partitions are accepted, unless the API is an emulator pinned to a
    date (`allow_any_date`).
    """

    max_partition_age_days: int = 1  # today's, and yesterday's for a late or retried run
    allow_any_date: bool = False


def check_partition_date(partition_key: str, policy: SnapshotPolicy, today: dt.date) -> None:
    age = (today - dt.date.fromisoformat(partition_key)).days
    if policy.allow_any_date or 0 <= age <= policy.max_partition_age_days:
        return
    raise dg.Failure(
        f"partition {partition_key} is {age} days from today ({today}); the API serves only the "
        f"current snapshot, so a pull can be stored under today's partition or up to "
        f"{policy.max_partition_age_days} day(s) before it. A backfill of past days is not possible "
        "upstream; against an emulator pinned to a date, set MOOVITAMIX_ALLOW_ANY_SNAPSHOT_DATE=1."
    )


# Lone UTF-16 surrogates: valid in JSON ("\ud83c", half an emoji) but not in UTF-8, so DuckDB
# would refuse the whole batch. Python's json pairs the halves that match; what is left alone
# is replaced with U+FFFD and counted.
LONE_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass
class PageBatch:
    table: pa.Table  # (page, items_json): one row per page
    replaced_characters: int


def page_batches(pages: Iterable[Page], max_records: int = BATCH_RECORDS) -> Iterator[PageBatch]:
    """Groups pages into Arrow tables of (page, items_json), at most about max_records each."""
    numbers: list[int] = []
    items_json: list[str] = []
    records = replaced = 0
    for page in pages:
        if not page.items:
            continue
        text, count = LONE_SURROGATE.subn("\ufffd", json.dumps(page.items, ensure_ascii=False))
        numbers.append(page.number)
        items_json.append(text)
        records += len(page.items)
        replaced += count
        if records >= max_records:
            yield PageBatch(pa.table({"page": numbers, "items_json": items_json}), replaced)
            numbers, items_json, records, replaced = [], [], 0, 0
    if numbers:
        yield PageBatch(pa.table({"page": numbers, "items_json": items_json}), replaced)


@dataclass
class SnapshotWrite:
    rows: int
    replaced_characters: int


def replace_snapshot(
    connection: duckdb.DuckDBPyConnection,
    entity: str,
    snapshot_date: str,
    run_id: str,
    pages: Iterable[Page],
) -> SnapshotWrite:
    """Writes one day's pull of an endpoint in one transaction, replacing that day's rows.

    A failure at any point (the API, the process, the disk) rolls back: the day keeps
    either its previous complete snapshot or none, never a part of one.
    """
    table = raw_table(entity)
    connection.execute((SQL / "create_raw_table.sql").read_text().format(table=table))
    insert_sql = (SQL / "insert_raw_batch.sql").read_text().format(table=table)
    set_variables(
        connection,
        {"snapshot_date": dt.date.fromisoformat(snapshot_date), "run_id": run_id, "ingested_at": utc_now()},
    )
    connection.execute("BEGIN TRANSACTION")
    try:
        connection.execute(
            f"DELETE FROM {table} WHERE snapshot_date = getvariable('snapshot_date')"
        )
        replaced = 0
        for batch in page_batches(pages):
            connection.register("raw_batch", batch.table)
            connection.execute(insert_sql)
            connection.unregister("raw_batch")
            replaced += batch.replaced_characters
        (rows,) = connection.execute(
            f"SELECT count(*) FROM {table} WHERE snapshot_date = getvariable('snapshot_date')"
        ).fetchone()
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    return SnapshotWrite(rows, replaced)


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
        snapshot_policy: SnapshotPolicy,
    ) -> dg.MaterializeResult:
        check_partition_date(context.partition_key, snapshot_policy, dt.datetime.now(dt.timezone.utc).date())
        started = time.monotonic()
        fetch = api.fetch_all_pages(entity)
        total_reported = 0

        def pages() -> Iterator[Page]:
            nonlocal total_reported
            for page in fetch:
                total_reported = page.total
                yield page

        with warehouse.get_connection() as connection:
            written = replace_snapshot(connection, entity, context.partition_key, context.run.run_id, pages())
        rows = written.rows
        if written.replaced_characters:
            context.log.warning(
                f"/{entity}: {written.replaced_characters} lone UTF-16 surrogate(s) replaced with U+FFFD"
            )
        seconds = time.monotonic() - started
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
                "total_reported_by_api": total_reported,
                "replaced_characters": written.replaced_characters,
                **fetch.stats.as_metadata(),
                # The pull and the write together, rather than the client's own figures.
                "records": rows,
                "seconds": round(seconds, 3),
                "records_per_second": round(rows / seconds, 1) if seconds else 0.0,
            },
        )

    return raw_snapshot


raw_snapshot_assets = [build_raw_snapshot_asset(entity) for entity in ENTITIES]
