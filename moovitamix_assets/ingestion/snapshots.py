"""Which daily snapshots are complete: the manifest that raw loads write and core reads.

A row of raw.snapshot_manifest is written in the same transaction as the day's rows of
raw.<entity>, and only for a pull that verified itself. A day is complete when every
endpoint has its row; core, history and retention work only from complete days.
"""

import datetime as dt
from pathlib import Path
from typing import Optional

import duckdb

from moovitamix_assets.contract import ENTITIES
from moovitamix_assets.resources.warehouse import run_sql_file, table_exists

SQL = Path(__file__).parent / "sql"

SNAPSHOT_MANIFEST = "raw.snapshot_manifest"


def create_snapshot_manifest(connection: duckdb.DuckDBPyConnection) -> None:
    run_sql_file(connection, SQL / "create_snapshot_manifest.sql")


def complete_snapshot_dates(connection: duckdb.DuckDBPyConnection) -> list[dt.date]:
    """Every day whose three endpoints were all loaded whole, oldest first."""
    if not table_exists(connection, SNAPSHOT_MANIFEST):
        return []
    rows = connection.execute(
        f"SELECT snapshot_date FROM {SNAPSHOT_MANIFEST} WHERE entity IN ? "
        "GROUP BY snapshot_date HAVING count(DISTINCT entity) = ? ORDER BY snapshot_date",
        [list(ENTITIES), len(ENTITIES)],
    ).fetchall()
    return [day for (day,) in rows]


def latest_complete_snapshot(
    connection: duckdb.DuckDBPyConnection, before: Optional[dt.date] = None
) -> Optional[dt.date]:
    """The newest complete day (strictly before `before` when given), or None."""
    days = [day for day in complete_snapshot_dates(connection) if before is None or day < before]
    return days[-1] if days else None


def loaded_entities(connection: duckdb.DuckDBPyConnection, snapshot_date: dt.date) -> list[str]:
    """The endpoints whose pull of that day was loaded whole."""
    if not table_exists(connection, SNAPSHOT_MANIFEST):
        return []
    rows = connection.execute(
        f"SELECT entity FROM {SNAPSHOT_MANIFEST} WHERE snapshot_date = ? ORDER BY entity", [snapshot_date]
    ).fetchall()
    return [entity for (entity,) in rows]
