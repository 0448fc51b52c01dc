"""The DuckDB warehouse: where the file lives, its schemas and tables, and the writers' pool."""

import os
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

SCHEMAS = ("raw", "core", "quality", "ml", "monitoring")

REJECTED_RECORDS = "quality.rejected_records"


def raw_table(entity: str) -> str:
    return f"raw.{entity}"


def core_table(entity: str) -> str:
    return f"core.{entity}"


class WarehouseResource(DuckDBResource):
    """The project's DuckDB file (creates its folder on first use)."""

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        if self.database != ":memory:" and not self.database.startswith("md:"):
            Path(self.database).parent.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def get_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        # DuckDBResource closes its connection only when the block succeeds; after a failure
        # the open connection (held by the traceback) keeps the file locked for this process.
        with super().get_connection() as connection:
            try:
                yield connection
            finally:
                connection.close()


def warehouse_from_env() -> WarehouseResource:
    return WarehouseResource(database=os.getenv(DUCKDB_PATH_ENV, DEFAULT_DUCKDB_PATH))


def table_exists(connection: duckdb.DuckDBPyConnection, table: str) -> bool:
    """Whether a schema-qualified table (e.g. ml.user_recommendations) exists."""
    schema, name = table.split(".")
    return bool(
        connection.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
            [schema, name],
        ).fetchall()[0][0]
    )


def run_sql_file(
    connection: duckdb.DuckDBPyConnection,
    path: Path,
    variables: Optional[Mapping[str, Any]] = None,
) -> None:
    """Runs every statement of a .sql file, its inputs bound as DuckDB variables.

    A file reads an input with `getvariable('name')`; values are bound, never pasted
    into the SQL text.
    """
    for name, value in (variables or {}).items():
        connection.execute(f"SET VARIABLE {name} = ?", [value])
    connection.execute(path.read_text())
