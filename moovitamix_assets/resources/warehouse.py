"""The DuckDB warehouse: where the file lives, its schemas and tables, and the writers' pool."""

import datetime as dt
import logging
import os
import random
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

import dagster as dg
import duckdb
from dagster_duckdb import DuckDBResource

# DuckDB takes one writer process per file: every asset and check that opens the file
# declares this pool, and dagster.yaml limits the pool to one step at a time.
DUCKDB_POOL = "duckdb"

DUCKDB_PATH_ENV = "MOOVITAMIX_DUCKDB_PATH"
DEFAULT_DUCKDB_PATH = "data/moovitamix.duckdb"

SCHEMAS = ("raw", "core_staging", "core", "quality", "ml", "monitoring")

REJECTED_RECORDS = "quality.rejected_records"


def raw_table(entity: str) -> str:
    return f"raw.{entity}"


def core_table(entity: str) -> str:
    return f"core.{entity}"


class WarehouseResource(DuckDBResource):
    """The project's DuckDB file (creates its folder on first use).

    A second process that finds the file locked (a run outside the shared Dagster instance,
    whose `duckdb` pool would have queued it) waits for the lock up to `lock_wait_seconds`,
    instead of dagster-duckdb's ten quick retries (about 100 s) that a long pull outlasts.
    """

    lock_wait_seconds: float = 1800.0
    memory_limit: Optional[str] = None  # e.g. "512MB": DuckDB spills to disk past it

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        if self.database != ":memory:" and not self.database.startswith("md:"):
            Path(self.database).parent.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def get_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        connection = self._connect_waiting_for_the_lock()
        # Closed however the block ends: a connection left to the garbage collector (held by
        # a traceback) would keep the file locked for this process.
        try:
            yield connection
        finally:
            connection.close()

    def _connect_waiting_for_the_lock(self) -> duckdb.DuckDBPyConnection:
        # memory_limit, when set, makes DuckDB spill to disk instead of growing.
        config = {"custom_user_agent": "dagster", **self.connection_config}
        if self.memory_limit:
            config.setdefault("memory_limit", self.memory_limit)
        deadline = time.monotonic() + self.lock_wait_seconds
        delay = 0.1
        while True:
            try:
                return in_utc(duckdb.connect(self.database, read_only=False, config=config))
            except duckdb.IOException as error:
                if "lock" not in str(error).lower() or time.monotonic() >= deadline:
                    raise
                logging.getLogger(__name__).info(f"waiting for the DuckDB file lock: {error}")
                time.sleep(min(delay, 5.0) * random.uniform(0.5, 1.0))
                delay *= 2


DUCKDB_MEMORY_LIMIT_ENV = "MOOVITAMIX_DUCKDB_MEMORY_LIMIT"
DEFAULT_DUCKDB_MEMORY_LIMIT = "512MB"


def warehouse_from_env() -> WarehouseResource:
    return WarehouseResource(
        database=os.getenv(DUCKDB_PATH_ENV, DEFAULT_DUCKDB_PATH),
        memory_limit=os.getenv(DUCKDB_MEMORY_LIMIT_ENV, DEFAULT_DUCKDB_MEMORY_LIMIT),
    )


def in_utc(connection: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """The connection with its TimeZone set to UTC: now(), casts to and from TIMESTAMPTZ
    never depend on the machine's zone. (A config key at connect time would need ICU
    autoloading, which cannot download here; ICU is built in and SET works.)"""
    connection.execute("SET TimeZone = 'UTC'")
    return connection


def table_exists(connection: duckdb.DuckDBPyConnection, table: str) -> bool:
    """Whether a schema-qualified table (e.g. ml.user_recommendations) exists."""
    schema, name = table.split(".")
    return bool(
        connection.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
            [schema, name],
        ).fetchall()[0][0]
    )


def utc_now() -> dt.datetime:
    """Now in UTC, naive, as TIMESTAMP columns hold it."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def utc_today() -> dt.date:
    """Today's date in UTC, whatever the machine's time zone."""
    return dt.datetime.now(dt.timezone.utc).date()


@contextmanager
def transaction(connection: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """BEGIN ... COMMIT, or ROLLBACK when the block raises (anything, a KeyboardInterrupt too):
    the block's writes land whole or not at all."""
    connection.execute("BEGIN TRANSACTION")
    try:
        yield connection
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def set_variables(connection: duckdb.DuckDBPyConnection, variables: Mapping[str, Any]) -> None:
    """Binds values as DuckDB variables, read in SQL with `getvariable('name')`: bound, never
    pasted into SQL text."""
    for name, value in variables.items():
        connection.execute(f"SET VARIABLE {name} = ?", [value])


def run_sql_file(
    connection: duckdb.DuckDBPyConnection,
    path: Path,
    variables: Optional[Mapping[str, Any]] = None,
    **identifiers: str,
) -> None:
    """Runs every statement of a .sql file, its inputs bound as DuckDB variables.

    A file reads an input with `getvariable('name')`; values are bound, never pasted
    into the SQL text. Only `identifiers` (table names from this code, never input) are
    put into the text, where the file writes `{name}`.
    """
    set_variables(connection, variables or {})
    text = path.read_text()
    connection.execute(text.format(**identifiers) if identifiers else text)
