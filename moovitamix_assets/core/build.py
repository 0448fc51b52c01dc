"""Building core from one complete snapshot day: typed into staging, audited, then published whole.

Write-audit-publish. `stage_core_tables` types the three endpoints of ONE day into
core_staging.* (rejected records set aside with their reasons); the checks run on staging;
`publish_core_tables` copies all three into core.* in one transaction, after checking
that the staged day passed every gate its staging recorded. Anything reading core.* sees
the previous day or the new one whole, never a day that failed an audit, never tables of
two different days.
"""

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Callable, Mapping, Optional

import dagster as dg
import duckdb

from moovitamix_assets.constants import CORE_STAGING
from moovitamix_assets.contract import ENTITIES
from moovitamix_assets.ingestion.snapshots import (
    SNAPSHOT_MANIFEST,
    complete_snapshot_dates,
    loaded_entities,
)
from moovitamix_assets.resources.warehouse import raw_table, run_sql_file, table_exists, transaction

SQL = Path(__file__).parent / "sql"

STAGING_SCHEMA = CORE_STAGING
# Scratch of one endpoint's typing (type_*.sql) and dedup (dedupe.sql), dropped once staged:
# the typed records, the records a later version superseded, and the view of the decisions.
SCRATCH_TABLES = (f"{CORE_STAGING}.typed", f"{CORE_STAGING}.superseded")
SCRATCH_DEDUPED = f"{CORE_STAGING}.deduped"
SCRATCH_VIEWS = (SCRATCH_DEDUPED, f"{CORE_STAGING}.served")

# The kinds of reason a record is rejected for (macros.sql and dedupe.sql give them).
REASON_KINDS = (
    "missing_field", "null_field", "invalid_type", "invalid_id",
    "unparseable_timestamp", "invalid_duration", "duplicate_id",
)  # fmt: skip


def staging_table(entity: str) -> str:
    return f"{STAGING_SCHEMA}.{entity}"


@dataclasses.dataclass
class CoreBuild:
    """What staging one core table did with the snapshot it read.

    served = accepted + rejected, always: a record is kept or rejected with its reasons.
    rows is the staged table's row count (for listen_history, one row per listen).
    """

    snapshot_date: str
    served: int
    accepted: int
    rejected: int
    rows: int
    rejected_by_reason: dict[str, int]

    def rejects_by_kind(self) -> dict[str, int]:
        """Rejected records per kind of reason (null_field, duplicate_id, ...), fields summed."""
        counts = dict.fromkeys(REASON_KINDS, 0)
        for reason, count in self.rejected_by_reason.items():
            kind = reason.split(":", 1)[0]
            counts[kind] = counts.get(kind, 0) + count
        return counts


@dataclasses.dataclass(frozen=True)
class SnapshotChoice:
    """The day core is built from, and the newest day anything was pulled for."""

    staged: dt.date  # the newest complete day
    newest_pulled: dt.date
    missing: tuple[str, ...]  # endpoints the newest pulled day lacks (empty when it is the staged day)

    @property
    def complete(self) -> bool:
        return self.staged == self.newest_pulled


def choose_snapshot(connection: duckdb.DuckDBPyConnection) -> SnapshotChoice:
    """The newest complete day; and whether a newer day was pulled only in part (core then stays put)."""
    complete = complete_snapshot_dates(connection)
    if not complete:
        raise dg.Failure(
            "no complete raw snapshot yet (a day with all of users, tracks and listen_history loaded): "
            "materialize the raw assets for a day first (make ingest, or the daily_ingestion job)."
        )
    (newest,) = connection.execute(f"SELECT max(snapshot_date) FROM {SNAPSHOT_MANIFEST}").fetchall()[0]
    missing = tuple(sorted(set(ENTITIES) - set(loaded_entities(connection, newest))))
    return SnapshotChoice(staged=complete[-1], newest_pulled=newest, missing=missing)


