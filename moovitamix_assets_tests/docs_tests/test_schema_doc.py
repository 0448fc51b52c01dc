"""docs/schema.md is what the generator writes for a freshly materialized warehouse."""

import shutil

import duckdb

from moovitamix_assets.resources.warehouse import SCHEMAS
from moovitamix_assets_tests.docs_tests.conftest import ROOT

SCHEMA_DOC = ROOT / "docs" / "schema.md"
REGENERATE = "docs/schema.md differs from the warehouse: run scripts/generate_schema_doc.py"


def test_schema_doc_matches_a_freshly_materialized_warehouse(schema_doc_script, fresh_warehouse):
    assert schema_doc_script.render_schema_doc_of(fresh_warehouse) == SCHEMA_DOC.read_text(), REGENERATE


def test_every_schema_has_tables_and_every_table_and_column_a_description(fresh_warehouse):
    with duckdb.connect(str(fresh_warehouse), read_only=True) as connection:
        schemas = {schema for (schema,) in connection.execute("SELECT DISTINCT schema_name FROM duckdb_tables()").fetchall()}
        undescribed = connection.execute(
            "SELECT schema_name || '.' || table_name FROM duckdb_tables() "
            "WHERE database_name = current_database() AND schema_name IN $schemas AND coalesce(comment, '') = '' "
            "UNION ALL SELECT schema_name || '.' || table_name || '.' || column_name FROM duckdb_columns() "
            "WHERE database_name = current_database() AND schema_name IN $schemas AND coalesce(comment, '') = '' "
            "ORDER BY 1",
            {"schemas": list(SCHEMAS)},
        ).fetchall()
    assert set(SCHEMAS) <= schemas
    assert undescribed == [], "add COMMENT ON ... next to the CREATE of these"


def test_a_column_added_without_the_doc_makes_the_comparison_fail(schema_doc_script, fresh_warehouse, tmp_path):
    changed = tmp_path / "warehouse.duckdb"
    shutil.copy(fresh_warehouse, changed)
    with duckdb.connect(str(changed)) as connection:
        connection.execute("ALTER TABLE core.users ADD COLUMN x INTEGER")
    text = schema_doc_script.render_schema_doc_of(changed)
    assert text != SCHEMA_DOC.read_text()
    assert "| `x` | `INTEGER` | yes |  |  |" in text