def stage_core_tables(
    connection: duckdb.DuckDBPyConnection,
    snapshot_date: dt.date,
    run_id: str,
    sources: Optional[Mapping[str, str]] = None,
) -> dict[str, CoreBuild]:
    """Types one day of every endpoint into core_staging.*, its rejected records into quality.

    sources: {entity: relation} with columns (snapshot_date, page, position_in_page,
    record); raw.<entity> by default (the history backfill passes views of the lake).

    One transaction per endpoint, not one for all three: DuckDB keeps a transaction's new
    tables in memory until it commits, and a day of listens does not fit in the memory
    limit. A failure between two endpoints leaves staging holding two days, which
    publish refuses (staged_snapshot_date); the next staging replaces them.
    """
    builds = {}
    run_sql_file(connection, SQL / "macros.sql")
    for entity in ENTITIES:
        variables = {"snapshot_date": snapshot_date, "entity": entity, "run_id": run_id}
        source = (sources or {}).get(entity, raw_table(entity))
        run_sql_file(connection, SQL / "served_records.sql", variables, source=source)
        run_sql_file(connection, SQL / f"type_{entity}.sql", variables)
        with transaction(connection):
            run_sql_file(connection, SQL / "dedupe.sql", variables)
        run_sql_file(connection, SQL / f"stage_{entity}.sql", variables)
        builds[entity] = _summarise(connection, entity, snapshot_date)
    for view in SCRATCH_VIEWS:
        connection.execute(f"DROP VIEW IF EXISTS {view}")
    for scratch in SCRATCH_TABLES:
        connection.execute(f"DROP TABLE IF EXISTS {scratch}")
    return builds


def _summarise(connection: duckdb.DuckDBPyConnection, entity: str, snapshot_date: dt.date) -> CoreBuild:
    (served, accepted) = connection.execute(
        f"SELECT count(*), count(*) FILTER (WHERE final_reason IS NULL) FROM {SCRATCH_DEDUPED}"
    ).fetchall()[0]
    (rows,) = connection.execute(f"SELECT count(*) FROM {staging_table(entity)}").fetchall()[0]
    # A record may carry several reasons: each reason code counts the records that carry it.
    rejected_by_reason = dict(
        connection.execute(
            f"""
            SELECT reason, count(*)
            FROM {SCRATCH_DEDUPED}, unnest(string_split(final_reason, '; ')) AS r(reason)
            GROUP BY reason
            ORDER BY reason
            """
        ).fetchall()
    )
    return CoreBuild(snapshot_date.isoformat(), served, accepted, served - accepted, rows, rejected_by_reason)


def staged_snapshot_date(connection: duckdb.DuckDBPyConnection) -> Optional[dt.date]:
    """The day core_staging holds (the same for its three tables, staged together), or None."""
    if not table_exists(connection, staging_table(ENTITIES[0])):
        return None
    dates = {
        day
        for entity in ENTITIES
        if table_exists(connection, staging_table(entity))
        for (day,) in connection.execute(f"SELECT DISTINCT snapshot_date FROM {staging_table(entity)}").fetchall()
    }
    if len(dates) > 1:
        raise dg.Failure(f"{STAGING_SCHEMA} holds more than one day ({sorted(dates)}): stage core again.")
    if dates:
        return dates.pop()
    # An empty day (all three endpoints served nothing): the manifest knows which day it was.
    (day,) = connection.execute(f"SELECT max(snapshot_date) FROM {SNAPSHOT_MANIFEST}").fetchall()[0]
    return day


def publish_core_tables(
    connection: duckdb.DuckDBPyConnection,
    gate_failures: Callable[[duckdb.DuckDBPyConnection, dt.date], list[str]],
    within_transaction: Optional[Callable[[duckdb.DuckDBPyConnection, dt.date], None]] = None,
) -> dict[str, int]:
    """Copies core_staging.* into core.* in one transaction, refusing when a blocking audit fails.

    gate_failures(connection, day) returns what keeps the staged day from being published
    (empty when it may be): read here, so that no way of launching this step can publish a
    day that failed. within_transaction(connection, day) runs inside the same transaction
    (the history update), so core and its history move together.
    """
    day = staged_snapshot_date(connection)
    if day is None:
        raise dg.Failure(f"nothing staged in {STAGING_SCHEMA}: materialize the core staging assets first.")
    failures = gate_failures(connection, day)
    if failures:
        raise dg.Failure(
            f"the staged snapshot {day} failed its blocking audits, core stays as it was: " + " | ".join(failures)
        )
    rows = {}
    with transaction(connection):
        for entity in ENTITIES:
            run_sql_file(connection, SQL / f"publish_{entity}.sql")
            (rows[entity],) = connection.execute(f"SELECT count(*) FROM core.{entity}").fetchall()[0]
        if within_transaction is not None:
            within_transaction(connection, day)
    return rows
